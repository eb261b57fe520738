"""The benchmark grid: plan the configurations, run each in its own process, derive metrics.

Every configuration (system x network x batch size x thread count) runs in
a fresh ``python -m parallel_backprop.bench.worker`` whose thread variables
are set before start-up: BLAS and OpenMP size their pools when they load,
and a process that has run one configuration carries its pools, caches and
allocator state into the next. Configurations of one network and batch
size run back to back, so the machine's load hits the systems being
compared alike. The ceilings (large GEMMs) run first, at every thread
count the grid uses. With ``passes`` > 1 the whole grid runs again, every
other pass in reverse order, and each configuration keeps its median pass
(:func:`median_pass`): on a shared machine the same configuration moved by
up to 25% between runs minutes apart, more than the ratios being measured.

Derived afterwards: ``epoch_s`` (the time for ``epoch_samples`` at the
steady-state rate), ``speedup_vs_serial`` (against the baseline executor,
``executors.BASELINE``, on the same network and batch) and ``efficiency`` (GFLOP/s over the ``gemm``
ceiling at the same thread count).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import ConfigError
from ..executors import Executor, check_options
from ..executors.mpi import find_mpiexec
from ..harness import (Measurement, Status, epoch_seconds, error_line, process_env, run_isolated,
                       speedups)
from ..resources import usable_cpus
from .config import BenchConfig, net_label
from .systems import CEILING, SYSTEMS, System, availability

# XLA ignores the thread variables and sizes its pool from the CPUs it may run on.
AFFINITY_SYSTEMS = ("jax", "gemm-jax")


@dataclass(frozen=True)
class Run:
    """One configuration: what the worker runs, and the record's identifying fields."""

    system: str
    threads: int
    net: str | None = None                  # the spec as given; None for a ceiling
    sizes: tuple[int, ...] | None = None
    n_classes: int | None = None
    batch_size: int | None = None
    optimizer: str | None = None            # the update rule; None for a ceiling
    precision: str = "fp32"                 # of the products
    workers: int | None = None              # an executor's data-parallel workers (per rank)
    ranks: int | None = None                # MPI ranks, started by mpiexec
    executor_threads: int = 1               # make_executor(threads=...)
    executor_blas_threads: int = 1          # make_executor(blas_threads=...)
    process_threads: int = 1                # the thread variables' value
    cpus: tuple[int, ...] | None = None     # CPU affinity, where thread settings are ignored
    skip: str | None = None                 # why it is not run at all
    notes: tuple[str, ...] = field(default_factory=tuple)

    def record(self) -> Measurement:
        """Its record, nothing measured yet (skipped, with the reason, if ``skip``)."""
        record = Measurement(
            system=self.system, kind=SYSTEMS[self.system].kind,
            net=None if self.sizes is None else "-".join(map(str, self.sizes)),
            net_name=None if self.net is None else net_label(self.net),
            batch_size=self.batch_size, optimizer=self.optimizer, precision=self.precision,
            threads=self.threads,
            workers=self.workers,
            ranks=self.ranks, blas_threads=self.process_threads,
            cpus=None if self.cpus is None else list(self.cpus), notes=list(self.notes))
        if self.skip:
            record.skip(self.skip)
        return record

    def spec(self, config: BenchConfig, plugins: tuple[str, ...] = ()) -> dict:
        """What the worker process is given (see ``worker.run``)."""
        return {
            "system": self.system, "sizes": self.sizes, "n_classes": self.n_classes,
            "batch_size": self.batch_size, "optimizer": self.optimizer,
            "precision": self.precision, "threads": self.threads,
            "executor_threads": self.executor_threads,
            "executor_blas_threads": self.executor_blas_threads, "cpus": self.cpus,
            "ranks": self.ranks, "plugins": list(plugins),
            "lr": config.lr, "seed": config.seed, "pool_samples": config.pool_samples,
            "gemm_size": config.gemm_size, "pool_file": config.pool_file,
            "timing": {"warmup_s": config.timing.warmup_s,
                       "min_time_s": config.timing.min_time_s,
                       "repeats": config.timing.repeats},
        }


def plan(config: BenchConfig) -> list[Run]:
    """Every configuration of the grid, in the order they run.

    An executor that does not scale with cores (``scales_with_cores()``: the
    baseline, a device's) runs once per network and batch, at one thread;
    the others at every thread count, laid out as their ``layout`` says.
    """
    cpus = usable_cpus()
    chosen = [SYSTEMS[name] for name in config.systems]
    reasons = {system.name: availability(system) for system in chosen}

    def run(system: System, threads: int, **fields) -> Run:
        notes = list(fields.pop("notes", ()))
        if threads > len(cpus):
            notes.append(f"{threads} threads on {len(cpus)} usable CPUs: oversubscribed")
        if system.name in AFFINITY_SYSTEMS:
            if threads < len(cpus) and hasattr(os, "sched_setaffinity"):
                fields["cpus"] = tuple(cpus[:threads])
                notes.append(f"XLA ignores thread settings: held to {threads} CPU(s) by affinity")
            else:
                notes.append(f"XLA ignores thread settings: it may use all {len(cpus)} CPUs")
        if reasons[system.name] and "skip" not in fields:
            fields["skip"] = reasons[system.name]
        optimizer = fields.get("optimizer")
        if optimizer and optimizer not in system.optimizers and "skip" not in fields:
            fields["skip"] = (f"{system.name} is timed with {', '.join(system.optimizers)} "
                              f"only, not {optimizer}")
        fields.setdefault("process_threads", threads)
        return Run(system.name, threads, notes=tuple(notes), **fields)

    one_thread = [s for s in chosen if s.executor and not s.executor.scales_with_cores()]
    # Each precision of the grid for the systems that compute in it (a peer in one).
    at = [(p, [s for s in chosen if p in s.precisions]) for p in config.precisions]
    # The ceiling at one thread too where a CPU executor runs at one thread only.
    ceiling_threads = sorted(set(config.threads)
                             | ({1} if any(not s.on_device for s in one_thread) else set()))
    runs = []
    for threads in ceiling_threads:
        runs += [run(system, threads) for system in chosen if system.kind == "ceiling"]
    for spec in config.nets:
        network = config.network(spec)
        shape = {"net": spec, "sizes": network.sizes, "n_classes": config.n_classes(network)}
        for batch_size, optimizer in itertools.product(config.batch_sizes, config.optimizers):
            for precision, systems in at:
                trains = dict(shape, batch_size=batch_size, optimizer=optimizer,
                              precision=precision)
                runs += _training_runs(run, systems, one_thread, config, trains)
    return runs


def _training_runs(run, systems: list[System], one_thread: list[System], config: BenchConfig,
                   trains: dict) -> list[Run]:
    """The runs of ``systems`` on one network, batch, optimizer and precision: those that
    run at one thread first, then every thread count."""
    runs = []
    for system in one_thread:
        if system in systems:
            notes = ["peers run on the CPU"] if system.on_device else []
            runs.append(_executor_run(run, system.executor, 1, config, notes=notes, **trains))
    for threads in config.threads:
        for system in systems:
            if system.kind == "peer":
                runs.append(run(system, threads, **trains))
            elif system.executor and system not in one_thread:
                runs.append(_executor_run(run, system.executor, threads, config, **trains))
    return runs


def _executor_run(run, cls: type[Executor], threads: int, config: BenchConfig,
                  **fields) -> Run:
    """An executor's configuration at ``threads``: the ranks, workers and BLAS threads of
    its layout, or skipped where it has none."""
    system = SYSTEMS[cls.name]
    blas = config.hybrid_blas_threads if cls.nested_blas else None
    layout = cls.layout(threads, blas)
    if layout is None:
        return run(system, threads, skip=_no_layout(cls, threads, blas), **fields)

    if layout.ranks and layout.ranks > fields["batch_size"]:
        fields["skip"] = f"{cls.name}: {layout.ranks} ranks for a batch of {fields['batch_size']}"
    try:      # a precision this machine cannot run (bf16 without native bf16): skipped
        check_options(cls.name, precision=fields["precision"])
    except ConfigError as exc:
        fields.setdefault("skip", str(exc))
    return run(system, threads, ranks=layout.ranks, workers=layout.workers,
               executor_threads=layout.threads,
               executor_blas_threads=layout.executor_blas_threads,
               process_threads=layout.blas_threads, **fields)


def _no_layout(cls: type[Executor], threads: int, blas: int | None) -> str:
    """Why ``cls`` has no layout on ``threads`` threads, in the words of its ``layout``."""
    doc = (cls.layout.__doc__ or "").strip().splitlines()
    rule = f" ({doc[0].replace('``', '')})" if doc else ""
    given = f" with --blas-threads {blas}" if blas else ""
    return f"{cls.name} at {threads} thread(s){given}: no layout of its workers fits{rule}"


def execute(run: Run, config: BenchConfig, scratch: Path,
            plugins: tuple[str, ...] = ()) -> Measurement:
    """Run one configuration in a fresh process; its record (status ok, skipped or failed)."""
    record = run.record()
    if run.skip:
        return record
    result_path = scratch / "result.json"
    result_path.unlink(missing_ok=True)
    env = process_env(run.process_threads)
    command = [sys.executable, "-m", "parallel_backprop.bench.worker",
               json.dumps(run.spec(config, plugins)), str(result_path)]
    if run.ranks:
        command = [find_mpiexec(), "-n", str(run.ranks), *command]
    outcome = run_isolated(command, env, config.timeout_s)
    if outcome is None:
        record.fail(f"timed out after {config.timeout_s:g} s")
        return record
    returncode, stderr = outcome
    if returncode == 0 and result_path.exists():
        record.take(json.loads(result_path.read_text()))
    else:
        record.fail(f"worker exited with status {returncode}: {error_line(stderr)}"[:300])
    return record


def derive(records: list[Measurement], epoch_samples: int) -> dict[str, dict[int, float]]:
    """Add ``epoch_s``, ``speedup_vs_serial`` and ``efficiency`` to every record, in place.

    Returns the ceilings measured: system -> {threads: GFLOP/s}.
    """
    ceilings: dict[str, dict[int, float]] = {}
    for r in records:
        if r.ok and r.kind == "ceiling":
            ceilings.setdefault(r.system, {})[r.threads] = r.gflops
    ratios = speedups(records, lambda r: (r.net, r.batch_size, r.optimizer))   # over fp32 serial
    for r, ratio in zip(records, ratios):
        if not r.ok:
            continue
        if r.kind != "ceiling":
            r.extra["epoch_samples"] = epoch_samples
            r.epoch_s = epoch_seconds(epoch_samples, r.samples_per_s)
            r.speedup_vs_serial = ratio
        ceiling = ceilings.get(CEILING, {}).get(r.threads)
        if ceiling and not SYSTEMS[r.system].on_device:   # a CPU GEMM says nothing of a GPU
            r.efficiency = r.gflops / ceiling
    return ceilings


def pass_order(n_runs: int, passes: int):
    """Indices of the planned runs, pass after pass: in plan order, then reversed, and so on."""
    for number in range(passes):
        yield from (range(n_runs) if number % 2 == 0 else reversed(range(n_runs)))


def median_pass(records: list[Measurement]) -> Measurement:
    """One configuration's record over its passes: that of the pass with the median rate
    (samples/s; GFLOP/s for a ceiling; the lower middle one for an even number), with the
    fastest round of any pass, every pass's rate (``samples_per_s_passes``, or
    ``gflops_passes``) and the time of all of them.

    A configuration skipped or failed in every pass: its first record, with the reason.
    """
    ok = [r for r in records if r.ok]
    if len(records) == 1 or not ok:
        return records[0]
    rate = "gflops" if ok[0].samples_per_s is None else "samples_per_s"
    record = copy.deepcopy(sorted(ok, key=lambda r: getattr(r, rate))[(len(ok) - 1) // 2])
    for name, best in (("samples_per_s_best", max), ("gflops_best", max), ("step_s_min", min)):
        values = [getattr(r, name) for r in ok if getattr(r, name) is not None]
        if values:
            setattr(record, name, best(values))
    record.wall_s = sum(r.wall_s or 0.0 for r in records)
    record.extra[f"{rate}_passes"] = [getattr(r, rate) if r.ok else None for r in records]
    failed = [r for r in records if not r.ok]
    if failed:
        record.notes.append(f"{len(failed)} of {len(records)} passes did not finish: "
                            f"{failed[0].notes[-1] if failed[0].notes else failed[0].status}")
    return record


def run_grid(config: BenchConfig, *, progress: bool = True,
             plugins: tuple[str, ...] = ()) -> tuple[list[Measurement], bool]:
    """Every configuration's record (its median pass), and whether the run was
    interrupted (Ctrl-C: the passes measured so far count)."""
    runs = plan(config)
    measured: list[list[Measurement]] = [[] for _ in runs]
    # A system its worker found unable to run here (no compiler, no GPU) is
    # not started again at that precision: the reason holds for the whole machine.
    unable: dict[tuple[str, str], str] = {}
    bar = tqdm(total=len(runs) * config.passes, desc="pbp bench", unit="config",
               disable=not progress, file=sys.stderr, dynamic_ncols=True)
    interrupted = False
    try:
        with tempfile.TemporaryDirectory(prefix="pbp-bench-") as scratch:
            for index in pass_order(len(runs), config.passes):
                run = runs[index]
                if measured[index] and measured[index][0].status == Status.SKIPPED:
                    bar.update()
                    continue                     # a reason to skip holds for every pass
                where = "" if run.net is None else f" {net_label(run.net)} b{run.batch_size}"
                bar.set_postfix_str(f"{run.system}{where} T{run.threads}")
                started = time.perf_counter()
                if (run.system, run.precision) in unable and not run.skip:
                    run = replace(run, skip=unable[run.system, run.precision])
                record = execute(run, config, Path(scratch), plugins)
                record.wall_s = time.perf_counter() - started
                if record.status == Status.SKIPPED and not run.skip:
                    unable[run.system, run.precision] = record.notes[-1]
                measured[index].append(record)
                bar.update()
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return [median_pass(records) for records in measured if records], interrupted
