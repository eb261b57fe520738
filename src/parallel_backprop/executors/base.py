"""The executor contract between the trainer and wherever a step runs.

An executor owns the parameters for the duration of a run (on the host, on
other threads or ranks, or on a GPU) and offers three things: ``step`` (one
SGD step on a mini-batch), ``predict`` (the output layer's activations) and
``params`` (the flat parameters back on the host). The trainer knows nothing
else about it. Executors are context managers: entering may start threads or
pin BLAS, leaving undoes it.

Optional, the resident-data protocol: an executor whose class sets
``resident_data = True`` can keep the whole training set where it computes
(a GPU's memory): ``load_data(x, targets)`` takes it once and returns True
when it fits, then ``train_epoch(order, lr, on_step)`` runs the steps of
one shuffled epoch with no per-step copy from the host.

Executors also describe themselves, as class attributes and class methods,
so that the command line, the benchmark harness, the study and the
estimators ask instead of listing names: what an executor needs installed,
where it computes, which precisions it offers, whether it is one process or
many ranks, and how it spreads a given number of cores (:meth:`layout`).
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass

import numpy as np

from ..errors import install_hint
from ..network import Network


@dataclass(frozen=True)
class OptimizerState:
    """Where an optimizer stands: its buffers (k, n_params) and the steps it has taken."""

    buffers: np.ndarray
    step: int


@dataclass(frozen=True)
class Layout:
    """How an executor uses ``cores`` cores of a machine.

    ranks          processes started by mpiexec; None: this process only
    workers        data-parallel workers per process
    blas_threads   BLAS threads per worker: the thread variables of each process
    threads        the ``threads=`` the executor is created with
    executor_blas_threads  the ``blas_threads=`` it is created with
    """

    ranks: int | None
    workers: int
    blas_threads: int
    threads: int
    executor_blas_threads: int = 1

    @property
    def cores(self) -> int:
        """Cores busy when every thread computes."""
        return (self.ranks or 1) * self.workers * self.blas_threads


class Executor:
    """Base class: subclasses implement ``step``, ``predict`` and ``params``."""

    name = "base"
    # Modules beyond the core install, and the pip extra that brings them.
    requires: tuple[str, ...] = ()
    extra: str = ""
    # "cpu", or "gpu": the parallelism is a device's, not the CPU's cores.
    device = "cpu"
    # Matrix-product precisions; the first is the default.
    precisions: tuple[str, ...] = ("fp32",)
    # Many processes (MPI ranks), each running the same program.
    distributed = False
    # The resident-data protocol above (``load_data``, ``train_epoch``).
    resident_data = False
    # Takes ``blas_threads=``: BLAS threads inside each of its workers.
    nested_blas = False
    # Update rules it applies (see ..optim); an executor offering more than plain SGD
    # takes ``optimizer=`` (an OptimizerConfig) and ``optimizer_state=`` (a saved
    # OptimizerState to continue from) and implements ``optimizer_state()``.
    optimizers: tuple[str, ...] = ("sgd",)

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1):
        self.network = network
        self.batch_size = batch_size
        self.threads = threads

    # ---- what the executor is ------------------------------------------------------

    @classmethod
    def summary(cls) -> str:
        """One line: the first line of the executor's module docstring."""
        doc = sys.modules[cls.__module__].__doc__ or cls.name
        return doc.strip().splitlines()[0]

    @classmethod
    def scales_with_cores(cls) -> bool:
        """Whether more cores make it faster (not for serial, nor on a device).

        Asked of a few small core counts: an executor may need several to
        have a layout at all (hybrid: 2 workers x 2 BLAS threads).
        """
        layouts = (cls.layout(cores) for cores in range(2, 9))
        return any(layout is not None and layout.cores > 1 for layout in layouts)

    @classmethod
    def layout(cls, cores: int, blas_threads: int | None = None) -> Layout | None:
        """How it spreads ``cores`` cores, or None when it cannot use that many.

        ``blas_threads`` asks a composite executor for a given split. The
        default is one worker on one core, whatever ``cores`` says.
        """
        return Layout(ranks=None, workers=1, blas_threads=1, threads=1)

    @classmethod
    def missing_modules(cls) -> list[str]:
        """The modules it needs that are not installed (found without importing them)."""
        return [module for module in cls.requires if importlib.util.find_spec(module) is None]

    @classmethod
    def unavailable(cls) -> str | None:
        """Why it cannot run on this machine, or None. Cheap: imports nothing heavy."""
        missing = cls.missing_modules()
        if missing:
            return (f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not "
                    f"installed ({install_hint(cls.extra)})")
        return None

    @classmethod
    def one_job(cls) -> bool:
        """Whether it must have the machine to itself (a device, or ranks)."""
        return cls.device != "cpu" or cls.distributed

    # ---- the contract --------------------------------------------------------------

    def step(self, x: np.ndarray, y: np.ndarray, lr: float,
             weights: np.ndarray | None = None) -> float:
        """One step on ``x`` (n, n_in), targets ``y`` (n, n_out); returns the loss sum.

        Plain SGD's update is ``params -= lr / n * sum of per-sample gradients``;
        the other rules take that mean gradient. ``weights`` (n,), per-row
        sample weights: the loss and the gradient sum are weighted sums (the
        mean still over n rows). The caller may overwrite ``x``, ``y`` and
        ``weights`` as soon as ``step`` returns.
        """
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output activations (n, n_out) for ``x`` (n, n_in), in chunks of the batch size."""
        raise NotImplementedError

    def step_input_dtype(self) -> np.dtype:
        """The dtype ``step`` multiplies its rows in, the one to hand it (float32 here).

        A CPU executor in bf16 says bfloat16: given float32 rows it converts
        them every step, so the trainer gathers its batches from a bfloat16
        copy of the training set instead (half the bytes, no conversion).
        """
        return np.dtype(np.float32)

    def params(self) -> np.ndarray:
        """A host copy of the flat parameters (n_params,)."""
        raise NotImplementedError

    def optimizer_state(self) -> OptimizerState:
        """A host copy of the optimizer's state buffers (k, n_params) and the steps taken."""
        return OptimizerState(np.zeros((0, self.network.n_params), np.float32), 0)

    def load_data(self, x: np.ndarray, targets: np.ndarray) -> bool:
        """Resident data: keep ``x`` (n, n_in) and ``targets`` (n, n_out); True if they fit."""
        return False

    def train_epoch(self, order: np.ndarray, lr: float, on_step=None) -> float:
        """Resident data: steps over the loaded rows in ``order``; returns the loss sum."""
        raise NotImplementedError(f"executor {self.name!r} keeps no data resident")

    def close(self) -> None:
        """Release threads, BLAS limits or devices; idempotent."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
