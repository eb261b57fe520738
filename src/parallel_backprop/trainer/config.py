"""How to train: :class:`TrainConfig`, validated once when it is built, and the seeded streams."""

from __future__ import annotations

import math
import numbers
import os
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..executors import BASELINE, check_options
from ..optim import OptimizerConfig

# Workers and BLAS threads are OS threads; more than this is a typo, not a machine.
MAX_THREADS = 1024
LR_SCHEDULES = ("constant", "linear", "cosine", "step", "plateau")


@dataclass(frozen=True)
class TrainConfig:
    """How to train: everything but the network and the data.

    Checked when built (the executor's options by
    :func:`~parallel_backprop.executors.check_options`), so that the
    trainer and the executors can trust it.
    """

    batch_size: int = 128
    lr: float = 0.1
    epochs: int = 10
    seed: int = 0
    executor: str = BASELINE
    threads: int = 1
    blas_threads: int = 1      # BLAS threads inside each worker of an executor that nests them
    precision: str = "fp32"    # the matrix products' precision, among the executor's precisions
    blas: str | None = None    # auto, openblas or mkl (see ..blas_choice); None: the one in use
    lr_schedule: str = "constant"  # see epoch_lr
    # The update rule; plain SGD (the seed's) unless asked, so that Python callers
    # and the study keep the seed's method.
    optimizer: OptimizerConfig = OptimizerConfig()
    warmup_epochs: int = 0     # a linear ramp up to lr before the schedule starts
    step_size: int = 10        # "step": epochs between reductions
    step_gamma: float = 0.1    # "step": the factor of each reduction
    plateau_factor: float = 0.1   # "plateau": the factor of each reduction
    plateau_patience: int = 5     # "plateau": epochs without improvement before one
    early_stopping: bool = False  # stop when the validation metric stops improving
    patience: int = 10            # early stopping: epochs without improvement before stopping
    min_delta: float = 0.0        # early stopping: the least gain that counts as improvement

    def __post_init__(self) -> None:
        for what, value in (("batch size", self.batch_size), ("epochs", self.epochs)):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(f"{what} {value!r}: expected a positive integer")
        if not (isinstance(self.lr, numbers.Real) and not isinstance(self.lr, bool)
                and math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate {self.lr!r}: expected a positive finite number")
        if not isinstance(self.optimizer, OptimizerConfig):
            raise ConfigError(f"optimizer {self.optimizer!r}: expected an OptimizerConfig")
        check_options(self.executor, threads=self.threads, blas_threads=self.blas_threads,
                      precision=self.precision, optimizer=self.optimizer, blas=self.blas)
        for what, value in (("threads", self.threads), ("blas threads", self.blas_threads)):
            if value > MAX_THREADS:   # each a real thread: 10^5 would exhaust the process
                raise ConfigError(f"{what} {value}: expected at most {MAX_THREADS} (this "
                                  f"machine has {os.cpu_count()} cores)")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"learning-rate schedule {self.lr_schedule!r}: expected one of "
                              f"{', '.join(LR_SCHEDULES)}")
        self._check_schedule()
        self._check_stopping()

    def _check_schedule(self) -> None:
        if not (_integer(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs!r}: expected an integer >= 0")
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"--warmup-epochs {self.warmup_epochs}: expected fewer than "
                              f"--epochs {self.epochs}")
        for option, value in (("--step-size", self.step_size),
                              ("--plateau-patience", self.plateau_patience)):
            if not (_integer(value) and value >= 1):
                raise ConfigError(f"{option} {value!r}: expected a positive integer")
        for option, value in (("--step-gamma", self.step_gamma),
                              ("--plateau-factor", self.plateau_factor)):
            if not (_real(value) and 0 < value < 1):
                raise ConfigError(f"{option} {value!r}: expected a number in (0, 1)")
        # A setting of a schedule not chosen would be silently ignored: say so instead.
        for schedule, options in (("step", (("--step-size", self.step_size, 10),
                                            ("--step-gamma", self.step_gamma, 0.1))),
                                  ("plateau", (("--plateau-factor", self.plateau_factor, 0.1),
                                               ("--plateau-patience", self.plateau_patience,
                                                5)))):
            for option, value, default in options:
                if value != default and self.lr_schedule != schedule:
                    raise ConfigError(f"{option} {value:g}: needs --lr-schedule {schedule}")

    def _check_stopping(self) -> None:
        if not isinstance(self.early_stopping, bool):
            raise ConfigError(f"early stopping {self.early_stopping!r}: expected True or False")
        if not (_integer(self.patience) and self.patience >= 1):
            raise ConfigError(f"--patience {self.patience!r}: expected a positive integer")
        if not (_real(self.min_delta) and self.min_delta >= 0):
            said = f"{self.min_delta:g}" if _real(self.min_delta) else repr(self.min_delta)
            raise ConfigError(f"--min-delta {said}: expected >= 0")
        for option, value, default in (("--patience", self.patience, 10),
                                       ("--min-delta", self.min_delta, 0.0)):
            if value != default and not self.early_stopping:
                raise ConfigError(f"{option} {value:g}: needs --early-stopping")

    @property
    def watches_validation(self) -> bool:
        """Whether the run needs a validation split: early stopping or the plateau schedule."""
        return self.early_stopping or self.lr_schedule == "plateau"

    def epoch_lr(self, epoch: int, plateau_scale: float = 1.0) -> float:
        """The learning rate of ``epoch`` (1-based): the one place it is computed.

        Warm-up first: ``lr * epoch / warmup_epochs`` over the first
        ``warmup_epochs`` epochs (from ``lr / warmup_epochs`` up to ``lr``).
        Then the schedule, over the ``E = epochs - warmup_epochs`` epochs
        left, ``e`` counting them from 1:

        constant  ``lr``
        linear    ``lr * (1 - (e - 1) / E)``, down to ``lr / E`` in the last
                  epoch. Large steps early, small ones to settle: on
                  Fashion-MNIST (Net-1h, 10 epochs) it gains about half a
                  point of test accuracy over the constant rate.
        cosine    ``lr * 0.5 * (1 + cos(pi * (e - 1) / E))``
        step      ``lr * step_gamma ** floor((e - 1) / step_size)``
        plateau   ``lr * plateau_scale``: the scale is the run's state, cut by
                  ``plateau_factor`` whenever the validation metric has not
                  improved for ``plateau_patience`` epochs (see the loop).
        """
        warmup = self.warmup_epochs
        if epoch <= warmup:
            return self.lr * epoch / warmup
        e, total = epoch - warmup, self.epochs - warmup
        if self.lr_schedule == "linear":
            return self.lr * (1 - (e - 1) / total)
        if self.lr_schedule == "cosine":
            return self.lr * 0.5 * (1 + math.cos(math.pi * (e - 1) / total))
        if self.lr_schedule == "step":
            return self.lr * self.step_gamma ** ((e - 1) // self.step_size)
        if self.lr_schedule == "plateau":
            return self.lr * plateau_scale
        return self.lr


def _integer(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _real(value) -> bool:
    return (isinstance(value, numbers.Real) and not isinstance(value, bool)
            and math.isfinite(value))


def seed_streams(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the initial weights and for shuffling."""
    init_seq, shuffle_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(init_seq), np.random.default_rng(shuffle_seq)
