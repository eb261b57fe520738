"""Learning-rate grid search on the train/validation split (``pbp tune``).

Every candidate (a learning rate, and a batch size when several are asked
for) is trained from the same initial weights and the same shuffles
(``seed``) on the training split and scored on the validation split; the
data sets' 5:1 split keeps the test set out of the choice. The candidate
with the highest validation accuracy wins (the first in grid order on a
tie) and its parameters, kept from its run, are evaluated once on the test
set. A candidate whose loss or weights become NaN or infinite is recorded
as ``diverged``, never as a failure of the search.

Parallel over candidates or inside each one? Candidates are independent,
so ``jobs`` processes of one core each need no synchronisation at all,
while the threads executor pays two barriers per step and the blas
executor leaves the element-wise work on one core. Measured on 2 cores
(AMD EPYC; Fashion-MNIST, 25,000 training images, Net-1h, batch 128, the
six seed rates, 3 epochs; the search's wall time, two runs each):

    2 jobs x serial (1 thread each)     5.4, 5.5 s
    1 job  x blas on 2 threads          5.1, 6.9 s
    1 job  x threads on 2 threads       5.9, 8.1 s
    1 job  x serial                     8.7, 9.0 s

On a quiet machine the two ways tie (the pool costs ~0.5 s to start and
to hand the data over); candidates in parallel are the steadier, and far
the more robust when another program wants the cores: with a benchmark
running beside it (10,000 images), 2 jobs took 2.7 s, the threads
executor 4.1 s and the blas executor 68.7 s (its spinning BLAS threads
oversubscribed). So ``jobs`` defaults to one candidate per core when each
candidate uses one thread.

Processes are started with ``forkserver`` (``spawn`` where there is none):
a fork of a process holding BLAS thread pools is not safe. The data reach
each worker once, pickled into its initializer, not once per candidate.
"""

from __future__ import annotations

import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, replace
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError, PbpError
from ..executors import check_options, executor_class
from ..optim import OptimizerConfig
from ..plugins import load_plugins
from ..harness import Status, is_ok
from ..network import Network
from ..trainer import TrainConfig, TrainingDiverged, evaluate, steady_throughput, train

SCHEMA = "parallel-backprop/tune/1"
# The seed's grid of learning rates.
SEED_LRS = (0.001, 0.002, 0.01, 0.1, 0.5, 1.0)


@dataclass(frozen=True)
class TuneConfig:
    """A grid search: learning rates x batch sizes x update rules, each trained as ``train``
    would.

    ``train`` holds everything else (epochs, seed, executor, threads, schedule);
    its ``lr``, ``batch_size`` and optimizer's name, momentum and weight decay
    are replaced by each candidate's (an empty ``optimizers``, ``momentums``
    or ``weight_decays``: ``train.optimizer``'s own; momentums apply to
    momentum and nesterov only). ``jobs``:
    candidates trained at once, each in its own process (None: one per
    core the candidates' threads leave free).
    """

    lrs: tuple[float, ...] = SEED_LRS
    batch_sizes: tuple[int, ...] = (128,)
    train: TrainConfig = TrainConfig(epochs=5)
    jobs: int | None = None
    optimizers: tuple[str, ...] = ()
    momentums: tuple[float, ...] = ()
    weight_decays: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not self.lrs:
            raise ConfigError("--lrs: expected at least one learning rate")
        for lr in self.lrs:
            if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr > 0):
                raise ConfigError(f"--lrs {lr!r}: expected positive finite learning rates")
        if not self.batch_sizes:
            raise ConfigError("--batch-sizes: expected at least one batch size")
        for batch in self.batch_sizes:
            if not (isinstance(batch, int) and batch >= 1):
                raise ConfigError(f"--batch-sizes {batch!r}: expected positive integers")
        self.optimizer_grid()    # every update rule checked (and refused) before any training
        if self.jobs is not None:
            if not (isinstance(self.jobs, int) and self.jobs >= 1):
                raise ConfigError(f"--jobs {self.jobs!r}: expected a positive integer")
            # A device, or ranks (which must all run the same candidates in
            # the same order), cannot be shared with other candidates.
            if self.jobs > 1 and executor_class(self.train.executor).one_job():
                raise ConfigError(f"--jobs {self.jobs}: executor {self.train.executor!r} trains "
                                  "one candidate at a time; use --jobs 1")

    def optimizer_grid(self) -> list[OptimizerConfig]:
        """The update rules tried: every optimizer x weight decay (x momentum where used)."""
        base = self.train.optimizer
        grid = []
        for name in dict.fromkeys(self.optimizers or (base.name,)):
            momentums = (self.momentums or (base.momentum,)) \
                if name in ("momentum", "nesterov") else (base.momentum,)
            for momentum in dict.fromkeys(momentums):
                for decay in dict.fromkeys(self.weight_decays or (base.weight_decay,)):
                    grid.append(replace(base, name=name, momentum=float(momentum),
                                        weight_decay=float(decay)))
        for optimizer in grid:
            check_options(self.train.executor, optimizer=optimizer,
                          precision=self.train.precision)
        return grid

    def candidates(self) -> list[TrainConfig]:
        """Every candidate's training settings: batch size by batch size, update rule by
        update rule, rates in order."""
        return [replace(self.train, lr=float(lr), batch_size=batch, optimizer=optimizer)
                for batch in self.batch_sizes for optimizer in self.optimizer_grid()
                for lr in dict.fromkeys(self.lrs)]

    def resolved_jobs(self, cores: int) -> int:
        """``jobs``, or by default as many one-core candidates as there are cores free."""
        if self.jobs is not None:
            return self.jobs
        cls = executor_class(self.train.executor)
        if cls.one_job():
            return 1
        per_candidate = self.train.threads * (self.train.blas_threads if cls.nested_blas else 1)
        return max(1, min(len(self.candidates()), cores // per_candidate))


def tune(network: Network, data, config: TuneConfig, *,
         log: Callable[[str], None] | None = None, plugins: Sequence[str] = ()) -> dict:
    """Train every candidate of ``config`` on ``data`` (a :class:`~..data.Dataset`).

    Returns the tune document (see ``SCHEMA``): one record per candidate
    (``lr``, ``batch_size``, ``status`` ok or diverged, ``val_accuracy``,
    ``final_loss``, ``train_s``, ...) and ``best`` (the winner, with its
    ``test_accuracy``). Raises :class:`PbpError` when every candidate diverged.
    ``plugins`` are imported in every process that trains candidates.
    """
    from ..resources import usable_cpus

    candidates = config.candidates()
    jobs = min(config.resolved_jobs(len(usable_cpus())), len(candidates))
    started = time.perf_counter()
    search = _Search(len(candidates), log)
    arrays = (data.x_train, data.y_train, data.x_val, data.y_val)
    if jobs == 1:
        for i, candidate in enumerate(candidates):
            search.collect(i, train_candidate(network, candidate, *arrays))
    else:
        _train_in_pool(network, arrays, candidates, jobs, search, tuple(plugins))
    if search.winner is None:
        raise PbpError(f"every candidate diverged (learning rates "
                       f"{', '.join(f'{lr:g}' for lr in config.lrs)}); try smaller ones")
    best = {key: search.results[search.winner][key]
            for key in ("lr", "batch_size", *OPTIMIZER_KEYS, "val_accuracy")}
    best["test_accuracy"] = evaluate(network, search.params, data.x_test, data.y_test)
    return {
        "schema": SCHEMA,
        "dataset": data.name,
        "net": network.spec,
        "activations": list(network.activations),
        "loss": network.loss,
        "n_train": len(data.x_train), "n_val": len(data.x_val), "n_test": len(data.x_test),
        "config": {**{key: value for key, value in asdict(config.train).items()
                      if key not in ("lr", "batch_size")},    # the candidates' own
                   "lrs": list(config.lrs), "batch_sizes": list(config.batch_sizes),
                   "optimizers": list(config.optimizers), "momentums": list(config.momentums),
                   "weight_decays": list(config.weight_decays)},
        "jobs": jobs,
        "candidates": search.results,
        "best": best,
        "wall_s": time.perf_counter() - started,
    }


class _Search:
    """The candidates' records as they come in, and the parameters of the best so far."""

    def __init__(self, n: int, log: Callable[[str], None] | None):
        self.results: list[dict | None] = [None] * n
        self.winner: int | None = None
        self.params: np.ndarray | None = None
        self.log = log

    def collect(self, i: int, result: dict) -> None:
        params = result.pop("params")
        self.results[i] = result
        if is_ok(result) and self._beats(i):
            self.winner, self.params = i, params
        if self.log is not None:
            self.log(_line(result))

    def _beats(self, i: int) -> bool:
        """Whether candidate ``i`` beats the best so far (ties go to the earlier candidate)."""
        if self.winner is None:
            return True
        mine, best = self.results[i]["val_accuracy"], self.results[self.winner]["val_accuracy"]
        return mine > best or (mine == best and i < self.winner)


def _train_in_pool(network: Network, arrays: tuple, candidates: list[TrainConfig], jobs: int,
                   search: _Search, plugins: tuple[str, ...]) -> None:
    """Train ``candidates`` in ``jobs`` processes, handing each result to ``search``."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_init_worker,
                             initargs=(network, arrays, plugins)) as pool:
        futures = {pool.submit(_train_in_worker, candidate): i
                   for i, candidate in enumerate(candidates)}
        try:
            for future in as_completed(futures):
                search.collect(futures[future], future.result())
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise


def train_candidate(network: Network, config: TrainConfig, x_train, y_train, x_val,
                    y_val) -> dict:
    """Train one candidate; its record, with ``params`` (None when it diverged)."""
    record = {"lr": config.lr, "batch_size": config.batch_size,
              "optimizer": config.optimizer.name, "momentum": config.optimizer.momentum,
              "weight_decay": config.optimizer.weight_decay, "status": Status.OK,
              "val_accuracy": None, "final_loss": None, "train_s": None,
              "samples_per_s": None, "val_accuracy_per_epoch": [], "note": None}
    started = time.perf_counter()
    try:
        with np.errstate(over="ignore", invalid="ignore"):   # divergence is recorded instead
            result = train(network, config, x_train, y_train, x_val, y_val, progress=False)
    except TrainingDiverged as exc:
        record.update(status=Status.DIVERGED, note=str(exc), train_s=time.perf_counter() - started,
                      params=None)
        return record
    epochs = result.epochs
    kept = epochs[(result.best_epoch or len(epochs)) - 1]   # early stopping keeps the best
    record.update(
        val_accuracy=kept.val_accuracy, final_loss=epochs[-1].loss,
        best_epoch=result.best_epoch, stopped_early=result.stopped_early,
        train_s=sum(e.epoch_s for e in epochs),
        samples_per_s=steady_throughput(result.epochs)[0],
        val_accuracy_per_epoch=[e.val_accuracy for e in epochs], params=result.params)
    return record


# A worker's network and data, set once by its initializer.
_WORKER: dict = {}


def _init_worker(network: Network, arrays: tuple, plugins: tuple[str, ...] = ()) -> None:
    load_plugins(plugins)    # a fresh process: executors registered at run time are not here
    _WORKER["network"], _WORKER["arrays"] = network, arrays


def _train_in_worker(config: TrainConfig) -> dict:
    return train_candidate(_WORKER["network"], config, *_WORKER["arrays"])


def _line(r: dict) -> str:
    head = f"lr {r['lr']:<8g} batch {r['batch_size']:<6d} {_method(r)}"
    if not is_ok(r):
        return f"{head} diverged"
    return f"{head} val acc {r['val_accuracy']:.4f}  loss {r['final_loss']:.5f}  " \
           f"{r['train_s']:.2f} s"


# The update rule's settings in a candidate's record.
OPTIMIZER_KEYS = ("optimizer", "momentum", "weight_decay")


def _method(r: dict) -> str:
    """A candidate's update rule in words: ``adam``, ``momentum 0.9``, ``sgd wd 0.0001``."""
    said = r["optimizer"]
    if r["optimizer"] in ("momentum", "nesterov"):
        said += f" {r['momentum']:g}"
    return said + (f" wd {r['weight_decay']:g}" if r["weight_decay"] else "")


def table(doc: dict) -> list[str]:
    """The printed table: validation accuracy per candidate, the winner marked."""
    best = doc["best"]
    keys = ("lr", "batch_size", *OPTIMIZER_KEYS)
    lines = [f"{'lr':>10} {'batch':>6} {'optimizer':<18} {'val acc':>8} {'loss':>9} "
             f"{'train s':>8}"]
    for r in doc["candidates"]:
        mark = "  <- best" if all(r[key] == best[key] for key in keys) else ""
        head = f"{r['lr']:>10g} {r['batch_size']:>6d} {_method(r):<18}"
        if not is_ok(r):
            lines.append(f"{head} {'diverged':>8}")
            continue
        lines.append(f"{head} {r['val_accuracy']:>8.4f} "
                     f"{r['final_loss']:>9.5f} {r['train_s']:>8.1f}{mark}")
    lines.append(f"best: lr {best['lr']:g}, batch {best['batch_size']}, {_method(best)}: "
                 f"validation accuracy {best['val_accuracy']:.4f}, test accuracy "
                 f"{best['test_accuracy']:.4f}")
    return lines
