"""The look shared by every harness plot: colours, line styles, log axes, one legend.

matplotlib (the ``plots`` extra) is imported only when a figure is drawn,
through its object API with the Agg canvas: no pyplot, no global backend
switch, no display needed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

from ..errors import PbpError, install_hint
from ..fileio import atomic_open

PALETTE = tuple(f"C{i}" for i in range(10)) + ("olive", "teal", "navy", "maroon", "purple")


class PlotsUnavailable(PbpError):
    """matplotlib is not installed."""


def figure_class():
    """matplotlib's Figure, or :class:`PlotsUnavailable` saying how to install it."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise PlotsUnavailable(f"plots need matplotlib: {install_hint('plots')}") \
            from None
    return Figure


def colors(present: Iterable[str], order: Iterable[str]) -> dict[str, str]:
    """One colour per name of ``present``, given by its place in ``order`` (names not in
    it after), so that a name has the same colour in every figure of a run."""
    present = set(present)
    order = list(dict.fromkeys(order))
    names = order + sorted(present - set(order))
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names) if name in present}


def line_style(ours: bool) -> dict:
    """Ours solid with circles, peers dashed with squares."""
    return {"linestyle": "-", "marker": "o"} if ours else {"linestyle": "--", "marker": "s"}


def log_y(ax, base: int) -> None:
    """A log y axis labelled with plain numbers (0.5, 1, 2), not powers.

    Call it after plotting: the ticks follow the data's range. Over a few
    decades, 1-2-5 steps; within one, evenly stepped values, so that labels
    show (a range such as 0.27 to 0.65 s has no power of ten in it).
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    low, high = ax.dataLim.intervaly
    span = math.log(high / low, base) if 0 < low < high else 0.0
    if base == 2 and span > 5:     # powers of two read badly below 1/32: 0.000977
        base, span = 10, span * math.log10(2)
    ax.set_yscale("log", base=base)
    if base == 10 and span <= 0.5:     # nearly linear: evenly stepped values (6, 8, 10, 12)
        ax.yaxis.set_major_locator(MaxNLocator(nbins=7, steps=[1, 2, 2.5, 5, 10]))
    else:
        subs = (((1.0,) if span > 3 else (1.0, 2.0, 5.0) if span > 1
                 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)) if base == 10
                else (1.0,) if span > 3 else (1.0, 1.5))
        ax.yaxis.set_major_locator(LogLocator(base, subs=subs))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:.3g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def legend(fig, axes) -> None:
    """One legend for the figure, below the panels, each entry once, as wide as the figure."""
    entries = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    longest = max(len(label) for label in entries)
    # ~0.075 inch per character of small type, plus the line sample.
    per_column = 0.075 * longest + 0.8
    columns = max(1, min(len(entries), int(fig.get_figwidth() // per_column)))
    fig.legend(entries.values(), entries.keys(), loc="outside lower center", ncols=columns,
               fontsize="small")


def save(fig, path: Path) -> Path:
    """Write ``fig`` as a PNG at ``path`` (atomically, like every output); the path."""
    with atomic_open(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=110)
    return path


__all__ = ["PALETTE", "PlotsUnavailable", "colors", "figure_class", "legend", "line_style",
           "log_y", "save"]
