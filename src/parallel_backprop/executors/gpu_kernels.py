"""The seed's backprop steps as Triton kernels: the GPU implementation of :mod:`..backprop`.

One training step of an L-layer network is 3L launches (L forward, one loss
total, L - 1 hidden deltas, L weight updates; 3L + 1 with an optimizer other
than SGD), each named after the step it implements (shapes
for a batch of M rows and a layer with K inputs and N outputs; W is (K, N)
row-major, as in backprop.py):

    1. forward layer        A = f(X @ W + b)                     layers 1..L-1
    2. output delta         A = f(X @ W + b); D = dLoss/dZ;      layer L, one kernel
                            loss partial sums per program
       loss total           loss = sum of the partials; total += loss
    3. hidden delta         D_prev = (D @ W^T) * f'(A_prev)      layers L..2
    4. weight update        W -= lr/M * A_prev^T @ D;            layers L..1
                            b -= lr/M * column sums of D
                            (SGD with weight decay: W = (1 - lr wd) W - ...;
                            any other optimizer: G_W = 1/M * A_prev^T @ D and
                            G_b = 1/M * column sums, into a flat gradient)
    5. optimizer step       momentum, Nesterov, Adam, AdamW       all parameters,
                            element by element over the flat       one kernel
                            parameters, gradient and state (optim.py's rules)

The math of every step is the one in backprop.py and activations.py; only
the place it runs differs. What is fused, and why:

- The bias is loaded into the accumulators and the activation applied while
  they are still in registers: z never goes to memory (the forward pass
  writes each activation once and reads it back once, in the backward pass).
- The output delta is the last forward layer's epilogue: A_L is written and
  D_L computed from the same registers, so the output is not read back.
- The derivative f' comes from the stored activation (sigmoid a(1 - a),
  tanh 1 - a^2, relu [a > 0]): no pre-activation is kept, none recomputed.
- The weight update is the gradient product's epilogue: W is read once and
  written once and the gradient never exists in memory. For Net-1h
  (784-1024-10) at batch 128 that saves writing and re-reading 3.2 MB of
  gradient: 6.4 MB of an unfused step's ~20 MB of memory traffic.
  Because W_l is updated in place, layer l's hidden delta (which reads the
  old W_l) is launched before its weight update; one stream orders them.
- SGD's weight decay folds into the same epilogue (W is scaled as it is
  read), so SGD with or without it costs the seed's traffic. The other
  rules need the whole gradient before they update (Adam's moments are
  per element, over all of it), so the product stores the mean gradient
  instead of W (a store only: W is not read) and one element-wise kernel
  then applies the rule over the flat buffers: a launch, not one per layer.
- Per-step factors (lr/M or 1/M, 1 - lr wd, lr or lr / (1 - b1^t),
  1 / sqrt(1 - b2^t)) are read from a small device tensor, never baked
  into a launch: a captured CUDA graph's replays follow the learning rate
  and the step count t.

Memory traffic per step, each array read or written once (re-reads of a
tile by other programs mostly hit L2), for Net-1h (784-1024-10, 814,090
parameters) at batch 128, fp32: forward layer 4.1 MB, output delta 0.6,
hidden delta 1.1, weight updates 7.4 + 0.6: SGD ~13.8 MB. With a stateful
optimizer the gradient products move 4.1 + 0.6 and the optimizer step
4 B x 814,090 x (5 momentum/Nesterov, 7 Adam/AdamW), plus 1 B per
parameter with weight decay (the weights-or-biases mask): momentum ~26.8
(27.6) MB, Adam ~33.3 (34.1) MB, 2-2.5x SGD's, bound by memory bandwidth.

Every kernel is a tiled product with masks on every tail: no size needs to be
a multiple of a block. Products accumulate in fp32; ``PRECISION`` is
``"ieee"`` (fp32-exact, PyTorch's default for fp32 matmuls), ``"tf32"``
(tensor cores, 10-bit mantissa inputs: only when asked) or ``"bf16"`` (the
operands rounded to bfloat16 as they are loaded, tensor-core products with
fp32 accumulation; everything stored, weights included, stays fp32).
The interpreter's ``tl.dot`` ignores ``input_precision`` and mishandles
bfloat16 operands (and its cast to bfloat16 truncates), so under it bf16 is
``"bf16-rounded"``: the same round-to-nearest-even of the operands, done on
their bits, then an fp32 product, which is exact for bf16 inputs.

A softmax output needs a whole row in one program (max and sum over the
row), so its block covers the row: up to ``MAX_ROW_BLOCK`` output units.
Element-wise outputs are tiled like any layer.

Under ``TRITON_INTERPRET=1`` the kernels run on CPU tensors through
Triton's interpreter, slowly (~5-60 ms per small launch), for tests. Triton
reads the variable when it is imported, when ``@triton.jit`` decorates a
kernel and while an interpreted kernel runs: set it before the program
starts. ``INTERPRETED`` records which mode this module was imported in.
"""

from __future__ import annotations

import functools

import torch
import triton
import triton.language as tl

from ..optim import OptimizerConfig

ACTIVATIONS = ("sigmoid", "tanh", "relu", "linear")   # hidden and output
OUTPUT_ACTIVATIONS = (*ACTIVATIONS, "softmax")
LOSSES = ("mse", "cross-entropy")
# The weight update kernel's epilogues, and the rules the optimizer step kernel applies.
UPDATES = ("sgd", "sgd-decay", "gradient")
STEP_RULES = ("momentum", "nesterov", "adam", "adamw")

# Widest softmax output one program holds: a row of fp32 accumulators per row
# of the block (256 units x 16 rows: 32 registers per thread at 4 warps), and
# W tiles of 16 x 256 (16 KB per pipeline stage of shared memory).
MAX_ROW_BLOCK = 256

# float32's smallest normal number: log(max(a, TINY)) as in activations.loss_sum.
TINY = tl.constexpr(1.1754943508222875e-38)


# ---- element-wise pieces, compile-time choices ------------------------------

@triton.jit
def _activate(z, ACTIVATION: tl.constexpr):
    # a = f(z) for an element-wise activation.
    if ACTIVATION == "sigmoid":
        return 1.0 / (1.0 + tl.exp(-z))      # exp(-z) = inf for z < -88: a = 0, no NaN
    elif ACTIVATION == "tanh":
        # tanh(z) = sign(z) (1 - e) / (1 + e), e = exp(-2|z|) <= 1 never overflows;
        # absolute error ~1e-7 near 0 (the interpreter has no libdevice tanh).
        e = tl.exp(-2.0 * tl.abs(z))
        t = (1.0 - e) / (1.0 + e)
        return tl.where(z < 0.0, -t, t)
    elif ACTIVATION == "relu":
        return tl.maximum(z, 0.0)
    else:                                    # linear
        return z


@triton.jit
def _derivative(a, ACTIVATION: tl.constexpr):
    # f' from the stored output a = f(z), the seed's trick: no z kept.
    if ACTIVATION == "sigmoid":
        return a * (1.0 - a)
    elif ACTIVATION == "tanh":
        return 1.0 - a * a
    elif ACTIVATION == "relu":
        return tl.where(a > 0.0, 1.0, 0.0)
    else:                                    # linear
        return tl.full(a.shape, 1.0, tl.float32)


@triton.jit
def _bf16_round(x):
    # x rounded to the nearest bfloat16 (ties to even), kept in fp32: on the bits, because
    # the interpreter's cast truncates. NaN and inf are not expected in a product's operands.
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr):
    # acc + a @ b, accumulated in fp32, the operands as PRECISION says.
    if PRECISION == "bf16":                  # tensor cores: bf16 operands, fp32 accumulators
        return tl.dot(a.to(tl.bfloat16), b.to(tl.bfloat16), acc)
    elif PRECISION == "bf16-rounded":        # the same rounding, for the interpreter
        return tl.dot(_bf16_round(a), _bf16_round(b), acc, input_precision="ieee")
    else:                                    # "ieee" (FMA) or "tf32" (tensor cores)
        return tl.dot(a, b, acc, input_precision=PRECISION)


# ---- 1. forward layer --------------------------------------------------------

@triton.jit
def _bias_plus_product(X, W, B, M, N, K, stride_xm, stride_wk, rm, rn,
                       PRECISION: tl.constexpr, BLOCK_M: tl.constexpr,
                       BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # b[rn] + X[rm, :] @ W[:, rn] in fp32: the bias starts the accumulator; tails masked.
    rk = tl.arange(0, BLOCK_K)
    bias = tl.load(B + rn, mask=rn < N, other=0.0)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32) + bias[None, :]
    for k0 in range(0, K, BLOCK_K):
        kk = k0 + rk
        x = tl.load(X + rm[:, None] * stride_xm + kk[None, :],
                    mask=(rm[:, None] < M) & (kk[None, :] < K), other=0.0)
        w = tl.load(W + kk[:, None] * stride_wk + rn[None, :],
                    mask=(kk[:, None] < K) & (rn[None, :] < N), other=0.0)
        acc = _dot(x, w, acc, PRECISION)
    return acc

@triton.jit
def _forward_layer_kernel(
    X, W, B, A,                       # X (M, K), W (K, N), b (N,), A (M, N); rows contiguous
    M, N, K, stride_xm, stride_wk, stride_am,
    ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # A = f(X @ W + b): the bias starts the accumulator, f is applied before the store.
    # Traffic: X, W, b read, A written (4 B x (MK + KN + N + MN)); Net-1h layer 1: 4.1 MB.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _bias_plus_product(X, W, B, M, N, K, stride_xm, stride_wk, rm, rn,
                             PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    a = _activate(acc, ACTIVATION)
    tl.store(A + rm[:, None] * stride_am + rn[None, :], a,
             mask=(rm[:, None] < M) & (rn[None, :] < N))


# ---- 2. output delta, fused into the last layer's forward ---------------------

@triton.jit
def _forward_output_delta_kernel(
    X, W, B, Y, A, D, LossParts,      # X (M, K), W (K, N), b (N,), Y, A, D (M, N)
    M, N, K, stride_xm, stride_wk, stride_ym, stride_am, stride_dm,
    ACTIVATION: tl.constexpr, LOSS: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    # A = f(X @ W + b); D = (A - Y) * f'(A) for MSE, A - Y for cross-entropy;
    # LossParts[program] = this tile's loss sum. LOSS "none": A only (predict).
    # Traffic: X, W, b, Y read, A and D written; Net-1h output layer at batch 128: 0.6 MB.
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = _bias_plus_product(X, W, B, M, N, K, stride_xm, stride_wk, rm, rn,
                             PRECISION, BLOCK_M, BLOCK_N, BLOCK_K)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    if ACTIVATION == "softmax":
        # The whole row is in this block (BLOCK_N >= N, one program along N):
        # shift by the row maximum so exp never overflows; padding lanes get 0.
        z = tl.where(rn[None, :] < N, acc, float("-inf"))
        e = tl.exp(z - tl.max(z, axis=1)[:, None])
        a = e / tl.sum(e, axis=1)[:, None]
    else:
        a = _activate(acc, ACTIVATION)
    tl.store(A + rm[:, None] * stride_am + rn[None, :], a, mask=mask)
    if LOSS != "none":
        y = tl.load(Y + rm[:, None] * stride_ym + rn[None, :], mask=mask, other=0.0)
        g = a - y
        if LOSS == "cross-entropy":
            d = g                            # softmax + CE, sigmoid + binary CE: f' cancels
            if ACTIVATION == "softmax":
                term = -y * tl.log(tl.maximum(a, TINY))
            else:
                term = -(y * tl.log(tl.maximum(a, TINY))
                         + (1.0 - y) * tl.log(tl.maximum(1.0 - a, TINY)))
        else:
            if ACTIVATION == "softmax":
                # Jacobian product a * (g - sum(g * a)); padding lanes have a = g = 0.
                d = a * (g - tl.sum(g * a, axis=1)[:, None])
            else:
                d = g * _derivative(a, ACTIVATION)
            term = 0.5 * g * g
        tl.store(D + rm[:, None] * stride_dm + rn[None, :], d, mask=mask)
        part = tl.sum(tl.sum(tl.where(mask, term, 0.0), axis=1), axis=0)
        tl.store(LossParts + pid_m * tl.num_programs(1) + pid_n, part)


@triton.jit
def _loss_total_kernel(LossParts, P, Loss, Total, BLOCK: tl.constexpr):
    # Loss = sum of the P partials, in a fixed order; Total += Loss (fp64, the epoch's sum).
    # Traffic: 4 B per partial (8 for Net-1h at batch 128), one program.
    acc = tl.zeros((BLOCK,), dtype=tl.float32)
    for p0 in range(0, P, BLOCK):
        rp = p0 + tl.arange(0, BLOCK)
        acc += tl.load(LossParts + rp, mask=rp < P, other=0.0)
    loss = tl.sum(acc, axis=0)
    tl.store(Loss, loss)
    tl.store(Total, tl.load(Total) + loss.to(tl.float64))


# ---- 3. hidden delta ---------------------------------------------------------

@triton.jit
def _hidden_delta_kernel(
    D, W, A_prev, D_prev,             # D (M, N), W (K, N), A_prev (M, K), D_prev (M, K)
    M, N, K, stride_dm, stride_wk, stride_am, stride_pm,
    ACTIVATION: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    # D_prev = (D @ W^T) * f'(A_prev), f' from the stored activation of the layer below.
    # Traffic: D, W, A_prev read, D_prev written; Net-1h at batch 128: 1.1 MB.
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    rn = tl.arange(0, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n0 in range(0, N, BLOCK_N):
        nn = n0 + rn
        d = tl.load(D + rm[:, None] * stride_dm + nn[None, :],
                    mask=(rm[:, None] < M) & (nn[None, :] < N), other=0.0)
        w_t = tl.load(W + rk[None, :] * stride_wk + nn[:, None],      # W^T tile (BLOCK_N, BLOCK_K)
                      mask=(nn[:, None] < N) & (rk[None, :] < K), other=0.0)
        acc = _dot(d, w_t, acc, PRECISION)
    mask = (rm[:, None] < M) & (rk[None, :] < K)
    a = tl.load(A_prev + rm[:, None] * stride_am + rk[None, :], mask=mask, other=0.0)
    tl.store(D_prev + rm[:, None] * stride_pm + rk[None, :], acc * _derivative(a, ACTIVATION),
             mask=mask)


# ---- 4. weight update --------------------------------------------------------

@triton.jit
def _weight_update_kernel(
    A_prev, D, W, B, Scalars,         # A_prev (M, K), D (M, N), W (K, N), b (N,), Scalars (2,)
    M, N, K, stride_am, stride_dm, stride_wk,
    UPDATE: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    # G = A_prev^T @ D summed over the batch in the accumulator, c = colsum(D); then
    #   UPDATE "sgd":       W -= s * G;                b -= s * c     (s = lr / M)
    #   UPDATE "sgd-decay": W = keep * W - s * G;     b -= s * c     (keep = 1 - lr * wd)
    #   UPDATE "gradient":  W = s * G;                b = s * c      (s = 1 / M: W, b are
    #                       the flat gradient buffer's views; the optimizer step follows)
    # s and keep are read from memory, so a captured CUDA graph follows a new learning rate.
    # Traffic: A_prev and D once, W read + written (4 B x 2KN) or written only ("gradient");
    # Net-1h batch 128: layer 1 7.4 MB (4.1 storing the gradient), layer 2 0.6 MB.
    pid_k = tl.program_id(0)
    rk = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rm = tl.arange(0, BLOCK_M)
    acc = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    col_sum = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        mm = m0 + rm
        # A_prev^T tile (BLOCK_K, BLOCK_M): the transpose is in the addressing.
        a_t = tl.load(A_prev + mm[None, :] * stride_am + rk[:, None],
                      mask=(rk[:, None] < K) & (mm[None, :] < M), other=0.0)
        d = tl.load(D + mm[:, None] * stride_dm + rn[None, :],
                    mask=(mm[:, None] < M) & (rn[None, :] < N), other=0.0)
        acc = _dot(a_t, d, acc, PRECISION)
        col_sum += tl.sum(d, axis=0)     # cheap next to the product; stored by one row of programs
    scale = tl.load(Scalars)
    mask = (rk[:, None] < K) & (rn[None, :] < N)
    w_ptrs = W + rk[:, None] * stride_wk + rn[None, :]
    if UPDATE == "gradient":             # a store only: W is not read
        tl.store(w_ptrs, scale * acc, mask=mask)
    else:
        w = tl.load(w_ptrs, mask=mask, other=0.0)
        if UPDATE == "sgd-decay":
            w = tl.load(Scalars + 1) * w
        tl.store(w_ptrs, w - scale * acc, mask=mask)
    if pid_k == 0:
        if UPDATE == "gradient":
            tl.store(B + rn, scale * col_sum, mask=rn < N)
        else:
            b = tl.load(B + rn, mask=rn < N, other=0.0)
            tl.store(B + rn, b - scale * col_sum, mask=rn < N)


# ---- 5. optimizer step, after every layer's gradient -----------------------------

@triton.jit
def _optimizer_step_kernel(
    P, G, S0, S1, IsWeight, Scalars,  # flat (n,): params, mean gradient, state buffers,
    n,                                # uint8 1 on weights; Scalars: this step's factors
    wd, mu, b1, one_minus_b1, b2, one_minus_b2, eps,
    RULE: tl.constexpr, DECAY: tl.constexpr, BLOCK: tl.constexpr,
):
    # The rules of optim.py, element by element (g' = g + wd * p on weights, not for adamw):
    #   momentum  v = mu v + g';  p -= lr v                  Scalars[2] = lr
    #   nesterov  v = mu v + g';  p -= lr (g' + mu v)
    #   adam      m = b1 m + (1 - b1) g';  s = b2 s + (1 - b2) g'^2;
    #             p -= m / (sqrt(s) c2 + eps) * c1          c1 = lr / (1 - b1^t) = Scalars[2],
    #                                                       c2 = 1 / sqrt(1 - b2^t) = Scalars[3]
    #   adamw     p *= keep on weights (keep = 1 - lr wd = Scalars[1]), then adam on g
    # The factors are read from memory, so a CUDA graph's replays follow lr and t.
    # Traffic per parameter: 4 B x (p, g, v read; p, v written) = 20 B for momentum and
    # Nesterov, 4 B x 7 = 28 B for Adam and AdamW, + 1 B of mask with weight decay;
    # Net-1h (814,090 parameters): 16.3 MB, 22.8 MB (+0.8 MB).
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    inside = offs < n
    p = tl.load(P + offs, mask=inside, other=0.0)
    g = tl.load(G + offs, mask=inside, other=0.0)
    if DECAY:
        is_weight = tl.load(IsWeight + offs, mask=inside, other=0) != 0
        if RULE == "adamw":
            p = tl.where(is_weight, tl.load(Scalars + 1) * p, p)
        else:
            g = tl.where(is_weight, g + wd * p, g)
    if RULE == "momentum" or RULE == "nesterov":
        v = mu * tl.load(S0 + offs, mask=inside, other=0.0) + g
        tl.store(S0 + offs, v, mask=inside)
        if RULE == "nesterov":
            g = g + mu * v
        else:
            g = v
        p = p - tl.load(Scalars + 2) * g
    else:                                # adam, adamw
        m = b1 * tl.load(S0 + offs, mask=inside, other=0.0) + one_minus_b1 * g
        s = b2 * tl.load(S1 + offs, mask=inside, other=0.0) + one_minus_b2 * (g * g)
        tl.store(S0 + offs, m, mask=inside)
        tl.store(S1 + offs, s, mask=inside)
        p = p - m / (tl.sqrt(s) * tl.load(Scalars + 3) + eps) * tl.load(Scalars + 2)
    tl.store(P + offs, p, mask=inside)


# ---- host launchers: check, pick blocks, launch --------------------------------

# The products' kernels by launcher name, for tools that compile or inspect them
# (benchmarks/gpu_check.py): the JIT function, its pointer arguments, the names of
# its blocks in the launcher's (rows, cols, reduce) order, its other constexprs.
PRODUCT_KERNELS = {
    "forward_layer": (_forward_layer_kernel, ("X", "W", "B", "A"),
                      ("BLOCK_M", "BLOCK_N", "BLOCK_K"), {"ACTIVATION": "sigmoid"}),
    "forward_output_delta": (_forward_output_delta_kernel,
                             ("X", "W", "B", "Y", "A", "D", "LossParts"),
                             ("BLOCK_M", "BLOCK_N", "BLOCK_K"),
                             {"ACTIVATION": "sigmoid", "LOSS": "mse"}),
    "hidden_delta": (_hidden_delta_kernel, ("D", "W", "A_prev", "D_prev"),
                     ("BLOCK_M", "BLOCK_K", "BLOCK_N"), {"ACTIVATION": "sigmoid"}),
    "weight_update": (_weight_update_kernel, ("A_prev", "D", "W", "B", "Scalars"),
                      ("BLOCK_K", "BLOCK_N", "BLOCK_M"), {"UPDATE": "sgd"}),
}

# Whether @triton.jit made interpreted kernels (TRITON_INTERPRET=1 at import).
INTERPRETED: bool = type(_forward_layer_kernel).__name__ == "InterpretedFunction"
# The executor's --precision -> the kernels' PRECISION (see the module docstring).
PRECISIONS = {"fp32": "ieee", "tf32": "tf32",
              "bf16": "bf16-rounded" if INTERPRETED else "bf16"}


def _pow2(n: int, lo: int = 16, hi: int = 64) -> int:
    """The power of two >= n, clamped to [lo, hi]."""
    return max(lo, min(hi, triton.next_power_of_2(max(n, 1))))


@functools.lru_cache(maxsize=None)
def tile(rows: int, cols: int, reduce: int, interpreted: bool,
         programs: int = 132) -> tuple[int, int, int]:
    """(BLOCK_rows, BLOCK_cols, BLOCK_reduce) for an output of rows x cols.

    Under the interpreter the cost is per program and per loop iteration, so
    blocks are as large as the shape (up to 32). On a GPU this is the first
    candidate of the measured choice (:mod:`.gpu_tuning`) and the fallback
    when the executor does not measure (``autotune=False``): tiles of
    16..64 per side (tl.dot needs >= 16), halved until the grid has about
    ``programs`` (the SM count) programs: Net-1h's first layer at batch 128
    is 2 x 16 tiles of 64 x 64, 64 tiles of 32 x 32 ... 256 of 16 x 32 on an
    H100's 132 SMs. The reduction steps 32 at a time, or 128 when the grid is
    small anyway (the output layer's 10 units: 8 programs looping over 1024
    inputs), to cut the serial loop 4x.
    """
    if interpreted:
        return _pow2(rows, hi=32), _pow2(cols, hi=32), _pow2(reduce, hi=32)
    br, bc = _pow2(rows), _pow2(cols)
    while triton.cdiv(rows, br) * triton.cdiv(cols, bc) < programs and max(br, bc) > 16:
        if br >= bc:
            br //= 2
        else:
            bc //= 2
    small = triton.cdiv(rows, br) * triton.cdiv(cols, bc) < programs // 2
    return br, bc, (_pow2(reduce, hi=128) if small else 32)


@functools.lru_cache(maxsize=None)
def _sm_count(device: torch.device) -> int:
    if INTERPRETED or device.type != "cuda":
        return 1
    return torch.cuda.get_device_properties(device).multi_processor_count


# Configurations chosen by measurement (gpu_tuning.tune_step), by (kernel, shape,
# precision): (BLOCK_rows, BLOCK_cols, BLOCK_reduce, num_warps, num_stages).
TUNED: dict[tuple[str, tuple[int, int, int], str], tuple[int, ...]] = {}


def heuristic_blocks(kernel: str, shape: tuple[int, int, int],
                     device: torch.device) -> tuple[int, int, int]:
    """The fixed heuristic's blocks for ``kernel`` on ``shape`` (its launcher's order)."""
    if kernel == "forward_output_delta":
        return output_blocks(*shape, "sigmoid", device)
    return tile(*shape, INTERPRETED, _sm_count(device))


def _config_for(kernel: str, tensor: torch.Tensor, shape: tuple[int, int, int],
                precision: str) -> tuple[int, ...]:
    """The measured configuration of this launch when there is one, else the heuristic's."""
    return TUNED.get((kernel, shape, precision)) or tile(*shape, INTERPRETED,
                                                         _sm_count(tensor.device))


def _options(config: tuple[int, ...]) -> dict:
    """Warps and stages of a measured configuration (the interpreter takes none)."""
    if INTERPRETED or len(config) < 5:
        return {}
    return {"num_warps": config[3], "num_stages": config[4]}


def _check(name: str, tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    if tuple(tensor.shape) != shape or tensor.dtype != torch.float32 or tensor.stride(-1) != 1:
        raise ValueError(f"{name}: expected float32 {shape} with contiguous rows, got "
                         f"{tensor.dtype} {tuple(tensor.shape)} strides {tensor.stride()}")


def forward_layer(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, out: torch.Tensor,
                  activation: str, precision: str = "ieee",
                  blocks: tuple[int, int, int] | None = None) -> torch.Tensor:
    """``out = f(x @ w + b)``: x (M, K), w (K, N), b (N,), out (M, N).

    ``blocks`` (BLOCK_M, BLOCK_N, BLOCK_K), optionally followed by num_warps and
    num_stages, overrides the measured or heuristic choice, as in every launcher.
    """
    M, K = x.shape
    N = w.shape[1]
    for name, t, shape in (("x", x, (M, K)), ("w", w, (K, N)), ("b", b, (N,)),
                           ("out", out, (M, N))):
        _check(name, t, shape)
    config = blocks or _config_for("forward_layer", x, (M, N, K), precision)
    bm, bn, bk = config[:3]
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    _forward_layer_kernel[grid](x, w, b, out, M, N, K, x.stride(0), w.stride(0), out.stride(0),
                                ACTIVATION=activation, PRECISION=precision,
                                BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **_options(config))
    return out


def output_blocks(M: int, N: int, K: int, activation: str,
                  device: torch.device) -> tuple[int, int, int]:
    """Blocks of the output kernel; a softmax row must fit one block."""
    bm, bn, bk = tile(M, N, K, INTERPRETED, _sm_count(device))
    if activation == "softmax":
        if N > MAX_ROW_BLOCK:
            raise ValueError(f"softmax output of {N} units: the gpu kernels hold a row in one "
                             f"block, at most {MAX_ROW_BLOCK} units")
        bn = _pow2(N, hi=MAX_ROW_BLOCK)
        bm = max(16, min(bm, 4096 // bn))    # accumulators <= 4096 floats per program
        bk = max(16, min(bk, 4096 // bn))    # a W tile <= 4096 floats per stage
    return bm, bn, bk


def max_loss_parts(M: int, N: int) -> int:
    """An upper bound on the partial loss sums of the output kernel for up to M rows
    (tiles are at least 16 x 16)."""
    return triton.cdiv(M, 16) * triton.cdiv(N, 16)


def forward_output_delta(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                         y: torch.Tensor | None, out: torch.Tensor, delta: torch.Tensor | None,
                         loss_parts: torch.Tensor | None, activation: str, loss: str | None,
                         precision: str = "ieee",
                         blocks: tuple[int, int, int] | None = None) -> torch.Tensor:
    """The last layer: ``out = f(x @ w + b)`` and, when ``loss`` is given, the output
    delta into ``delta`` (M, N) and the tiles' loss sums into ``loss_parts``.

    Returns ``loss_parts[:P]``, the P partials written (``out`` when ``loss`` is None).
    """
    M, K = x.shape
    N = w.shape[1]
    for name, t, shape in (("x", x, (M, K)), ("w", w, (K, N)), ("b", b, (N,)),
                           ("out", out, (M, N))):
        _check(name, t, shape)
    config = blocks or (activation != "softmax" and TUNED.get(
        ("forward_output_delta", (M, N, K), precision))) or output_blocks(
        M, N, K, activation, x.device)
    bm, bn, bk = config[:3]
    if activation == "softmax" and bn < N:
        raise ValueError(f"softmax output of {N} units in blocks of {bn}: a row must fit one")
    grid = (triton.cdiv(M, bm), triton.cdiv(N, bn))
    if loss is None:
        y = delta = loss_parts = out     # never touched with LOSS "none"
    else:
        _check("y", y, (M, N))
        _check("delta", delta, (M, N))
        if loss_parts.numel() < grid[0] * grid[1]:
            raise ValueError(f"loss_parts: {loss_parts.numel()} < {grid[0] * grid[1]} partials")
    _forward_output_delta_kernel[grid](
        x, w, b, y, out, delta, loss_parts, M, N, K,
        x.stride(0), w.stride(0), y.stride(0), out.stride(0), delta.stride(0),
        ACTIVATION=activation, LOSS=loss or "none", PRECISION=precision,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, **_options(config))
    return out if loss is None else loss_parts[:grid[0] * grid[1]]


def loss_total(loss_parts: torch.Tensor, loss: torch.Tensor, total: torch.Tensor) -> None:
    """``loss[0] = sum(loss_parts)``, ``total[0] += loss[0]`` (total is float64)."""
    P = loss_parts.numel()
    block = 1024 if not INTERPRETED else _pow2(P, hi=1024)
    _loss_total_kernel[(1,)](loss_parts, P, loss, total, BLOCK=block)


def hidden_delta(delta: torch.Tensor, w: torch.Tensor, a_prev: torch.Tensor,
                 out: torch.Tensor, activation: str, precision: str = "ieee",
                 blocks: tuple[int, int, int] | None = None) -> torch.Tensor:
    """``out = (delta @ w^T) * f'(a_prev)``: delta (M, N), w (K, N), a_prev and out (M, K)."""
    M, N = delta.shape
    K = w.shape[0]
    for name, t, shape in (("delta", delta, (M, N)), ("w", w, (K, N)),
                           ("a_prev", a_prev, (M, K)), ("out", out, (M, K))):
        _check(name, t, shape)
    config = blocks or _config_for("hidden_delta", delta, (M, K, N), precision)
    bm, bk, bn = config[:3]
    grid = (triton.cdiv(M, bm), triton.cdiv(K, bk))
    _hidden_delta_kernel[grid](delta, w, a_prev, out, M, N, K, delta.stride(0), w.stride(0),
                               a_prev.stride(0), out.stride(0),
                               ACTIVATION=activation, PRECISION=precision,
                               BLOCK_M=bm, BLOCK_K=bk, BLOCK_N=bn, **_options(config))
    return out


def weight_update(a_prev: torch.Tensor, delta: torch.Tensor, w: torch.Tensor, b: torch.Tensor,
                  scalars: torch.Tensor, precision: str = "ieee",
                  blocks: tuple[int, int, int] | None = None, update: str = "sgd") -> None:
    """The gradient product of one layer and, fused into it, SGD's update in place.

    a_prev (M, K), delta (M, N), w (K, N), b (N,); ``scalars`` holds
    s = lr / M and, for ``update="sgd-decay"``, keep = 1 - lr * wd:
    ``w = keep * w - s * a_prev^T @ delta``, ``b -= s * delta.sum(0)``.
    ``update="gradient"`` (see :func:`weight_gradient`) stores instead.
    ``blocks`` is (BLOCK_K, BLOCK_N, BLOCK_M), M the reduction.
    """
    if update not in UPDATES:
        raise ValueError(f"update {update!r}: expected one of {', '.join(UPDATES)}")
    M, K = a_prev.shape
    N = delta.shape[1]
    for name, t, shape in (("a_prev", a_prev, (M, K)), ("delta", delta, (M, N)),
                           ("w", w, (K, N)), ("b", b, (N,))):
        _check(name, t, shape)
    config = blocks or _config_for("weight_update", w, (K, N, M), precision)
    bk, bn, bm = config[:3]
    grid = (triton.cdiv(K, bk), triton.cdiv(N, bn))
    _weight_update_kernel[grid](a_prev, delta, w, b, scalars, M, N, K,
                                a_prev.stride(0), delta.stride(0), w.stride(0),
                                UPDATE=update, PRECISION=precision,
                                BLOCK_K=bk, BLOCK_N=bn, BLOCK_M=bm, **_options(config))


def weight_gradient(a_prev: torch.Tensor, delta: torch.Tensor, grad_w: torch.Tensor,
                    grad_b: torch.Tensor, scalars: torch.Tensor, precision: str = "ieee",
                    blocks: tuple[int, int, int] | None = None) -> None:
    """The layer's MEAN gradient into the gradient buffer: ``grad_w = s * a_prev^T @ delta``,
    ``grad_b = s * delta.sum(0)`` with s = scalars[0] = 1 / M (the update kernel, storing)."""
    weight_update(a_prev, delta, grad_w, grad_b, scalars, precision, blocks, update="gradient")


def optimizer_step(config: OptimizerConfig, params: torch.Tensor, grad: torch.Tensor,
                   state: torch.Tensor, is_weight: torch.Tensor | None,
                   scalars: torch.Tensor, block: int | None = None) -> None:
    """One update of the flat ``params`` (n,) from the mean gradient ``grad`` (n,), in place.

    ``state`` (k, n) the optimizer's buffers, updated; ``is_weight`` (n,) uint8,
    1 on weights (weight decay applies; None when ``config.weight_decay`` is 0);
    ``scalars``: [_, keep = 1 - lr * wd, lr or lr / (1 - b1^t), 1 / sqrt(1 - b2^t)].
    Momentum, Nesterov, Adam and AdamW; plain SGD is folded into :func:`weight_update`.
    """
    if config.name not in STEP_RULES:
        raise ValueError(f"optimizer {config.name!r}: the step kernel applies "
                         f"{', '.join(STEP_RULES)}")
    n = params.numel()
    for name, t, shape in (("params", params, (n,)), ("grad", grad, (n,)),
                           ("state", state, (config.n_buffers, n))):
        _check(name, t, shape)
    decay = config.weight_decay != 0
    if decay and (is_weight is None or tuple(is_weight.shape) != (n,)
                  or is_weight.dtype != torch.uint8):
        raise ValueError(f"is_weight: expected uint8 ({n},) with weight decay")
    block = block or (_pow2(n, hi=4096) if INTERPRETED else 1024)
    # floats always: Triton would compile an int setting (momentum=0) as an integer
    settings = [float(v) for v in (config.weight_decay, config.momentum, config.beta1,
                                   1.0 - config.beta1, config.beta2, 1.0 - config.beta2,
                                   config.eps)]
    _optimizer_step_kernel[(triton.cdiv(n, block),)](
        params, grad, state[0], state[-1], is_weight if decay else params, scalars, n,
        *settings, RULE=config.name, DECAY=decay, BLOCK=block)
