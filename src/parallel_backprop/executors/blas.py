"""The blas executor: one shard, the matrix products on ``threads`` BLAS threads (the seed's "Fast Parallel").

The serial algorithm with a multithreaded BLAS: forward, backward into a
gradient buffer, then ``params -= lr/n * gradient``. Only the GEMMs run in
parallel, inside OpenBLAS; the element-wise work stays on the caller's core.

Why not :class:`SerialExecutor`'s step with its fused update? That update
is a ``scipy.linalg.blas`` GEMM, and SciPy bundles its OWN OpenBLAS, separate
from NumPy's (see FINDINGS). With both allowed T threads, each library keeps
its own pool of worker threads, and an OpenBLAS worker busy-waits for a
while after every call: the idle pool spins on the cores the other pool
needs. Measured on 2 cores, Net-1h, batch 256, samples/s relative to
serial: fused step with both pools at 2 threads 0.67x (cpu/wall 2.0, half
of it spinning), fused with only NumPy's at 2 1.33x, gradient path (NumPy's
BLAS only) 1.80x. So this executor keeps every product in NumPy's BLAS and
pays one extra pass over the parameters for the separate update.

This is :class:`~.threads.ThreadsExecutor` with one worker (no extra Python
threads; its barrier has one party and never blocks) and ``threads`` BLAS
threads: the same code path as ``hybrid`` 1 x T.

threadpoolctl's limit is process-wide; it holds for the executor's lifetime
and ``close`` restores the previous limits.
"""

from __future__ import annotations

import numpy as np

from ..network import Network
from .threads import ThreadsExecutor


class BlasExecutor(ThreadsExecutor):
    """One shard; forward, backward and update with BLAS on ``threads`` threads."""

    name = "blas"

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1):
        super().__init__(network, params, batch_size=batch_size, threads=1,
                         blas_threads=threads)
        self.threads = threads   # the executor's parallelism: BLAS threads, one worker
