"""The blas executor: one shard, the matrix products on ``threads`` BLAS threads (the seed's "Fast Parallel").

The serial algorithm with a multithreaded BLAS: forward, deltas, and the
update folded into the gradient GEMM, exactly the serial executor's calls.
Only the GEMMs run in parallel, inside OpenBLAS; the element-wise work stays
on the caller's core, which is what limits this executor at small batches.

Every product goes through :mod:`..gemm`, i.e. SciPy's OpenBLAS. NumPy
bundles a second OpenBLAS: with both libraries allowed T threads, each keeps its own pool, and an OpenBLAS
worker busy-waits for a while after every call, so an idle pool spins on
the cores the other one needs (measured on 2 cores, Net-1h, batch 256: a
step mixing the two libraries at 2 threads ran at 0.67x serial). Routing
every product through one library avoids that.

This is :class:`~.threads.ThreadsExecutor` with one worker (no extra Python
threads; its barrier has one party and never blocks) and ``threads`` BLAS
threads: the same code path as ``hybrid`` 1 x T.

The BLAS thread limit is process-wide; it holds for the executor's lifetime
and ``close`` restores the previous limits.
"""

from __future__ import annotations

import numpy as np

from ..network import Network
from ..optim import OptimizerConfig
from .base import Layout, OptimizerState
from .threads import ThreadsExecutor


class BlasExecutor(ThreadsExecutor):
    """One shard; forward, backward and update with BLAS on ``threads`` threads."""

    name = "blas"

    @classmethod
    def layout(cls, cores: int, blas_threads: int | None = None) -> Layout:
        """One worker whose BLAS calls use every core."""
        return Layout(ranks=None, workers=1, blas_threads=cores, threads=cores)

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, precision: str = "fp32",
                 optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        super().__init__(network, params, batch_size=batch_size, threads=1,
                         blas_threads=threads, precision=precision,
                         optimizer=optimizer, optimizer_state=optimizer_state)
        self.threads = threads   # the executor's parallelism: BLAS threads, one worker
