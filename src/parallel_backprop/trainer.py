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
format is :mod:`.checkpoint`'s business, not the trainer's.
"""

from __future__ import annotations

import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .errors import ConfigError, PbpError
from .executors import Executor, check_options, make_executor
from .network import Network


# Workers and BLAS threads are OS threads; more than this is a typo, not a machine.
MAX_THREADS = 1024
LR_SCHEDULES = ("constant", "linear")


class TrainingDiverged(PbpError):
    """The loss or the weights became NaN or infinite."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the run stopped at a step boundary after a checkpoint.

    ``state`` is where it stopped (what the last checkpoint holds).
    """

    def __init__(self, message: str, state: "TrainState"):
        super().__init__(message)
        self.state = state


@dataclass(frozen=True)
class TrainConfig:
    """How to train: everything but the network and the data."""

    batch_size: int = 128
    lr: float = 0.1
    epochs: int = 10
    seed: int = 0
    executor: str = "serial"
    threads: int = 1
    blas_threads: int = 1      # BLAS threads inside each hybrid worker
    precision: str = "fp32"    # the gpu executor's matrix products: fp32 or tf32
    lr_schedule: str = "constant"  # or "linear": decays by lr / epochs after each epoch

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch size {self.batch_size!r}: expected a positive integer")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ConfigError(f"epochs {self.epochs!r}: expected a positive integer")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate {self.lr!r}: expected a positive finite number")
        check_options(self.executor, threads=self.threads, blas_threads=self.blas_threads,
                      precision=self.precision)
        for what, value in (("threads", self.threads), ("blas threads", self.blas_threads)):
            if value > MAX_THREADS:   # each a real thread: 10^5 would exhaust the process
                raise ConfigError(f"{what} {value}: expected at most {MAX_THREADS} (this "
                                  f"machine has {os.cpu_count()} cores)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"learning-rate schedule {self.lr_schedule!r}: expected one of "
                              f"{', '.join(LR_SCHEDULES)}")

    def epoch_lr(self, epoch: int) -> float:
        """The learning rate of ``epoch`` (1-based).

        ``linear``: ``lr * (1 - (epoch - 1) / epochs)``, from ``lr`` down to
        ``lr / epochs`` in the last epoch. Large steps early, small ones to
        settle: on Fashion-MNIST (Net-1h, 10 epochs) it gains about half a
        point of test accuracy over the constant rate.
        """
        if self.lr_schedule == "linear":
            return self.lr * (1 - (epoch - 1) / self.epochs)
        return self.lr


@dataclass
class EpochMetrics:
    epoch: int
    loss: float            # mean training loss per sample over the epoch
    val_accuracy: float
    epoch_s: float         # training time only: no evaluation, data loading or checkpoints
    samples_per_s: float
    eval_s: float


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
    """

    params: np.ndarray
    epoch: int
    step: int
    shuffle_state: dict
    loss_total: float = 0.0
    train_s: float = 0.0
    epochs: list[EpochMetrics] = field(default_factory=list)
    steps_per_epoch: int = 0

    @property
    def global_step(self) -> int:
        """Steps taken since the start of the run."""
        return (self.epoch - 1) * self.steps_per_epoch + self.step


@dataclass
class TrainResult:
    params: np.ndarray     # flat float32 (n_params,)
    epochs: list[EpochMetrics] = field(default_factory=list)
    test_accuracy: float | None = None
    state: TrainState | None = None   # the final state: resume from it to train on

    def summary(self, network: Network, config: TrainConfig) -> dict:
        """The metrics record written by ``--metrics-json``."""
        epochs = self.epochs
        # Steady state: the first epoch pays warm-up (page faults, BLAS start).
        steady = epochs[1:] if len(epochs) > 1 else epochs
        return {
            "test_accuracy": self.test_accuracy,
            "val_accuracy": epochs[-1].val_accuracy,
            "samples_per_s": float(np.mean([e.samples_per_s for e in steady])),
            "epoch_s": float(np.mean([e.epoch_s for e in steady])),
            "final_loss": epochs[-1].loss,
            "executor": config.executor,
            "threads": config.threads,
            "blas_threads": config.blas_threads,
            "precision": config.precision,
            "net": network.spec,
            "activations": list(network.activations),
            "loss": network.loss,
            "batch_size": config.batch_size,
            "lr": config.lr,
            "lr_schedule": config.lr_schedule,
            "seed": config.seed,
            "epochs": [asdict(e) for e in epochs],
        }


def seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the initial weights and for shuffling."""
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)


def accuracy(executor: Executor, network: Network, x: np.ndarray, labels: np.ndarray) -> float:
    if x.shape[0] == 0:
        return float("nan")
    return float(np.mean(network.classify(executor.predict(x)) == labels))


def training_bytes(network: Network, batch: int, threads: int = 1) -> int:
    """About how many bytes of host memory training ``network`` takes, data excluded.

    The parameters twice (the caller's and the executor's copy), one
    gradient buffer per worker, and per worker three activation-sized
    buffers (activations, deltas, scratch) of ``batch`` rows (an upper bound:
    the threads executor gives each worker batch / threads rows).
    """
    width = sum(network.sizes[1:])
    return 4 * (network.n_params * (2 + threads) + 3 * threads * batch * width
                + 2 * batch * (network.sizes[0] + network.sizes[-1]))


def physical_memory() -> int | None:
    """Bytes of RAM of this machine, or None where the OS does not say."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):
        return None


def check_fits_in_memory(network: Network, batch: int, threads: int = 1) -> None:
    """Refuse, before allocating anything, a network that cannot fit in this machine's RAM.

    An absurd ``--net 784-100000000-10`` would otherwise ask the OS for
    hundreds of GB and get killed (or swap for an hour) instead of failing.
    """
    needed, available = training_bytes(network, batch, threads), physical_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"net {network.spec} ({network.n_params:,} parameters) at batch {batch} "
            f"with {threads} worker(s) needs about {needed / 2**30:,.1f} GiB, more than this "
            f"machine's {available / 2**30:,.1f} GiB of memory; use smaller layers, "
            "a smaller batch or fewer threads")


class _DeferredInterrupt:
    """Ctrl-C while training: let the step finish, so a checkpoint can be written.

    The first SIGINT only sets ``requested``; the trainer checks it after
    every step. The previous handler is put back at once, so a second
    Ctrl-C interrupts immediately. Signal handlers can only be installed
    from the main thread; elsewhere (and when disabled) this does nothing,
    nor where SIGINT is ignored (MPI ranks other than 0 leave it to rank 0).
    """

    def __init__(self, enabled: bool):
        self.enabled = (enabled and threading.current_thread() is threading.main_thread()
                        and signal.getsignal(signal.SIGINT) is not signal.SIG_IGN)
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_DeferredInterrupt":
        if self.enabled:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, self._previous)

    def __exit__(self, *exc_info) -> None:
        if self.enabled and signal.getsignal(signal.SIGINT) == self._handle:
            signal.signal(signal.SIGINT, self._previous)


def _check_resume(state: TrainState, network: Network, config: TrainConfig,
                  steps: int) -> None:
    if state.params.shape != (network.n_params,):
        raise ConfigError(f"resume state with {state.params.shape[0]} parameters: expected "
                          f"{network.n_params} for net {network.spec}")
    if state.steps_per_epoch and state.steps_per_epoch != steps:
        raise ConfigError(
            f"resume state taken at {state.steps_per_epoch} steps per epoch, this run has "
            f"{steps}: the training set size or the batch size differs")
    if not 0 <= state.step < steps or state.epoch < 1:
        raise ConfigError(f"resume state at epoch {state.epoch}, step {state.step}: "
                          f"expected an epoch >= 1 and a step in 0..{steps - 1}")
    if state.epoch > config.epochs + 1:
        raise ConfigError(f"resume state has completed {state.epoch - 1} epochs, more than "
                          f"the {config.epochs} asked for")


def train(network: Network, config: TrainConfig,
          x_train: np.ndarray, y_train: np.ndarray,
          x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
          *, params: np.ndarray | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None,
          resume: TrainState | None = None,
          checkpoint: Callable[[TrainState], None] | None = None,
          checkpoint_every: int | None = None) -> TrainResult:
    """Train ``network`` with mini-batch SGD.

    Parameters
    ----------
    network : Network
    config : TrainConfig
    x_train : float32 (n, n_in)
    y_train : int (n,) class indices, or float32 (n, n_out) targets as they are
    x_val, y_val : optional validation set (class indices), evaluated after each epoch
    params : float32 (n_params,), optional
        Starting parameters; default Glorot-uniform from ``config.seed``.
    progress : bool
        Show a progress bar (only on a terminal).
    log : callable, optional
        Receives one line per epoch.
    resume : TrainState, optional
        Continue from this state (a checkpoint's) instead of starting afresh.
    checkpoint : callable, optional
        Called with the current :class:`TrainState` every ``checkpoint_every``
        steps (counted from the start of the run), at the end of every epoch,
        and when Ctrl-C stops the run. Never called with non-finite
        parameters or loss: the run stops with :class:`TrainingDiverged`
        first, so the last checkpoint written stays a good one. While it is
        set, Ctrl-C stops at the next step boundary with
        :class:`TrainingInterrupted` (a ``KeyboardInterrupt``).
    checkpoint_every : int, optional
        Steps between checkpoints; default: only at epoch ends.
    """
    n = x_train.shape[0]
    if n == 0:
        raise ConfigError("training set is empty: expected at least one sample")
    if checkpoint_every is not None and not (
            isinstance(checkpoint_every, int) and checkpoint_every >= 1):
        raise ConfigError(f"checkpoint every {checkpoint_every!r} steps: expected a "
                          "positive integer")
    init_rng, shuffle_rng = seed_streams(config.seed)
    batch = min(config.batch_size, n)
    steps = math.ceil(n / batch)
    check_fits_in_memory(network, batch, config.threads)
    if resume is None:
        start = TrainState(network.init_params(init_rng) if params is None else params,
                           epoch=1, step=0, shuffle_state=shuffle_rng.bit_generator.state,
                           steps_per_epoch=steps)
    else:
        if params is not None:
            raise ConfigError("pass starting params or a resume state, not both")
        _check_resume(resume, network, config, steps)
        start = resume
        shuffle_rng.bit_generator.state = resume.shuffle_state
    # Targets (n, n_out), built once: one-hot (or 0/1) from class indices.
    targets = y_train if y_train.ndim == 2 else network.targets(y_train)
    x_batch = np.empty((batch, x_train.shape[1]), np.float32)
    y_batch = np.empty((batch, targets.shape[1]), np.float32)
    result = TrainResult(params=start.params, epochs=list(start.epochs))

    with make_executor(config.executor, network, start.params, batch_size=batch,
                       threads=config.threads, blas_threads=config.blas_threads,
                       precision=config.precision) as executor, \
            _DeferredInterrupt(checkpoint is not None) as interrupt:

        def save(epoch: int, step: int, shuffle_state: dict, loss_total: float,
                 train_s: float) -> TrainState:
            current = executor.params()
            if not (math.isfinite(loss_total) and np.all(np.isfinite(current))):
                raise TrainingDiverged(
                    f"training diverged: the loss or the weights became NaN or infinite "
                    f"in epoch {epoch} with learning rate {config.lr}; try a smaller --lr "
                    "(the last checkpoint is kept)")
            state = TrainState(current, epoch, step, shuffle_state, loss_total, train_s,
                               list(result.epochs), steps)
            if checkpoint is not None:
                checkpoint(state)
            return state

        def stop(state: TrainState) -> TrainingInterrupted:
            return TrainingInterrupted(
                f"stopped by Ctrl-C at epoch {state.epoch}, step {state.step} of {steps}",
                state)

        # An executor that can keep the training set on its device (gpu) takes
        # it once and runs each epoch from its shuffled order, with no per-step
        # copy or wait; not when a checkpoint may fall inside an epoch.
        resident = (checkpoint_every is None and hasattr(executor, "train_epoch")
                    and executor.load_data(x_train, targets))

        for epoch in range(start.epoch, config.epochs + 1):
            resumed = epoch == start.epoch
            epoch_rng_state = shuffle_rng.bit_generator.state   # checkpoints redraw `order`
            order = shuffle_rng.permutation(n)                  # only indices are shuffled
            first_step = start.step if resumed else 0
            loss_total = start.loss_total if resumed else 0.0
            train_s = start.train_s if resumed else 0.0
            lr = config.epoch_lr(epoch)
            bar = tqdm(total=steps, initial=first_step, desc=f"epoch {epoch}/{config.epochs}",
                       unit="batch", disable=None if progress else True, leave=False)
            started = time.perf_counter()
            host_steps = range(first_step, steps)
            if resident:   # the epoch's remaining steps, all on the device
                loss_total += executor.train_epoch(order[first_step * batch:], lr,
                                                   on_step=bar.update)
                host_steps = range(0)
            for step in host_steps:
                idx = order[step * batch:(step + 1) * batch]
                rows = idx.shape[0]
                np.take(x_train, idx, axis=0, out=x_batch[:rows])
                np.take(targets, idx, axis=0, out=y_batch[:rows])
                loss_total += executor.step(x_batch[:rows], y_batch[:rows], lr)
                bar.update()
                done = step + 1
                due = (checkpoint_every is not None
                       and ((epoch - 1) * steps + done) % checkpoint_every == 0)
                if done < steps and checkpoint is not None and (due or interrupt.requested):
                    train_s += time.perf_counter() - started   # checkpoint time not counted
                    state = save(epoch, done, epoch_rng_state, loss_total, train_s)
                    if interrupt.requested:
                        bar.close()
                        raise stop(state)
                    started = time.perf_counter()
            train_s += time.perf_counter() - started
            bar.close()
            mean_loss = loss_total / n
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {mean_loss} in epoch {epoch} "
                    f"with learning rate {config.lr}; try a smaller --lr")
            eval_start = time.perf_counter()
            val_acc = (accuracy(executor, network, x_val, y_val)
                       if x_val is not None and len(x_val) else float("nan"))
            metrics = EpochMetrics(epoch, mean_loss, val_acc, train_s, n / train_s,
                                   time.perf_counter() - eval_start)
            result.epochs.append(metrics)
            if log is not None:
                log(f"epoch {epoch:3d}  loss {mean_loss:.5f}  val acc {val_acc:.4f}  "
                    f"{train_s:.2f} s  {n / train_s:,.0f} samples/s")
            if checkpoint is not None:
                state = save(epoch + 1, 0, shuffle_rng.bit_generator.state, 0.0, 0.0)
                if interrupt.requested and epoch < config.epochs:
                    raise stop(state)
        result.params = executor.params()
    if not np.all(np.isfinite(result.params)):
        raise TrainingDiverged(
            f"training diverged: the weights are not finite with learning rate "
            f"{config.lr}; try a smaller --lr")
    result.state = TrainState(result.params, config.epochs + 1, 0,
                              shuffle_rng.bit_generator.state, epochs=list(result.epochs),
                              steps_per_epoch=steps)
    return result


def evaluate(network: Network, params: np.ndarray, x: np.ndarray, labels: np.ndarray,
             batch_size: int = 1024) -> float:
    """Accuracy of ``params`` on ``x`` (n, n_in) against ``labels`` (n,), on the serial executor."""
    if x.shape[0] == 0:
        return float("nan")
    outputs = predict_outputs(network, params, x, batch_size)
    return float(np.mean(network.classify(outputs) == labels))


def predict_outputs(network: Network, params: np.ndarray, x: np.ndarray,
                    batch_size: int = 1024) -> np.ndarray:
    """Output activations (n, n_out) of ``params`` for ``x`` (n, n_in)."""
    with make_executor("serial", network, params, batch_size=batch_size) as executor:
        return executor.predict(x)
