"""What a benchmark run measures: the grid of configurations, the timing, the presets.

Validated here, once, at the boundary: every bad value raises a one-line
:class:`~parallel_backprop.errors.ConfigError` that names the option.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from ..errors import ConfigError
from ..network import SHORTHANDS, Network
from ..optim import OPTIMIZERS
from ..resources import usable_cpus
from .systems import SYSTEMS


@dataclass(frozen=True)
class Timing:
    """How each configuration is timed.

    After one step (which pays compilation and first-touch costs) the
    system runs for at least ``warmup_s`` more, not counted; then
    ``repeats`` rounds of at least ``min_time_s`` each are timed.
    """

    warmup_s: float = 1.0
    min_time_s: float = 0.5
    repeats: int = 5

    def __post_init__(self) -> None:
        for name, value in (("--warmup", self.warmup_s), ("--min-time", self.min_time_s)):
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} {value!r}: expected a number of seconds >= 0")
        if not (isinstance(self.repeats, int) and self.repeats >= 1):
            raise ConfigError(f"--repeats {self.repeats!r}: expected a positive integer")


QUICK_TIMING = Timing(warmup_s=0.2, min_time_s=0.1, repeats=3)


def default_threads(cores: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to ``cores``, and ``cores`` itself."""
    counts = {1, cores}
    t = 2
    while t < cores:
        counts.add(t)
        t *= 2
    return tuple(sorted(counts))


@dataclass(frozen=True)
class BenchConfig:
    """A benchmark grid: systems x networks x batch sizes x optimizers x thread counts.

    ``nets`` are specs as the user wrote them (``1h``, ``2h``, ``784-512-10``);
    shorthands take ``features`` inputs and ``classes`` outputs.
    ``hybrid_blas_threads`` is the BLAS threads per worker of an executor
    that nests them (``nested_blas``), which splits its T threads into
    T / B workers x B BLAS threads (None: the executor's own split, its
    ``layout``). ``optimizers`` are update rules of :mod:`..optim` with their
    default settings (no weight decay); every trainer takes one step per
    batch with each. ``precisions``: of the products (fp32, bf16); a system
    is timed at those of them it computes in (a peer such as ``torch-bf16``
    in one), and every speedup is over the serial executor in fp32.
    """

    # Every system known when the grid is made: executors registered by plugins too.
    systems: tuple[str, ...] = field(default_factory=lambda: tuple(SYSTEMS))
    nets: tuple[str, ...] = ("1h", "2h")
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256, 512, 1024, 2048)
    optimizers: tuple[str, ...] = ("sgd",)
    # Precisions of the products; each system is timed at those it computes in.
    precisions: tuple[str, ...] = ("fp32",)
    threads: tuple[int, ...] = field(default_factory=lambda: default_threads(len(usable_cpus())))
    timing: Timing = Timing()
    features: int = 784
    classes: int = 10
    hybrid_blas_threads: int | None = None
    epoch_samples: int = 60000
    gemm_size: int = 2048
    timeout_s: float = 600.0
    # Times the whole grid runs, every other pass in reverse order; each configuration
    # reports its median pass (runner.median_pass).
    passes: int = 1
    seed: int = 0
    lr: float = 0.1
    # Steps cycle through this many distinct samples (2 to 64 batches):
    # ~6 MB of Net-1h inputs, more than the L2 caches hold, so steps read
    # fresh data as in training, not the same batch from cache.
    pool_samples: int = 2048
    # An .npz of a loaded table's inputs "x" and classes "labels" (``pbp bench --train-file``):
    # steps then cycle through its rows instead of synthetic ones.
    pool_file: str | None = None
    notes: tuple[str, ...] = ()       # what a preset left out, for the report

    def __post_init__(self) -> None:
        for system in self.systems:
            if system not in SYSTEMS:
                raise ConfigError(f"--systems {system!r}: expected some of {', '.join(SYSTEMS)}, "
                                  "or all, executors, peers, ceilings")
        if not self.systems:
            raise ConfigError("--systems: expected at least one system")
        _positive_ints(self.batch_sizes, "--batch-sizes")
        if not self.optimizers:
            raise ConfigError("--optimizers: expected at least one optimizer")
        for name in self.optimizers:
            if name not in OPTIMIZERS:
                raise ConfigError(f"--optimizers {name!r}: expected some of "
                                  f"{', '.join(OPTIMIZERS)}")
        known = tuple(dict.fromkeys(p for s in SYSTEMS.values() for p in s.precisions))
        for name in self.precisions or ("",):
            if name not in known:
                raise ConfigError(f"--precisions {name!r}: expected some of {', '.join(known)}")
        _positive_ints(self.threads, "--threads")
        for name, value in (("--features", self.features), ("--epoch-samples", self.epoch_samples),
                            ("--gemm-size", self.gemm_size)):
            _positive_ints((value,), name)
        _positive_ints((self.passes,), "--passes")
        if not (isinstance(self.classes, int) and self.classes >= 2):
            raise ConfigError(f"--classes {self.classes!r}: expected an integer >= 2")
        if self.hybrid_blas_threads is not None:
            _positive_ints((self.hybrid_blas_threads,), "--blas-threads")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(
                f"--timeout {self.timeout_s!r}: expected a positive number of seconds")
        if not self.nets:
            raise ConfigError("--nets: expected at least one network")
        for spec in self.nets:
            self.network(spec)  # raises for a bad spec

    @classmethod
    def preset(cls, quick: bool, **overrides) -> "BenchConfig":
        """The full grid, or with ``quick`` one that takes minutes on 2 cores.

        ``--quick``: Net-1h and Net-2h, batches 128 and 1024, 1 thread and
        every usable core, short timing, every system but ``torch-compile``
        (its compilation costs 5-20 s per configuration, a third of the
        budget, and on CPU it ran at eager's speed). Options given
        explicitly (not None) replace the preset's values.
        """
        cores = len(usable_cpus())
        base = cls()
        if quick:
            base = cls(systems=tuple(name for name in SYSTEMS if name != "torch-compile"),
                       batch_sizes=(128, 1024), threads=tuple(sorted({1, cores})),
                       timing=QUICK_TIMING, timeout_s=180.0,
                       notes=("--quick leaves out torch-compile (5-20 s of compiling per "
                              "configuration); name it in --systems to include it",))
        timing = {key: overrides.pop(key) for key in ("warmup_s", "min_time_s", "repeats")
                  if overrides.get(key) is not None}
        overrides = {key: value for key, value in overrides.items() if value is not None}
        if "systems" in overrides:
            overrides["notes"] = ()
        if timing:
            overrides["timing"] = replace(base.timing, **timing)
        return replace(base, **overrides)

    def network(self, spec: str) -> Network:
        """The all-sigmoid MSE network for a spec (the seed's setting)."""
        spec = spec.strip()
        if spec in SHORTHANDS:
            return Network.from_spec(spec, self.features, self.classes)
        if not re.fullmatch(r"\d+(-\d+)+", spec) or any(int(n) < 1 for n in spec.split("-")):
            raise ConfigError(f"--nets {spec!r}: expected sizes joined by '-' such as "
                              f"784-1024-10, or one of {', '.join(SHORTHANDS)}")
        sizes = tuple(int(n) for n in spec.split("-"))
        return Network(sizes, ("sigmoid",) * (len(sizes) - 1), "mse")

    def n_classes(self, network: Network) -> int:
        """Classes of the synthetic labels: one per output unit, two for a single unit."""
        return max(2, network.sizes[-1])


def net_label(spec: str) -> str:
    """``Net-1h`` for the seed's shorthands, the sizes otherwise."""
    return f"Net-{spec}" if spec in SHORTHANDS else spec


def parse_list(text: str | None, option: str) -> tuple[str, ...] | None:
    """``"a, b,c"`` -> ``("a", "b", "c")``; None stays None."""
    if text is None:
        return None
    items = tuple(item.strip() for item in text.split(",") if item.strip())
    if not items:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list")
    return items


def parse_ints(text: str | None, option: str) -> tuple[int, ...] | None:
    """``"128,1024"`` -> ``(128, 1024)``, sorted and without duplicates."""
    items = parse_list(text, option)
    if items is None:
        return None
    try:
        values = tuple(sorted({int(item) for item in items}))
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected positive integers separated by commas") \
            from None
    _positive_ints(values, option)
    return values


def parse_systems(text: str | None) -> tuple[str, ...] | None:
    """System names, with the groups ``all``, ``executors``, ``peers`` and ``ceilings`` expanded."""
    items = parse_list(text, "--systems")
    if items is None:
        return None
    groups = {"all": list(SYSTEMS), **{f"{kind}s": [n for n, s in SYSTEMS.items() if s.kind == kind]
                                       for kind in ("executor", "peer", "ceiling")}}
    names = [name for item in items for name in groups.get(item, [item])]
    return tuple(dict.fromkeys(names))


def _positive_ints(values, option: str) -> None:
    for value in values:
        if not (isinstance(value, int) and value >= 1):
            raise ConfigError(f"{option} {value!r}: expected a positive integer")
    if not values:
        raise ConfigError(f"{option}: expected at least one value")
