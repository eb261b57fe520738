"""The trainer: epochs, seeded shuffling, evaluation, metrics, checkpoints and progress.

It knows nothing of threads, ranks or GPUs: it hands mini-batches to an
executor's ``step`` and asks its ``predict`` for evaluation. Randomness is
explicit: one seed gives the initial weights and every epoch's shuffle, so
two runs with the same seed, executor and thread count are identical.

Checkpoints and resume. A run's position is a :class:`TrainState`: the
parameters, the epoch in progress and the steps already taken in it, the
shuffle generator's state at the START of that epoch (the epoch's order is
drawn again from it), and the epoch's loss so far. ``train`` hands a state
to its ``checkpoint`` callback every ``checkpoint_every`` steps and at each
epoch's end, and continues from one given as ``resume``: the remaining
batches, and so the final parameters, are bit for bit those of a run that
was never stopped (executors keep no state but the parameters). The file
format is :mod:`..checkpoint`'s business, not the trainer's.

Modules: :mod:`.config` (how to train), :mod:`.results` (states, metrics,
results), :mod:`.loop` (the epochs and :func:`train`), :mod:`.checkpointing`
(checkpoints, Ctrl-C, resume), :mod:`.divergence` (the finiteness check),
:mod:`.evaluation` (accuracy, R², RMSE, MAE and outputs; the task).
"""

from .checkpointing import TrainingInterrupted
from .config import LR_SCHEDULES, MAX_THREADS, TrainConfig, seed_streams
from .divergence import TrainingDiverged
from .evaluation import (TASKS, accuracy, class_probabilities, evaluate, evaluate_regression, mae,
                         predict_outputs, r2_score, regression_metrics, rmse, task_of)
from .loop import train
from .results import EpochMetrics, TrainResult, TrainState, steady_throughput

__all__ = ["LR_SCHEDULES", "MAX_THREADS", "TASKS", "EpochMetrics", "TrainConfig",
           "TrainResult", "TrainState", "TrainingDiverged", "TrainingInterrupted", "accuracy",
           "class_probabilities",
           "evaluate", "evaluate_regression", "mae", "predict_outputs", "r2_score",
           "regression_metrics", "rmse", "seed_streams", "steady_throughput", "task_of",
           "train"]
