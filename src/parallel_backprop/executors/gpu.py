"""The gpu executor: the whole training step on a GPU, in Triton kernels (the seed's CUDA).

The step is the seed's decomposition, one kernel per step (see
:mod:`.gpu_kernels` for the kernels and their math)::

    forward layer      a[l] = f(a[l-1] @ W_l + b_l)               l = 1..L-1
    output delta       a[L], delta[L], loss partials              one kernel
    loss total         loss = sum of partials; epoch total += loss
    for l = L..1:
      hidden delta     delta[l-1] = (delta[l] @ W_l^T) * f'(a[l-1])   (l > 1, old W_l)
      weight update    W_l -= lr/n * a[l-1]^T @ delta[l]; b_l -= lr/n * colsum(delta[l])
                       (SGD; any other optimizer: the mean gradient into a flat buffer)
    optimizer step     momentum, Nesterov, Adam or AdamW over the flat buffers

Everything a step touches lives on the device for the executor's lifetime,
allocated once: the parameters as ONE flat float32 tensor with per-layer
views (the layout of :class:`~parallel_backprop.network.Network`), the
activations, the deltas, the loss partials, the optimizer's state (and a
flat gradient), and a few per-step factors (:func:`step_scalars`: ``lr / n``,
Adam's bias corrections from t, ...) that the kernels read from memory, so
a captured graph follows a change of learning rate, of the number of rows
and of the optimizer's step count. ``optimizer_state()`` copies the state
back; ``optimizer_state=`` uploads a saved one.

CUDA graphs: the first step with a given number of rows runs as plain
launches (which also compiles the kernels), then the same launches are
captured once in a ``torch.cuda.CUDAGraph`` and every later step of that
size is one ``replay``. A step is 3L Triton launches for L layers (3L + 1
with an optimizer step), plus two gathers (``index_select`` of the batch's
inputs and targets) on resident data, each ~10-20 us of Python when
launched one by one: more than the GPU work of a Net-1h step at batch 128
(~0.42 GFLOP). A trainer's run needs two graphs: the batch size and the
epoch's last, smaller batch. The graphs that gather hold the addresses of
the resident training set: :meth:`GpuExecutor.load_data` drops them before
it replaces the set, and the next step of each size captures anew.

Tiles: before its first full-batch step is launched (and so before any
capture), the executor measures a few tile configurations of each product
on scratch tensors, or reads the choice cached on disk for this GPU model
(:mod:`.gpu_tuning`); under the interpreter, the fixed heuristic.

Two ways to feed it:

- ``step(x, y, lr)``, the executor contract: the host batch is copied into
  the device buffers through pinned memory, the step runs, and the loss is
  read back: one host-device synchronisation per step.
- ``load_data(x, targets)`` once and ``train_epoch(order, lr)`` per epoch,
  which the trainer uses when an executor offers them: the training set is
  copied to the device once, each epoch uploads only its shuffled order
  (8 bytes per sample), the gather of a batch's rows is part of the graph,
  and the loss is summed on the device and read once per epoch. The host
  only enqueues work: a D2D copy of the batch's indices, one of the step's
  factors when they change (every step for Adam, whose corrections follow
  t; else at a new rate or the epoch's last, smaller batch) from a table
  uploaded with the order, and a graph replay.

Without a GPU the kernels run on CPU tensors under Triton's interpreter
when the program was started with ``TRITON_INTERPRET=1`` (tests, and anyone
checking the kernels without a GPU); otherwise the executor refuses to
start with a message that says what to do.

Precision: ``"fp32"`` (default) makes every ``tl.dot`` IEEE fp32, as PyTorch
does for fp32 matmuls by default; ``"tf32"`` lets them use tensor cores;
``"bf16"`` rounds the products' operands to bfloat16 for the tensor cores
and accumulates in fp32, while the weights (the master copy), activations
and deltas stay fp32 in memory and the update is applied in fp32: the
meaning ``--precision bf16`` has on the CPU executors.
"""

from __future__ import annotations

import functools
import math
import os
import subprocess
import sys

import numpy as np

from ..errors import ConfigError, install_hint
from ..network import Network
from ..optim import OPTIMIZERS, OptimizerConfig
from .base import Executor, OptimizerState

PRECISIONS = ("fp32", "tf32", "bf16")


def _interpreted() -> bool:
    """Whether Triton's interpreter is on (read by triton at its import)."""
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


@functools.lru_cache(maxsize=1)
def _cuda_present() -> bool:
    probe = subprocess.run([sys.executable, "-c", "import sys, torch; sys.exit(0 if "
                            "torch.cuda.is_available() else 3)"], capture_output=True,
                           timeout=300)
    return probe.returncode == 0

# Graphs kept per executor, one per (rows, gather) shape seen; beyond that
# steps run as plain launches (a trainer needs two).
_MAX_GRAPHS = 8

_INSTALL_HINT = install_hint("gpu")


def load_backend():
    """``(torch, gpu_kernels)``; a clear error when PyTorch or Triton is missing."""
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            f"executor 'gpu' needs PyTorch and Triton ({exc}); install them with: "
            f"{_INSTALL_HINT}") from exc
    from . import gpu_kernels

    return torch, gpu_kernels


def select_device(torch, kernels):
    """CPU tensors under the Triton interpreter, else the current CUDA device, else an error."""
    if kernels.INTERPRETED:
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    raise ConfigError(
        "executor 'gpu': PyTorch sees no CUDA GPU; train on the CPU with --executor "
        "serial, threads, blas or hybrid, or run the gpu kernels on the CPU (slowly, "
        "for checking) by starting the program with TRITON_INTERPRET=1 set")


# The factors a step's kernels read from device memory (see step_scalars);
# a value no step has, so that the first step always writes them.
NO_SCALARS = (float("nan"),) * 4


def step_scalars(config: OptimizerConfig, lr: float, n: int, t: int) -> tuple[float, ...]:
    """The factors of step ``t`` (from 1) on ``n`` rows at rate ``lr``, in float64 as optim.apply
    computes them: [product scale, keep, rate, Adam's second-moment correction].

    SGD: the product scale is lr / n (the update is fused into the product) and
    keep = 1 - lr * wd; every other rule stores the mean gradient (scale 1 / n)
    and its step kernel reads keep (adamw), lr (momentum, nesterov) or
    lr / (1 - b1^t) and 1 / sqrt(1 - b2^t) (adam, adamw).
    """
    keep = 1.0 - lr * config.weight_decay
    if config.name == "sgd":
        return (lr / n, keep, 0.0, 0.0)
    if config.name in ("momentum", "nesterov"):
        return (1.0 / n, keep, lr, 0.0)
    return (1.0 / n, keep, lr / (1.0 - config.beta1 ** t),
            1.0 / math.sqrt(1.0 - config.beta2 ** t))


def _check_kernels_for(network: Network, kernels) -> None:
    """A one-line error for a network the kernels cannot run."""
    for name in network.activations[:-1]:
        if name not in kernels.ACTIVATIONS:
            raise ConfigError(
                f"activation {name!r}: the gpu executor has kernels for "
                f"{', '.join(kernels.ACTIVATIONS)}")
    if network.activations[-1] not in kernels.OUTPUT_ACTIVATIONS:
        raise ConfigError(
            f"output activation {network.activations[-1]!r}: the gpu executor has kernels "
            f"for {', '.join(kernels.OUTPUT_ACTIVATIONS)}")
    if network.activations[-1] == "softmax" and network.sizes[-1] > kernels.MAX_ROW_BLOCK:
        raise ConfigError(
            f"softmax output of {network.sizes[-1]} units: the gpu executor holds a row "
            f"in one block, at most {kernels.MAX_ROW_BLOCK} units")


class GpuExecutor(Executor):
    """Forward, backward and update on one GPU, in Triton kernels, replayed from CUDA graphs.

    Parameters
    ----------
    network : Network
        Built-in activations only (sigmoid, tanh, relu, linear; softmax output
        of at most ``gpu_kernels.MAX_ROW_BLOCK`` units).
    params : (n_params,) float32 array
        Copied to the device.
    batch_size : int
        The largest batch ``step`` will be given.
    threads : int
        Must be 1: the parallelism is the GPU's.
    precision : {"fp32", "tf32", "bf16"}
    cuda_graphs : bool
        Capture steps in CUDA graphs (on a GPU; ignored under the interpreter).
    autotune : bool
        Choose each product's tiles, warps and stages by measurement at the
        first step of ``batch_size`` rows, cached on disk per GPU model
        (:mod:`.gpu_tuning`); on a GPU only, else the fixed heuristic.
    """

    name = "gpu"
    requires = ("torch", "triton")
    extra = "gpu"
    device = "gpu"
    precisions = PRECISIONS
    resident_data = True
    optimizers = OPTIMIZERS

    @classmethod
    def unavailable(cls) -> str | None:
        """Missing PyTorch or Triton, or no CUDA GPU (asked in a process of its own,
        so that this one stays free of torch); the interpreter counts as a GPU."""
        reason = super().unavailable()
        if reason is None and not _interpreted() and not _cuda_present():
            reason = ("PyTorch sees no CUDA GPU (TRITON_INTERPRET=1 runs the kernels on "
                      "the CPU, for checking)")
        return reason

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, precision: str = "fp32", cuda_graphs: bool = True,
                 autotune: bool = True, optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        super().__init__(network, params, batch_size=batch_size, threads=threads)
        if threads != 1:
            raise ConfigError(
                f"threads {threads}: the gpu executor runs on one GPU; leave threads at 1")
        if precision not in PRECISIONS:
            raise ConfigError(
                f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
        params = np.asarray(params)
        if params.dtype != np.float32 or params.shape != (network.n_params,):
            raise ConfigError(
                f"parameters of dtype {params.dtype} and shape {params.shape}: the gpu "
                f"executor trains float32 ({network.n_params},) parameters")
        torch, kernels = load_backend()
        _check_kernels_for(network, kernels)
        self._torch, self._k = torch, kernels
        self.precision = precision
        self._dot = kernels.PRECISIONS[precision]
        self.device = device = select_device(torch, kernels)
        self._graphs_on = cuda_graphs and device.type == "cuda"
        self._graphs: dict[tuple[int, bool], object] = {}
        self._autotune = autotune and device.type == "cuda"
        self._closed = False

        f32 = dict(dtype=torch.float32, device=device)
        B, sizes = batch_size, network.sizes
        self._params = torch.tensor(params, **f32)                     # (P,)
        self._layers = network.layers(self._params)                    # [(W (n_in, n_out), b)]
        self._x = torch.empty((B, sizes[0]), **f32)                    # the batch's inputs
        self._y = torch.empty((B, sizes[-1]), **f32)                   # ... and targets
        self._a = [torch.empty((B, w), **f32) for w in sizes[1:]]      # a[1..L]
        self._delta = [torch.empty((B, w), **f32) for w in sizes[1:]]  # delta[1..L]
        parts = kernels.max_loss_parts(B, sizes[-1])
        self._loss_parts = torch.zeros(parts, **f32)                   # one per output tile
        self._loss = torch.zeros(1, **f32)                             # the step's loss sum
        self._total = torch.zeros(1, dtype=torch.float64, device=device)  # summed over steps
        # This step's factors, read by the kernels from memory (see step_scalars).
        self._scalars = torch.zeros(len(NO_SCALARS), **f32)
        self._scalars_value = NO_SCALARS
        if device.type == "cuda":                                      # staging for step()
            self._x_host = torch.empty((B, sizes[0]), dtype=torch.float32, pin_memory=True)
            self._y_host = torch.empty((B, sizes[-1]), dtype=torch.float32, pin_memory=True)
        else:                                                          # the buffers themselves
            self._x_host, self._y_host = self._x, self._y
        # Resident training set (load_data): inputs, targets, epoch order, batch indices.
        self._x_all = self._t_all = self._order = None
        self._idx = torch.empty(B, dtype=torch.int64, device=device)
        self._start_optimizer(optimizer or OptimizerConfig(), optimizer_state)

    def _start_optimizer(self, config: OptimizerConfig, state: OptimizerState | None) -> None:
        """The optimizer's buffers on the device: its state (uploaded, or zeros), a
        flat gradient and which entries are weights, for every rule but SGD."""
        torch, n_params = self._torch, self.network.n_params
        self.optimizer = config
        shape = (config.n_buffers, n_params)
        if state is None:
            state = OptimizerState(config.new_state(n_params), 0)
        buffers = np.asarray(state.buffers)
        if buffers.shape != shape or buffers.dtype.kind != "f" or not (
                isinstance(state.step, (int, np.integer)) and state.step >= 0):
            raise ConfigError(
                f"optimizer state of shape {buffers.shape} at step {state.step!r}: "
                f"--optimizer {config.name} keeps {shape} buffers and a step count >= 0")
        self._t = int(state.step)                                       # steps taken
        self._state = torch.tensor(buffers, dtype=torch.float32, device=self.device)
        self._grad = self._grad_layers = self._is_weight = None
        if config.name == "sgd":           # folded into the weight update kernel
            return
        self._grad = torch.empty(n_params, dtype=torch.float32, device=self.device)
        self._grad_layers = self.network.layers(self._grad)
        if config.weight_decay:
            is_weight = np.zeros(n_params, np.uint8)
            for weights, _ in self.network.layers(is_weight):
                weights[...] = 1
            self._is_weight = torch.tensor(is_weight, device=self.device)

    # ---- the executor contract ---------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray, lr: float, weights=None) -> float:
        n = x.shape[0]
        self._check_open()
        if weights is not None:
            raise ConfigError("the gpu executor does not take sample weights; use a CPU executor")
        if not 1 <= n <= self.batch_size:
            raise ConfigError(
                f"batch of {n} rows: expected 1 to {self.batch_size} (the batch size)")
        self._stage(x, y, n)
        row = step_scalars(self.optimizer, lr, n, self._t + 1)
        if row != self._scalars_value:      # a copy is a launch: only when they change
            self._scalars.copy_(self._torch.tensor(row, dtype=self._torch.float32))
            self._scalars_value = row
        self._run(n, gather=False)
        self._t += 1
        return float(self._loss.item())     # waits for the step: the contract's float

    def predict(self, x: np.ndarray) -> np.ndarray:
        self._check_open()
        if x.ndim != 2 or x.shape[1] != self.network.sizes[0]:
            raise ConfigError(f"inputs of shape {x.shape}: expected (n, {self.network.sizes[0]})")
        out = np.empty((x.shape[0], self.network.sizes[-1]), np.float32)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            n = chunk.shape[0]
            self._stage(chunk, None, n)
            self._forward(n, loss=None)
            out[start:start + n] = self._a[-1][:n].cpu().numpy()
        return out

    def params(self) -> np.ndarray:
        self._check_open()
        return self._params.to("cpu", copy=True).numpy()

    def optimizer_state(self) -> OptimizerState:
        self._check_open()
        return OptimizerState(self._state.to("cpu", copy=True).numpy(), self._t)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._graphs.clear()
        self._x_all = self._t_all = self._order = None

    # ---- the training set on the device ------------------------------------

    def load_data(self, x: np.ndarray, targets: np.ndarray) -> bool:
        """Copy the training set (n, n_in) and its targets (n, n_out) to the device, once.

        Returns False, keeping nothing, when it does not fit in the device's
        memory: the caller then hands batches to :meth:`step` instead.
        """
        self._check_open()
        torch = self._torch
        if x.shape[0] != targets.shape[0] or x.shape[1:] != (self.network.sizes[0],) \
                or targets.shape[1:] != (self.network.sizes[-1],):
            raise ConfigError(
                f"training set of shapes {x.shape} and {targets.shape}: expected "
                f"(n, {self.network.sizes[0]}) inputs and (n, {self.network.sizes[-1]}) targets")
        self._forget_gathering_graphs()      # they read the set this call replaces
        try:
            self._x_all = torch.tensor(x, dtype=torch.float32, device=self.device)
            self._t_all = torch.tensor(targets, dtype=torch.float32, device=self.device)
            self._order = torch.empty(x.shape[0], dtype=torch.int64, device=self.device)
        except torch.cuda.OutOfMemoryError:
            self._x_all = self._t_all = self._order = None
            torch.cuda.empty_cache()
            return False
        return True

    def _forget_gathering_graphs(self) -> None:
        """Drop the captured steps that gather from the resident training set (they
        hold its addresses); those of staged batches stay."""
        for key in [key for key in self._graphs if key[1]]:
            del self._graphs[key]

    @property
    def captured(self) -> tuple[tuple[int, bool], ...]:
        """The (rows, gather) shapes whose steps replay a captured CUDA graph."""
        return tuple(self._graphs)

    def train_epoch(self, order: np.ndarray, lr: float, on_step=None) -> float:
        """One epoch over the loaded training set in ``order`` (row indices); returns the loss sum.

        Batches are ``order[k*b:(k+1)*b]`` for the executor's batch size b, the
        last one smaller, exactly as a caller of :meth:`step` would cut them.
        ``on_step()`` is called after each step is enqueued (a progress bar);
        the device is waited for once, at the end.
        """
        self._check_open()
        if self._x_all is None:
            raise ConfigError("train_epoch: no training set on the device; call load_data first")
        torch = self._torch
        n, rows = order.shape[0], self._order.shape[0]
        if order.ndim != 1 or n > rows or (n and not 0 <= order.min() <= order.max() < rows):
            # checked here: a bad index on the device is an assert that ends the CUDA context
            raise ConfigError(
                f"order of shape {order.shape}: expected at most {rows} row indices "
                f"in 0..{rows - 1}")
        self._order[:n].copy_(torch.from_numpy(np.ascontiguousarray(order, np.int64)))
        starts = range(0, n, self.batch_size)
        rows = [min(self.batch_size, n - start) for start in starts]
        # Every step's factors in one upload; a step copies its row on the device
        # (only when it differs from the last: with SGD, at the last batch).
        table = [step_scalars(self.optimizer, lr, r, self._t + 1 + s) for s, r in enumerate(rows)]
        on_device = torch.tensor(table, dtype=torch.float32, device=self.device)
        self._total.zero_()
        for s, start in enumerate(starts):
            self._idx[:rows[s]].copy_(self._order[start:start + rows[s]])
            if table[s] != self._scalars_value:
                self._scalars.copy_(on_device[s])
                self._scalars_value = table[s]
            self._run(rows[s], gather=True)
            self._t += 1
            if on_step is not None:
                on_step()
        return float(self._total.item())    # the epoch's one wait for the device

    # ---- the step ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("the gpu executor is closed")

    def _stage(self, x: np.ndarray, y: np.ndarray | None, n: int) -> None:
        """Host rows into the device buffers (through pinned memory on a GPU)."""
        if x.shape[1:] != (self.network.sizes[0],) or (
                y is not None and y.shape != (n, self.network.sizes[-1])):
            raise ConfigError(
                f"batch of shapes {x.shape} and {None if y is None else y.shape}: expected "
                f"(n, {self.network.sizes[0]}) inputs and (n, {self.network.sizes[-1]}) targets")
        # The previous step's copies out of the pinned buffers are done: step,
        # predict and train_epoch all wait for the device before returning.
        np.copyto(self._x_host[:n].numpy(), x, casting="same_kind")
        if y is not None:
            np.copyto(self._y_host[:n].numpy(), y, casting="same_kind")
        if self._x_host is not self._x:
            self._x[:n].copy_(self._x_host[:n], non_blocking=True)
            if y is not None:
                self._y[:n].copy_(self._y_host[:n], non_blocking=True)

    def _run(self, n: int, gather: bool) -> None:
        """The step on rows [0, n): a graph replay when one is captured, else plain launches."""
        key = (n, gather)
        graph = self._graphs.get(key)
        if graph is not None:
            graph.replay()
            return
        if self._autotune and n == self.batch_size:
            self._tune(n)                    # before any capture: it launches and waits
        self._launch_step(n, gather)         # the first time also compiles the kernels
        if self._graphs_on and len(self._graphs) < _MAX_GRAPHS:
            self._graphs[key] = self._capture(n, gather)

    def _tune(self, n: int) -> None:
        """Measure (or read from the disk cache) the tiles of every product at the batch
        size, once; an epoch's smaller last batch keeps the heuristic's tiles."""
        from . import gpu_tuning

        torch = self._torch
        cache = gpu_tuning.TileCache(gpu_tuning.cache_path(gpu_tuning.device_name(
            torch, self.device)))
        gpu_tuning.tune_step(self._k, self.network.sizes, n, self._dot,
                             self.network.activations[-1] == "softmax", self.device, cache)
        self._autotune = False

    def _capture(self, n: int, gather: bool):
        """Record the step's launches in a CUDA graph. Capturing runs nothing."""
        torch = self._torch
        graph = torch.cuda.CUDAGraph()
        torch.cuda.synchronize()
        with torch.cuda.graph(graph):
            self._launch_step(n, gather)
        return graph

    def _launch_step(self, n: int, gather: bool) -> None:
        if gather:                            # the batch's rows of the resident training set
            idx = self._idx[:n]
            self._torch.index_select(self._x_all, 0, idx, out=self._x[:n])
            self._torch.index_select(self._t_all, 0, idx, out=self._y[:n])
        self._forward(n, loss=self.network.loss)
        self._backward(n)

    def _forward(self, n: int, loss: str | None) -> None:
        """a[1..L] for rows [0, n); with ``loss``, also delta[L] and the loss."""
        k, acts = self._k, self.network.activations
        a_prev = self._x[:n]
        last = len(self._layers) - 1
        for l, (weights, bias) in enumerate(self._layers[:-1]):
            k.forward_layer(a_prev, weights, bias, self._a[l][:n], acts[l], self._dot)
            a_prev = self._a[l][:n]
        weights, bias = self._layers[last]
        parts = k.forward_output_delta(
            a_prev, weights, bias, self._y[:n], self._a[last][:n], self._delta[last][:n],
            self._loss_parts, acts[last], loss, self._dot)
        if loss is not None:
            k.loss_total(parts, self._loss, self._total)

    def _backward(self, n: int) -> None:
        """Hidden deltas and fused updates, last layer first; W_l is read before it changes."""
        k, acts = self._k, self.network.activations
        for l in range(len(self._layers) - 1, -1, -1):
            weights, bias = self._layers[l]
            a_prev = self._x[:n] if l == 0 else self._a[l - 1][:n]
            delta = self._delta[l][:n]
            if l > 0:
                k.hidden_delta(delta, weights, a_prev, self._delta[l - 1][:n], acts[l - 1],
                               self._dot)
            if self._grad is None:         # SGD: the update is the product's epilogue
                update = "sgd-decay" if self.optimizer.weight_decay else "sgd"
                k.weight_update(a_prev, delta, weights, bias, self._scalars, self._dot,
                                update=update)
            else:                          # the mean gradient, for the optimizer step
                grad_w, grad_b = self._grad_layers[l]
                k.weight_gradient(a_prev, delta, grad_w, grad_b, self._scalars, self._dot)
        if self._grad is not None:
            k.optimizer_step(self.optimizer, self._params, self._grad, self._state,
                             self._is_weight, self._scalars)
