"""The benchmark grid: plan the configurations, run each in its own process, derive metrics.

Every configuration (system x network x batch size x thread count) runs in
a fresh ``python -m parallel_backprop.bench.worker`` whose thread variables
are set before start-up: BLAS and OpenMP size their pools when they load,
and a process that has run one configuration carries its pools, caches and
allocator state into the next. Configurations of one network and batch
size run back to back, so the machine's load hits the systems being
compared alike. The ceilings (large GEMMs) run first, at every thread
count the grid uses.

Derived afterwards: ``epoch_s`` (the time for ``epoch_samples`` at the
steady-state rate), ``speedup_vs_serial`` (against the serial executor on
the same network and batch) and ``efficiency`` (GFLOP/s over the ``gemm``
ceiling at the same thread count).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import PbpError
from ..executors.mpi import find_mpiexec
from .config import BenchConfig, net_label, usable_cpus
from .systems import CEILING, SYSTEMS, missing_modules

# Read by OpenBLAS, OpenMP (torch, MKL), MKL, BLIS, Accelerate and numexpr at start-up.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                    "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
# Every record has these keys; None where nothing was measured.
METRICS = ("samples_per_s", "samples_per_s_best", "epoch_s", "gflops", "gflops_best",
           "speedup_vs_serial", "efficiency", "step_s_median", "step_s_min", "cores_busy")
# Executors whose parallelism is a device's, not the CPU's.
DEVICE_SYSTEMS = ("gpu",)
# Run once per network and batch, at one thread, whatever the grid's thread counts.
ONE_THREAD = ("serial", *DEVICE_SYSTEMS)
# XLA ignores the variables above and sizes its pool from the CPUs it may run on.
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
    workers: int | None = None              # an executor's data-parallel workers (per rank)
    ranks: int | None = None                # MPI ranks, started by mpiexec
    executor_threads: int = 1               # make_executor(threads=...)
    executor_blas_threads: int = 1          # make_executor(blas_threads=...)
    process_threads: int = 1                # the thread variables' value
    cpus: tuple[int, ...] | None = None     # CPU affinity, where thread settings are ignored
    skip: str | None = None                 # why it is not run at all
    notes: tuple[str, ...] = field(default_factory=tuple)

    def record(self) -> dict:
        return {
            "system": self.system, "kind": SYSTEMS[self.system].kind,
            "net": None if self.sizes is None else "-".join(map(str, self.sizes)),
            "net_name": None if self.net is None else net_label(self.net),
            "batch_size": self.batch_size, "threads": self.threads, "workers": self.workers,
            "ranks": self.ranks,
            "blas_threads": self.process_threads,
            "cpus": None if self.cpus is None else list(self.cpus),
            "status": "skipped" if self.skip else None,
            "notes": list(self.notes) + ([self.skip] if self.skip else []),
            **dict.fromkeys(METRICS),       # None unless measured
        }

    def spec(self, config: BenchConfig) -> dict:
        return {
            "system": self.system, "sizes": self.sizes, "n_classes": self.n_classes,
            "batch_size": self.batch_size, "threads": self.threads,
            "executor_threads": self.executor_threads,
            "executor_blas_threads": self.executor_blas_threads, "cpus": self.cpus,
            "ranks": self.ranks,
            "lr": config.lr, "seed": config.seed, "pool_samples": config.pool_samples,
            "gemm_size": config.gemm_size,
            "timing": {"warmup_s": config.timing.warmup_s,
                       "min_time_s": config.timing.min_time_s,
                       "repeats": config.timing.repeats},
        }


def hybrid_split(threads: int, blas_threads: int | None) -> tuple[int, int] | str:
    """(workers, BLAS threads per worker) for ``hybrid`` at ``threads``, or why there is none.

    A split needs at least two workers of at least two BLAS threads; with
    fewer, hybrid IS the threads (T x 1) or the blas (1 x T) executor,
    which the grid measures already.
    """
    if blas_threads is None:
        blas_threads = next((b for b in range(2, threads) if threads % b == 0
                             and threads // b >= 2), None)
        if blas_threads is None:
            return (f"hybrid at {threads} thread(s): no split into >= 2 workers x >= 2 BLAS "
                    "threads (it would repeat the threads or blas executor)")
    if threads % blas_threads or threads // blas_threads < 2 or blas_threads < 2:
        return (f"hybrid at {threads} thread(s): --blas-threads {blas_threads} does not split "
                "them into >= 2 workers x >= 2 BLAS threads")
    return threads // blas_threads, blas_threads


def plan(config: BenchConfig) -> list[Run]:
    """Every configuration of the grid, in the order they run."""
    cpus = usable_cpus()
    chosen = [SYSTEMS[name] for name in config.systems]
    missing = {system.name: missing_modules(system) for system in chosen}

    def run(system, threads: int, **fields) -> Run:
        notes = list(fields.pop("notes", ()))
        if threads > len(cpus):
            notes.append(f"{threads} threads on {len(cpus)} usable CPUs: oversubscribed")
        if system.name in AFFINITY_SYSTEMS:
            if threads < len(cpus) and hasattr(os, "sched_setaffinity"):
                fields["cpus"] = tuple(cpus[:threads])
                notes.append(f"XLA ignores thread settings: held to {threads} CPU(s) by affinity")
            else:
                notes.append(f"XLA ignores thread settings: it may use all {len(cpus)} CPUs")
        if missing[system.name] and "skip" not in fields:
            fields["skip"] = (f"{', '.join(missing[system.name])} is not installed "
                              f"(pip install 'parallel-backprop[{system.extra}]')")
        fields.setdefault("process_threads", threads)
        return Run(system.name, threads, notes=tuple(notes), **fields)

    runs = []
    ceiling_threads = sorted(set(config.threads)
                             | ({1} if "serial" in config.systems else set()))
    for threads in ceiling_threads:
        runs += [run(system, threads) for system in chosen if system.kind == "ceiling"]
    for spec in config.nets:
        network = config.network(spec)
        shape = {"net": spec, "sizes": network.sizes, "n_classes": config.n_classes(network)}
        for batch_size in config.batch_sizes:
            # Once per network and batch, whatever the grid's thread counts:
            # the serial baseline, and the gpu executor (its parallelism is the GPU's).
            for system in chosen:
                if system.name in ONE_THREAD:
                    notes = ["peers run on the CPU"] if system.name in DEVICE_SYSTEMS else []
                    runs.append(run(system, 1, batch_size=batch_size, workers=1, notes=notes,
                                    **shape))
            for threads in config.threads:
                for system in chosen:
                    if system.kind == "peer":
                        runs.append(run(system, threads, batch_size=batch_size, **shape))
                    elif system.kind == "executor" and system.name not in ONE_THREAD:
                        runs.append(_executor_run(run, system, threads, config,
                                                  batch_size=batch_size, **shape))
    return runs


def _executor_run(run, system, threads: int, config: BenchConfig, **fields) -> Run:
    """An executor's configuration: its ranks, workers and BLAS threads at ``threads``."""
    if system.name == "mpi":           # T ranks of one worker and one BLAS thread each
        skip = None
        if threads > fields["batch_size"]:
            skip = f"mpi: {threads} ranks for a batch of {fields['batch_size']}"
        else:
            try:
                find_mpiexec()
            except PbpError as exc:
                skip = str(exc)
        return run(system, threads, ranks=threads, workers=1, process_threads=1,
                   **({"skip": skip} if skip else {}), **fields)
    if system.name == "threads":       # T workers, BLAS pinned to one thread each
        return run(system, threads, workers=threads, executor_threads=threads,
                   process_threads=1, **fields)
    if system.name == "hybrid":
        split = hybrid_split(threads, config.hybrid_blas_threads)
        if isinstance(split, str):
            return run(system, threads, skip=split, **fields)
        workers, blas = split
        return run(system, threads, workers=workers, executor_threads=workers,
                   executor_blas_threads=blas, process_threads=blas, **fields)
    # blas (one worker, T BLAS threads) and any other executor: threads=T.
    return run(system, threads, workers=1 if system.name == "blas" else None,
               executor_threads=threads, **fields)


def process_env(threads: int) -> dict[str, str]:
    """The environment of a measured process: the thread variables set to ``threads``,
    and this package importable from wherever this process imported it."""
    env = dict(os.environ)
    env.update({name: str(threads) for name in THREAD_VARIABLES})
    package_root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root, env.get("PYTHONPATH")]))
    return env


def execute(run: Run, config: BenchConfig, scratch: Path) -> dict:
    """Run one configuration in a fresh process; its record (status ok, skipped or failed)."""
    record = run.record()
    if run.skip:
        return record
    result_path = scratch / "result.json"
    result_path.unlink(missing_ok=True)
    env = process_env(run.process_threads)
    command = [sys.executable, "-m", "parallel_backprop.bench.worker",
               json.dumps(run.spec(config)), str(result_path)]
    if run.ranks:
        command = [find_mpiexec(), "-n", str(run.ranks), *command]
    outcome = run_isolated(command, env, config.timeout_s)
    if outcome is None:
        record.update(status="failed")
        record["notes"].append(f"timed out after {config.timeout_s:g} s")
        return record
    returncode, stderr = outcome
    if returncode == 0 and result_path.exists():
        result = json.loads(result_path.read_text())
        record["notes"] += result.pop("notes", [])
        record.update(result)
    else:
        record.update(status="failed")
        record["notes"].append(f"worker exited with status {returncode}: "
                               f"{_error_line(stderr)}"[:300])
    return record


def run_isolated(command: list[str], env: dict, timeout_s: float) -> tuple[int, str] | None:
    """Run ``command``; ``(exit status, stderr)``, or None when it ran past ``timeout_s``.

    In a session of its own, so that a timeout or Ctrl-C also ends its
    children (torch.compile starts compiler processes, mpiexec its ranks).
    """
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, stderr = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill(process)
        return None
    except BaseException:
        _kill(process)
        raise
    return process.returncode, stderr


def _error_line(stderr: str) -> str:
    """The line of a worker's stderr that names its error (MPI appends its own lines)."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if re.match(r"[\w.]+(Error|Exception|Unavailable)\b", line)]
    return (errors or lines or ["no message"])[-1]


def _kill(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    process.communicate()


def derive(records: list[dict], epoch_samples: int) -> dict[str, dict[int, float]]:
    """Add ``epoch_s``, ``speedup_vs_serial`` and ``efficiency`` to every record, in place.

    Returns the ceilings measured: system -> {threads: GFLOP/s}.
    """
    ok = [r for r in records if r["status"] == "ok"]
    ceilings: dict[str, dict[int, float]] = {}
    for r in ok:
        if r["kind"] == "ceiling":
            ceilings.setdefault(r["system"], {})[r["threads"]] = r["gflops"]
    serial = {(r["net"], r["batch_size"]): r["samples_per_s"] for r in ok
              if r["system"] == "serial"}
    for r in records:
        if r["status"] != "ok":
            continue
        if r["kind"] != "ceiling":
            r["epoch_samples"] = epoch_samples
            r["epoch_s"] = epoch_samples / r["samples_per_s"]
            base = serial.get((r["net"], r["batch_size"]))
            if base:
                r["speedup_vs_serial"] = r["samples_per_s"] / base
        ceiling = ceilings.get(CEILING, {}).get(r["threads"])
        if ceiling and r["system"] not in DEVICE_SYSTEMS:   # a CPU GEMM says nothing of a GPU
            r["efficiency"] = r["gflops"] / ceiling
    return ceilings


def run_grid(config: BenchConfig, *, progress: bool = True) -> tuple[list[dict], bool]:
    """Every configuration's record, and whether the run was interrupted (Ctrl-C)."""
    runs = plan(config)
    records = []
    # A system its worker found unable to run here (no compiler, no GPU) is
    # not started again: the reason holds for the whole machine.
    unable: dict[str, str] = {}
    bar = tqdm(total=len(runs), desc="pbp bench", unit="config", disable=not progress,
               file=sys.stderr, dynamic_ncols=True)
    try:
        with tempfile.TemporaryDirectory(prefix="pbp-bench-") as scratch:
            for run in runs:
                where = "" if run.net is None else f" {net_label(run.net)} b{run.batch_size}"
                bar.set_postfix_str(f"{run.system}{where} T{run.threads}")
                started = time.perf_counter()
                if run.system in unable and not run.skip:
                    run = replace(run, skip=unable[run.system])
                record = execute(run, config, Path(scratch))
                record["wall_s"] = time.perf_counter() - started
                if record["status"] == "skipped" and not run.skip:
                    unable[run.system] = record["notes"][-1]
                records.append(record)
                bar.update()
    except KeyboardInterrupt:
        return records, True
    finally:
        bar.close()
    return records, False
