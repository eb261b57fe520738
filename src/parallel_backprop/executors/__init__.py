"""Executors by name: where a training step runs.

``make_executor("serial", network, params, batch_size=128)`` returns a context
manager with ``step``, ``predict`` and ``params`` (see :mod:`.base`, which
also declares what an executor says about itself).

Adding an executor is one module with an :class:`Executor` subclass and one
line here (or a call to :func:`register_executor` from anywhere): the
command line, the benchmark harness, the study and the estimators read this
table and ask each class what it needs and how it uses a machine.
"""

from __future__ import annotations

import numpy as np

from ..blas_choice import check_blas, select_blas
from ..errors import ConfigError
from ..network import Network
from ..optim import OptimizerConfig
from ..precision import bf16_unavailable
from .base import Executor, Layout, OptimizerState
from .blas import BlasExecutor
from .gpu import GpuExecutor
from .hybrid import HybridExecutor
from .mpi import MPIExecutor
from .serial import SerialExecutor
from .threads import ThreadsExecutor

EXECUTORS: dict[str, type[Executor]] = {}
# The executor every speedup is measured against, and the default.
BASELINE = "serial"


def register_executor(cls: type[Executor]) -> type[Executor]:
    """Add ``cls`` to the table under ``cls.name``; usable as a class decorator."""
    if not (isinstance(cls, type) and issubclass(cls, Executor)):
        raise ConfigError(f"register_executor({cls!r}): expected an Executor subclass")
    EXECUTORS[cls.name] = cls
    return cls


for _cls in (SerialExecutor, ThreadsExecutor, BlasExecutor, HybridExecutor,
             MPIExecutor,      # mpi4py imported only when one is created
             GpuExecutor):     # torch and triton imported only when one is created
    register_executor(_cls)


def all_precisions() -> tuple[str, ...]:
    """Every precision some executor offers, the default first."""
    return tuple(dict.fromkeys(p for cls in EXECUTORS.values() for p in cls.precisions))


def executor_class(name: str) -> type[Executor]:
    """The class registered as ``name``, or a one-line error listing the names."""
    if name not in EXECUTORS:
        raise ConfigError(f"executor {name!r}: expected one of {', '.join(EXECUTORS)}")
    return EXECUTORS[name]


def check_options(name: str, *, threads: int = 1, blas_threads: int = 1,
                  precision: str = "fp32", optimizer: OptimizerConfig | None = None,
                  blas: str | None = None) -> type[Executor]:
    """Validate what the executor ``name`` is asked for; returns its class.

    The one place these combinations are checked: the command line, the
    training configuration and the estimators all come through here.
    """
    cls = executor_class(name)
    if blas is not None:
        check_blas(blas)
    for what, value in (("threads", threads), ("blas threads", blas_threads)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{what} {value!r}: expected a positive integer")
    if precision not in cls.precisions:
        raise ConfigError(f"precision {precision!r}: expected one of "
                          f"{', '.join(cls.precisions)} for executor {name!r}")
    if precision == "bf16" and cls.device == "cpu":
        reason = bf16_unavailable()
        if reason is not None:
            raise ConfigError(f"--precision bf16: {reason}")
    if optimizer is not None and optimizer.name not in cls.optimizers:
        raise ConfigError(f"--optimizer {optimizer.name}: executor {name!r} applies "
                          f"{', '.join(cls.optimizers)}")
    # An executor that lists plain SGD alone folds it into its product and takes no
    # ``optimizer=``: weight decay needs one that applies the update rules.
    if optimizer is not None and not optimizer.is_plain_sgd and cls.optimizers == ("sgd",):
        raise ConfigError(f"--weight-decay {optimizer.weight_decay:g}: executor {name!r} "
                          "applies plain SGD only; leave weight decay at 0")
    if blas_threads != 1 and not cls.nested_blas:
        nested = [n for n, c in EXECUTORS.items() if c.nested_blas]
        raise ConfigError(
            f"blas threads {blas_threads}: only the {', '.join(nested) or 'no'} executor takes "
            f"BLAS threads per worker; for executor {name!r} leave it at 1 (use threads)")
    return cls


def make_executor(name: str, network: Network, params: np.ndarray, *, batch_size: int,
                  threads: int = 1, blas_threads: int = 1, precision: str = "fp32",
                  optimizer: OptimizerConfig | None = None,
                  optimizer_state: OptimizerState | None = None,
                  blas: str | None = None) -> Executor:
    """Create the executor ``name``, holding a copy of ``params``.

    ``threads`` is the executor's degree of parallelism (workers for
    ``threads`` and ``hybrid``, workers per rank for ``mpi``, BLAS threads for
    ``blas``); ``blas_threads`` is the BLAS threads inside each worker of an
    executor that nests them (``hybrid``). ``precision`` is one of the
    executor's ``precisions``; the CPU executors compute in the dtype of ``params``.
    ``optimizer`` (default plain SGD) is one of the executor's ``optimizers``,
    continued from ``optimizer_state`` when given. ``blas`` (``auto``,
    ``openblas``, ``mkl``) routes every BLAS call of the process through that
    library from now on (see :func:`..blas_choice.select_blas`); None keeps
    the one in use.
    """
    cls = check_options(name, threads=threads, blas_threads=blas_threads, precision=precision,
                        optimizer=optimizer, blas=blas)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch size {batch_size!r}: expected a positive integer")
    if blas is not None and cls.device == "cpu":
        select_blas(blas, precision)
    options = {}
    if cls.nested_blas:
        options["blas_threads"] = blas_threads
    if len(cls.precisions) > 1:
        options["precision"] = precision
    if optimizer is not None and not optimizer.is_plain_sgd:
        options.update(optimizer=optimizer, optimizer_state=optimizer_state)
    return cls(network, params, batch_size=batch_size, threads=threads, **options)


__all__ = ["BASELINE", "EXECUTORS", "BlasExecutor", "Executor", "GpuExecutor", "HybridExecutor",
           "Layout", "MPIExecutor", "OptimizerState", "SerialExecutor", "ThreadsExecutor", "all_precisions",
           "check_options", "executor_class", "make_executor", "register_executor"]
