"""Tiles of the gpu kernels chosen by measurement, cached on disk per GPU model.

At its first step of a full batch, outside any graph capture, the gpu
executor times a few tile configurations (blocks, warps and pipeline
stages) of each product of the step on scratch tensors and keeps the
fastest (an epoch's smaller last batch keeps the fixed heuristic's tiles);
the choice is saved in a JSON file per GPU model in the package's cache
folder (the one data downloads use)::

    $PBP_CACHE_DIR/gpu-tiles-<model>.json, else
    $XDG_CACHE_HOME/parallel-backprop/gpu-tiles-<model>.json   (~/.cache/... by default)

so later runs take it without measuring. The file is written atomically
(:func:`~parallel_backprop.fileio.atomic_open`); one that cannot be read is
ignored with a warning and replaced at the next save. Keys name the kernel,
the product's shape, the precision and Triton's version (a new compiler may
want other tiles). Under Triton's interpreter nothing is measured: the
kernels keep :func:`.gpu_kernels.tile`'s fixed heuristic.
"""

from __future__ import annotations

import json
import os
import re
import warnings
from pathlib import Path
from typing import Callable, Iterable

from ..fileio import atomic_open

# (BLOCK_rows, BLOCK_cols, BLOCK_reduce, num_warps, num_stages) of one launch.
Config = tuple[int, int, int, int, int]

# Tried on every shape, clipped to it; the heuristic's own choice is tried too.
# Large tiles with 8 warps for batch 4096, small ones with more programs for 128.
# Few, since each compiles once per kernel and precision (about a second each).
CANDIDATES: tuple[Config, ...] = (
    (128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (64, 64, 32, 4, 4),
    (64, 64, 64, 4, 3), (32, 64, 64, 4, 3), (16, 64, 128, 4, 3),
)


def cache_path(device_name: str, environ=os.environ) -> Path:
    """The tile cache of one GPU model: in $PBP_CACHE_DIR, else the user's cache folder
    (XDG_CACHE_HOME, or ~/.cache) under parallel-backprop."""
    folder = environ.get("PBP_CACHE_DIR")
    if not folder:
        root = environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        folder = os.path.join(root, "parallel-backprop")
    model = re.sub(r"[^A-Za-z0-9]+", "-", device_name).strip("-").lower() or "gpu"
    return Path(folder) / f"gpu-tiles-{model}.json"


def cache_key(kernel: str, shape: tuple[int, int, int], precision: str, compiler: str) -> str:
    """The key of one choice: kernel, (rows, cols, reduce), precision, Triton's version."""
    return f"{kernel} {'x'.join(map(str, shape))} {precision} triton-{compiler}"


def clip(config: Config, shape: tuple[int, int, int]) -> Config:
    """Blocks no larger than the shape needs (powers of two, at least 16: tl.dot's minimum)."""
    blocks = [max(16, min(block, 1 << max(size - 1, 0).bit_length()))
              for block, size in zip(config[:3], shape)]
    return (*blocks, *config[3:])


def candidates(shape: tuple[int, int, int], heuristic: Config) -> list[Config]:
    """The configurations to time for a shape: the heuristic's first, no duplicates."""
    return list(dict.fromkeys([heuristic, *(clip(c, shape) for c in CANDIDATES)]))


class TileCache:
    """The chosen configurations of one GPU model, read once and saved after each choice."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.entries: dict[str, Config] = self._read()

    def _read(self) -> dict[str, Config]:
        try:
            with open(self.path) as handle:
                raw = json.load(handle)
            return {str(key): _config(value) for key, value in raw.items()}
        except FileNotFoundError:
            return {}
        except (OSError, ValueError, TypeError, AttributeError) as exc:
            warnings.warn(f"gpu tile cache {self.path}: ignored, it cannot be read "
                          f"({type(exc).__name__}: {exc}); tiles are measured anew",
                          stacklevel=2)
            return {}

    def get(self, key: str) -> Config | None:
        return self.entries.get(key)

    def put(self, key: str, config: Config) -> None:
        """Record a choice and save the whole file atomically; a failure to save is a
        warning (the choice still holds for this run)."""
        self.entries[key] = tuple(config)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with atomic_open(self.path, "w", what="gpu tile cache") as handle:
                json.dump({k: list(v) for k, v in sorted(self.entries.items())}, handle,
                          indent=0)
        except Exception as exc:        # OSError or OutputError: a read-only home
            warnings.warn(f"gpu tile cache {self.path}: not saved ({exc})", stacklevel=2)


def _config(value) -> Config:
    config = tuple(int(v) for v in value)
    if len(config) != 5 or min(config) < 1:
        raise ValueError(f"expected 5 positive integers, got {value!r}")
    return config


def choose(key: str, options: Iterable[Config], measure: Callable[[Config], float],
           cache: TileCache) -> Config:
    """The cached choice for ``key``, else the option ``measure`` (seconds) finds fastest,
    then cached. An option that fails to compile or launch (too much shared memory,
    say) is passed over; when all fail, the first is kept uncached."""
    known = cache.get(key)
    if known is not None:
        return known
    options = list(options)
    timed = []
    for config in options:
        try:
            timed.append((measure(config), config))
        except Exception:               # triton's OutOfResources, compile errors
            continue
    if not timed:
        return options[0]
    best = min(timed)[1]
    cache.put(key, best)
    return best


def products(sizes: tuple[int, ...], rows: int, softmax_output: bool):
    """(kernel, shape) of each product of a step on ``rows`` rows, in the launchers'
    shape order: forward (rows, n_out, n_in), hidden delta (rows, n_in, n_out),
    weight update (n_in, n_out, rows). A softmax output keeps its row-wide blocks."""
    last = len(sizes) - 2
    for l, (k, n) in enumerate(zip(sizes[:-1], sizes[1:])):
        if l < last:
            yield "forward_layer", (rows, n, k)
        elif not softmax_output:
            yield "forward_output_delta", (rows, n, k)
        if l > 0:
            yield "hidden_delta", (rows, k, n)
        yield "weight_update", (k, n, rows)


def _launcher(kernels, kernel: str, shape: tuple[int, int, int], precision: str, device):
    """A function launching ``kernel`` on scratch tensors of ``shape`` with a given config."""
    import torch

    rows, cols, reduce = shape
    new = lambda *s: torch.rand(*s, device=device) * 0.1      # noqa: E731
    if kernel == "forward_layer":
        x, w, b, out = new(rows, reduce), new(reduce, cols), new(cols), new(rows, cols)
        return lambda c: kernels.forward_layer(x, w, b, out, "sigmoid", precision, blocks=c)
    if kernel == "forward_output_delta":
        x, w, b, y = new(rows, reduce), new(reduce, cols), new(cols), new(rows, cols)
        out, delta, parts = new(rows, cols), new(rows, cols), new(
            kernels.max_loss_parts(rows, cols))
        return lambda c: kernels.forward_output_delta(x, w, b, y, out, delta, parts, "sigmoid",
                                                      "mse", precision, blocks=c)
    if kernel == "hidden_delta":
        d, w, a, out = new(rows, reduce), new(cols, reduce), new(rows, cols), new(rows, cols)
        return lambda c: kernels.hidden_delta(d, w, a, out, "sigmoid", precision, blocks=c)
    a, d, w, b = new(reduce, rows), new(reduce, cols), new(rows, cols), new(cols)
    scalars = torch.zeros(4, device=device)                  # W kept as it is
    return lambda c: kernels.weight_update(a, d, w, b, scalars, precision, blocks=c)


def time_launch(launch: Callable[[], None]) -> float:
    """Seconds of one launch, the best of a few after a warm-up (Triton's do_bench,
    CUDA events)."""
    import triton.testing

    return triton.testing.do_bench(launch, warmup=2, rep=8, return_mode="min") / 1e3


def device_name(torch, device) -> str:
    """The GPU model the tiles are measured on (the cache is per model)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else device.type


def tune_step(kernels, sizes: tuple[int, ...], rows: int, precision: str, softmax_output: bool,
              device, cache: TileCache) -> dict:
    """Choose (measured by :func:`time_launch`, or from ``cache``) each product's config
    for a step on ``rows`` rows and record it in ``kernels.TUNED``, which the launchers
    consult; returns the choices."""
    import triton

    chosen = {}
    for kernel, shape in products(sizes, rows, softmax_output):
        launch = _launcher(kernels, kernel, shape, precision, device)
        heuristic = (*kernels.heuristic_blocks(kernel, shape, device), 4, 3)
        key = cache_key(kernel, shape, precision, triton.__version__)
        config = choose(key, candidates(shape, heuristic),
                        lambda c: time_launch(lambda: launch(c)), cache)
        kernels.TUNED[kernel, shape, precision] = config
        chosen[kernel, shape] = config
    return chosen
