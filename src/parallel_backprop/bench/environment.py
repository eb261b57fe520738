"""Where a benchmark ran: kept here for callers of ``bench.environment``; see
:mod:`parallel_backprop.harness.environment`."""

from ..harness.environment import environment, load_average, usable_cpus, warnings

__all__ = ["environment", "load_average", "usable_cpus", "warnings"]
