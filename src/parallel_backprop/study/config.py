"""What a study runs: its parts, the grids, the training runs, and the two presets.

Validated here, at the boundary: a bad value raises a one-line
:class:`~parallel_backprop.errors.ConfigError` naming the option.

The parts, in the order they run::

    tune       learning-rate grid search on each data set (the baseline executor)
    accuracy   every executor trained with the same seed and rate: test accuracy
    kdd-size   time per epoch against KDD's training-set size (real data)
    batch      the harness's grid: executors and peers x networks x batch sizes,
               on work of each shape (Fashion-MNIST's 784-...-10, KDD's 117-...-1)
    threads    the executors' speedup against the number of threads
    width      time per epoch and GFLOP/s against the hidden layer's width

Sizes of the presets, measured on a 2-core machine with the 10% KDD file:
``quick`` 2.6 minutes, ``paper`` (the seed's grid: batches 128 to 4096,
widths 256 to 4096, the whole data sets) 24 minutes, of which the batch
grids took 14, the threads part 6 (oversubscribed runs are slow) and the
training parts 2.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, replace

from ..bench.config import QUICK_TIMING, Timing, default_threads
from ..bench.systems import CEILING, SYSTEMS
from ..data import DATASETS
from ..errors import ConfigError
from ..executors import BASELINE, EXECUTORS
from ..network import SHORTHANDS
from ..resources import usable_cpus
from .tune import SEED_LRS

PARTS = ("tune", "accuracy", "kdd-size", "batch", "threads", "width")
PRESETS = ("quick", "paper")


@dataclass(frozen=True)
class Shape:
    """The shape of a data set's work, for the speed grids (synthetic data of that shape)."""

    name: str
    title: str
    short: str
    features: int
    classes: int
    epoch_samples: int     # the training split of the real data set: one epoch


SHAPES = {
    "fashion": Shape("fashion", "Fashion-MNIST-shaped work (784 inputs, 10 classes)",
                     "Fashion-MNIST shape", 784, 10, 50_000),
    # One-hot KDD Cup 99 (10% file): 117 inputs; binary task, one sigmoid output.
    # 494,021 rows - 20% test = 395,217, of which 5/6 train.
    "kdd": Shape("kdd", "KDD Cup 99-shaped work (117 inputs, 1 sigmoid output)",
                 "KDD Cup 99 shape", 117, 2, 329_347),
}
# The peers of the batch grids by default, beside every executor and our GEMM
# ceiling: those a user would pick instead (numpy and torch-compile on request);
# and the peer measured against the hidden width, for scale.
DEFAULT_PEERS = ("torch", "torch-bf16", "jax", "sklearn")   # torch-bf16: only with bf16
WIDTH_PEERS = ("torch",)


def default_executors() -> tuple[str, ...]:
    """Every registered executor (those of plugins too), in the registry's order."""
    return tuple(EXECUTORS)


def default_systems() -> tuple[str, ...]:
    """Systems of the batch grids by default: every executor, the default peers, the ceiling."""
    return (*default_executors(), *DEFAULT_PEERS, CEILING)


def size_executors(executors: tuple[str, ...], cores: int | None = None) -> tuple[str, ...]:
    """Of ``executors``, those timed against the problem size (KDD's training-set size,
    the hidden width).

    The rule: the baseline, and every executor of one process on the CPU
    that spreads exactly this machine's ``cores`` (its ``layout`` for them
    uses them all). Ranks, a device, or a split the cores do not allow
    (hybrid below 4 cores) answer other questions than how the time grows
    with the work.
    """
    cores = len(usable_cpus()) if cores is None else cores

    def spreads(cls) -> bool:
        layout = cls.layout(cores)
        return (cls.device == "cpu" and not cls.distributed and cls.scales_with_cores()
                and layout is not None and layout.cores == cores)

    return tuple(name for name in executors
                 if name == BASELINE or spreads(EXECUTORS[name]))


def width_systems(cores: int | None = None) -> tuple[str, ...]:
    """Systems measured against the hidden width: the size executors, a peer, the ceiling."""
    return (*size_executors(default_executors(), cores), *WIDTH_PEERS, CEILING)


# Accuracy of an executor within this of the serial executor's "reaches" it:
# executors differ only by float rounding, which moves a few test samples.
ACCURACY_TOLERANCE = 0.01


@dataclass(frozen=True)
class StudyConfig:
    """A whole study. See the module docstring for the parts."""

    preset: str = "quick"
    parts: tuple[str, ...] = PARTS
    seed: int = 0
    # -- the speed grids (the bench harness) --
    systems: tuple[str, ...] = field(default_factory=default_systems)
    shapes: tuple[str, ...] = ("fashion", "kdd")
    nets: tuple[str, ...] = ("1h", "2h")
    precisions: tuple[str, ...] = ("fp32",)    # of the batch grids' products
    batch_sizes: tuple[int, ...] = (128, 1024)
    thread_counts: tuple[int, ...] = ()        # of the threads part; () = every usable core
    widths: tuple[int, ...] = (256, 1024, 4096)
    width_batch: int = 1024
    timing: Timing = QUICK_TIMING
    timeout_s: float = 300.0
    gemm_size: int = 2048
    # -- the training runs (real data) --
    datasets: tuple[str, ...] = ("fashion-mnist", "kdd99")
    executors: tuple[str, ...] = field(default_factory=default_executors)
    train_net: str = "1h"
    train_batch: int = 128
    epochs: int = 3
    limit: int | None = 12000                # 10,000 training samples
    lr: float | None = None                    # None: the tuned one
    lrs: tuple[float, ...] = SEED_LRS
    tune_epochs: int = 2
    tune_limit: int | None = 12000
    kdd_sizes: tuple[int | None, ...] = (50_000, 100_000)   # None: the whole file
    size_batch: int = 1024
    # -- synthetic data (the "synthetic" data set) --
    samples: int = 60000
    features: int = 784
    classes: int = 10
    notes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.preset not in PRESETS:
            raise ConfigError(f"--preset {self.preset!r}: expected one of {', '.join(PRESETS)}")
        _members(self.parts, PARTS, "--parts")
        _members(self.shapes, tuple(SHAPES), "--shapes")
        _members(self.datasets, DATASETS, "--datasets")
        _members(self.executors, tuple(EXECUTORS), "--executors")
        _members(self.systems, tuple(SYSTEMS), "--systems")
        _members(self.precisions, tuple(dict.fromkeys(
            p for system in SYSTEMS.values() for p in system.precisions)), "--precisions")
        for option, values in (("--batch-sizes", self.batch_sizes), ("--widths", self.widths),
                               ("--threads", self.thread_counts or (1,)),
                               ("--epochs", (self.epochs,)), ("--tune-epochs", (self.tune_epochs,)),
                               ("--samples", (self.samples,)), ("--features", (self.features,))):
            for value in values:
                if not (isinstance(value, int) and value >= 1):
                    raise ConfigError(f"{option} {value!r}: expected a positive integer")
        for option, value in (("--limit", self.limit), ("--limit", self.tune_limit)):
            if value is not None and not (isinstance(value, int) and value >= 2):
                raise ConfigError(f"{option} {value!r}: expected an integer >= 2")
        for size in self.kdd_sizes:
            if size is not None and not (isinstance(size, int) and size >= 2):
                raise ConfigError(f"--kdd-sizes {size!r}: expected integers >= 2 or 'full'")
        if self.train_net not in SHORTHANDS and not re.fullmatch(r"\d+(-\d+)+", self.train_net):
            raise ConfigError(f"--train-net {self.train_net!r}: expected sizes joined by '-' "
                              f"such as 784-1024-10, or one of {', '.join(SHORTHANDS)}")
        if self.classes < 2:
            raise ConfigError(f"--classes {self.classes!r}: expected an integer >= 2")
        if self.lr is not None and not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"--lr {self.lr!r}: expected a positive finite number")
        for lr in self.lrs:
            if not (math.isfinite(lr) and lr > 0):
                raise ConfigError(f"--lrs {lr!r}: expected positive finite learning rates")
        if not self.lrs:
            raise ConfigError("--lrs: expected at least one learning rate")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise ConfigError(f"--timeout {self.timeout_s!r}: expected a positive number")
        if "accuracy" in self.parts and "tune" not in self.parts and self.lr is None:
            raise ConfigError("--parts: the accuracy part without the tune part needs --lr "
                              "(the learning rate every executor trains with)")

    @classmethod
    def preset_config(cls, name: str, **overrides) -> "StudyConfig":
        """The preset ``name`` with the options given (not None) replacing its values."""
        if name not in PRESETS:
            raise ConfigError(f"--preset {name!r}: expected one of {', '.join(PRESETS)}")
        base = cls(preset=name)
        if name == "paper":
            base = replace(
                base, batch_sizes=(128, 256, 512, 1024, 2048, 4096),
                widths=(256, 512, 1024, 2048, 4096), timing=Timing(),
                timeout_s=600.0, epochs=5, limit=None, tune_epochs=3, tune_limit=None,
                kdd_sizes=(50_000, 100_000, 200_000, None))
        timing = {key: overrides.pop(key) for key in ("warmup_s", "min_time_s", "repeats")
                  if overrides.get(key) is not None}
        if timing:
            overrides["timing"] = replace(base.timing, **timing)
        for key in ("limit", "tune_limit"):   # 0 from the command line: no limit
            if overrides.get(key) == 0:
                overrides.pop(key)
                base = replace(base, **{key: None})
        return replace(base, **{key: value for key, value in overrides.items()
                                if value is not None})

    def thread_batches(self) -> tuple[int, ...]:
        """The threads part's batch sizes: the largest of the grid (``quick``), or the
        smallest and the largest (``paper``)."""
        if self.preset == "quick":
            return (max(self.batch_sizes),)
        return tuple(sorted({min(self.batch_sizes), max(self.batch_sizes)}))

    def resolved_thread_counts(self) -> tuple[int, ...]:
        """The threads part's thread counts: 1, 2, 4, ... the usable cores; below 4 cores
        also twice the cores (oversubscribed), so that hybrid has a split to show."""
        if self.thread_counts:
            return tuple(sorted(set(self.thread_counts)))
        cores = len(usable_cpus())
        counts = set(default_threads(cores))
        if self.preset == "paper" and cores < 4:
            counts.add(2 * cores)
        return tuple(sorted(counts))


def _members(values: tuple, allowed: tuple, option: str) -> None:
    if not values:
        raise ConfigError(f"{option}: expected at least one of {', '.join(allowed)}")
    for value in values:
        if value not in allowed:
            raise ConfigError(f"{option} {value!r}: expected some of {', '.join(allowed)}")


def parse_sizes(text: str | None) -> tuple[int | None, ...] | None:
    """``"50000,100000,full"`` -> ``(50000, 100000, None)``."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        raise ConfigError(f"--kdd-sizes {text!r}: expected a comma-separated list")
    sizes = []
    for item in items:
        if item == "full":
            sizes.append(None)
            continue
        try:
            sizes.append(int(item))
        except ValueError:
            raise ConfigError(f"--kdd-sizes {text!r}: expected integers or 'full' separated "
                              "by commas") from None
    return tuple(dict.fromkeys(sizes))


def parse_floats(text: str | None, option: str,
                 zero: bool = False) -> tuple[float, ...] | None:
    """``"0.1,0.5"`` -> ``(0.1, 0.5)``; None stays None. Positive numbers, or >= 0 if ``zero``."""
    if text is None:
        return None
    items = [item.strip() for item in text.split(",") if item.strip()]
    try:
        values = tuple(float(item) for item in items)
    except ValueError:
        raise ConfigError(f"{option} {text!r}: expected numbers separated by commas") from None
    if not values:
        raise ConfigError(f"{option} {text!r}: expected a comma-separated list")
    for value in values:
        if not (math.isfinite(value) and (value > 0 or zero and value == 0)):
            raise ConfigError(f"{option} {value!r}: expected "
                              f"{'finite numbers >= 0' if zero else 'positive finite numbers'}")
    return values
