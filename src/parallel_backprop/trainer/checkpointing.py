"""Checkpoints out, resume in: when a run hands its state over, stop signals, where it starts.

The file format is :mod:`parallel_backprop.checkpoint`'s business; here a
checkpoint is a :class:`~.results.TrainState` given to a callback.
"""

from __future__ import annotations

import signal
import threading
from typing import Callable

import numpy as np

from ..errors import ConfigError
from ..interrupts import STOP_SIGNALS, note_received, signal_name
from ..network import Network
from .config import TrainConfig, seed_streams
from .results import EpochMetrics, TrainState


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during training: the run stopped at a step boundary after a checkpoint.

    ``state`` is where it stopped (what the last checkpoint holds); ``signum``
    the signal that stopped it.
    """

    def __init__(self, message: str, state: TrainState, signum: int = signal.SIGINT):
        super().__init__(message)
        self.state, self.signum = state, signum


class DeferredInterrupt:
    """Ctrl-C or SIGTERM while training: let the step finish, so a checkpoint can be written.

    The first of those signals only sets ``requested`` (to its number); the
    trainer checks it after every step. The previous handlers are put back at
    once, so a second signal interrupts immediately. Signal handlers can only
    be installed from the main thread; elsewhere (and when disabled) this does
    nothing, nor for a signal that is ignored (MPI ranks other than 0 leave
    both to rank 0).
    """

    def __init__(self, enabled: bool):
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "DeferredInterrupt":
        if self.enabled:
            self._previous = {signum: signal.signal(signum, self._handle)
                              for signum in STOP_SIGNALS
                              if signal.getsignal(signum) is not signal.SIG_IGN}
        return self

    def _handle(self, signum, frame) -> None:
        note_received(signum)
        self.requested = signum
        self._restore()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle:
                signal.signal(signum, previous)

    def __exit__(self, *exc_info) -> None:
        if self.enabled:
            self._restore()


class Checkpointer:
    """Hands a run's position to its ``checkpoint`` callback; stops the run on Ctrl-C or SIGTERM.

    A checkpoint is due every ``every`` steps (counted from the start of the
    run), at every epoch's end, and after the step during which Ctrl-C (or
    SIGTERM) came. Without a callback it does nothing, and those signals
    interrupt as usual. Used as a context manager: they are deferred inside
    the block.
    """

    def __init__(self, callback: Callable[[TrainState], None] | None, every: int | None,
                 steps_per_epoch: int, epochs: int):
        if every is not None and not (isinstance(every, int) and every >= 1):
            raise ConfigError(f"checkpoint every {every!r} steps: expected a positive integer")
        self.callback, self.every = callback, every
        self.steps_per_epoch, self.epochs = steps_per_epoch, epochs
        self._interrupt = DeferredInterrupt(callback is not None)

    def __enter__(self) -> "Checkpointer":
        self._interrupt.__enter__()
        return self

    def __exit__(self, *exc_info) -> None:
        self._interrupt.__exit__(*exc_info)

    def due(self, epoch: int, done: int) -> bool:
        """Whether to checkpoint after step ``done`` of ``epoch``, before the epoch's last.

        The last step is left to the epoch's end, which checkpoints anyway.
        """
        if self.callback is None or done >= self.steps_per_epoch:
            return False
        global_step = (epoch - 1) * self.steps_per_epoch + done
        return self._interrupt.requested is not None or (
            self.every is not None and global_step % self.every == 0)

    def save(self, params: np.ndarray, epoch: int, step: int, shuffle_state: dict,
             loss_total: float, train_s: float, epochs: list[EpochMetrics],
             **run_state) -> TrainState:
        """Hand this position to the callback; then stop the run if a stop signal asked to.

        The caller has checked that ``params`` and ``loss_total`` are finite.
        ``run_state``: the rest of the :class:`TrainState` (optimizer state,
        schedule and early-stopping records), as the loop holds it now.
        """
        state = TrainState(params, epoch, step, shuffle_state, loss_total, train_s,
                           list(epochs), self.steps_per_epoch, **run_state)
        self.callback(state)
        signum = self._interrupt.requested
        if signum is not None and epoch <= self.epochs:   # not once the run is done
            raise TrainingInterrupted(
                f"stopped by {signal_name(signum)} at epoch {epoch}, step {step} of "
                f"{self.steps_per_epoch}", state, signum)
        return state

    def epoch_done(self, params: np.ndarray, epoch: int, shuffle_state: dict,
                   epochs: list[EpochMetrics], run_state: Callable[[], dict]) -> None:
        """The checkpoint at the end of ``epoch``: the next one's start, nothing taken in it.

        ``run_state()`` gives the rest of the state (called only when one is written).
        """
        if self.callback is not None:
            self.save(params, epoch + 1, 0, shuffle_state, 0.0, 0.0, epochs, **run_state())


def check_resume(state: TrainState, network: Network, config: TrainConfig,
                 steps: int) -> None:
    """Refuse a resume state that does not belong to this network, data or config."""
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
    buffers = (0 if state.optimizer_state is None
               else state.optimizer_state.buffers.shape[0])
    if buffers != config.optimizer.n_buffers and not (state.optimizer_state is None
                                                      and state.global_step == 0):
        raise ConfigError(f"resume state with {buffers} optimizer buffers: optimizer "
                          f"{config.optimizer.name!r} keeps {config.optimizer.n_buffers}; "
                          "resume with the checkpointed run's optimizer")
    if state.epoch > config.epochs + 1:
        raise ConfigError(f"resume state has completed {state.epoch - 1} epochs, more than "
                          f"the {config.epochs} asked for")


def first_state(network: Network, config: TrainConfig, steps: int,
                params: np.ndarray | None, resume: TrainState | None,
                ) -> tuple[TrainState, np.random.Generator]:
    """Where a run starts, and its shuffle generator set to that point.

    Afresh (``params``, or Glorot-uniform weights from the seed), or from ``resume``.
    """
    init_rng, shuffle_rng = seed_streams(config.seed)
    if resume is None:
        start = network.init_params(init_rng) if params is None else params
        return TrainState(start, epoch=1, step=0, shuffle_state=shuffle_rng.bit_generator.state,
                          steps_per_epoch=steps), shuffle_rng
    if params is not None:
        raise ConfigError("pass starting params or a resume state, not both")
    check_resume(resume, network, config, steps)
    shuffle_rng.bit_generator.state = resume.shuffle_state
    return resume, shuffle_rng
