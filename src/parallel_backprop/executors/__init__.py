"""Executors by name: where a training step runs.

``make_executor("serial", network, params, batch_size=128)`` returns a context
manager with ``step``, ``predict`` and ``params`` (see :mod:`.base`).
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..network import Network
from .base import Executor
from .blas import BlasExecutor
from .gpu import PRECISIONS, GpuExecutor
from .hybrid import HybridExecutor
from .mpi import MPIExecutor
from .serial import SerialExecutor
from .threads import ThreadsExecutor

EXECUTORS: dict[str, type[Executor]] = {
    "serial": SerialExecutor,
    "threads": ThreadsExecutor,
    "blas": BlasExecutor,
    "hybrid": HybridExecutor,
    "mpi": MPIExecutor,        # mpi4py imported only when one is created
    "gpu": GpuExecutor,        # torch and triton imported only when one is created
}


def make_executor(name: str, network: Network, params: np.ndarray, *, batch_size: int,
                  threads: int = 1, blas_threads: int = 1,
                  precision: str = "fp32") -> Executor:
    """Create the executor ``name``, holding a copy of ``params``.

    ``threads`` is the executor's degree of parallelism (workers for
    ``threads`` and ``hybrid``, workers per rank for ``mpi``, BLAS threads for
    ``blas``); ``blas_threads`` is the BLAS threads inside each ``hybrid`` worker.
    ``precision`` is the gpu executor's matrix-product precision (fp32 or tf32);
    the CPU executors compute in the dtype of ``params``.
    """
    if name not in EXECUTORS:
        raise ConfigError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    if batch_size < 1:
        raise ConfigError(f"batch size {batch_size}: expected a positive integer")
    if threads < 1:
        raise ConfigError(f"threads {threads}: expected a positive integer")
    if not (isinstance(blas_threads, int) and blas_threads >= 1):
        raise ConfigError(f"blas threads {blas_threads!r}: expected a positive integer")
    if precision not in PRECISIONS:
        raise ConfigError(f"precision {precision!r}: expected one of {', '.join(PRECISIONS)}")
    if precision != "fp32" and name != "gpu":
        raise ConfigError(f"precision {precision!r}: only the gpu executor has a tf32 mode; "
                          f"executor {name!r} computes in the parameters' dtype")
    if name == "hybrid":
        return HybridExecutor(network, params, batch_size=batch_size, threads=threads,
                              blas_threads=blas_threads)
    if blas_threads != 1:
        raise ConfigError(
            f"blas threads {blas_threads}: only the hybrid executor takes BLAS threads per "
            f"worker; for executor {name!r} leave it at 1 (use threads)")
    if name == "gpu":
        return GpuExecutor(network, params, batch_size=batch_size, threads=threads,
                           precision=precision)
    return EXECUTORS[name](network, params, batch_size=batch_size, threads=threads)


__all__ = ["EXECUTORS", "BlasExecutor", "Executor", "GpuExecutor", "HybridExecutor",
           "MPIExecutor", "SerialExecutor", "ThreadsExecutor", "make_executor"]
