"""The report's figures, as PNG files, from a ``study.json`` document.

    {shape}_{metric}_{net}.png   time per epoch, GFLOP/s and speedup over serial against
                                 batch size, one figure per network (the seed's figures
                                 5-10), for each shape of work measured
    speedup_threads.png          speedup over serial against threads
    width_scaling.png            time per epoch and GFLOP/s against the hidden width
    kdd_size_scaling.png         time per epoch and speedup against KDD's training-set size
    tune.png                     validation accuracy against the learning rate

The batch and thread plots are the bench harness's own (:func:`..bench.plots.draw`);
the others use its colours (one per system, the same in every figure) and
the shared plot style (:mod:`..harness.plotstyle`). matplotlib is imported
only when a figure is drawn.
"""

from __future__ import annotations

from pathlib import Path

from ..bench.plots import draw, system_colors, system_style
from ..bench.systems import CEILING
from ..executors import BASELINE
from ..harness import is_ok, series
from ..harness.plotstyle import figure_class, legend, log_y, save
from .config import SHAPES

BATCH_METRICS = {"epoch_time": "Time per epoch", "gflops": "GFLOP/s",
                 "speedup": f"Speedup over {BASELINE}"}


def write_figures(doc: dict, out_dir: Path) -> list[dict]:
    """Draw every figure the study allows into ``out_dir``.

    Returns one entry per figure: ``{"file", "title", "part", ...}`` in the
    order the report shows them.
    """
    figure_class()            # PlotsUnavailable, with the install hint, before any work
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    figures = []

    def keep(fig, name: str, title: str, caption: str | None = None, **info) -> None:
        if fig is None:
            return
        fig.suptitle(title, fontsize="medium", fontweight="bold")
        save(fig, out_dir / name)
        figures.append({"file": name, "title": caption or title, **info})

    for shape_name, shape in SHAPES.items():
        grid = doc["grids"].get(f"batch-{shape_name}")
        if not grid:
            continue
        for net, name in _nets(grid):
            for metric, what in BATCH_METRICS.items():
                keep(draw(grid, metric, nets=[net]), f"{shape_name}_{metric}_{_slug(name)}.png",
                     f"{what} against batch size, {shape.short}",
                     caption=f"{what} against batch size, {_named(net, name)}, {shape.title}",
                     part="batch", shape=shape_name, net=net, metric=metric)
    if doc["grids"].get("threads"):
        keep(draw(doc["grids"]["threads"], "speedup_threads"), "speedup_threads.png",
             f"Speedup over the {BASELINE} executor against threads", part="threads")
    if doc["grids"].get("width"):
        keep(_width(doc["grids"]["width"]), "width_scaling.png",
             "Problem size: hidden-layer width (one hidden layer)", part="width")
    if any(is_ok(r) for r in doc.get("kdd_size", [])):
        keep(_kdd_size(doc["kdd_size"]), "kdd_size_scaling.png",
             "Problem size: KDD Cup 99 training-set size (real data)",
             part="kdd-size")
    if doc.get("tune"):
        keep(_tune(doc["tune"]), "tune.png", "Learning-rate grid search", part="tune")
    return figures


def _nets(grid: dict) -> list[tuple[str, str]]:
    return list(dict.fromkeys((r["net"], r["net_name"]) for r in grid["records"]
                              if is_ok(r) and r["kind"] != "ceiling"))


def _slug(name: str) -> str:
    return name.lower().replace(" ", "-")


def _named(net: str, name: str) -> str:
    return f"{name} ({net})" if name != net else net


def _width(grid: dict):
    """Time per epoch and GFLOP/s against the hidden width, one line per system."""
    Figure = figure_class()
    records = [r for r in grid["records"] if is_ok(r) and r["kind"] != "ceiling"]
    if not records:
        return None
    colors = system_colors(records)
    width_of = {r["net"]: int(r["net"].split("-")[1]) for r in records}
    widths = sorted(set(width_of.values()))
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    time_ax, rate_ax = fig.subplots(1, 2)
    for system in colors:
        mine = [r for r in records if series(r) == system]
        threads = max(r["threads"] for r in mine)
        points = sorted((width_of[r["net"]], r["epoch_s"], r["gflops"]) for r in mine
                        if r["threads"] == threads)
        x, epoch_s, gflops = zip(*points)
        label = f"{system} ({threads} thr)"
        time_ax.plot(x, epoch_s, color=colors[system], label=label, **system_style(system))
        rate_ax.plot(x, gflops, color=colors[system], label=label, **system_style(system))
    for t, gflops in sorted(grid["ceilings"].get(CEILING, {}).items()):
        rate_ax.axhline(gflops, color="black", linestyle=":" if t == "1" else "-.",
                        linewidth=1.2, label=f"{CEILING} ceiling ({t} thr)")
    epoch_samples = records[0]["epoch_samples"]
    batch = records[0]["batch_size"]
    for ax in (time_ax, rate_ax):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xticks([], minor=True)
        ax.set_xlabel(f"hidden units (network {records[0]['net'].split('-')[0]}-H-"
                      f"{records[0]['net'].split('-')[-1]}, batch {batch}; log2 scale)")
        ax.grid(True, alpha=0.3)
    log_y(time_ax, 10)
    time_ax.set_ylabel(f"time per epoch of {epoch_samples:,} samples (s, log scale)")
    time_ax.set_title("time per epoch")
    rate_ax.set_ylabel("achieved GFLOP/s (float32)")
    rate_ax.set_ylim(bottom=0)
    rate_ax.set_title("throughput")
    legend(fig, [time_ax, rate_ax])
    return fig


def _kdd_size(runs: list[dict]):
    """Time per epoch and speedup over serial against the training-set size."""
    Figure = figure_class()
    runs = [r for r in runs if is_ok(r)]
    colors = system_colors([{"system": r["executor"]} for r in runs])
    fig = Figure(figsize=(11.0, 4.6), layout="constrained")
    time_ax, speed_ax = fig.subplots(1, 2)
    for executor in colors:
        mine = sorted((r["n_train"], r["epoch_s"], r["speedup_vs_serial"], r["threads"],
                       r["ranks"]) for r in runs if r["executor"] == executor)
        n, epoch_s, speedup, threads, _ = zip(*mine)
        label = f"{executor} ({threads[0]} thr)"
        time_ax.plot(n, epoch_s, color=colors[executor], label=label, **system_style(executor))
        if executor != BASELINE and all(s is not None for s in speedup):
            speed_ax.plot(n, speedup, color=colors[executor], label=label,
                          **system_style(executor))
    speed_ax.axhline(1.0, color="grey", linewidth=0.8, label=BASELINE)
    sizes = sorted({r["n_train"] for r in runs})
    # One-hot inputs: as many as the categories the training split holds.
    nets = sorted({r["net"] for r in runs}, key=lambda net: int(net.split("-")[0]))
    net = nets[0] if len(nets) == 1 else \
        f"{nets[0].split('-')[0]} to {nets[-1]}"    # "111 to 117-1024-1"
    for ax in (time_ax, speed_ax):
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{n / 1000:,.0f}k" if n >= 10_000 else f"{n:,}" for n in sizes])
        ax.set_xticks([], minor=True)
        ax.set_xlabel("training samples (log scale)")
        ax.grid(True, alpha=0.3)
    log_y(time_ax, 10)
    time_ax.set_ylabel("time per epoch (s, log scale)")
    where = f"net {net}, batch {runs[0]['batch_size']}"
    time_ax.set_title(f"time per epoch ({where})")
    speed_ax.set_ylabel(f"speedup over {BASELINE} (x)")
    speed_ax.set_ylim(bottom=0)
    speed_ax.set_title(f"speedup over {BASELINE} ({where})")
    legend(fig, [time_ax, speed_ax])
    return fig


def _tune(tuned: dict):
    """Validation accuracy against the learning rate, one line per data set."""
    Figure = figure_class()
    fig = Figure(figsize=(6.5, 4.6), layout="constrained")
    ax = fig.subplots()
    lrs = set()
    for i, (dataset, doc) in enumerate(tuned.items()):
        color = f"C{i}"
        ok = sorted((r["lr"], r["val_accuracy"]) for r in doc["candidates"]
                    if is_ok(r))
        if ok:
            ax.plot(*zip(*ok), color=color, marker="o",
                    label=f"{dataset} ({doc['net']}, {doc['config']['epochs']} epoch(s))")
        diverged = [r["lr"] for r in doc["candidates"] if not is_ok(r)]
        if diverged:
            ax.plot(diverged, [0.0] * len(diverged), color=color, marker="x", linestyle="none",
                    markersize=9, label=f"{dataset}: diverged")
        best = doc["best"]
        ax.plot([best["lr"]], [best["val_accuracy"]], color=color, marker="*", markersize=16,
                linestyle="none", label=f"{dataset}: best, lr {best['lr']:g}")
        lrs |= {r["lr"] for r in doc["candidates"]}
    ax.set_xscale("log")
    ticks = sorted(lrs)
    ax.set_xticks(ticks, [f"{lr:g}" for lr in ticks])
    ax.set_xticks([], minor=True)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("validation accuracy")
    ax.set_ylim(-0.03, 1.03)
    ax.grid(True, alpha=0.3)
    legend(fig, [ax])
    return fig


__all__ = ["BATCH_METRICS", "write_figures"]
