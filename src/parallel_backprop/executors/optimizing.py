"""An optimizer on the host: the CPU executors' gradient, scratch and state buffers, viewed per layer.

Plain SGD stays folded into the gradient product (:func:`..backprop.update`:
no gradient written), and SGD with weight decay too, the weights first
scaled by ``1 - lr * wd``. Every other rule needs the gradient MEAN written
out: :func:`..backprop.layer_gradient` with ``scale = 1 / batch`` into a
flat buffer laid out like the parameters, each worker its column blocks of
every layer. Then the rule, in one of two ways:

* compiled (:data:`..optim.native` built): on the same column blocks, by
  the worker that has just written them (:meth:`HostOptimizer.columns`),
  while its gradient block is still in cache. The compiled pass walks a
  column block's rows as fast as a contiguous range, so no worker waits for
  another: the threads executor needs no barrier before the update.
* NumPy's passes: once every column is written (a barrier), on a flat range
  per worker (:meth:`HostOptimizer.apply_flat`), because NumPy's ufuncs on a
  column block of W (a strided view) ran 3x slower per element than on a
  contiguous range (measured on 2 cores, Net-1h: half of W's columns 2.6 ms,
  half of its entries as one range 0.8 ms).

Ranges and blocks are cut at weight/bias boundaries (weight decay is for
weights only) and are disjoint, so no update needs a lock. The MPI executor
sums the gradient over ranks first and always applies the rule on flat
ranges (compiled where it can).

The step count ``t`` is the executor's: it advances once per step, before
the step's jobs are posted, and every worker is handed the step's ``t``.
"""

from __future__ import annotations

import numpy as np

from .. import optim
from ..backprop import Workspace, accumulate, layer_gradient, product_operands, update
from ..errors import ConfigError
from ..network import Network
from ..optim import OptimizerConfig
from .base import OptimizerState

# optim.numpy_apply makes ~13 passes over its slice (Adam); in blocks of this
# many entries the five arrays a block touches (256 KB each in float32) stay
# in the L2 cache between passes. Measured on 2 cores (Xeon, 2 MB L2 per
# core), Adam over Net-1h's 814,090 parameters: 2.7 ms in one call, 1.75 ms
# in blocks of 65,536 (1.97 ms at 16,384, where the calls' overhead shows).
# The compiled pass reads each element once and takes a range whole.
BLOCK = 65536


def check_weights(weights: np.ndarray | None, n: int) -> np.ndarray | None:
    """Per-row sample weights (n,) as given, or a one-line error naming the shape."""
    if weights is None:
        return None
    if not (isinstance(weights, np.ndarray) and weights.shape == (n,)
            and weights.dtype.kind == "f"):
        raise ConfigError(f"sample weights of shape {np.shape(weights)}: expected float ({n},), "
                          "one per row of the batch")
    return weights


class HostOptimizer:
    """The update rule of a CPU executor over its flat parameters ``params`` (n_params,).

    ``fold_sgd``: SGD (with or without weight decay) is folded into the
    gradient product; an executor that must sum gradients first (mpi) says
    False and passes its reduction buffer as ``gradient``.

    :attr:`flat_pass`: whether the executor must call :meth:`apply_flat`
    once every column of the gradient is written (else :meth:`columns` has
    applied the rule already).
    """

    def __init__(self, network: Network, params: np.ndarray, config: OptimizerConfig | None,
                 state: OptimizerState | None, *, fold_sgd: bool = True,
                 gradient: np.ndarray | None = None):
        self.config = config = config or OptimizerConfig()
        n_params, dtype = network.n_params, params.dtype
        self.state = config.new_state(n_params, dtype)              # (k, P)
        self.t = 0
        if state is not None:
            buffers = np.asarray(state.buffers)
            if buffers.shape != self.state.shape:
                raise ConfigError(
                    f"optimizer state of shape {buffers.shape}: expected {self.state.shape} "
                    f"for --optimizer {config.name} and net {network.spec}")
            self.state[...] = buffers
            self.t = int(state.step)
        self.folded = fold_sgd and config.name == "sgd"
        applies = not (self.folded or config.is_plain_sgd)
        # Momentum's velocity v := mu * v + g is the gradient GEMM with beta = mu.
        self.folds_velocity = fold_sgd and config.name == "momentum"
        # The rule on each worker's columns as soon as they are written (compiled).
        self.in_columns = applies and fold_sgd and optim.native is not None
        self.flat_pass = applies and not self.in_columns
        writes_gradient = applies and not self.folds_velocity
        self.grad = (gradient if gradient is not None or not writes_gradient
                     else np.empty(n_params, dtype))
        self.scratch = np.empty(n_params, dtype) if self.flat_pass else None
        self._params = params
        self.layers = network.layers(params)
        self.grad_layers = None if self.grad is None else network.layers(self.grad)
        self.state_layers = [network.layers(buffer) for buffer in self.state]
        self._block_views: dict[tuple[int, int, int], list] = {}
        self._bounds = _weight_bias_bounds(network)

    def next_step(self) -> int:
        """Advance the step count; returns this step's ``t`` (from 1)."""
        self.t += 1
        return self.t

    def snapshot(self) -> OptimizerState:
        """A copy of the state buffers and the steps taken."""
        return OptimizerState(self.state.copy(), self.t)

    def columns(self, l: int, c0: int, c1: int, ws: Workspace, x: np.ndarray, n: int,
                lr: float, batch: int, t: int) -> None:
        """Layer l's output columns [c0, c1) from the first ``n`` rows of ``ws`` (``x`` the
        input), ``batch`` the global rows, at step ``t``.

        Folded SGD: the update of those columns. Momentum: their velocity (the
        gradient folded into it). Otherwise: those columns of the gradient
        mean. Then the rule on them (:attr:`in_columns`) or, later,
        :meth:`apply_flat`; once they are updated, their bf16 copy is
        refreshed (in a bf16 workspace).
        """
        weights, bias = self.layers[l]
        a_prev, delta = product_operands(ws, x, l, n)
        bias_delta = ws.bias_rows(l, n)[:, c0:c1]
        if self.folded:
            if self.config.weight_decay:      # p(1 - lr wd) - lr g = p - lr (g + wd p)
                weights[:, c0:c1] *= 1.0 - lr * self.config.weight_decay
            update(weights[:, c0:c1], bias[c0:c1], a_prev, delta[:, c0:c1], lr / batch,
                   ws.bias_step[l][c0:c1], bias_delta)
        elif self.folds_velocity:
            velocity_weights, velocity_bias = self.state_layers[0][l]
            accumulate(a_prev, delta[:, c0:c1], velocity_weights[:, c0:c1],
                       velocity_bias[c0:c1], 1.0 / batch, self.config.momentum,
                       ws.bias_step[l][c0:c1], bias_delta)
            if self.in_columns:
                for (p, v), decay in self._blocks(l, c0, c1):
                    optim.descend(p, v, lr, self.config.weight_decay if decay else 0.0, None)
        else:
            grad_weights, grad_bias = self.grad_layers[l]
            layer_gradient(a_prev, delta[:, c0:c1], grad_weights[:, c0:c1], grad_bias[c0:c1],
                           1.0 / batch, bias_delta)
            if self.in_columns:
                for (p, g, *state), decay in self._blocks(l, c0, c1):
                    optim.apply(self.config, p, g, state, lr, t, decay=decay, scratch=None)
        if self.folded or self.in_columns:
            ws.refresh_columns(l, c0, c1)

    def _blocks(self, l: int, c0: int, c1: int) -> list:
        """Columns [c0, c1) of layer l's W, then of its b: ``([views], is_weights)``, the
        views of the parameters, of the gradient (if written) and of each state buffer.

        Made once per block (a worker's blocks are the same every step): slicing
        a dozen views per step costs more than a small layer's update.
        """
        key = (l, c0, c1)
        blocks = self._block_views.get(key)
        if blocks is None:             # workers have disjoint keys: no lock needed
            layered = [self.layers, *([] if self.grad is None else [self.grad_layers]),
                       *self.state_layers]
            cuts = ((slice(None), slice(c0, c1)), slice(c0, c1))
            blocks = [([views[l][part][cut] for views in layered], part == 0)
                      for part, cut in enumerate(cuts)]
            self._block_views[key] = blocks
        return blocks

    def segments(self, lo: int, hi: int) -> list[tuple[int, int, bool]]:
        """Flat range [lo, hi) cut at weight/bias boundaries: ``(start, stop, is_weights)``."""
        return [(max(lo, a), min(hi, b), decay) for a, b, decay in self._bounds
                if max(lo, a) < min(hi, b)]

    def apply_flat(self, segments: list[tuple[int, int, bool]], lr: float, t: int,
                   ws: Workspace) -> None:
        """:func:`..optim.apply` on flat ranges of the parameters from :attr:`grad` (the mean);
        then those ranges of ``ws``'s bf16 copy refreshed (in a bf16 workspace)."""
        for lo, hi, decay in segments:
            if self.folds_velocity:           # v already holds mu * v + g
                optim.descend(self._params[lo:hi], self.state[0][lo:hi], lr,
                              self.config.weight_decay if decay else 0.0,
                              None if self.scratch is None else self.scratch[lo:hi])
            elif optim.native is not None:    # one pass: no blocks needed, no scratch
                optim.apply(self.config, self._params[lo:hi], self.grad[lo:hi],
                            [buffer[lo:hi] for buffer in self.state], lr, t, decay=decay,
                            scratch=None)
            else:
                arrays = [self._params, self.grad, self.scratch, *self.state]
                self._apply_blocks([array[lo:hi] for array in arrays], lr, t, decay)
            ws.refresh(lo, hi)

    def _apply_blocks(self, arrays: list[np.ndarray], lr: float, t: int, decay: bool) -> None:
        """:func:`..optim.apply` on ``arrays`` = [p, g, scratch, *state], flat ranges of one
        length, in blocks of ``BLOCK`` entries (see there)."""
        for lo in range(0, arrays[0].shape[0], BLOCK):
            p, g, scratch, *state = (array[lo:lo + BLOCK] for array in arrays)
            optim.numpy_apply(self.config, p, g, state, lr, t, decay=decay, scratch=scratch)


def _weight_bias_bounds(network: Network) -> list[tuple[int, int, bool]]:
    """Flat ranges of every layer's W and b, in order: ``(start, stop, is_weights)``."""
    bounds, offset = [], 0
    for n_in, n_out in zip(network.sizes, network.sizes[1:]):
        bounds.append((offset, offset + n_in * n_out, True))
        offset += n_in * n_out
        bounds.append((offset, offset + n_out, False))
        offset += n_out
    return bounds
