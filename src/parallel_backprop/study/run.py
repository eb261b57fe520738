"""``pbp study``: run the parts of a study and write ``study.json``.

The speed parts are grids of the bench harness (:func:`..bench.run_bench`),
each written into a folder of its own with the harness's ``bench.json``,
``bench.csv`` and plots, and embedded in ``study.json``. The training parts
run ``pbp train`` itself, one process per run with the thread variables
set as the harness sets them (:func:`..bench.runner.process_env`), so that
every executor, MPI's ranks included, trains exactly as a user would run it.
The learning rate is tuned in this process (:func:`.tune.tune`), which
spreads the candidates over the cores.

``study.json``::

    {"schema": "parallel-backprop/study/1", "preset": "quick", "command": [...],
     "config": {...}, "environment": {...}, "wall_s": 212.4, "interrupted": false,
     "parts": {"tune": {"status": "ok", "wall_s": 12.1, "notes": []}, ...},
     "tune": {"fashion-mnist": <tune document>, ...},
     "accuracy": [<training run>, ...], "kdd_size": [<training run>, ...],
     "grids": {"batch-fashion": <bench.json>, "batch-kdd": ..., "threads": ...,
               "width": ...},
     "notes": [...]}

A training run records ``dataset``, ``executor``, ``threads``,
``blas_threads``, ``ranks``, ``net``, ``batch_size``, ``lr``, ``epochs``,
``limit``, ``n_train``, ``status`` (ok, skipped, failed), ``notes``,
``test_accuracy``, ``val_accuracy``, ``epoch_s``, ``samples_per_s`` and,
for accuracy runs, ``accuracy_vs_serial`` and ``matches_serial``.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Callable

from ..errors import DataError, PbpError
from .config import (ACCURACY_TOLERANCE, SHAPES, SIZE_EXECUTORS, WIDTH_SYSTEMS, PARTS,
                     StudyConfig)

SCHEMA = "parallel-backprop/study/1"
OUTPUT = "study.json"


@dataclass(frozen=True)
class Source:
    """A data set found on this machine: how ``pbp train`` and ``load_dataset`` reach it."""

    name: str
    args: tuple[str, ...]     # pbp train's data options
    load: dict                # load_dataset's keyword arguments
    where: str                # for the report


def run_study(config: StudyConfig, out_dir: Path, *, data_dir=None, kdd_file=None,
              progress: bool = True, log: Callable[[str], None] = print,
              command: list[str] | None = None) -> dict:
    """Run the parts of ``config``; write ``out_dir/study.json`` (after every part) and
    the harness's outputs into subfolders. Returns the study document.

    Ctrl-C writes what was done (``"interrupted": true``) and re-raises.
    """
    from ..bench.environment import environment, load_average, warnings
    from ..fileio import check_writable

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise PbpError(f"--out {out_dir}: is a file, expected a folder")
    sources, notes = find_sources(config, data_dir, kdd_file)
    out_dir.mkdir(parents=True, exist_ok=True)
    check_writable(out_dir / OUTPUT, "--out")
    env = environment()
    doc = {"schema": SCHEMA, "preset": config.preset, "command": command or sys.argv,
           "config": asdict(config), "environment": env, "wall_s": None,
           "interrupted": False, "parts": {}, "data": {s.name: s.where for s in sources.values()},
           "tune": {}, "accuracy": [], "kdd_size": [], "grids": {},
           "notes": warnings(env) + list(config.notes) + notes}
    for note in notes:
        log(f"note: {note}")
    started = time.perf_counter()
    runners = {"tune": _tune_part, "accuracy": _accuracy_part, "kdd-size": _kdd_size_part,
               "batch": _batch_part, "threads": _threads_part, "width": _width_part}
    study = _Study(config, out_dir, sources, doc, progress, log)
    try:
        for part in PARTS:
            if part not in config.parts:
                continue
            log(f"== {part}")
            part_started = time.perf_counter()
            record = doc["parts"][part] = {"status": "running", "wall_s": None, "notes": []}
            try:
                runners[part](study, record)
                if record["status"] == "running":
                    record["status"] = "ok"
            finally:
                record["wall_s"] = time.perf_counter() - part_started
                doc["wall_s"] = time.perf_counter() - started
                _write(doc, out_dir / OUTPUT)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        for record in doc["parts"].values():
            if record["status"] == "running":
                record["status"] = "interrupted"
        _write(doc, out_dir / OUTPUT)
        raise
    env["load_average_end"] = load_average()
    doc["wall_s"] = time.perf_counter() - started
    _write(doc, out_dir / OUTPUT)
    return doc


def find_sources(config: StudyConfig, data_dir, kdd_file) -> tuple[dict[str, Source], list[str]]:
    """The data sets of ``config.datasets`` found here (never downloaded), and notes on
    those that are not. A ``kdd_file`` named explicitly must exist."""
    from ..data.sources import locate_images, locate_kdd

    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: does not exist or is not a folder")
    sources, notes = {}, []
    for name in config.datasets:
        if name == "synthetic":
            sizes = (config.samples, config.features, config.classes)
            sources[name] = Source(name, ("--dataset", name, "--samples", str(sizes[0]),
                                          "--features", str(sizes[1]), "--classes",
                                          str(sizes[2])),
                                   {"synthetic_samples": sizes[0], "synthetic_features": sizes[1],
                                    "synthetic_classes": sizes[2]},
                                   f"synthetic, {sizes[0]} samples x {sizes[1]} features, "
                                   f"{sizes[2]} classes")
            continue
        try:
            if name == "kdd99":
                path = locate_kdd(kdd_file, data_dir, download=False, progress=False)
                sources[name] = Source(name, ("--dataset", name, "--kdd-file", str(path)),
                                       {"kdd_file": path, "download": False}, str(path))
            else:
                folder = locate_images(name, data_dir, download=False,
                                       progress=False)["train-images"].parent
                sources[name] = Source(name, ("--dataset", name, "--data-dir", str(folder)),
                                       {"data_dir": folder, "download": False}, str(folder))
        except DataError as exc:
            if name == "kdd99" and kdd_file is not None:
                raise
            notes.append(f"{name} is not on this machine, its training parts are skipped "
                         f"({str(exc).split(';')[0]}); give --data-dir"
                         + (" or --kdd-file" if name == "kdd99" else "")
                         + f", or get it with `pbp fetch {name}`")
    return sources, notes


class _Study:
    """What the parts share: the config, where to write, the data sources, the document."""

    def __init__(self, config, out_dir, sources, doc, progress, log):
        from ..bench.config import usable_cpus

        self.config, self.out_dir, self.sources, self.doc = config, out_dir, sources, doc
        self.progress, self.log = progress, log
        self.cores = len(usable_cpus())
        self.unable: dict[str, str] = {}    # executor -> why it cannot run here

    def lr(self, dataset: str) -> float | None:
        """The learning rate of the training runs on ``dataset``: --lr, else the tuned one."""
        if self.config.lr is not None:
            return self.config.lr
        tuned = self.doc["tune"].get(dataset)
        return None if tuned is None else tuned["best"]["lr"]


# ---- training parts -------------------------------------------------------------

def _tune_part(study: _Study, record: dict) -> None:
    from ..data import load_dataset
    from ..network import Network
    from ..trainer import TrainConfig
    from .tune import TuneConfig, table, tune

    config = study.config
    if config.lr is not None:
        record.update(status="skipped", notes=[f"--lr {config.lr:g} given: nothing to tune"])
        return
    if not study.sources:
        record.update(status="skipped", notes=["no data set found"])
        return
    for name, source in study.sources.items():
        data = load_dataset(name, limit=config.tune_limit, seed=config.seed, progress=False,
                            **source.load)
        network = Network.from_spec(config.train_net, data.n_features, data.n_classes)
        study.log(f"tune {name}: {len(data.x_train)} train, {len(data.x_val)} validation "
                  f"samples, net {network.spec}, {len(config.lrs)} learning rates")
        tune_config = TuneConfig(lrs=config.lrs, batch_sizes=(config.train_batch,),
                                 train=TrainConfig(epochs=config.tune_epochs, seed=config.seed))
        try:
            result = tune(network, data, tune_config)
        except PbpError as exc:
            record["notes"].append(f"tune {name}: {exc}")
            continue
        study.doc["tune"][name] = result
        for line in table(result):
            study.log(f"  {line}")


def _accuracy_part(study: _Study, record: dict) -> None:
    config = study.config
    for name in study.sources:
        lr = study.lr(name)
        if lr is None:
            record["notes"].append(f"{name}: no learning rate (tuning failed): skipped")
            continue
        runs = []
        for executor in config.executors:
            run = _train(study, name, executor, lr=lr, epochs=config.epochs, limit=config.limit,
                         batch=config.train_batch)
            run["part"] = "accuracy"
            runs.append(run)
            study.doc["accuracy"].append(run)
            study.log("  " + _run_line(run))
        compare_to_serial(runs)


def compare_to_serial(runs: list[dict]) -> None:
    """Add ``accuracy_vs_serial`` and ``matches_serial`` to the runs of one data set."""
    serial = next((r for r in runs if r["executor"] == "serial" and r["status"] == "ok"), None)
    for r in runs:
        if serial is None or r["status"] != "ok":
            r["accuracy_vs_serial"] = r["matches_serial"] = None
            continue
        r["accuracy_vs_serial"] = r["test_accuracy"] - serial["test_accuracy"]
        r["matches_serial"] = bool(abs(r["accuracy_vs_serial"]) <= ACCURACY_TOLERANCE)


def _kdd_size_part(study: _Study, record: dict) -> None:
    config = study.config
    if "kdd99" not in study.sources:
        record.update(status="skipped", notes=["no KDD Cup 99 file: give --kdd-file or "
                                               "--data-dir"])
        return
    lr = study.lr("kdd99") or 0.1
    executors = [e for e in config.executors if e in SIZE_EXECUTORS]
    runs = []
    for size in config.kdd_sizes:
        # The training split is 5/6 of the pool that --limit caps.
        limit = None if size is None else math.ceil(size * 6 / 5)
        for executor in executors:
            # Two epochs: pbp train's epoch_s is the steady one, the first pays warm-up.
            run = _train(study, "kdd99", executor, lr=lr, epochs=2, limit=limit,
                         batch=config.size_batch)
            run.update(part="kdd-size", size=size)
            runs.append(run)
            study.doc["kdd_size"].append(run)
            study.log("  " + _run_line(run))
    serial = {r["size"]: r["samples_per_s"] for r in runs
              if r["executor"] == "serial" and r["status"] == "ok"}
    for r in runs:
        base = serial.get(r["size"])
        r["speedup_vs_serial"] = (r["samples_per_s"] / base
                                  if base and r["status"] == "ok" else None)


def executor_settings(executor: str, cores: int) -> dict:
    """How a training run uses this machine's ``cores`` with ``executor``.

    ``threads`` and ``blas`` take every core; ``mpi`` one rank per core (at
    least two); ``hybrid`` the harness's split into >= 2 workers x >= 2 BLAS
    threads, oversubscribed 2 x 2 where the cores allow none (below 4).
    """
    from ..bench.runner import hybrid_split

    settings = {"threads": 1, "blas_threads": 1, "ranks": None, "process_threads": 1,
                "notes": []}
    if executor == "blas":
        settings.update(threads=cores, process_threads=cores)
    elif executor == "threads":
        settings.update(threads=cores)
    elif executor == "hybrid":
        split = hybrid_split(cores, None)
        if isinstance(split, str):
            split = (2, 2)
            settings["notes"].append(f"2 workers x 2 BLAS threads on {cores} core(s): "
                                     "oversubscribed")
        settings.update(threads=split[0], blas_threads=split[1], process_threads=split[1])
    elif executor == "mpi":
        settings.update(ranks=max(2, cores))
    return settings


def _unavailable(study: _Study, executor: str) -> str | None:
    """Why ``executor`` cannot train on this machine, or None (checked once per study)."""
    if executor in study.unable:
        return study.unable[executor]
    reason = None
    if executor == "mpi":
        from ..executors.mpi import find_mpiexec

        if find_spec("mpi4py") is None:
            reason = "mpi4py is not installed (pip install 'parallel-backprop[mpi]')"
        else:
            try:
                find_mpiexec()
            except PbpError as exc:
                reason = str(exc)
    elif executor == "gpu":
        if find_spec("torch") is None or find_spec("triton") is None:
            reason = "torch and triton are not installed (pip install 'parallel-backprop[gpu]')"
        else:   # in a process of its own: this one stays free of torch
            probe = subprocess.run(
                [sys.executable, "-c", "import torch, sys; sys.exit(0 if "
                 "torch.cuda.is_available() else 3)"], capture_output=True, timeout=120)
            if probe.returncode != 0:
                reason = "PyTorch sees no CUDA GPU"
    study.unable[executor] = reason
    return reason


def _train(study: _Study, dataset: str, executor: str, *, lr: float, epochs: int,
           limit: int | None, batch: int) -> dict:
    """One ``pbp train`` run in its own process; its record."""
    from ..bench.runner import _error_line, process_env, run_isolated

    config, source = study.config, study.sources[dataset]
    settings = executor_settings(executor, study.cores)
    record = {"dataset": dataset, "executor": executor, "threads": settings["threads"],
              "blas_threads": settings["blas_threads"], "ranks": settings["ranks"],
              "net": config.train_net, "batch_size": batch, "lr": lr, "epochs": epochs,
              "limit": limit, "seed": config.seed, "status": "ok", "notes": settings["notes"],
              "n_train": None, "test_accuracy": None, "val_accuracy": None, "epoch_s": None,
              "samples_per_s": None, "final_loss": None, "wall_s": None}
    reason = _unavailable(study, executor)
    if reason is not None:
        record.update(status="skipped", notes=record["notes"] + [reason])
        return record
    with tempfile.TemporaryDirectory(prefix="pbp-study-") as scratch:
        metrics = Path(scratch) / "metrics.json"
        command = [sys.executable, "-m", "parallel_backprop.cli", "train", *source.args,
                   "--net", config.train_net, "--batch-size", str(batch), "--lr", repr(lr),
                   "--epochs", str(epochs), "--seed", str(config.seed), "--executor", executor,
                   "--threads", str(settings["threads"]), "--metrics-json", str(metrics),
                   "--quiet"]
        if executor == "hybrid":
            command += ["--blas-threads", str(settings["blas_threads"])]
        if settings["ranks"]:
            command += ["--ranks", str(settings["ranks"])]
        if limit is not None:
            command += ["--limit", str(limit)]
        env = process_env(settings["process_threads"])
        env["PBP_OFFLINE"] = "1"
        started = time.perf_counter()
        outcome = run_isolated(command, env, config.timeout_s)
        if outcome is None:
            record.update(status="failed", notes=record["notes"] + [
                f"timed out after {config.timeout_s:g} s"])
            return record
        returncode, stderr = outcome
        record["wall_s"] = time.perf_counter() - started
        if returncode != 0 or not metrics.exists():
            line = next((line for line in stderr.splitlines() if line.startswith("pbp: ")),
                        None) or _error_line(stderr)
            record.update(status="failed", notes=record["notes"] + [
                f"pbp train exited with status {returncode}: {line}"[:300]])
            return record
        result = json.loads(metrics.read_text())
    for key in ("n_train", "test_accuracy", "val_accuracy", "epoch_s", "samples_per_s",
                "final_loss"):
        record[key] = result.get(key)
    record["net"] = result.get("net", record["net"])
    return record


def _run_line(r: dict) -> str:
    where = f"{r['dataset']} {r['executor']}"
    if r["status"] != "ok":
        return f"{where}: {r['status']} ({r['notes'][-1] if r['notes'] else ''})"
    return (f"{where}: {r['n_train']} samples, test acc {r['test_accuracy']:.4f}, "
            f"{r['epoch_s']:.2f} s/epoch")


# ---- speed parts (the bench harness) --------------------------------------------

def _bench(study: _Study, name: str, *, plots: bool = True, **fields) -> None:
    """Run one harness grid into ``out_dir/name``; embed its document."""
    from ..bench import BenchConfig, run_bench

    config = study.config
    bench_config = BenchConfig(timing=config.timing, gemm_size=config.gemm_size,
                               timeout_s=config.timeout_s, seed=config.seed, **fields)
    folder = study.out_dir / name
    try:
        study.doc["grids"][name] = run_bench(
            bench_config, folder, plots=plots, progress=study.progress, log=study.log,
            command=list(study.doc["command"]))
    except KeyboardInterrupt:   # the harness wrote what it measured
        study.doc["grids"][name] = json.loads((folder / "bench.json").read_text())
        raise


def _batch_part(study: _Study, record: dict) -> None:
    config = study.config
    for shape_name in config.shapes:
        shape = SHAPES[shape_name]
        study.log(f"-- {shape.title}")
        _bench(study, f"batch-{shape.name}", systems=config.systems, nets=config.nets,
               batch_sizes=config.batch_sizes, threads=(study.cores,),
               features=shape.features, classes=shape.classes,
               epoch_samples=shape.epoch_samples)


def _threads_part(study: _Study, record: dict) -> None:
    from ..bench.systems import SYSTEMS

    config = study.config
    systems = tuple(s for s in config.systems
                    if SYSTEMS[s].kind == "executor" or s == "gemm")
    if not any(SYSTEMS[s].kind == "executor" for s in systems):
        record.update(status="skipped", notes=["--systems names no executor"])
        return
    shape = SHAPES[config.shapes[0]]
    _bench(study, "threads", systems=systems, nets=config.nets,
           batch_sizes=config.thread_batches(),
           threads=config.resolved_thread_counts(), features=shape.features,
           classes=shape.classes, epoch_samples=shape.epoch_samples)


def _width_part(study: _Study, record: dict) -> None:
    config = study.config
    systems = tuple(s for s in WIDTH_SYSTEMS if s in config.systems)
    if not systems:
        record.update(status="skipped", notes=[f"--systems names none of "
                                               f"{', '.join(WIDTH_SYSTEMS)}"])
        return
    shape = SHAPES[config.shapes[0]]
    outputs = 1 if shape.classes == 2 else shape.classes
    nets = tuple(f"{shape.features}-{width}-{outputs}" for width in config.widths)
    _bench(study, "width", plots=False, systems=systems, nets=nets,
           batch_sizes=(config.width_batch,), threads=(study.cores,),
           features=shape.features, classes=shape.classes, epoch_samples=shape.epoch_samples)


def _write(doc: dict, path: Path) -> None:
    from ..fileio import atomic_open

    with atomic_open(path, "w") as handle:
        json.dump(doc, handle, indent=1, default=str)
        handle.write("\n")


def load_study(path: Path) -> dict:
    """A ``study.json`` document; :class:`PbpError` for anything else."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise PbpError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise PbpError(f"{path}: not a study.json (expected schema {SCHEMA})")
    return doc


__all__ = ["OUTPUT", "SCHEMA", "compare_to_serial", "executor_settings", "find_sources",
           "load_study", "run_study"]
