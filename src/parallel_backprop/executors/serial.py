"""The serial executor: the reference backprop on one thread, BLAS pinned to one.

The seed's "Fast Serial (BLAS)" and the baseline every speedup is measured
against, so it must be honest: preallocated buffers, in-place activations,
the SGD update folded into the gradient products, no per-step allocation.
"""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_limits

from ..backprop import Workspace, backward, forward
from ..network import Network
from .base import Executor


class SerialExecutor(Executor):
    name = "serial"

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1):
        super().__init__(network, params, batch_size=batch_size, threads=1)
        self._params = np.array(params, copy=True)
        self._layers = network.layers(self._params)
        self._ws = Workspace(network, batch_size, self._params.dtype)
        self._blas_limit = threadpool_limits(limits=1, user_api="blas")

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        forward(self._layers, x, self._ws)
        # The update W -= lr/n * dW is folded into the gradient GEMM.
        return backward(self._layers, x, y, self._ws, update_scale=lr / x.shape[0])

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = np.empty((x.shape[0], self.network.sizes[-1]), self._params.dtype)
        for start in range(0, x.shape[0], self.batch_size):
            chunk = x[start:start + self.batch_size]
            out[start:start + chunk.shape[0]] = forward(self._layers, chunk, self._ws)
        return out

    def params(self) -> np.ndarray:
        return self._params.copy()

    def close(self) -> None:
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None
