"""The epoch loop and :func:`train`: shuffle, step, check, checkpoint, evaluate, report.

An epoch's steps take one of two paths: the host path gathers each batch
from host memory and hands it to ``executor.step``; the resident-data path
(an executor with ``resident_data``, see :mod:`..executors.base`) loads the
training set once and runs each epoch's steps where the data already are.
"""

from __future__ import annotations

import math
import sys
import time
from functools import partial
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from ..blas_libraries import bfloat16
from ..errors import ConfigError
from ..executors import Executor, make_executor
from ..network import Network
from ..precision import to_bf16
from ..resources import check_fits_in_memory
from .checkpointing import Checkpointer, first_state
from .config import TrainConfig
from .divergence import check_finite
from .evaluation import REGRESSION_METRICS, accuracy, regression_metrics, task_of
from .results import EpochMetrics, TrainResult, TrainState
from .watch import metric_name, metric_of, stop_reason

# What ``log`` may be: a callable taking a line, None (the default line) or False (none).
EpochLog = Callable[[str], None] | None | bool


def normalised_weights(sample_weight, n: int) -> np.ndarray | None:
    """Per-row weights as float32 (n,) averaging 1 over the rows (scikit-learn's scaling:
    the mean loss stays comparable with an unweighted run's), or None."""
    if sample_weight is None:
        return None
    weights = np.asarray(sample_weight, dtype=np.float64)
    if weights.shape != (n,):
        raise ConfigError(f"sample_weight of shape {weights.shape}: expected ({n},), one "
                          "weight per training row")
    if not (np.all(np.isfinite(weights)) and np.all(weights >= 0) and weights.sum() > 0):
        raise ConfigError("sample_weight: expected finite weights >= 0, not all zero")
    return (weights * (n / weights.sum())).astype(np.float32)


class TrainingSet:
    """The training rows, their targets (n, n_out), optional per-row weights (n,), and the
    host path's batch buffers.

    ``dtype``: the one the executor multiplies its rows in
    (:meth:`..executors.Executor.step_input_dtype`). For bfloat16 the rows are
    converted once, here, into a copy the batches are gathered from: half the
    bytes to gather, and no conversion per step (the same values: the same
    rounding).
    """

    def __init__(self, x: np.ndarray, targets: np.ndarray, batch: int,
                 weights: np.ndarray | None = None, dtype: np.dtype = np.dtype(np.float32)):
        self.x, self.targets, self.batch, self.weights = x, targets, batch, weights
        self.n = x.shape[0]
        self.steps = math.ceil(self.n / batch)
        in_bf16 = bfloat16 is not None and np.dtype(dtype) == bfloat16
        self._rows = (to_bf16(np.asarray(x, np.float32), np.empty(x.shape, bfloat16))
                      if in_bf16 else x)
        # One set of buffers, refilled for every step: executors may not keep them.
        self._x_batch = np.empty((batch, x.shape[1]), bfloat16 if in_bf16 else np.float32)
        self._y_batch = np.empty((batch, targets.shape[1]), np.float32)
        self._w_batch = None if weights is None else np.empty(batch, np.float32)

    def gather(self, order: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Batch ``step`` of the shuffled ``order``: views of the reused buffers, and the
        keywords of ``step`` (``weights`` when the rows have them)."""
        idx = order[step * self.batch:(step + 1) * self.batch]
        rows = idx.shape[0]
        # mode="clip" (the indices are a permutation's, always in range): with the
        # default "raise", NumPy gathers into a temporary and copies it into `out`
        # (200 rows of 784 float32: 92 us against 19 us on a Xeon core).
        np.take(self._rows, idx, axis=0, out=self._x_batch[:rows], mode="clip")
        np.take(self.targets, idx, axis=0, out=self._y_batch[:rows], mode="clip")
        if self.weights is None:    # executors without weights are called as they expect
            return self._x_batch[:rows], self._y_batch[:rows], {}
        np.take(self.weights, idx, out=self._w_batch[:rows], mode="clip")
        return self._x_batch[:rows], self._y_batch[:rows], {"weights": self._w_batch[:rows]}


def host_epoch(executor: Executor, data: TrainingSet, order: np.ndarray, first_step: int,
               lr: float, loss_total: float,
               after_step: Callable[[int, float], None]) -> float:
    """The host path: steps ``first_step`` on of the epoch in ``order``; the loss sum so far.

    ``after_step(done, loss_total)`` runs after each step (progress, checkpoints).
    """
    for step in range(first_step, data.steps):
        x, y, weights = data.gather(order, step)
        loss_total += executor.step(x, y, lr, **weights)
        after_step(step + 1, loss_total)
    return loss_total


def resident_epoch(executor: Executor, data: TrainingSet, order: np.ndarray, first_step: int,
                   lr: float, loss_total: float, on_step: Callable[[], None]) -> float:
    """The resident-data path: the epoch's remaining steps, all where the data were loaded."""
    return loss_total + executor.train_epoch(order[first_step * data.batch:], lr,
                                             on_step=on_step)


class NoBar:
    """A progress bar that shows nothing: what an epoch gets without ``progress``
    (a disabled tqdm still costs ~45 us to make, every epoch)."""

    def __enter__(self) -> "NoBar":
        return self

    def __exit__(self, *exc_info) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


class Stopwatch:
    """An epoch's training time: it runs while steps run, not while checkpoints are written."""

    def __init__(self, elapsed: float = 0.0):
        self.elapsed = elapsed
        self._since = time.perf_counter()

    def pause(self) -> float:
        self.elapsed += time.perf_counter() - self._since
        return self.elapsed

    def resume(self) -> None:
        self._since = time.perf_counter()


def stderr_line(line: str) -> None:
    """Write ``line`` to stderr without breaking a progress bar."""
    tqdm.write(line, file=sys.stderr)


def epoch_logger(progress: bool, log: EpochLog) -> Callable[[str], None] | None:
    """Where the line after each epoch goes: ``log``; by default stderr while ``progress``."""
    if log is None:
        return stderr_line if progress else None
    return log or None


def epoch_line(metrics: EpochMetrics, task: str = "classify") -> str:
    """The line after an epoch: loss, validation R² (regression) or accuracy, speed."""
    score = (f"val R² {metrics.val_r2:.4f}" if task == "regress"
             else f"val acc {metrics.val_accuracy:.4f}")
    return (f"epoch {metrics.epoch:3d}  loss {metrics.loss:.5f}  {score}  "
            f"{metrics.epoch_s:.2f} s  {metrics.samples_per_s:,.0f} samples/s")


class EpochLoop:
    """The epochs of one run on one executor, from a start state to the last epoch."""

    def __init__(self, network: Network, config: TrainConfig, executor: Executor,
                 data: TrainingSet, shuffle_rng: np.random.Generator,
                 checkpointer: Checkpointer, progress: bool, log: EpochLog,
                 task: str = "classify"):
        self.network, self.config, self.executor, self.data = network, config, executor, data
        self.task = task
        self.shuffle_rng, self.checkpointer = shuffle_rng, checkpointer
        self.progress, self.log = progress, epoch_logger(progress, log)
        self.epochs: list[EpochMetrics] = []
        # An executor that can keep the training set where it computes (a GPU's
        # memory) takes it once and runs each epoch from its shuffled order, with
        # no per-step copy or wait; not when a checkpoint may fall inside an epoch,
        # nor with per-row weights (the resident path has none).
        self.resident = (executor.resident_data and checkpointer.every is None
                         and data.weights is None
                         and executor.load_data(data.x, data.targets))

    def run(self, start: TrainState, x_val: np.ndarray | None,
            y_val: np.ndarray | None) -> TrainResult:
        """Train from ``start`` to the last epoch, or until early stopping ends the run;
        the result and its final state (the best epoch's parameters when stopping early)."""
        self.epochs = list(start.epochs)
        self.lr_scale, self.best_params = start.lr_scale, start.best_params
        self.plateau, self.stopping = start.plateau.copy(), start.stopping.copy()
        reason = None
        for epoch in range(start.epoch, self.config.epochs + 1):
            reason = self.stop_reason(epoch - 1)   # a resumed run stops where it had
            if reason is not None:
                break
            resumed = start if epoch == start.epoch else None
            self.epochs.append(self.run_epoch(epoch, resumed, x_val, y_val))
        else:
            reason = self.stop_reason(self.config.epochs)
        return self.result(reason)

    def stop_reason(self, epoch: int) -> str | None:
        """Why early stopping ends the run after ``epoch``, or None to go on."""
        config = self.config
        if not config.early_stopping or self.stopping.stale < config.patience or epoch < 1:
            return None
        return stop_reason(self.stopping, epoch, config.patience, config.min_delta, self.task)

    def result(self, reason: str | None) -> TrainResult:
        """The run's result: the best epoch's parameters put back when early stopping."""
        params, best_epoch = self.executor.params(), None
        if self.config.early_stopping and self.best_params is not None:
            params, best_epoch = self.best_params.copy(), self.stopping.best_epoch
            if self.log is not None and (reason or best_epoch != len(self.epochs)):
                self.log(reason or f"the model of epoch {best_epoch} ({metric_name(self.task)}"
                                   f" {self.stopping.best:.4f}) is kept")
        last = self.epochs[-1].epoch if self.epochs else 0
        state = TrainState(params, last + 1, 0, self.shuffle_rng.bit_generator.state,
                           epochs=list(self.epochs), steps_per_epoch=self.data.steps,
                           **self.run_state())
        return TrainResult(params=params, epochs=list(self.epochs), state=state,
                           task=self.task, stopped_early=reason, best_epoch=best_epoch)

    def run_state(self) -> dict:
        """The state beyond the position: optimizer, schedule and early-stopping records."""
        optimizer_state = (None if self.config.optimizer.is_plain_sgd
                           else self.executor.optimizer_state())
        return {"optimizer_state": optimizer_state, "lr_scale": self.lr_scale,
                "plateau": self.plateau.copy(), "stopping": self.stopping.copy(),
                "best_params": self.best_params}

    def watch(self, epoch: int, metrics: EpochMetrics, params: np.ndarray) -> None:
        """After ``epoch``: the plateau schedule's cut and early stopping's best, if on."""
        config, value = self.config, metric_of(metrics, self.task)
        if config.lr_schedule == "plateau" and epoch > config.warmup_epochs:
            if not self.plateau.update(value, epoch) and \
                    self.plateau.stale >= config.plateau_patience:
                self.lr_scale *= config.plateau_factor
                self.plateau.stale = 0      # a fresh count at the new rate
        if config.early_stopping and self.stopping.update(value, epoch, config.min_delta):
            self.best_params = params.copy()   # a host copy: the executor's go on changing

    def run_epoch(self, epoch: int, resumed: TrainState | None, x_val: np.ndarray | None,
                  y_val: np.ndarray | None) -> EpochMetrics:
        """Epoch ``epoch``, from where ``resumed`` stands in it (None: from its start)."""
        shuffle_state = self.shuffle_rng.bit_generator.state   # checkpoints redraw `order`
        order = self.shuffle_rng.permutation(self.data.n)      # only indices are shuffled
        first_step = resumed.step if resumed else 0
        loss_total = resumed.loss_total if resumed else 0.0
        lr = self.config.epoch_lr(epoch, self.lr_scale)
        with (tqdm(total=self.data.steps, initial=first_step, unit="batch", leave=False,
                   desc=f"epoch {epoch}/{self.config.epochs}", disable=None) if self.progress
              else NoBar()) as bar:
            clock = Stopwatch(resumed.train_s if resumed else 0.0)
            if self.resident:
                loss_total = resident_epoch(self.executor, self.data, order, first_step, lr,
                                            loss_total, bar.update)
            else:
                after_step = partial(self.after_step, epoch, shuffle_state, clock, bar)
                loss_total = host_epoch(self.executor, self.data, order, first_step, lr,
                                        loss_total, after_step)
            train_s = clock.pause()
        params = self.checked_params(epoch, loss_total)
        metrics = self.evaluate(epoch, loss_total, train_s, x_val, y_val)
        if self.log is not None:
            self.log(epoch_line(metrics, self.task))
        self.watch(epoch, metrics, params)
        self.checkpointer.epoch_done(params, epoch, self.shuffle_rng.bit_generator.state,
                                     self.epochs + [metrics], self.run_state)
        return metrics

    def after_step(self, epoch: int, shuffle_state: dict, clock: Stopwatch, bar: tqdm | NoBar,
                   done: int, loss_total: float) -> None:
        """On the host path, after each step: the bar, and a checkpoint when one is due."""
        bar.update()
        if self.checkpointer.due(epoch, done):
            train_s = clock.pause()   # checkpoint time is not training time
            params = self.checked_params(epoch, loss_total)
            self.checkpointer.save(params, epoch, done, shuffle_state, loss_total, train_s,
                                   self.epochs, **self.run_state())
            clock.resume()

    def checked_params(self, epoch: int, loss_total: float) -> np.ndarray:
        """The executor's parameters, once they and the loss are known to be finite."""
        params = self.executor.params()
        check_finite(loss_total, params, epoch, self.config.lr, self.data.x)
        return params

    def evaluate(self, epoch: int, loss_total: float, train_s: float,
                 x_val: np.ndarray | None, y_val: np.ndarray | None) -> EpochMetrics:
        """The epoch's metrics, the validation ones measured now (NaN without a set).

        Classification: the accuracy; regression: R², RMSE and MAE against
        the validation targets as given (standardised ones for a table).
        """
        eval_start = time.perf_counter()
        val_acc, scores = float("nan"), dict.fromkeys(REGRESSION_METRICS, float("nan"))
        if x_val is not None and self.task == "regress":
            if x_val.shape[0]:
                scores = regression_metrics(self.executor.predict(x_val), y_val)
        elif x_val is not None:
            val_acc = accuracy(self.executor, self.network, x_val, y_val)
        n = self.data.n
        return EpochMetrics(epoch, loss_total / n, val_acc, train_s, n / train_s,
                            time.perf_counter() - eval_start,
                            **{f"val_{name}": value for name, value in scores.items()})


def check_splits(config: TrainConfig, n_train: int, x_val: np.ndarray | None) -> None:
    """Refuse an empty training set, and a missing validation split that the run watches."""
    if n_train == 0:
        raise ConfigError("training set is empty: expected at least one sample")
    if config.watches_validation and (x_val is None or not len(x_val)):
        option = "--early-stopping" if config.early_stopping else "--lr-schedule plateau"
        raise ConfigError(f"{option}: needs a validation split to watch")


def train(network: Network, config: TrainConfig,
          x_train: np.ndarray, y_train: np.ndarray,
          x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
          *, params: np.ndarray | None = None, progress: bool = True, log: EpochLog = None,
          resume: TrainState | None = None, checkpoint: Callable[[TrainState], None] | None = None,
          checkpoint_every: int | None = None, task: str | None = None,
          sample_weight: np.ndarray | None = None) -> TrainResult:
    """Train ``network`` with mini-batches and ``config.optimizer``'s update rule.

    Parameters
    ----------
    network : Network
    config : TrainConfig
    x_train : float32 (n, n_in)
    y_train : int (n,) class indices, or float32 (n, n_out) targets as they are
    x_val, y_val : optional validation set (class indices or float targets), scored each epoch
    params : float32 (n_params,), optional: starting parameters (default: from ``config.seed``)
    progress : bool
        A progress bar (on a terminal) and, unless ``log`` says otherwise, a line per epoch.
    log : callable, None or False
        Receives each epoch's line. None (the default): stderr while
        ``progress`` is on, so a run from Python is never silent; False: none.
    resume : TrainState, optional
        Continue from this state (a checkpoint's) instead of starting afresh.
    checkpoint : callable, optional
        Called with the current :class:`TrainState` every ``checkpoint_every``
        steps (counted from the start of the run) and at the end of every
        epoch, never with non-finite parameters or loss (the run stops with
        :class:`TrainingDiverged` first, so the last checkpoint stays good).
        While it is set, Ctrl-C or SIGTERM stops the run at the next step
        boundary, after a checkpoint, with :class:`TrainingInterrupted`.
    checkpoint_every : int, optional
        Steps between checkpoints; default: only at epoch ends.
    task : "classify", "regress" or None (inferred: see :func:`.evaluation.task_of`)
        Validation scored by accuracy, or by R², RMSE and MAE (early stopping
        and the plateau schedule watch the accuracy, or R²).
    sample_weight : float (n,), optional
        Per training row; scaled to average 1, each batch's weights go to the
        executor's ``step`` (the loss and gradient are the weighted means).
    """
    task = task_of(task, y_train, y_val)
    n = x_train.shape[0]
    check_splits(config, n, x_val)
    batch = min(config.batch_size, n)
    steps = math.ceil(n / batch)
    checkpointer = Checkpointer(checkpoint, checkpoint_every, steps, config.epochs)
    check_fits_in_memory(network, batch, config.threads)
    start, shuffle_rng = first_state(network, config, steps, params, resume)
    # Targets (n, n_out), built once: one-hot (or 0/1) from class indices.
    targets = y_train if y_train.ndim == 2 else network.targets(y_train)
    weights = normalised_weights(sample_weight, n)
    # Overflow is the divergence check's to report, in one line, not numpy's to warn of.
    with make_executor(config.executor, network, start.params, batch_size=batch,
                       threads=config.threads, blas_threads=config.blas_threads,
                       precision=config.precision, blas=config.blas, optimizer=config.optimizer,
                       optimizer_state=start.optimizer_state) as executor, checkpointer, \
            np.errstate(over="ignore", invalid="ignore"):
        data = TrainingSet(x_train, targets, batch, weights, executor.step_input_dtype())
        loop = EpochLoop(network, config, executor, data, shuffle_rng, checkpointer,
                         progress, log, task)
        return loop.run(start, x_val, y_val)
