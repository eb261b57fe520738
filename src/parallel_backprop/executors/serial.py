"""The serial executor: the reference backprop on one thread, BLAS pinned to one.

The seed's "Fast Serial (BLAS)" and the baseline every speedup is measured
against, so it must be honest: preallocated buffers, in-place activations,
the SGD update folded into the gradient products, no per-step allocation.
The other update rules of :mod:`..optim` write the gradient mean and apply
the rule layer by layer (:class:`.optimizing.HostOptimizer`).
"""

from __future__ import annotations

import numpy as np

from ..backprop import Workspace, deltas, forward
from ..gemm import blas_thread_limit
from ..network import Network
from ..optim import OPTIMIZERS, OptimizerConfig
from ..precision import PRECISIONS
from .base import Executor, OptimizerState
from .optimizing import HostOptimizer, check_weights


class SerialExecutor(Executor):
    name = "serial"
    precisions = PRECISIONS
    optimizers = OPTIMIZERS

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, precision: str = "fp32",
                 optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        super().__init__(network, params, batch_size=batch_size, threads=1)
        self.precision = precision
        self._params = np.array(params, copy=True)
        self._layers = network.layers(self._params)
        self._ws = Workspace(network, batch_size, self._params.dtype, precision, self._params)
        self._optimizer = HostOptimizer(network, self._params, optimizer, optimizer_state)
        self._everything = self._optimizer.segments(0, self._params.size)
        self._blas_limit = blas_thread_limit(1)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float,
             weights: np.ndarray | None = None) -> float:
        n, ws = x.shape[0], self._ws
        weights = check_weights(weights, n)
        t = self._optimizer.next_step()
        forward(self._layers, x, ws)
        loss = deltas(self._layers, x, y, ws, weights)
        # SGD: W -= lr/n * dW folded into the gradient GEMM (backprop.update);
        # the other rules: each layer's gradient mean, then the rule on that
        # layer (compiled) or, after the last layer, over every parameter (NumPy).
        for l, (_, bias) in enumerate(self._layers):
            self._optimizer.columns(l, 0, bias.shape[0], ws, x, n, lr, n, t)
        if self._optimizer.flat_pass:
            self._optimizer.apply_flat(self._everything, lr, t, ws)
        return loss

    def step_input_dtype(self) -> np.dtype:
        return self._ws.input_dtype

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.network.sizes[-1]), self._params.dtype)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            out[start:start + chunk.shape[0]] = forward(self._layers, chunk, self._ws)
        return out

    def params(self) -> np.ndarray:
        return self._params.copy()

    def optimizer_state(self) -> OptimizerState:
        return self._optimizer.snapshot()

    def close(self) -> None:
        if self._blas_limit is not None:
            self._blas_limit.restore()
            self._blas_limit = None
