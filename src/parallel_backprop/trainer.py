"""The trainer: epochs, seeded shuffling, evaluation, metrics and progress.

It knows nothing of threads, ranks or GPUs: it hands mini-batches to an
executor's ``step`` and asks its ``predict`` for evaluation. Randomness is
explicit: one seed gives the initial weights and every epoch's shuffle, so
two runs with the same seed, executor and thread count are identical.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np
from tqdm.auto import tqdm

from .errors import ConfigError, PbpError
from .executors import EXECUTORS, Executor, make_executor
from .network import Network


class TrainingDiverged(PbpError):
    """The loss or the weights became NaN or infinite."""


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

    def __post_init__(self) -> None:
        if not (isinstance(self.batch_size, int) and self.batch_size >= 1):
            raise ConfigError(f"batch size {self.batch_size!r}: expected a positive integer")
        if not (isinstance(self.epochs, int) and self.epochs >= 1):
            raise ConfigError(f"epochs {self.epochs!r}: expected a positive integer")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"learning rate {self.lr!r}: expected a positive finite number")
        if not (isinstance(self.threads, int) and self.threads >= 1):
            raise ConfigError(f"threads {self.threads!r}: expected a positive integer")
        if not (isinstance(self.blas_threads, int) and self.blas_threads >= 1):
            raise ConfigError(
                f"blas threads {self.blas_threads!r}: expected a positive integer")
        if self.executor not in EXECUTORS:
            raise ConfigError(
                f"executor {self.executor!r}: expected one of {', '.join(EXECUTORS)}")


@dataclass
class EpochMetrics:
    epoch: int
    loss: float            # mean training loss per sample over the epoch
    val_accuracy: float
    epoch_s: float         # training time only: no evaluation, no data loading
    samples_per_s: float
    eval_s: float


@dataclass
class TrainResult:
    params: np.ndarray     # flat float32 (n_params,)
    epochs: list[EpochMetrics] = field(default_factory=list)
    test_accuracy: float | None = None

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
            "net": network.spec,
            "activations": list(network.activations),
            "loss": network.loss,
            "batch_size": config.batch_size,
            "lr": config.lr,
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


def train(network: Network, config: TrainConfig,
          x_train: np.ndarray, y_train: np.ndarray,
          x_val: np.ndarray | None = None, y_val: np.ndarray | None = None,
          *, params: np.ndarray | None = None, progress: bool = True,
          log: Callable[[str], None] | None = None) -> TrainResult:
    """Train ``network`` with mini-batch SGD.

    Parameters
    ----------
    network : Network
    config : TrainConfig
    x_train : float32 (n, n_in)
    y_train : int (n,) class indices
    x_val, y_val : optional validation set, evaluated after each epoch
    params : float32 (n_params,), optional
        Starting parameters; default Glorot-uniform from ``config.seed``.
    progress : bool
        Show a progress bar (only on a terminal).
    log : callable, optional
        Receives one line per epoch.
    """
    n = x_train.shape[0]
    if n == 0:
        raise ConfigError("training set is empty: expected at least one sample")
    init_rng, shuffle_rng = seed_streams(config.seed)
    if params is None:
        params = network.init_params(init_rng)
    batch = min(config.batch_size, n)
    targets = network.targets(y_train)                 # (n, n_out), built once
    x_batch = np.empty((batch, x_train.shape[1]), np.float32)
    y_batch = np.empty((batch, targets.shape[1]), np.float32)
    steps = math.ceil(n / batch)
    result = TrainResult(params=params)

    with make_executor(config.executor, network, params, batch_size=batch,
                       threads=config.threads, blas_threads=config.blas_threads) as executor:
        for epoch in range(1, config.epochs + 1):
            order = shuffle_rng.permutation(n)         # only indices are shuffled
            loss_total = 0.0
            bar = tqdm(total=steps, desc=f"epoch {epoch}/{config.epochs}", unit="batch",
                       disable=None if progress else True, leave=False)
            start = time.perf_counter()
            for step in range(steps):
                idx = order[step * batch:(step + 1) * batch]
                rows = idx.shape[0]
                np.take(x_train, idx, axis=0, out=x_batch[:rows])
                np.take(targets, idx, axis=0, out=y_batch[:rows])
                loss_total += executor.step(x_batch[:rows], y_batch[:rows], config.lr)
                bar.update()
            epoch_s = time.perf_counter() - start
            bar.close()
            mean_loss = loss_total / n
            if not math.isfinite(mean_loss):
                raise TrainingDiverged(
                    f"training diverged: the loss became {mean_loss} in epoch {epoch} "
                    f"with learning rate {config.lr}; try a smaller --lr")
            eval_start = time.perf_counter()
            val_acc = (accuracy(executor, network, x_val, y_val)
                       if x_val is not None and len(x_val) else float("nan"))
            metrics = EpochMetrics(epoch, mean_loss, val_acc, epoch_s, n / epoch_s,
                                   time.perf_counter() - eval_start)
            result.epochs.append(metrics)
            if log is not None:
                log(f"epoch {epoch:3d}  loss {mean_loss:.5f}  val acc {val_acc:.4f}  "
                    f"{epoch_s:.2f} s  {n / epoch_s:,.0f} samples/s")
        result.params = executor.params()
    if not np.all(np.isfinite(result.params)):
        raise TrainingDiverged(
            f"training diverged: the weights are not finite with learning rate "
            f"{config.lr}; try a smaller --lr")
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
