"""The hybrid executor: shards across threads, BLAS threads inside each (the seed's Future Work).

:class:`ThreadsExecutor` with ``blas_threads`` BLAS threads per worker, so
``threads * blas_threads`` cores in all. Same algorithm, same fixed-order
reduction, same results as ``threads`` with the same number of workers (up
to BLAS's own rounding, which may depend on its thread count).

Caveat: NumPy's OpenBLAS has ONE pool of BLAS threads, shared by all
calling threads, and a pthreads build serialises multithreaded level-3
calls from different callers on a lock (``level3_lock`` in
driver/level3/level3_thread.c; read in the 0.3.5 sources, consistent with
the numbers below for the bundled 0.3.31). Nesting therefore only pays where cores
outnumber what either level can use. Measured on 2 cores, Net-1h, speedup
over serial at batch 128 / 256 / 1024: 2 workers x 1 BLAS thread
1.43 / 1.68 / 1.95 (the threads executor), 1 x 2 1.52 / 1.79 / 1.88 (what
the blas executor runs), 2 x 2 (oversubscribed) 1.20 / 1.23 / 1.26. Independent
GEMMs on the same machine: 2 callers x 1 thread 182 GFLOP/s, 1 x 2
167-176, 2 x 2 153-170: nesting adds nothing and costs a little.
"""

from __future__ import annotations

import numpy as np

from ..network import Network
from ..optim import OptimizerConfig
from .base import Layout, OptimizerState
from .threads import ThreadsExecutor


class HybridExecutor(ThreadsExecutor):
    """``threads`` data-parallel workers, each calling BLAS with ``blas_threads`` threads."""

    name = "hybrid"
    nested_blas = True

    @classmethod
    def layout(cls, cores: int, blas_threads: int | None = None) -> Layout | None:
        """Workers x BLAS threads = ``cores``, at least 2 x 2; None where no split exists.

        With fewer than two of either, hybrid IS the threads (T x 1) or the
        blas (1 x T) executor, which are measured as such.
        """
        if blas_threads is None:
            blas_threads = next((b for b in range(2, cores) if cores % b == 0
                                 and cores // b >= 2), None)
        if blas_threads is None or blas_threads < 2 or cores % blas_threads \
                or cores // blas_threads < 2:
            return None
        workers = cores // blas_threads
        return Layout(ranks=None, workers=workers, blas_threads=blas_threads, threads=workers,
                      executor_blas_threads=blas_threads)

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1, blas_threads: int = 1, precision: str = "fp32",
                 optimizer: OptimizerConfig | None = None,
                 optimizer_state: OptimizerState | None = None):
        super().__init__(network, params, batch_size=batch_size, threads=threads,
                         blas_threads=blas_threads, precision=precision,
                         optimizer=optimizer, optimizer_state=optimizer_state)
