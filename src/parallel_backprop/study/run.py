"""``pbp study``: run the parts of a study and write ``study.json``.

The speed parts are grids of the bench harness (:func:`..bench.run_bench`),
each written into a folder of its own with the harness's ``bench.json``,
``bench.csv`` and plots, and embedded in ``study.json``. The training parts
run ``pbp train`` itself, one process per run with the thread variables
set as the harness sets them (:func:`..harness.process_env`), so that
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
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from ..data import DATASETS, DataSource, find_source
from ..errors import DataError, PbpError
from ..executors import BASELINE, Layout, executor_class
from ..plugins import load_plugins
from ..harness import (Status, TrainingRun, error_line, plain, process_env,
                       run_isolated, speedups, write_document)
from .config import ACCURACY_TOLERANCE, PARTS, SHAPES, StudyConfig, size_executors, \
    width_systems

SCHEMA = "parallel-backprop/study/1"
OUTPUT = "study.json"
USER_TABLE = "file"     # the data set of a user's table (--train-file)


def run_study(config: StudyConfig, out_dir: Path, *, data_dir=None, kdd_file=None,
              train_file=None, progress: bool = True, log: Callable[[str], None] = print,
              command: list[str] | None = None, plugins: Sequence[str] = ()) -> dict:
    """Run the parts of ``config``; write ``out_dir/study.json`` (after every part) and
    the harness's outputs into subfolders. Returns the study document.

    ``train_file``: a user's table, studied as the data set "file" in the
    training parts besides ``config.datasets``.

    ``plugins`` are imported here and in every process the study starts.
    Ctrl-C writes what was done (``"interrupted": true``) and re-raises.
    """
    from ..fileio import output_folder
    from ..harness.environment import (environment, load_average, source_change_notes,
                                       source_fingerprint, warnings)

    sources, notes = find_sources(config, data_dir, kdd_file, train_file)
    out_dir = output_folder(out_dir, (OUTPUT,), inputs={
        f"{s.name} data": s.load.get("kdd_file") or s.load.get("train_file")
        for s in sources.values()})
    load_plugins(plugins)
    env = environment()
    source = source_fingerprint()
    doc = {"schema": SCHEMA, "preset": config.preset, "command": command or sys.argv,
           "config": asdict(config), "environment": env, "wall_s": None,
           "interrupted": False, "parts": {}, "data": {s.name: s.where for s in sources.values()},
           "tune": {}, "accuracy": [], "kdd_size": [], "grids": {},
           "notes": warnings(env) + list(config.notes) + notes}
    for note in notes:
        log(f"note: {note}")
    study = _Study(config, out_dir, sources, doc, progress, log, tuple(plugins))
    started = time.perf_counter()
    try:
        for part in PARTS:
            if part in config.parts:
                _run_part(study, part, started)
    except KeyboardInterrupt:
        doc["interrupted"] = True
        for record in doc["parts"].values():
            if record["status"] == Status.RUNNING:
                record["status"] = Status.INTERRUPTED
        write_document(out_dir / OUTPUT, doc)
        raise
    env["load_average_end"] = load_average()
    changed = source_change_notes(env, source)
    doc["notes"][:0] = changed
    for note in changed:
        log(f"warning: {note}")
    doc["wall_s"] = time.perf_counter() - started
    write_document(out_dir / OUTPUT, doc)
    return plain(doc)


def _run_part(study: "_Study", part: str, started: float) -> None:
    """Run one part, its record in ``doc["parts"]``; write the document after it."""
    study.log(f"== {part}")
    part_started = time.perf_counter()
    record = study.doc["parts"][part] = {"status": Status.RUNNING, "wall_s": None, "notes": []}
    try:
        PART_RUNNERS[part](study, record)
        if record["status"] == Status.RUNNING:
            record["status"] = Status.OK
    finally:
        record["wall_s"] = time.perf_counter() - part_started
        study.doc["wall_s"] = time.perf_counter() - started
        write_document(study.out_dir / OUTPUT, study.doc)


def find_sources(config: StudyConfig, data_dir, kdd_file,
                 train_file=None) -> tuple[dict[str, DataSource], list[str]]:
    """The data sets of ``config.datasets`` found here (never downloaded), and notes on
    those that are not; with ``train_file``, the data set "file" (a user's table) too.
    A file named explicitly (``kdd_file``, ``train_file``) must exist."""
    if data_dir is not None and not Path(data_dir).is_dir():
        raise DataError(f"--data-dir {data_dir}: does not exist or is not a folder")
    sources, notes = {}, []
    names = tuple(config.datasets)
    if train_file is not None and USER_TABLE not in names:
        names += (USER_TABLE,)
    for name in names:
        takes_file = "kdd_file" in DATASETS[name].options
        # Passed only when given: a data set's find ignores the options it does not read.
        files = {"train_file": str(train_file)} if name == USER_TABLE and train_file else {}
        try:
            sources[name] = find_source(
                name, data_dir, kdd_file=kdd_file, synthetic_samples=config.samples,
                synthetic_features=config.features, synthetic_classes=config.classes, **files)
        except DataError as exc:
            if (takes_file and kdd_file is not None) or name == USER_TABLE:
                raise
            notes.append(f"{name} is not on this machine, its training parts are skipped "
                         f"({str(exc).split(';')[0]}); give --data-dir"
                         + (" or --kdd-file" if takes_file else "")
                         + f", or get it with `pbp fetch {name}`")
    return sources, notes


class _Study:
    """What the parts share: the config, where to write, the data sources, the document."""

    def __init__(self, config, out_dir, sources, doc, progress, log, plugins=()):
        from ..resources import usable_cpus

        self.config, self.out_dir, self.sources, self.doc = config, out_dir, sources, doc
        self.progress, self.log, self.plugins = progress, log, plugins
        self.cores = len(usable_cpus())
        self.unable: dict[str, str | None] = {}    # executor -> why it cannot run here

    def lr(self, dataset: str) -> float | None:
        """The learning rate of the training runs on ``dataset``: --lr, else the tuned one."""
        if self.config.lr is not None:
            return self.config.lr
        tuned = self.doc["tune"].get(dataset)
        return None if tuned is None else tuned["best"]["lr"]

    def unavailable(self, executor: str) -> str | None:
        """Why ``executor`` cannot train on this machine, or None (asked once per study)."""
        if executor not in self.unable:
            self.unable[executor] = executor_class(executor).unavailable()
        return self.unable[executor]


# ---- training parts -------------------------------------------------------------

def _tune_part(study: _Study, record: dict) -> None:
    from ..data import load_dataset
    from ..network import Network
    from ..trainer import TrainConfig
    from .tune import TuneConfig, table, tune

    config = study.config
    if config.lr is not None:
        record.update(status=Status.SKIPPED,
                      notes=[f"--lr {config.lr:g} given: nothing to tune"])
        return
    if not study.sources:
        record.update(status=Status.SKIPPED, notes=["no data set found"])
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
            result = tune(network, data, tune_config, plugins=study.plugins)
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
            run.extra["part"] = "accuracy"
            runs.append(run)
            study.doc["accuracy"].append(run)
            study.log("  " + _run_line(run))
        compare_to_baseline(runs)


def compare_to_baseline(runs: list[TrainingRun]) -> None:
    """Add ``accuracy_vs_serial`` and ``matches_serial`` (against the baseline executor,
    ``executors.BASELINE``) to the runs of one data set."""
    base = next((r for r in runs if r.executor == BASELINE and r.ok), None)
    for r in runs:
        # A regression table's runs have no accuracy to compare.
        if base is None or not r.ok or None in (r.test_accuracy, base.test_accuracy):
            r.extra.update(accuracy_vs_serial=None, matches_serial=None)
            continue
        difference = r.test_accuracy - base.test_accuracy
        r.extra.update(accuracy_vs_serial=difference,
                       matches_serial=bool(abs(difference) <= ACCURACY_TOLERANCE))


def _kdd_size_part(study: _Study, record: dict) -> None:
    config = study.config
    if "kdd99" not in study.sources:
        record.update(status=Status.SKIPPED, notes=["no KDD Cup 99 file: give --kdd-file or "
                                                    "--data-dir"])
        return
    lr = study.lr("kdd99") or 0.1
    runs = []
    for size in config.kdd_sizes:
        # The training split is 5/6 of the pool that --limit caps.
        limit = None if size is None else math.ceil(size * 6 / 5)
        for executor in size_executors(config.executors, study.cores):
            # Two epochs: pbp train's epoch_s is the steady one, the first pays warm-up.
            run = _train(study, "kdd99", executor, lr=lr, epochs=2, limit=limit,
                         batch=config.size_batch)
            run.extra.update(part="kdd-size", size=size)
            runs.append(run)
            study.doc["kdd_size"].append(run)
            study.log("  " + _run_line(run))
    for run, ratio in zip(runs, speedups(runs, lambda r: r.extra["size"])):
        run.extra["speedup_vs_serial"] = ratio


def executor_settings(executor: str, cores: int) -> dict:
    """How a training run uses this machine's ``cores`` with ``executor``: its ``layout``.

    A distributed executor gets a rank per core, at least two (one rank
    shows nothing of it); an executor with no layout on ``cores`` (hybrid
    below 4) the smallest larger count it splits, oversubscribed.
    """
    cls = executor_class(executor)
    wanted = max(2, cores) if cls.distributed else cores
    notes = []
    layout = cls.layout(wanted)
    if layout is None:
        layout = next(filter(None, map(cls.layout, range(wanted + 1, 4 * wanted + 5))),
                      Layout(ranks=None, workers=1, blas_threads=1, threads=1))
        notes.append(f"{layout.workers} workers x {layout.blas_threads} BLAS threads on "
                     f"{cores} core(s): oversubscribed")
    return {"threads": layout.threads, "blas_threads": layout.executor_blas_threads,
            "ranks": layout.ranks, "process_threads": layout.blas_threads, "notes": notes}


def _train(study: _Study, dataset: str, executor: str, *, lr: float, epochs: int,
           limit: int | None, batch: int) -> TrainingRun:
    """One ``pbp train`` run in its own process; its record."""
    config = study.config
    settings = executor_settings(executor, study.cores)
    run = TrainingRun(dataset=dataset, executor=executor, threads=settings["threads"],
                      blas_threads=settings["blas_threads"], ranks=settings["ranks"],
                      net=config.train_net, batch_size=batch, lr=lr, epochs=epochs,
                      limit=limit, seed=config.seed, notes=settings["notes"])
    reason = study.unavailable(executor)
    if reason is not None:
        run.skip(reason)
        return run
    with tempfile.TemporaryDirectory(prefix="pbp-study-") as scratch:
        metrics = Path(scratch) / "metrics.json"
        env = process_env(settings["process_threads"])
        env["PBP_OFFLINE"] = "1"
        started = time.perf_counter()
        outcome = run_isolated(_train_command(study, run, metrics), env, config.timeout_s)
        if outcome is None:
            run.fail(f"timed out after {config.timeout_s:g} s")
            return run
        returncode, stderr = outcome
        run.wall_s = time.perf_counter() - started
        if returncode != 0 or not metrics.exists():
            line = next((line for line in stderr.splitlines() if line.startswith("pbp: ")),
                        None) or error_line(stderr)
            run.fail(f"pbp train exited with status {returncode}: {line}"[:300])
            return run
        result = json.loads(metrics.read_text())
    for key in ("n_train", "test_accuracy", "val_accuracy", "epoch_s", "samples_per_s",
                "final_loss"):
        setattr(run, key, result.get(key))
    run.net = result.get("net", run.net)
    return run


def _train_command(study: _Study, run: TrainingRun, metrics: Path) -> list[str]:
    """The ``pbp train`` command line of ``run``, writing its metrics to ``metrics``."""
    plugins = [arg for plugin in study.plugins for arg in ("--plugin", plugin)]
    # The seed's method, whatever pbp train's defaults: the reproduction stays the seed's.
    command = [sys.executable, "-m", "parallel_backprop.cli", *plugins, "train",
               "--preset", "seed", *study.sources[run.dataset].args, "--net", study.config.train_net,
               "--batch-size", str(run.batch_size), "--lr", repr(run.lr),
               "--epochs", str(run.epochs), "--seed", str(run.seed), "--executor", run.executor,
               "--threads", str(run.threads), "--metrics-json", str(metrics), "--quiet"]
    if executor_class(run.executor).nested_blas:
        command += ["--blas-threads", str(run.blas_threads)]
    if run.ranks:
        command += ["--ranks", str(run.ranks)]
    if run.limit is not None:
        command += ["--limit", str(run.limit)]
    return command


def _run_line(r: TrainingRun) -> str:
    where = f"{r.dataset} {r.executor}"
    if not r.ok:
        return f"{where}: {r.status} ({r.notes[-1] if r.notes else ''})"
    return (f"{where}: {r.n_train} samples, test acc {r.test_accuracy:.4f}, "
            f"{r.epoch_s:.2f} s/epoch")


# ---- speed parts (the bench harness) --------------------------------------------

def _bench(study: _Study, name: str, *, plots: bool = True, **fields) -> None:
    """Run one harness grid into ``out_dir/name``; embed its document."""
    from ..bench import BenchConfig, run_bench
    from ..bench.report import load

    config = study.config
    bench_config = BenchConfig(timing=config.timing, gemm_size=config.gemm_size,
                               timeout_s=config.timeout_s, seed=config.seed, **fields)
    folder = study.out_dir / name
    try:
        study.doc["grids"][name] = run_bench(
            bench_config, folder, plots=plots, progress=study.progress, log=study.log,
            command=list(study.doc["command"]), plugins=study.plugins)
    except KeyboardInterrupt:   # the harness wrote what it measured
        study.doc["grids"][name] = load(folder / "bench.json")
        raise


def _batch_part(study: _Study, record: dict) -> None:
    config = study.config
    for shape_name in config.shapes:
        shape = SHAPES[shape_name]
        study.log(f"-- {shape.title}")
        _bench(study, f"batch-{shape.name}", systems=config.systems, nets=config.nets,
               batch_sizes=config.batch_sizes, threads=(study.cores,),
               precisions=config.precisions,
               features=shape.features, classes=shape.classes,
               epoch_samples=shape.epoch_samples)


def _threads_part(study: _Study, record: dict) -> None:
    from ..bench.systems import CEILING, SYSTEMS

    config = study.config
    systems = tuple(s for s in config.systems
                    if SYSTEMS[s].kind == "executor" or s == CEILING)
    if not any(SYSTEMS[s].kind == "executor" for s in systems):
        record.update(status=Status.SKIPPED, notes=["--systems names no executor"])
        return
    shape = SHAPES[config.shapes[0]]
    _bench(study, "threads", systems=systems, nets=config.nets,
           batch_sizes=config.thread_batches(),
           threads=config.resolved_thread_counts(), features=shape.features,
           classes=shape.classes, epoch_samples=shape.epoch_samples)


def _width_part(study: _Study, record: dict) -> None:
    config = study.config
    candidates = width_systems(study.cores)
    systems = tuple(s for s in candidates if s in config.systems)
    if not systems:
        record.update(status=Status.SKIPPED,
                      notes=[f"--systems names none of {', '.join(candidates)}"])
        return
    shape = SHAPES[config.shapes[0]]
    outputs = 1 if shape.classes == 2 else shape.classes
    nets = tuple(f"{shape.features}-{width}-{outputs}" for width in config.widths)
    _bench(study, "width", plots=False, systems=systems, nets=nets,
           batch_sizes=(config.width_batch,), threads=(study.cores,),
           features=shape.features, classes=shape.classes, epoch_samples=shape.epoch_samples)


PART_RUNNERS = {"tune": _tune_part, "accuracy": _accuracy_part, "kdd-size": _kdd_size_part,
                "batch": _batch_part, "threads": _threads_part, "width": _width_part}


def load_study(path: Path) -> dict:
    """A ``study.json`` document; :class:`PbpError` for anything else."""
    from ..harness import load_document

    return load_document(path, SCHEMA, kind="study.json")


__all__ = ["OUTPUT", "SCHEMA", "compare_to_baseline", "executor_settings", "find_sources",
           "load_study", "run_study"]
