"""``pbp report``: a study's ``study.json`` -> ``report.md``, ``report.html`` and the figures.

The report is built once as a list of blocks (headings, paragraphs, lists,
tables, figures) and written twice: as Markdown that links the PNG files
in ``figures/``, and as one self-contained HTML page with the same figures
inline (base64). Every number in it is computed from the JSON here; the
summary at the top picks, for each configuration, the fastest executor,
its speedup over serial, its share of the GEMM ceiling and its ratio to
each peer.
"""

from __future__ import annotations

import base64
import html
import math
import re
import statistics
from pathlib import Path

from ..bench.report import speed_table
from ..bench.systems import CEILING, SYSTEMS
from ..executors import BASELINE
from ..fileio import atomic_open, output_folder
from ..harness import is_ok, series
from .config import ACCURACY_TOLERANCE, SHAPES
from .run import load_study

FIGURES_DIR = "figures"
OUTPUTS = ("report.md", "report.html")


def write_report(source: Path, out_dir: Path) -> dict:
    """Write ``report.md``, ``report.html`` and ``figures/*.png`` for ``source`` (a study.json).

    Returns ``{"markdown", "html", "figures"}``: the paths written.
    """
    from .figures import write_figures

    doc = load_study(source)
    out_dir = output_folder(out_dir, OUTPUTS, inputs={"STUDY.json": source})
    figures = write_figures(doc, out_dir / FIGURES_DIR)
    blocks = build(doc, figures)
    with atomic_open(out_dir / "report.md", "w") as handle:
        handle.write(to_markdown(blocks))
    with atomic_open(out_dir / "report.html", "w") as handle:
        handle.write(to_html(blocks, out_dir))
    return {"markdown": out_dir / "report.md", "html": out_dir / "report.html",
            "figures": [out_dir / FIGURES_DIR / f["file"] for f in figures]}


# ---- the content ---------------------------------------------------------------

def build(doc: dict, figures: list[dict]) -> list[tuple]:
    """The report as blocks: ("h1"|"h2"|"h3", text), ("p", text), ("list", items),
    ("table", header, rows), ("figure", file, caption)."""
    env = doc["environment"]
    blocks = [("h1", f"Parallel backpropagation study on {env.get('cpu_model', '?')}")]
    minutes = (doc.get("wall_s") or 0) / 60
    command = " ".join(doc["command"])
    blocks.append(("p", f"Preset `{doc['preset']}`, run on {env.get('date', '?')} in "
                        f"{minutes:.1f} minutes with `{command}`"
                        + (" (**interrupted**: incomplete)" if doc.get("interrupted") else "")
                        + ". Every number below comes from that run's `study.json`; "
                          "`pbp report study.json --out DIR` redraws this page."))
    blocks += [("h2", "Summary"), ("list", summary(doc))]
    headline = best_table(doc)
    if headline[1]:
        blocks += [("p", "Fastest executor per configuration (all executors at every core but "
                         f"{BASELINE}, at one), with its share of the GEMM ceiling at the same "
                         "thread count and its rate over the fastest peer:"),
                   ("table", *headline)]
    blocks += machine(doc)
    blocks += _tune_section(doc, figures)
    blocks += _batch_sections(doc, figures)
    blocks += _threads_section(doc, figures)
    blocks += _size_sections(doc, figures)
    blocks += _accuracy_section(doc)
    notes = list(doc.get("notes", []))
    for name, grid in doc.get("grids", {}).items():
        notes += [f"{name}: {note}" for note in grid.get("notes", [])]
    for part, record in doc.get("parts", {}).items():
        notes += [f"{part}: {note}" for note in record.get("notes", [])]
    if notes:
        blocks += [("h2", "Notes"), ("list", list(dict.fromkeys(notes)))]
    return blocks


def _ok(records: list[dict]) -> list[dict]:
    return [r for r in records if is_ok(r) and r["kind"] != "ceiling"]


def _grids(doc: dict):
    """(shape, grid) for every batch grid measured."""
    for name, shape in SHAPES.items():
        grid = doc.get("grids", {}).get(f"batch-{name}")
        if grid:
            yield shape, grid


def best_rows(grid: dict) -> list[dict]:
    """Per (net, batch, precision): the fastest executor, and the fastest peer in the same
    precision (bf16 against torch-bf16) for comparison."""
    records = _ok(grid["records"])
    ceilings = grid.get("ceilings", {}).get(CEILING, {})
    rows = []

    def key(r: dict) -> tuple:
        return r["net"], r["batch_size"], r.get("precision") or "fp32"

    for net, batch, precision in dict.fromkeys(key(r) for r in records):
        here = [r for r in records if key(r) == (net, batch, precision)]
        ours = [r for r in here if r["kind"] == "executor"]
        peers = [r for r in here if r["kind"] == "peer"]
        if not ours:
            continue
        best = max(ours, key=lambda r: r["samples_per_s"])
        peer = max(peers, key=lambda r: r["samples_per_s"]) if peers else None
        ceiling = ceilings.get(str(best["threads"]))
        rows.append({"net": net, "net_name": best["net_name"], "batch": batch, "best": best,
                     "peer": peer, "ceiling": ceiling,
                     "peer_ratio": best["samples_per_s"] / peer["samples_per_s"] if peer else None,
                     "peers": {r["system"]: best["samples_per_s"] / r["samples_per_s"]
                               for r in peers}})
    return rows


def best_table(doc: dict) -> tuple[list[str], list[list[str]]]:
    header = ["work", "network", "batch", "fastest executor", "samples/s",
              f"speedup vs {BASELINE}", "GFLOP/s", "of GEMM ceiling", "fastest peer",
              "executor / peer"]
    rows = []
    cores = doc["environment"].get("usable_cpus") or 1
    for shape, grid in _grids(doc):
        disturbed = {(r["net"], r["batch_size"]) for r in busy(grid["records"], cores)}
        for row in best_rows(grid):
            best, peer = row["best"], row["peer"]
            mark = " (busy)" if (row["net"], row["batch"]) in disturbed else ""
            rows.append([
                shape.name, row["net_name"], f"{row['batch']}{mark}",
                _who(best), f"{best['samples_per_s']:,.0f}",
                _x(best["speedup_vs_serial"]), f"{best['gflops']:.1f}",
                _pct(best["efficiency"]),
                "" if peer is None else _who(peer),
                _x(row["peer_ratio"])])
    return header, rows


def summary(doc: dict) -> list[str]:
    """The automatically computed findings, one sentence each."""
    cores = doc["environment"].get("usable_cpus")
    lines = []
    for shape, grid in _grids(doc):
        lines += _grid_findings(shape, grid, cores)
    for findings in (_threads_findings, _width_findings, _size_findings, _tune_findings,
                     _accuracy_findings, _busy_findings):
        lines += findings(doc)
    return lines or ["Nothing was measured."]


def _grid_findings(shape, grid: dict, cores: int | None) -> list[str]:
    """A batch grid: who is fastest, the speedups, the share of the ceiling, the peers."""
    rows = best_rows(grid)
    if not rows:
        return []
    records = _ok(grid["records"])
    winners = {}
    for row in rows:
        winners.setdefault(series(row["best"]), []).append(
            f"{row['net_name']} b{row['batch']}")
    lines = [f"{shape.short}: fastest executor " + "; ".join(
        f"`{system}` in {len(where)} of {len(rows)} configurations"
        for system, where in sorted(winners.items(), key=lambda kv: -len(kv[1]))) + "."]
    parts = []
    for system in dict.fromkeys(series(r) for r in records if r["kind"] == "executor"
                                and series(r) != BASELINE):
        mine = [r for r in records if series(r) == system
                and r["speedup_vs_serial"] is not None]
        if mine:
            low = min(mine, key=lambda r: r["speedup_vs_serial"])
            high = max(mine, key=lambda r: r["speedup_vs_serial"])
            parts.append(f"`{system}` {_x(low['speedup_vs_serial'])} "
                         f"({low['net_name']} b{low['batch_size']}) to "
                         f"{_x(high['speedup_vs_serial'])} "
                         f"({high['net_name']} b{high['batch_size']})")
    if parts:
        lines.append(f"{shape.short}, speedup over {BASELINE} at {cores} threads: "
                     + "; ".join(parts) + ".")
    effs = [row["best"]["efficiency"] for row in rows if row["best"]["efficiency"]]
    if effs:
        ceiling = grid.get("ceilings", {}).get(CEILING, {})
        lines.append(f"{shape.short}: the fastest executor reaches {_pct(min(effs))} to "
                     f"{_pct(max(effs))} of the GEMM ceiling ("
                     + ", ".join(f"{g:.0f} GFLOP/s at {t} thr" for t, g in ceiling.items())
                     + ").")
    peers = {}
    for row in rows:
        for system, ratio in row["peers"].items():
            peers.setdefault(system, []).append(ratio)
    if peers:
        lines.append(f"{shape.short}, fastest executor / each peer (geometric mean over "
                     "configurations, range): " + "; ".join(
                         f"`{system}` {_x(_geomean(r))} ({_x(min(r))}-{_x(max(r))})"
                         for system, r in peers.items()) + ".")
    return lines


def _threads_findings(doc: dict) -> list[str]:
    threads = doc.get("grids", {}).get("threads")
    if not threads:
        return []
    records = [r for r in _ok(threads["records"]) if r["speedup_vs_serial"] is not None
               and series(r) != BASELINE]
    by_count = {}
    for r in records:
        if r["speedup_vs_serial"] > by_count.get(r["threads"], (0, None))[0]:
            by_count[r["threads"]] = (r["speedup_vs_serial"], r)
    if not by_count:
        return []
    return [f"Against threads, the best speedup over {BASELINE}: " + "; ".join(
        f"{t} thr {_x(s)} (`{series(r)}`, {r['net_name']} b{r['batch_size']})"
        for t, (s, r) in sorted(by_count.items())) + "."]


def _width_findings(doc: dict) -> list[str]:
    width = doc.get("grids", {}).get("width")
    if not width:
        return []
    records = [r for r in _ok(width["records"]) if r["speedup_vs_serial"] is not None
               and r["kind"] == "executor" and series(r) != BASELINE]
    lines = []
    for system in dict.fromkeys(series(r) for r in records):
        points = sorted((_width(r), r["speedup_vs_serial"]) for r in records
                        if series(r) == system)
        lines.append(f"Hidden width {points[0][0]} to {points[-1][0]}: `{system}` speedup "
                     f"over {BASELINE} {_x(points[0][1])} to {_x(points[-1][1])}.")
    return lines


def _size_findings(doc: dict) -> list[str]:
    sizes = [r for r in doc.get("kdd_size", []) if is_ok(r)]
    if not sizes:
        return []
    largest = max(r["n_train"] for r in sizes)
    at = [r for r in sizes if r["n_train"] == largest]
    return [f"KDD Cup 99 at {largest:,} training samples, time per epoch: " + "; ".join(
        f"`{r['executor']}` {r['epoch_s']:.2f} s"
        + ("" if r["executor"] == BASELINE or r.get("speedup_vs_serial") is None
           else f" ({_x(r['speedup_vs_serial'])})") for r in at) + "."]


def _tune_findings(doc: dict) -> list[str]:
    lines = []
    for dataset, tuned in doc.get("tune", {}).items():
        best = tuned["best"]
        diverged = sum(not is_ok(r) for r in tuned["candidates"])
        lines.append(f"Learning rate for {dataset}: {best['lr']:g} (validation accuracy "
                     f"{best['val_accuracy']:.4f}, test {best['test_accuracy']:.4f}) of "
                     f"{len(tuned['candidates'])} candidates"
                     + (f", {diverged} diverged" if diverged else "") + ".")
    return lines


def _accuracy_findings(doc: dict) -> list[str]:
    lines = []
    for dataset, runs in _by_dataset(doc.get("accuracy", [])).items():
        ok = [r for r in runs if is_ok(r)]
        base = next((r for r in ok if r["executor"] == BASELINE), None)
        if base is None:
            continue
        others = [r for r in ok if r["executor"] != BASELINE]
        worst = max(others, key=lambda r: abs(r["accuracy_vs_serial"]), default=None)
        matched = all(r["matches_serial"] for r in others)
        text = (f"Accuracy on {dataset} ({base['n_train']:,} training samples, "
                f"{base['epochs']} epoch(s), lr {base['lr']:g}): {BASELINE} "
                f"{base['test_accuracy']:.4f}; ")
        if worst is None:
            text += "no other executor ran."
        else:
            text += (f"{'every' if matched else 'NOT every'} executor within "
                     f"{ACCURACY_TOLERANCE:.2f} of it "
                     f"({len(others)} ran; largest difference {worst['accuracy_vs_serial']:+.4f}"
                     f", `{worst['executor']}`).")
        lines.append(text)
    return lines


def _busy_findings(doc: dict) -> list[str]:
    cores = doc["environment"].get("usable_cpus") or 1
    disturbed = [f"{name} {r['system']} {r['net_name']} b{r['batch_size']}"
                 for name, grid in doc.get("grids", {}).items()
                 for r in busy(grid["records"], cores)]
    if not disturbed:
        return []
    return [f"{len(disturbed)} measurement(s) kept fewer cores busy than they had "
            "threads, a sign that another program used the machine meanwhile: "
            + "; ".join(disturbed) + ". Their configurations are marked (busy) "
            "below; read them with care."]


def busy(records: list[dict], cores: int) -> list[dict]:
    """The measured records whose process kept clearly fewer cores busy than it had threads.

    The harness records ``cores_busy``, the CPU seconds per second of the
    timed rounds. A system on T threads keeps about min(T, cores) busy (spin
    waits included: 1.8 to 2.0 on 2 cores), an MPI rank its share of the
    cores, the baseline (one thread) one; below 70% of that, something
    else had the cores. An executor on a device is not judged.
    """
    flagged = []
    for r in _ok(records):
        system = SYSTEMS.get(r["system"])
        if r.get("cores_busy") is None or (system is not None and system.on_device):
            continue
        if r.get("ranks"):
            expected = min(1.0, cores / r["ranks"])
        else:   # the baseline, at one thread, too
            expected = float(min(r["threads"], cores))
        if r["cores_busy"] < 0.7 * expected:
            flagged.append(r)
    return flagged


def machine(doc: dict) -> list[tuple]:
    env = doc["environment"]
    rows = [["CPU", str(env.get("cpu_model"))],
            ["cores", f"{env.get('logical_cpus')} logical, {env.get('usable_cpus')} usable, "
                      f"{env.get('physical_cores')} physical"],
            ["memory", f"{env.get('memory_gib')} GiB"]]
    for lib in env.get("blas", []):
        rows.append(["BLAS", f"{lib.get('internal_api')} {lib.get('version')}, kernels "
                             f"(core type) {lib.get('architecture')}, "
                             f"{lib.get('threading_layer')} threading, "
                             f"{lib.get('num_threads')} threads ({lib.get('prefix')})"])
    used = env.get("gemm_blas")
    if used:
        rows.append(["BLAS of the executors", f"{used['name']} {used['version']} "
                     f"({used['threading_layer']} threading, {used['threads']} threads), "
                     f"{used['path']}"])
    variables = env.get("variables", {})
    rows.append(["BLAS and thread variables", ", ".join(f"`{k}={v}`" for k, v in
                                                       variables.items()) or "none set"])
    rows.append(["Python", str(env.get("python"))])
    rows.append(["libraries", ", ".join(f"{name} {version}" for name, version in
                                       env.get("versions", {}).items() if version)])
    git = env.get("git") or {}
    rows.append(["commit", f"{git.get('commit', 'unknown')}"
                           + (" (with local changes)" if git.get("dirty") else "")])
    rows.append(["platform", str(env.get("platform"))])
    rows.append(["date", str(env.get("date"))])
    rows.append(["load average (1, 5, 15 min)",
                 f"{env.get('load_average')} at the start, {env.get('load_average_end')} "
                 "at the end"])
    return [("h2", "Machine"), ("table", ["", "this run"], rows)]


def _figure(figures: list[dict], **match) -> list[tuple]:
    return [("figure", f"{FIGURES_DIR}/{f['file']}", f["title"]) for f in figures
            if all(f.get(k) == v for k, v in match.items())]


def _tune_section(doc: dict, figures: list[dict]) -> list[tuple]:
    tuned = doc.get("tune", {})
    if not tuned:
        return []
    blocks = [("h2", "Learning rate"),
              ("p", f"Grid search on the 5:1 train/validation split with the {BASELINE} executor; "
                    "the rate with the highest validation accuracy wins and its model is "
                    "evaluated once on the test set.")]
    blocks += _figure(figures, part="tune")
    for dataset, result in tuned.items():
        best = result["best"]
        rows = [[f"{r['lr']:g}", str(r["batch_size"]),
                 "diverged" if not is_ok(r) else f"{r['val_accuracy']:.4f}",
                 "" if r["final_loss"] is None else f"{r['final_loss']:.5f}",
                 "" if r["train_s"] is None else f"{r['train_s']:.1f}",
                 "best" if (r["lr"], r["batch_size"]) == (best["lr"], best["batch_size"])
                 else ""] for r in result["candidates"]]
        blocks += [("h3", f"{dataset}: net {result['net']}, {result['n_train']:,} training and "
                          f"{result['n_val']:,} validation samples, "
                          f"{result['config']['epochs']} epoch(s)"),
                   ("table", ["learning rate", "batch", "validation accuracy", "final loss",
                              "training s", ""], rows),
                   ("p", f"Test accuracy of the winner (lr {best['lr']:g}): "
                         f"{best['test_accuracy']:.4f}; {result['jobs']} candidate(s) at a "
                         f"time, {result['wall_s']:.0f} s in all.")]
    return blocks


def _batch_sections(doc: dict, figures: list[dict]) -> list[tuple]:
    blocks = []
    for shape, grid in _grids(doc):
        records = _ok(grid["records"])
        ceiling = grid.get("ceilings", {}).get(CEILING, {})
        blocks += [("h2", f"Speed against batch size: {shape.title}"),
                   ("p", f"The same SGD step (all-sigmoid network, MSE, float32) on synthetic "
                         f"data of the shape of the real set, for every system; an epoch is "
                         f"{shape.epoch_samples:,} samples (the real training split). "
                         f"{BASELINE.capitalize()} runs on one thread, everything else on "
                         "every usable core. Ours solid with circles, peers dashed with "
                         "squares. GEMM ceiling: "
                         + (", ".join(f"{g:.0f} GFLOP/s at {t} thread(s)"
                                      for t, g in ceiling.items()) or "not measured")
                         + ". Time per epoch, GFLOP/s and speedup against batch size for each "
                           "network are the seed's figures 5 to 10.")]
        for net in dict.fromkeys(r["net"] for r in records):
            name = next(r["net_name"] for r in records if r["net"] == net)
            blocks.append(("h3", f"{name} ({net})" if name != net else net))
            blocks += _figure(figures, part="batch", shape=shape.name, net=net)
            header, rows = speed_table(grid["records"], net)
            blocks += [("p", f"Samples per second (speedup over {BASELINE}):"),
                       ("table", header, rows)]
            disturbed = [r for r in busy(grid["records"], doc["environment"].get(
                "usable_cpus") or 1) if r["net"] == net]
            if disturbed:
                blocks.append(("p", "Measured while another program used the cores (cores "
                                    "kept busy / threads): " + "; ".join(
                                        f"`{r['system']}` batch {r['batch_size']}: "
                                        f"{r['cores_busy']:.2f} / {r['threads']}"
                                        for r in disturbed) + "."))
    return blocks


def _threads_section(doc: dict, figures: list[dict]) -> list[tuple]:
    grid = doc.get("grids", {}).get("threads")
    if not grid:
        return []
    records = [r for r in _ok(grid["records"]) if r["speedup_vs_serial"] is not None]
    counts = sorted({r["threads"] for r in records})
    blocks = [("h2", "Speedup against threads"),
              ("p", "Each executor at 1 to " + str(max(counts, default=1)) + " threads; "
                    f"beyond the {doc['environment'].get('usable_cpus')} usable cores the "
                    "threads are oversubscribed (an executor runs only at the counts its "
                    "layout can split, e.g. at least 2 workers x 2 BLAS threads).")]
    blocks += _figure(figures, part="threads")
    rows = []
    for net, batch in dict.fromkeys((r["net"], r["batch_size"]) for r in records):
        here = [r for r in records if (r["net"], r["batch_size"]) == (net, batch)]
        for system in dict.fromkeys(r["system"] for r in here):
            cells = []
            for t in counts:
                r = next((r for r in here if r["system"] == system and r["threads"] == t), None)
                cells.append("" if r is None else _x(r["speedup_vs_serial"]))
            rows.append([here[0]["net_name"], str(batch), system, *cells])
    blocks.append(("table", ["network", "batch", "system", *(f"{t} thr" for t in counts)], rows))
    return blocks


def _size_sections(doc: dict, figures: list[dict]) -> list[tuple]:
    blocks = []
    width = doc.get("grids", {}).get("width")
    sizes = [r for r in doc.get("kdd_size", []) if is_ok(r)]
    if not width and not sizes:
        return blocks
    blocks.append(("h2", "Problem size"))
    if width:
        records = sorted(_ok(width["records"]), key=lambda r: (_width(r), r["system"]))
        blocks += [("h3", "Hidden-layer width")]
        blocks += _figure(figures, part="width")
        blocks.append(("table", ["hidden units", "system", "threads", "time per epoch (s)",
                                 "GFLOP/s", f"speedup vs {BASELINE}"],
                       [[str(_width(r)), r["system"], str(r["threads"]), f"{r['epoch_s']:.2f}",
                         f"{r['gflops']:.1f}", _x(r["speedup_vs_serial"])] for r in records]))
    if sizes:
        blocks += [("h3", "KDD Cup 99 training-set size"),
                   ("p", "`pbp train` on the real data for two epochs; the time of the "
                         "second (the first pays warm-up), training only: no evaluation, no "
                         "loading.")]
        blocks += _figure(figures, part="kdd-size")
        blocks.append(("table", ["training samples", "executor", "threads", "time per epoch (s)",
                                 "samples/s", f"speedup vs {BASELINE}"],
                       [[f"{r['n_train']:,}", r["executor"], str(r["threads"]),
                         f"{r['epoch_s']:.2f}", f"{r['samples_per_s']:,.0f}",
                         _x(r.get("speedup_vs_serial"))]
                        for r in sorted(sizes, key=lambda r: (r["n_train"], r["executor"]))]))
    return blocks


def _accuracy_section(doc: dict) -> list[tuple]:
    runs = doc.get("accuracy", [])
    if not runs:
        return []
    blocks = [("h2", "Accuracy"),
              ("p", "Every executor trained by `pbp train` with the same seed, learning rate, "
                    f"batch and epochs; an executor matches {BASELINE} when its test accuracy is "
                    f"within {ACCURACY_TOLERANCE:.2f} of {BASELINE}'s (executors differ only by "
                    "float rounding).")]
    for dataset, mine in _by_dataset(runs).items():
        first = next((r for r in mine if is_ok(r)), mine[0])
        blocks.append(("h3", f"{dataset}: net {first['net']}, batch {first['batch_size']}, "
                             f"lr {first['lr']:g}, {first['epochs']} epoch(s)"
                             + (f", {first['n_train']:,} training samples" if first["n_train"]
                                else "")))
        rows = []
        for r in mine:
            where = (f"{r['ranks']} ranks" if r["ranks"] else
                     f"{r['threads']} x {r['blas_threads']}" if r["blas_threads"] > 1
                     else str(r["threads"]))
            if not is_ok(r):
                rows.append([r["executor"], where, r["status"], "", "", "", "",
                             r["notes"][-1] if r["notes"] else ""])
                continue
            rows.append([r["executor"], where, f"{r['test_accuracy']:.4f}",
                         "" if r["accuracy_vs_serial"] is None
                         else f"{r['accuracy_vs_serial']:+.4f}",
                         {True: "yes", False: "NO", None: ""}[r["matches_serial"]],
                         f"{r['val_accuracy']:.4f}", f"{r['epoch_s']:.2f}",
                         "; ".join(r["notes"])])
        blocks.append(("table", ["executor", "threads", "test accuracy", f"vs {BASELINE}",
                                 f"matches {BASELINE}", "validation accuracy", "s per epoch",
                                 "notes"], rows))
    return blocks


def _by_dataset(runs: list[dict]) -> dict[str, list[dict]]:
    grouped = {}
    for r in runs:
        grouped.setdefault(r["dataset"], []).append(r)
    return grouped


def _who(r: dict) -> str:
    """A system and how it ran: ``blas (2 thr)``, ``mpi (2 ranks)``, ``threads bf16 (2 thr)``."""
    return f"{series(r)} ({r['ranks']} ranks)" if r.get("ranks") else \
        f"{series(r)} ({r['threads']} thr)"


def _width(r: dict) -> int:
    return int(r["net"].split("-")[1])


def _x(value) -> str:
    return "" if value is None else f"{value:.2f}x"


def _pct(value) -> str:
    return "" if value is None else f"{100 * value:.0f}%"


def _geomean(values: list[float]) -> float:
    return math.exp(statistics.fmean(math.log(v) for v in values))


# ---- rendering -----------------------------------------------------------------

def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"{'#' * int(kind[1])} {block[1]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "list":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            header, rows = block[1], block[2]
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
                      for row in rows]
            out.append("\n".join(lines))
        elif kind == "figure":
            out.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(out) + "\n"


_CSS = """body{font-family:system-ui,sans-serif;max-width:1180px;margin:2em auto;padding:0 1em;
line-height:1.45;color:#222}table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}th{background:#f3f3f3}
td:not(:first-child){font-variant-numeric:tabular-nums}img{max-width:100%;border:1px solid #eee}
figure{margin:1em 0}figcaption{font-size:.9em;color:#555}code{background:#f5f5f5;padding:0 .2em}"""


def _inline(text: str) -> str:
    """Escape ``text`` for HTML and turn Markdown's `code` and **bold** into tags."""
    text = html.escape(text)
    text = re.sub(r"`([^`]+)`", r"<code>\1</code>", text)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", text)


def to_html(blocks: list[tuple], base: Path) -> str:
    """One self-contained page: the figures inline as base64 PNG."""
    title = next((b[1] for b in blocks if b[0] == "h1"), "study")
    out = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            out.append(f"<{kind}>{_inline(block[1])}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{_inline(block[1])}</p>")
        elif kind == "list":
            out.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block[1])
                       + "</ul>")
        elif kind == "table":
            header, rows = block[1], block[2]
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline(h)}</th>" for h in header)
                       + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row)
                                 + "</tr>" for row in rows) + "</tbody></table>")
        elif kind == "figure":
            data = base64.b64encode((base / block[1]).read_bytes()).decode()
            out.append(f"<figure><img alt=\"{html.escape(block[2])}\" "
                       f"src=\"data:image/png;base64,{data}\"><figcaption>"
                       f"{_inline(block[2])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


__all__ = ["build", "summary", "to_html", "to_markdown", "write_report"]
