"""The benchmark harness behind ``pbp bench``: our executors and their peers on the same work.

- :mod:`.config`       the grid (systems x networks x batch sizes x threads), timing, presets
- :mod:`.systems`      each system's training step (or GEMM), built inside a worker
- :mod:`.worker`       one configuration in its own process, timed at steady state
- :mod:`.runner`       plans the grid, starts the workers, derives speedup and efficiency
- :mod:`.report`       ``bench.json``, ``bench.csv`` and the printed summary
- :mod:`.plots`        the PNG plots (matplotlib, the ``plots`` extra)

Records, processes, JSON, the environment record and the plot style are
the harness core's (:mod:`parallel_backprop.harness`), shared with the study.

This module imports no peer library and no matplotlib: every worker
imports it, before it pins its CPU affinity for XLA.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from .config import BenchConfig, Timing

OUTPUTS = ("bench.json", "bench.csv")


def run_bench(config: BenchConfig, out_dir: Path, *, plots: bool = True, progress: bool = True,
              log: Callable[[str], None] = print, command: list[str] | None = None,
              plugins: Sequence[str] = ()) -> dict:
    """Run the grid, write ``bench.json``, ``bench.csv`` and the plots into ``out_dir``.

    ``plugins`` are imported here and in every worker (modules or ``.py``
    files that register executors). Returns the ``bench.json`` document.
    Ctrl-C stops the grid, writes what was measured (``"interrupted": true``)
    and re-raises KeyboardInterrupt.
    """
    from ..fileio import output_folder
    from ..plugins import load_plugins
    from ..harness.environment import (environment, load_average, source_change_notes,
                                       source_fingerprint, warnings)
    from . import report
    from .runner import derive, run_grid

    out_dir = output_folder(out_dir, OUTPUTS)   # fail now, not after the measurements
    load_plugins(plugins)
    started = time.perf_counter()
    env = environment()
    source = source_fingerprint()
    records, interrupted = run_grid(config, progress=progress, plugins=tuple(plugins))
    env["load_average_end"] = load_average()   # a busy machine shows here
    changed = source_change_notes(env, source)
    ceilings = derive(records, config.epoch_samples)
    doc = report.document(config, env, records, ceilings, command=command or sys.argv,
                          wall_s=time.perf_counter() - started, interrupted=interrupted)
    doc["notes"][:0] = changed + warnings(env) + list(config.notes)
    for note in changed:
        log(f"warning: {note}")
    if plots:
        from ..harness.plotstyle import PlotsUnavailable
        from .plots import write_plots
        try:
            doc["plots"] = [path.name for path in write_plots(doc, out_dir)]
        except PlotsUnavailable as exc:
            doc["notes"].insert(0, f"plots skipped: {exc}")
    report.write_documents(doc, out_dir)
    for line in report.summary(doc):
        log(line)
    if interrupted:
        raise KeyboardInterrupt
    return doc


def replot(source: Path, out_dir: Path, *, log: Callable[[str], None] = print) -> dict:
    """Redraw the plots and reprint the summary of an earlier ``bench.json``; measures nothing."""
    from ..fileio import output_folder
    from . import report
    from .plots import PLOTS, write_plots

    doc = report.load(source, label=f"--replot {source}")
    out_dir = output_folder(out_dir, tuple(f"{name}.png" for name in PLOTS),
                            inputs={"--replot": source})
    doc["plots"] = [path.name for path in write_plots(doc, out_dir)]
    for line in report.summary(doc):
        log(line)
    return doc


__all__ = ["BenchConfig", "Timing", "replot", "run_bench"]
