"""Backpropagation: the forward pass, the deltas and the gradients. All the math.

This is the reference every executor is checked against; executors only
decide where shards of a batch run and how their gradients are summed.
It allocates nothing per call: every array it writes is a preallocated
buffer in a :class:`Workspace` (or a view of one).

Shapes, for a shard of ``n`` samples and layer ``l`` with ``n_in -> n_out``::

    x        (n, sizes[0])       input
    a[l]     (n, sizes[l])       activations, a[0] = x, a[L] = output
    W_l      (n_in, n_out)       b_l (n_out,)
    delta[l] (n, sizes[l])       dLoss/dz at layer l
    dW_l     (n_in, n_out)       = a[l-1]^T @ delta[l], summed over the shard
    db_l     (n_out,)            = column sums of delta[l]
    weights  (n,)                optional per-row sample weights: row i of
                                 delta[L] (hence of every delta) times weights[i]

Gradients and losses are SUMS over the shard, never means: shards of uneven
size then add up exactly, and the executor divides once by the global batch
(:func:`layer_gradient`'s ``scale``, 1 / batch for an optimizer's mean).

Precision (:mod:`.precision`): a ``bf16`` workspace multiplies bfloat16
copies (of x, of each hidden activation, of each delta, and of each W,
refreshed after every update) with float32 accumulation into the same
float32 buffers an ``fp32`` one uses; everything element-wise stays float32,
and so do the master weights the updates write. Which operands a product
takes is :func:`product_operands`'s answer, so executors need not know.
"""

from __future__ import annotations

import copy

import numpy as np

from . import compiled
from .activations import Activation, activate, get_activation, loss_sum, output_delta
from .blas_libraries import bfloat16
from .errors import ConfigError
from .gemm import gemm
from .network import Network
from .precision import PRECISIONS, activate_to_bf16, scale_to_bf16, to_bf16, use_bf16_blas


# A bf16 workspace propagates the delta of a layer narrower than this (the output
# layer) in fp32: with so short an inner dimension the product is bound by writing
# its output, and MKL's bf16 GEMM was the slower (inner 10, 1024 rows x 1024 on a
# Xeon core: 482 us against fp32's 304; level at 32).
BF16_MIN_INNER = 32


def narrow_for_bf16(weights: np.ndarray) -> bool:
    """Whether the product of a layer's delta with its W^T goes in float32 in a bf16 step:
    a layer narrower than ``BF16_MIN_INNER`` (the product's inner dimension)."""
    return weights.shape[1] < BF16_MIN_INNER


class Workspace:
    """Buffers for one worker's forward and backward pass, up to ``rows`` samples.

    ``precision`` "bf16" adds the bfloat16 copies its products read (float32
    ``dtype`` only; it switches :mod:`.gemm` to a BLAS with a bf16 GEMM if the
    current one has none) and needs ``params``, the float32 master parameters whose
    bf16 copy it keeps (:meth:`refresh`, :meth:`refresh_columns`), and the
    column sums of every delta, one row per ``parts`` (the row views of
    parallel workers: :meth:`row_view`), that :func:`deltas` writes for the
    bias (:meth:`bias_rows`).
    """

    def __init__(self, network: Network, rows: int, dtype: np.dtype | type = np.float32,
                 precision: str = "fp32", params: np.ndarray | None = None, parts: int = 1):
        self.network = network
        self.rows = rows
        self.parts = parts
        self.functions = [get_activation(name) for name in network.activations]
        widths = network.sizes[1:]
        self.a = [np.empty((rows, w), dtype) for w in widths]        # a[1..L]
        self.delta = [np.empty((rows, w), dtype) for w in widths]    # delta[1..L]
        self.scratch = [np.empty((rows, w), dtype) for w in widths]  # for f'
        self.bias_step = [np.empty(w, dtype) for w in widths]         # fused update
        # Pre-activations are kept only for activations whose derivative
        # needs its input (user-defined ones); the built-ins use the output.
        self.z = [np.empty((rows, w), dtype) if f.derivative_from == "input" else None
                  for f, w in zip(self.functions, widths)]
        self.precision = precision
        self.bf16 = precision == "bf16"
        if self.bf16:
            self._bf16_copies(network, rows, dtype, params)
        elif precision not in PRECISIONS:
            raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")

    def _bf16_copies(self, network: Network, rows: int, dtype, params: np.ndarray | None):
        """The bfloat16 operands: x, hidden activations, deltas, and the parameters' copy."""
        if np.dtype(dtype) != np.float32 or params is None or params.dtype != np.float32:
            raise ConfigError("precision 'bf16': expected float32 buffers and the float32 "
                              "parameters to keep a bf16 copy of")
        use_bf16_blas()        # a BLAS with a bf16 GEMM, or a one-line error saying why not
        widths = network.sizes[1:]
        self.x16 = np.empty((rows, network.sizes[0]), bfloat16)
        self.a16 = [np.empty((rows, w), bfloat16) for w in widths[:-1]]
        self.delta16 = [np.empty((rows, w), bfloat16) for w in widths]
        self.params = params
        self.params16 = np.empty(params.shape, bfloat16)   # shared by every row view
        self.layers16 = network.layers(self.params16)
        self.master_layers = network.layers(params)
        self.refresh()
        # Each part's column sums of its rows of every delta (the bias gradient),
        # written in the pass that scales and converts the delta: summing the
        # float32 delta again took 0.26 ms of an 11 ms Net-2h step a worker.
        self.delta_sums = [np.zeros((self.parts, w), dtype) for w in widths]
        self.own_sums = [sums[0] for sums in self.delta_sums]     # this view's part

    @property
    def input_dtype(self) -> np.dtype:
        """The dtype of the rows its first product reads: bfloat16 in bf16, else its own."""
        return self.x16.dtype if self.bf16 else self.a[0].dtype

    def refresh(self, lo: int = 0, hi: int | None = None) -> None:
        """Copy the master parameters [lo, hi) (flat) into their bf16 copy; no-op in fp32."""
        if self.bf16:
            to_bf16(self.params[lo:hi], self.params16[lo:hi])

    def bias_rows(self, l: int, n: int) -> np.ndarray:
        """Rows whose column sums are layer l's bias gradient sum over the first ``n`` rows:
        those rows of its delta; in bf16, the parts' sums that :func:`deltas` wrote
        (parts 0 .. min(n, parts) - 1: the ones with rows)."""
        if self.bf16:
            return self.delta_sums[l][:min(n, self.parts)]
        return self.delta[l][:n]

    def refresh_columns(self, l: int, c0: int, c1: int) -> None:
        """Copy columns [c0, c1) of layer l's master W into its bf16 copy; no-op in fp32."""
        if self.bf16:
            to_bf16(self.master_layers[l][0][:, c0:c1], self.layers16[l][0][:, c0:c1])

    def row_view(self, start: int, stop: int, part: int = 0) -> "Workspace":
        """A workspace over rows [start, stop) of this one's buffers, whose deltas' column
        sums go to row ``part`` of :attr:`delta_sums` (bf16): views, no copy.

        Parallel workers each write their rows of one shared workspace; the
        bias scratch stays shared (workers use disjoint columns of it).
        """
        view = copy.copy(self)
        view.rows = stop - start
        view.a, view.delta, view.scratch = ([buffer[start:stop] for buffer in buffers]
                                            for buffers in (self.a, self.delta, self.scratch))
        view.z = [None if buffer is None else buffer[start:stop] for buffer in self.z]
        if self.bf16:
            view.x16 = self.x16[start:stop]
            view.a16, view.delta16 = ([buffer[start:stop] for buffer in buffers]
                                      for buffers in (self.a16, self.delta16))
            view.own_sums = [sums[part] for sums in self.delta_sums]
        return view

    def layers_view(self, first: int, stop: int,
                    columns: tuple[int, int] | None = None) -> "Workspace":
        """A workspace over layers [first, stop) of this one, optionally only output
        columns [c0, c1) of each: views, no copy.

        :func:`forward` on it, given those layers' ``(W, b)`` (or their column
        slices) and layer ``first``'s input, computes just those layers (or
        columns): how parallel workers split one layer's outputs between them.
        float32 products only: the bf16 copies of a bf16 workspace are not cut.
        """
        view = copy.copy(self)
        cut = (slice(None),) if columns is None else (slice(None), slice(*columns))
        view.functions = self.functions[first:stop]
        view.a, view.delta, view.scratch = ([buffer[cut] for buffer in buffers[first:stop]]
                                            for buffers in (self.a, self.delta, self.scratch))
        view.z = [None if buffer is None else buffer[cut] for buffer in self.z[first:stop]]
        view.bias_step = [buffer[cut[1:]] for buffer in self.bias_step[first:stop]]
        return view


def product_operands(ws: Workspace, x: np.ndarray, l: int,
                     n: int) -> tuple[np.ndarray, np.ndarray]:
    """``(a_prev, delta)``, the operands of layer l's gradient product ``a_prev^T @ delta``.

    Rows [0, n) of the layer's input (``x`` for the first layer) and delta,
    in the workspace's product precision: the bf16 copies in bf16, after
    :func:`forward` and :func:`deltas` wrote them (``x`` itself when it came
    in bfloat16). The bias still sums the float32 ``ws.delta[l]``.
    """
    if ws.bf16:
        first = x if x.dtype == bfloat16 else ws.x16[:n]     # rows handed over in bf16
        return (first if l == 0 else ws.a16[l - 1][:n]), ws.delta16[l][:n]
    return (x if l == 0 else ws.a[l - 1][:n]), ws.delta[l][:n]


def forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray,
            ws: Workspace) -> np.ndarray:
    """Activations of every layer for ``x`` (n, sizes[0]); returns the output (n, sizes[-1]).

    ``layers`` are the ``(W, b)`` views from :meth:`Network.layers`; a bf16
    workspace multiplies its copy of each W (the master's, refreshed), and
    ``x`` as it is when it comes in bfloat16 (else its bf16 copy).
    """
    n = x.shape[0]
    a_prev = to_bf16(x, ws.x16[:n]) if ws.bf16 and x.dtype != bfloat16 else x
    last = len(layers) - 1
    for l, (weights, bias) in enumerate(layers):
        z = ws.a[l][:n]
        gemm(a_prev, ws.layers16[l][0] if ws.bf16 else weights, z)   # (n, n_in) @ (n_in, n_out)
        if ws.bf16 and l < last and ws.z[l] is None:   # fused with the next operand's copy
            a_prev = activate_to_bf16(ws.functions[l], z, bias, ws.a16[l][:n])
            continue
        if ws.z[l] is None:
            activate(ws.functions[l], z, bias)
        else:                                  # a user-defined f' needs its input
            z += bias
            ws.z[l][:n] = z
            a = ws.functions[l].function(z)
            if a is not z:
                z[...] = a
        a_prev = to_bf16(z, ws.a16[l][:n]) if ws.bf16 and l < last else z
    return ws.a[last][:n]


def backward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray,
             ws: Workspace, *, grads: list[tuple[np.ndarray, np.ndarray]] | None = None,
             update_scale: float | None = None, weights: np.ndarray | None = None) -> float:
    """Backpropagate the batch's error; returns the loss sum.

    Needs the activations of a :func:`forward` on the same ``x`` in ``ws``;
    ``y`` (n, sizes[-1]) holds the targets. Exactly one of:

    grads
        ``(dW, db)`` views of a flat buffer, filled with the gradient SUMS.
    update_scale
        ``s = lr / batch``: the SGD update is folded into the gradient
        product, ``W := W - s * a_prev^T @ delta`` in one GEMM with beta = 1,
        so the gradient is never written out (saves a write and two passes
        over the parameters per step, ~3% of a Net-1h step at batch 128).

    ``weights`` (n,): per-row sample weights (see :func:`deltas`).
    """
    loss = deltas(layers, x, y, ws, weights)
    n = x.shape[0]
    for l, (weights, bias) in enumerate(layers):
        a_prev, delta = product_operands(ws, x, l, n)
        if grads is not None:
            layer_gradient(a_prev, delta, *grads[l], 1.0, ws.bias_rows(l, n))
        else:
            update(weights, bias, a_prev, delta, update_scale, ws.bias_step[l], ws.bias_rows(l, n))
            ws.refresh_columns(l, 0, bias.shape[0])
    return loss


def deltas(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray, y: np.ndarray,
           ws: Workspace, weights: np.ndarray | None = None, lowest: int = 0) -> float:
    """Every layer's delta into ``ws.delta`` (n rows); returns the loss sum.

    ``lowest``: the deltas of layers ``lowest..`` only, the output layer's
    down (a parallel executor computes the lower ones split another way).

    Needs the activations of a :func:`forward` on the same ``x`` in ``ws``.
    Reads the weights and changes nothing else, so the updates can come after.
    ``weights`` (n,), per-row sample weights: the output delta's rows are
    scaled by them before they propagate, so every layer's delta, and hence
    every gradient, is the weighted sum; the loss is the weighted sum too.
    """
    n = x.shape[0]
    network = ws.network
    last = network.n_layers - 1
    output = ws.a[last][:n]
    loss = loss_sum(network.activations[-1], network.loss, output, y, weights)
    # Output delta: (a - y) * f'(a) for MSE, a - y for matched cross-entropy.
    delta = output_delta(ws.functions[last], network.loss, output, y,
                         None if ws.z[last] is None else ws.z[last][:n],
                         out=ws.delta[last][:n], scratch=ws.scratch[last][:n])
    if weights is not None:
        delta *= weights[:, None]     # dLoss_w/dz of row i is w_i times the unweighted one
    if ws.bf16:                       # the operand of the next product and of the update
        column_sums(delta, ws.own_sums[last], 1.0)
        delta = to_bf16(delta, ws.delta16[last][:n])
    for l in range(last, lowest, -1):
        delta_prev = ws.delta[l - 1][:n]
        delta16 = ws.delta16[l - 1][:n] if ws.bf16 else None
        weights_l = ws.layers16[l][0] if ws.bf16 else layers[l][0]
        if ws.bf16 and narrow_for_bf16(layers[l][0]):
            weights_l, delta = layers[l][0], ws.delta[l][:n]
        # bf16: the bias sums come from the pass that scales delta_prev, which then
        # leaves it unwritten, unless the next product takes it in float32
        sums = ws.own_sums[l - 1] if ws.bf16 and not narrow_for_bf16(layers[l - 1][0]) else None
        hidden_delta(ws.functions[l - 1], weights_l, delta, ws.a[l - 1][:n],
                     None if ws.z[l - 1] is None else ws.z[l - 1][:n],
                     delta_prev, ws.scratch[l - 1][:n], delta16, sums)
        if ws.bf16 and sums is None:
            column_sums(delta_prev, ws.own_sums[l - 1], 1.0)
        delta = delta_prev if delta16 is None else delta16
    return loss


def hidden_delta(function: Activation, weights: np.ndarray, delta: np.ndarray,
                 a_prev: np.ndarray, z_prev: np.ndarray | None, out: np.ndarray,
                 scratch: np.ndarray, out16: np.ndarray | None = None,
                 sums: np.ndarray | None = None) -> None:
    """The delta of the layer below: ``out = (delta @ W^T) * f'(a_prev)``, and its
    bfloat16 copy into ``out16`` when given (in the same pass where it can); with
    ``sums`` too, its column sums there and ``out`` is left to
    :func:`..precision.scale_to_bf16` (unscaled by the compiled pass).

    ``delta`` (n, n_out), W (n_in, n_out); ``out``, ``a_prev``, ``scratch``
    (and ``z_prev``, kept only for an activation whose f' needs it) (n, n_in).
    W may be some rows of a layer's weights, and the others then the same
    columns of theirs: f' comes from the stored output (or input).
    """
    gemm(delta, weights.T, out)                                # (n, n_out) @ (n_out, n_in)
    if out16 is None:
        function.scale_delta(out, a_prev, z_prev, scratch)
    else:
        scale_to_bf16(function, out, a_prev, z_prev, scratch, out16, sums)


def update(weights: np.ndarray, bias: np.ndarray, a_prev: np.ndarray, delta: np.ndarray,
           scale: float, bias_step: np.ndarray, bias_delta: np.ndarray | None = None) -> None:
    """The SGD step of one layer, or of some of its output columns, folded into the product.

    ``W -= scale * a_prev^T @ delta`` in one GEMM with beta = 1 (no gradient
    written) and ``b -= scale * column sums of delta``. W (n_in, m), b (m,),
    a_prev (n, n_in), delta (n, m), bias_step (m,) scratch; W, b and delta
    may be column slices of a layer's arrays. ``bias_delta``: the float32
    delta the bias sums when ``delta`` is its bf16 copy (default ``delta``).
    """
    gemm(a_prev.T, delta, weights, alpha=-scale, beta=1.0)  # (n_in, n) @ (n, m)
    column_sums(delta if bias_delta is None else bias_delta, bias_step, scale)
    bias -= bias_step


def layer_gradient(a_prev: np.ndarray, delta: np.ndarray, grad_weights: np.ndarray,
                   grad_bias: np.ndarray, scale: float,
                   bias_delta: np.ndarray | None = None) -> None:
    """``scale`` times one layer's gradient sum, or some of its output columns, into buffers.

    ``dW = scale * a_prev^T @ delta`` in one GEMM with beta = 0 and
    ``db = scale * column sums of delta``: with ``scale = 1 / batch`` the
    gradient MEAN an optimizer takes. dW (n_in, m), db (m,), a_prev (n, n_in),
    delta (n, m); dW, db and delta may be column slices of a layer's arrays.
    ``bias_delta``: as for :func:`update`.
    """
    gemm(a_prev.T, delta, grad_weights, alpha=scale)        # (n_in, n) @ (n, m)
    column_sums(delta if bias_delta is None else bias_delta, grad_bias, scale)


def accumulate(a_prev: np.ndarray, delta: np.ndarray, velocity_weights: np.ndarray,
               velocity_bias: np.ndarray, scale: float, mu: float, bias_step: np.ndarray,
               bias_delta: np.ndarray | None = None) -> None:
    """``v := mu * v + scale * gradient sum`` for one layer (or some of its output columns).

    Momentum's velocity update folded into the gradient product: one GEMM
    with beta = mu on the velocity, so the gradient is never written out.
    Shapes as :func:`update`; ``bias_step`` (m,) is scratch; ``bias_delta``
    as there (the float32 delta when ``delta`` is its bf16 copy).
    """
    gemm(a_prev.T, delta, velocity_weights, alpha=scale, beta=mu)   # (n_in, n) @ (n, m)
    column_sums(delta if bias_delta is None else bias_delta, bias_step, scale)
    velocity_bias *= mu
    velocity_bias += bias_step


def column_sums(delta: np.ndarray, out: np.ndarray, scale: float) -> None:
    """``out = scale * column sums of delta``, the bias gradient: NumPy's sum over the
    rows in their order, in one compiled pass where built (:mod:`.compiled`)."""
    kernels = compiled.kernels
    if kernels is not None and delta.dtype.char in compiled.KERNEL_DTYPES \
            and out.dtype == delta.dtype:
        compiled.check(kernels.column_sums(delta, out, scale), "column_sums")
        return
    np.sum(delta, axis=0, out=out)
    if scale != 1.0:
        out *= scale


def gradient(network: Network, params: np.ndarray, x: np.ndarray, y: np.ndarray,
             ws: Workspace | None = None, weights: np.ndarray | None = None,
             precision: str = "fp32") -> tuple[float, np.ndarray]:
    """Loss sum and gradient sum (flat, same layout as ``params``) for one batch.

    A convenience for tests and one-off use; executors keep their buffers.
    ``weights`` (n,): per-row sample weights (see :func:`deltas`).
    ``precision``: of the products, when no ``ws`` is given.
    """
    ws = ws or Workspace(network, x.shape[0], params.dtype, precision, params)
    grad = np.empty_like(params)
    layers = network.layers(params)
    forward(layers, x, ws)
    loss = backward(layers, x, y, ws, grads=network.layers(grad), weights=weights)
    return loss, grad
