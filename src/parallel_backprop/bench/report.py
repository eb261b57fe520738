"""A benchmark's outputs: ``bench.json`` (everything), ``bench.csv`` (one row per record),
and the summary printed at the end of a run.

``bench.json``::

    {"schema": "parallel-backprop/bench/1", "command": [...], "config": {...},
     "environment": {...}, "ceilings": {"gemm": {"1": 120.5, "2": 231.0}, ...},
     "notes": ["jax: jax is not installed (...)", ...], "wall_s": 150.2,
     "interrupted": false, "records": [{...}, ...]}

Each record has ``system``, ``kind`` (executor, peer or ceiling), ``status``
(ok, skipped or failed), ``notes``, ``net``, ``net_name``, ``batch_size``,
``optimizer``, ``precision`` (of the products: fp32, bf16),
``threads``, ``workers``, ``blas_threads``, ``samples_per_s`` (median
round), ``samples_per_s_best`` (fastest round), ``epoch_s``, ``gflops``,
``gflops_best``, ``speedup_vs_serial``, ``efficiency``, ``cores_busy`` (CPU
seconds per second of the worker while timed: the cores it really used), the
per-step times of every round and the thread pools the worker had loaded;
with ``--passes`` > 1, the median pass's, with ``samples_per_s_passes`` (every
pass's rate) and the fastest round of any pass.
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

from ..executors import BASELINE
from ..fileio import atomic_open
from ..harness import Measurement, is_ok, load_document, series, write_document
from .config import BenchConfig
from .systems import CEILING

SCHEMA = "parallel-backprop/bench/1"
CSV_COLUMNS = ("system", "kind", "status", "net", "net_name", "batch_size", "optimizer",
               "precision", "threads", "workers",
               "blas_threads", "samples_per_s", "samples_per_s_best", "epoch_s", "gflops",
               "gflops_best", "speedup_vs_serial", "efficiency", "step_s_median", "step_s_min",
               "cores_busy", "notes")


def document(config: BenchConfig, environment: dict, records: list[Measurement],
             ceilings: dict[str, dict[int, float]], *, command: list[str], wall_s: float,
             interrupted: bool) -> dict:
    """The ``bench.json`` content; the records as the dicts the file holds."""
    records = [r.to_dict() for r in records]
    return {
        "schema": SCHEMA,
        "command": command,
        "config": asdict(config),
        "environment": environment,
        "ceilings": {system: {str(t): gflops for t, gflops in sorted(by_threads.items())}
                     for system, by_threads in ceilings.items()},
        "notes": unavailable(records),
        "wall_s": wall_s,
        "interrupted": interrupted,
        "records": records,
    }


def unavailable(records: list[dict]) -> list[str]:
    """One line per system and reason for every skipped or failed record."""
    lines = []
    for r in records:
        if not is_ok(r):
            line = f"{r['system']} {r['status']}: {r['notes'][-1] if r['notes'] else ''}"
            if line not in lines:
                lines.append(line)
    return lines


def write_documents(doc: dict, out_dir: Path) -> None:
    """``bench.json`` and ``bench.csv`` of ``doc`` into ``out_dir``."""
    write_document(out_dir / "bench.json", doc)
    write_csv(doc["records"], out_dir / "bench.csv")


def load(path: Path, label: str | None = None) -> dict:
    """A ``bench.json`` document; a one-line error starting with ``label`` for anything else."""
    return load_document(path, SCHEMA, kind="bench.json", label=label)


def write_csv(records: list[dict], path: Path) -> None:
    with atomic_open(path, "w") as handle:
        writer = csv.DictWriter(handle, CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for r in records:
            writer.writerow({**r, "notes": "; ".join(r.get("notes", []))})


def summary(doc: dict) -> list[str]:
    """The table printed after a run: samples/s (speedup over the baseline) per batch size."""
    records = [r for r in doc["records"] if is_ok(r)]
    lines = []
    for system, by_threads in doc["ceilings"].items():
        rates = ", ".join(f"{gflops:.0f} @ {t} thr" for t, gflops in by_threads.items())
        lines.append(f"{system} ceiling, GFLOP/s: {rates}")
    nets = list(dict.fromkeys(r["net"] for r in records if r["kind"] != "ceiling"))
    for net in nets:
        header, rows = speed_table(records, net)
        name = next(r["net_name"] for r in records if r["net"] == net)
        lines.append("")
        lines.append(f"{name + f' ({net})' if name != net else net}: "
                     f"samples/s (speedup over {BASELINE})")
        lines.append(f"{header[0]:<15}{header[1]:>8}" + "".join(f"{h:>22}" for h in header[2:]))
        for row in rows:
            lines.append(f"{row[0]:<15}{row[1]:>8}" + "".join(f"{c:>22}" for c in row[2:]))
    gains = scaling(doc)
    if gains:
        lines.append("")
        lines += gains
    if doc["notes"]:
        lines.append("")
        lines += [f"note: {note}" for note in doc["notes"]]
    return lines


def scaling(doc: dict) -> list[str]:
    """How much of the machine's own gain from more cores each float32 executor turned
    into speed: its speedup over the baseline (one thread) against the ``gemm``
    ceiling's T-thread / 1-thread ratio measured in the same run, e.g.
    ``threads 2 thr 1.87x (91%)``. Empty without the ceiling at 1 thread and more."""
    ceiling = {int(t): gflops for t, gflops in doc["ceilings"].get(CEILING, {}).items()}
    gains = {t: gflops / ceiling[1] for t, gflops in ceiling.items() if t > 1 and 1 in ceiling}
    by_config: dict[tuple, list[str]] = {}
    for r in doc["records"]:
        if (is_ok(r) and r["kind"] == "executor" and r["system"] != BASELINE
                and r["threads"] in gains and r.get("speedup_vs_serial")
                and (r.get("precision") or "fp32") == "fp32"):
            name = r["system"] if (r.get("optimizer") or "sgd") == "sgd" \
                else f"{r['system']} {r['optimizer']}"
            speedup = r["speedup_vs_serial"]
            by_config.setdefault((r["net"], r["batch_size"]), []).append(
                f"{name} {r['threads']} thr {speedup:.2f}x ({speedup / gains[r['threads']]:.0%})")
    if not by_config:
        return []
    lines = [f"fp32 speedup over {BASELINE} (share of the {CEILING} ceiling's gain: "
             + ", ".join(f"{gain:.2f}x at {t} thr" for t, gain in sorted(gains.items())) + ")"]
    lines += [f"  {net} batch {batch}: " + ", ".join(cells)
              for (net, batch), cells in by_config.items()]
    return lines


def speed_table(records: list[dict], net: str) -> tuple[list[str], list[list[str]]]:
    """The measured records of network ``net`` as a table: samples/s (speedup over the
    baseline).

    Returns the header (system, threads, one column per batch size) and one
    row of strings per (system, optimizer, threads), in the order they ran; a
    system is named with its optimizer where that is not plain SGD, an
    executor with its precision where that is not fp32 (``threads bf16``).
    """
    rows = [r for r in records if r["net"] == net and is_ok(r)]
    batches = sorted({r["batch_size"] for r in rows})
    table = []

    def key(r: dict) -> tuple:
        return series(r), r.get("optimizer") or "sgd", r["threads"]

    for system, optimizer, threads in dict.fromkeys(key(r) for r in rows):
        cells = []
        for b in batches:
            r = next((r for r in rows if key(r) == (system, optimizer, threads)
                      and r["batch_size"] == b), None)
            cells.append("" if r is None else _cell(r))
        label = system if optimizer == "sgd" else f"{system} {optimizer}"
        table.append([label, str(threads), *cells])
    return ["system", "threads", *(f"batch {b}" for b in batches)], table


def _cell(r: dict) -> str:
    speedup = r.get("speedup_vs_serial")
    return f"{r['samples_per_s']:,.0f}" + ("" if speedup is None else f" ({speedup:.2f}x)")
