"""What a run produces: per-epoch metrics, its position (:class:`TrainState`) and its result."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Sequence

import numpy as np

from ..executors import OptimizerState, executor_class
from ..gemm import blas_record
from ..network import Network
from .config import TrainConfig
from .watch import Watch


# The schedule's settings as the metrics record names them.
SCHEDULE_FIELDS = ("warmup_epochs", "step_size", "step_gamma", "plateau_factor",
                   "plateau_patience")


@dataclass
class EpochMetrics:
    """One epoch's numbers; the validation metrics of the other task are NaN.

    Classification: ``val_accuracy``. Regression: ``val_r2``, ``val_rmse``,
    ``val_mae`` on the targets as trained (standardised for a table).
    """

    epoch: int
    loss: float            # mean training loss per sample over the epoch
    val_accuracy: float
    epoch_s: float         # training time only: no evaluation, data loading or checkpoints
    samples_per_s: float
    eval_s: float
    val_r2: float = math.nan
    val_rmse: float = math.nan
    val_mae: float = math.nan


@dataclass
class TrainState:
    """Where a run stands: enough to continue it exactly.

    params           float32 (n_params,)
    epoch            the epoch in progress, 1-based; ``epochs + 1`` once all are done
    step             steps of that epoch already taken, 0 <= step < steps_per_epoch
    shuffle_state    the shuffle generator's ``bit_generator.state`` at the start
                     of ``epoch`` (before its permutation is drawn)
    loss_total       loss sum over the steps taken in ``epoch``
    train_s          training time spent in ``epoch`` so far
    epochs           metrics of the completed epochs
    steps_per_epoch  ceil(n_train / batch); checked on resume (0: not checked)
    optimizer_state  the optimizer's buffers and step count (None: plain SGD, no state)
    lr_scale         the plateau schedule's factor on lr so far
    plateau          the plateau schedule's watch of the validation metric
    stopping         early stopping's watch of the validation metric
    best_params      early stopping: the parameters of ``stopping.best_epoch`` (or None)
    """

    params: np.ndarray
    epoch: int
    step: int
    shuffle_state: dict
    loss_total: float = 0.0
    train_s: float = 0.0
    epochs: list[EpochMetrics] = field(default_factory=list)
    steps_per_epoch: int = 0
    optimizer_state: OptimizerState | None = None
    lr_scale: float = 1.0
    plateau: Watch = field(default_factory=Watch)
    stopping: Watch = field(default_factory=Watch)
    best_params: np.ndarray | None = None

    @property
    def global_step(self) -> int:
        """Steps taken since the start of the run."""
        return (self.epoch - 1) * self.steps_per_epoch + self.step


def steady_throughput(epochs: Sequence[EpochMetrics]) -> tuple[float, float]:
    """Steady-state ``(samples_per_s, epoch_s)``: the means over the epochs after the first.

    The first epoch pays warm-up (page faults, thread and BLAS start, GPU
    graph capture), so it counts only when it is the only one. NaN for none.
    """
    steady = list(epochs[1:] if len(epochs) > 1 else epochs)
    if not steady:
        return math.nan, math.nan
    return (float(np.mean([e.samples_per_s for e in steady])),
            float(np.mean([e.epoch_s for e in steady])))


@dataclass
class TrainResult:
    params: np.ndarray     # flat float32 (n_params,)
    epochs: list[EpochMetrics] = field(default_factory=list)
    test_accuracy: float | None = None
    state: TrainState | None = None   # the final state: resume from it to train on
    task: str = "classify"            # or "regress"
    test_metrics: dict = field(default_factory=dict)  # regression: test r2, rmse, mae
    stopped_early: str | None = None  # early stopping: why the run ended before its epochs
    best_epoch: int | None = None     # early stopping: the epoch whose parameters are kept

    def task_metrics(self) -> dict:
        """The test and last validation metrics of the run's task, as ``--metrics-json`` keys.

        Classification: ``test_accuracy``, ``val_accuracy``. Regression:
        ``test_r2``, ``test_rmse``, ``test_mae`` (in the targets' original
        units when the caller measured them so) and ``val_r2``, ``val_rmse``,
        ``val_mae`` (as trained).
        """
        last = self.epochs[-1]
        if self.task != "regress":
            return {"test_accuracy": self.test_accuracy, "val_accuracy": last.val_accuracy}
        names = ("r2", "rmse", "mae")
        return {**{f"test_{name}": self.test_metrics.get(name) for name in names},
                **{f"val_{name}": getattr(last, f"val_{name}") for name in names}}

    def summary(self, network: Network, config: TrainConfig) -> dict:
        """The metrics record written by ``--metrics-json``."""
        epochs = self.epochs
        samples_per_s, epoch_s = steady_throughput(epochs)
        return {
            "task": self.task,
            **self.task_metrics(),
            "samples_per_s": samples_per_s,
            "epoch_s": epoch_s,
            "final_loss": epochs[-1].loss,
            "executor": config.executor,
            "threads": config.threads,
            "blas_threads": config.blas_threads,
            "precision": config.precision,
            "blas": products_blas(config),
            "net": network.spec,
            "activations": list(network.activations),
            "loss": network.loss,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "lr_schedule": config.lr_schedule,
            "optimizer": asdict(config.optimizer),
            "schedule": {key: getattr(config, key) for key in SCHEDULE_FIELDS},
            "early_stopping": config.early_stopping,
            "patience": config.patience,
            "min_delta": config.min_delta,
            "stopped_early": self.stopped_early,
            "best_epoch": self.best_epoch,
            "seed": config.seed,
            "epochs": [asdict(e) for e in epochs],
        }


def products_blas(config: TrainConfig) -> dict | None:
    """The BLAS a CPU executor computed with: name, library file, version, threading
    layer, and the BLAS threads each of its workers ran; None on a device."""
    cls = executor_class(config.executor)
    if cls.device != "cpu":
        return None
    layout = cls.layout(config.threads * config.blas_threads,
                        config.blas_threads if cls.nested_blas else None)
    return {**blas_record(),
            "threads": layout.blas_threads if layout is not None else config.blas_threads}
