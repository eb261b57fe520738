"""Throughput, and what is derived from it: time per epoch, speedup over the baseline.

One definition each: the bench harness's samples per second of timed
steps is here; a training run's (the study's runs, the learning-rate
search, ``pbp train --metrics-json``) is the trainer's
:func:`~parallel_backprop.trainer.steady_throughput`, its epochs at steady state.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence

from ..executors import BASELINE


def throughput(samples: float, seconds: float) -> float | None:
    """Samples per second; None when nothing was timed or there were no samples."""
    return samples / seconds if samples and seconds > 0 else None


def epoch_seconds(epoch_samples: int, samples_per_s: float) -> float:
    """The time for ``epoch_samples`` at ``samples_per_s``."""
    return epoch_samples / samples_per_s


def speedups(records: Sequence, group: Callable[[object], Hashable]) -> list[float | None]:
    """Each record's ``samples_per_s`` over that of the baseline executor's record of the
    same ``group`` (None where either was not measured).

    ``records`` have ``name`` (the executor or system), ``ok`` and ``samples_per_s``; the
    baseline is the one with fp32 products (a record without ``precision`` is fp32), so a
    bf16 run's speedup is over fp32 serial.
    """
    base = {group(r): r.samples_per_s for r in records if r.ok and r.name == BASELINE
            and (getattr(r, "precision", None) or "fp32") == "fp32"}
    rates = []
    for r in records:
        baseline = base.get(group(r))
        rates.append(r.samples_per_s / baseline if r.ok and baseline else None)
    return rates


__all__ = ["epoch_seconds", "speedups", "throughput"]
