"""The validation metric watched by early stopping and the plateau schedule.

Both watch the metric the run reports after each epoch: the validation
accuracy (classification) or R² (regression), higher better both, rather
than a validation loss the run does not otherwise compute. A :class:`Watch`
is part of a run's state (checkpoints carry it), so a resumed run stops,
and cuts its rate, at the epochs an uninterrupted one would.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class Watch:
    """The best value of the validation metric so far, its epoch, and the epochs since."""

    best: float = -math.inf
    best_epoch: int = 0
    stale: int = 0        # epochs since the last improvement

    def update(self, value: float, epoch: int, min_delta: float = 0.0) -> bool:
        """Record ``epoch``'s ``value``; whether it improved on the best by more than
        ``min_delta`` (the first finite value always does; NaN never)."""
        if math.isfinite(value) and (self.best_epoch == 0 or value > self.best + min_delta):
            self.best, self.best_epoch, self.stale = value, epoch, 0
            return True
        self.stale += 1
        return False

    def copy(self) -> "Watch":
        return Watch(self.best, self.best_epoch, self.stale)   # every epoch: no asdict

    @classmethod
    def from_dict(cls, record: dict) -> "Watch":
        """A watch from its JSON record (a checkpoint's); TypeError or ValueError if malformed."""
        watch = cls(best=float(record["best"]), best_epoch=int(record["best_epoch"]),
                    stale=int(record["stale"]))
        if watch.best_epoch < 0 or watch.stale < 0:
            raise ValueError(f"negative epoch count in {record}")
        return watch


def metric_name(task: str) -> str:
    """How the watched metric is said: ``val acc`` or ``val R²``."""
    return "val R²" if task == "regress" else "val acc"


def metric_of(metrics, task: str) -> float:
    """The watched metric of an epoch's :class:`~.results.EpochMetrics`."""
    return metrics.val_r2 if task == "regress" else metrics.val_accuracy


def stop_reason(watch: Watch, epoch: int, patience: int, min_delta: float, task: str) -> str:
    """The line said when early stopping ends a run after ``epoch``."""
    return (f"stopped early after epoch {epoch}: no validation improvement > {min_delta:g} "
            f"for {watch.stale} epochs; the model of epoch {watch.best_epoch} "
            f"({metric_name(task)} {watch.best:.4f}) is kept")

