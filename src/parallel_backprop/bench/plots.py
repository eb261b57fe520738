"""The seed's three metrics as PNG plots, from a ``bench.json`` document.

    epoch_time.png       time per epoch vs batch size (one panel per network)
    gflops.png           GFLOP/s vs batch size, the GEMM ceilings as lines
    speedup.png          speedup over the serial executor vs batch size
    speedup_threads.png  speedup over serial vs thread count (networks x batch sizes)

Against batch size each system is drawn at the largest thread count it ran
with (serial at one), named in the legend; an executor timed at several
precisions is a line per precision (``threads bf16`` beside ``threads``),
its speedups over serial in fp32. A grid of several optimizers is
drawn for its first (plain SGD by default); the tables give the others.
matplotlib (the ``plots``
extra) is imported only here, through its object API with the Agg
canvas (:mod:`..harness.plotstyle`): no pyplot, no display needed.
"""

from __future__ import annotations

from pathlib import Path

from ..executors import BASELINE
from ..harness import is_ok, series
from ..harness.plotstyle import PlotsUnavailable, colors, figure_class, legend, line_style, \
    log_y, save
from .systems import CEILING, SYSTEMS

PLOTS = ("epoch_time", "gflops", "speedup", "speedup_threads")


def write_plots(doc: dict, out_dir: Path) -> list[Path]:
    """Draw every plot the records allow into ``out_dir``; the paths written."""
    written = []
    for name in PLOTS:
        fig = draw(doc, name)
        if fig is not None:
            written.append(save(fig, out_dir / f"{name}.png"))
    return written


def draw(doc: dict, name: str, nets: list[str] | None = None):
    """The matplotlib Figure of plot ``name`` (one of ``PLOTS``), or None if nothing to draw.

    ``nets`` keeps the records of those networks only (sizes as in the
    records' ``net``), e.g. one figure per network.
    """
    Figure = figure_class()
    optimizer = (doc.get("config", {}).get("optimizers") or ["sgd"])[0]
    records = [r for r in doc["records"] if is_ok(r) and r["kind"] != "ceiling"
               and (nets is None or r["net"] in nets)
               and (r.get("optimizer") or "sgd") == optimizer]
    if not records:
        return None
    colors = system_colors(records)
    if name == "speedup_threads":
        return _vs_threads(Figure, records, colors)
    epoch_samples = records[0]["epoch_samples"]
    metric, ylabel, log_scale = {
        "epoch_time": ("epoch_s", f"time per epoch of {epoch_samples:,} samples (s)", True),
        "gflops": ("gflops", "achieved GFLOP/s (float32)", False),
        "speedup": ("speedup_vs_serial", f"speedup over {BASELINE} (x)", False)}[name]
    return _vs_batch(Figure, records, doc, metric, ylabel, log_scale, colors)


def system_colors(records: list[dict]) -> dict[str, str]:
    """One colour per system of ``records``, the same in every plot (and every figure of a
    run), given by its place in the systems table; black is left to the GEMM ceiling.
    Keyed by :func:`..harness.series`: an executor in bf16 has its fp32 colour."""
    order = [name for name, system in SYSTEMS.items() if system.kind != "ceiling"]
    systems = {series(r): r["system"] for r in records}
    by_system = colors(set(systems.values()), order)
    return {name: by_system[system] for name, system in systems.items()}


def system_style(name: str) -> dict:
    """Ours (an executor, or a system no longer in the table) solid, peers dashed; an
    executor at a precision other than fp32 (``threads bf16``) dotted."""
    system, _, precision = name.partition(" ")
    known = SYSTEMS.get(system)
    style = line_style(known is None or known.kind == "executor")
    return {**style, "linestyle": ":"} if precision else style


def _nets(records: list[dict]) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["net"], r["net_name"]) for r in records))


def _vs_batch(Figure, records, doc, metric, ylabel, log_scale, colors):
    records = [r for r in records if r.get(metric) is not None]
    if not records:
        return None
    nets = _nets(records)
    fig = Figure(figsize=(6.0 * len(nets), 4.8), layout="constrained")
    axes = fig.subplots(1, len(nets), squeeze=False)[0]
    for ax, (net, net_name) in zip(axes, nets):
        rows = [r for r in records if r["net"] == net]
        for system in colors:
            mine = [r for r in rows if series(r) == system]
            if not mine:
                continue
            threads = max(r["threads"] for r in mine)
            points = sorted((r["batch_size"], r[metric]) for r in mine if r["threads"] == threads)
            ax.plot(*zip(*points), color=colors[system], label=f"{system} ({threads} thr)",
                    **system_style(system))
        if metric == "gflops":
            _ceiling_lines(ax, doc, rows, colors)
        if metric == "speedup_vs_serial":
            ax.axhline(1.0, color="grey", linewidth=0.8)
        _batch_axis(ax, sorted({r["batch_size"] for r in rows}))
        if log_scale:
            log_y(ax, 10)
        ax.set_ylabel(ylabel)
        ax.set_title(f"{net_name} ({net})" if net_name != net else net)
        ax.grid(True, which="major", alpha=0.3)
    legend(fig, axes)
    return fig


def _ceiling_lines(ax, doc: dict, rows: list[dict], colors: dict[str, str]) -> None:
    """The GEMM ceilings at the largest thread count drawn (ours also at 1, for serial).

    Ours in black; a library's own (gemm-torch, gemm-jax) thinner, in the
    colour of that library's trainer.
    """
    threads = max(r["threads"] for r in rows)
    for system, by_threads in doc["ceilings"].items():
        ours = system == CEILING
        counts = sorted({1, threads}) if ours else [threads]
        color = "black" if ours else colors.get(system.removeprefix("gemm-"), "grey")
        for t in counts:
            gflops = by_threads.get(str(t))
            if gflops is not None:
                ax.axhline(gflops, color=color, linestyle=":" if t == 1 else "-.",
                           linewidth=1.3 if ours else 0.9, label=f"{system} ceiling ({t} thr)")


def _vs_threads(Figure, records, colors):
    """Speedup over serial against threads: a panel per network (columns) and batch (rows)."""
    records = [r for r in records if r["speedup_vs_serial"] is not None
               and r["system"] != BASELINE]
    counts = sorted({r["threads"] for r in records})
    if len(counts) < 2:
        return None
    nets = _nets(records)
    batches = sorted({r["batch_size"] for r in records})
    fig = Figure(figsize=(5.5 * len(nets), 3.6 * len(batches) + 0.8), layout="constrained")
    grid = fig.subplots(len(batches), len(nets), squeeze=False)
    for row, batch in enumerate(batches):
        for col, (net, net_name) in enumerate(nets):
            ax = grid[row][col]
            rows = [r for r in records if r["net"] == net and r["batch_size"] == batch]
            for system in colors:
                points = sorted((r["threads"], r["speedup_vs_serial"]) for r in rows
                                if series(r) == system)
                if points:
                    ax.plot(*zip(*points), color=colors[system], label=system,
                            **system_style(system))
            ax.plot(counts, counts, color="grey", linewidth=0.8, linestyle=":",
                    label="linear speedup")
            ax.set_xscale("log", base=2)
            ax.set_xticks(counts, [str(t) for t in counts])
            ax.set_xticks([], minor=True)
            log_y(ax, 2)
            ax.set_xlabel("threads")
            ax.set_ylabel(f"speedup over {BASELINE} (x)")
            ax.set_title(f"{net_name}, batch {batch}")
            ax.grid(True, alpha=0.3)
    legend(fig, grid.ravel())
    return fig


def _batch_axis(ax, batches: list[int]) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("batch size (samples, log2 scale)")


__all__ = ["PLOTS", "PlotsUnavailable", "draw", "figure_class", "system_colors", "system_style",
           "write_plots"]
