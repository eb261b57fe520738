"""Which BLAS to compute with: ``--blas auto|openblas|mkl`` and ``$PBP_BLAS``.

``auto`` picks, among the installed libraries able to do the asked
precision (for bf16, those with a bf16 GEMM), the one that is faster on
this CPU, measured: a probe times a few products of a training step's
shapes (a 784x1024 layer, batches 128 and 1024: forward, and the gradient
product with the update folded in) on one thread per library, well under a
second. The answer is cached per machine, keyed by the CPU model and the
libraries' versions, in ``blas-probe.json`` of the user's cache folder
(``$PBP_CACHE_DIR``, else e.g. ``~/.cache/parallel-backprop``); a cache that
cannot be read is measured again and rewritten.

:func:`select_blas` routes :func:`..gemm.gemm` through the chosen library
and puts its name in ``$PBP_BLAS``, which every process the command starts
inherits (MPI ranks, benchmark workers, study runs, tune candidates) and
reads (``--blas`` defaults to it; :func:`..gemm.current_blas` too), so that
all of them compute with the same library.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import numpy as np

from .blas_libraries import BLAS_NAMES, BlasLibrary, load_library, mkl_installed
from .errors import ConfigError

BLAS_VARIABLE = "PBP_BLAS"
BLAS_CHOICES = ("auto", *BLAS_NAMES)
CACHE_NAME = "blas-probe.json"
# (m, k, n, transpose a): forward x @ W and the update W += x^T @ delta, batches 128, 1024.
PROBE_SHAPES = ((128, 784, 1024, False), (784, 128, 1024, True),
                (1024, 784, 1024, False), (784, 1024, 1024, True))
PROBE_BUDGET_S = 0.5         # rounds stop after this (the first, a warm-up, and at least 2 more)
PROBE_ROUNDS = 8
_decided: dict[str, dict] = {}  # probe key -> result, for this process: measured once


def check_blas(name: object) -> str:
    """``name`` if it is one of :data:`BLAS_CHOICES`; else a one-line ConfigError."""
    if name not in BLAS_CHOICES:
        raise ConfigError(f"blas {name!r}: expected one of {', '.join(BLAS_CHOICES)}")
    return name


def installed_blas() -> list[str]:
    """The libraries that can be loaded here (OpenBLAS always; MKL with its extra)."""
    return [name for name in BLAS_NAMES if name != "mkl" or mkl_installed()]


def resolve_blas(name: str, precision: str = "fp32") -> str:
    """The library ``name`` stands for: itself, or ``auto``'s choice for ``precision``."""
    if check_blas(name) != "auto":
        return name
    candidates = [lib for lib in map(load_library, installed_blas())
                  if precision != "bf16" or lib.bf16 is not None]
    if not candidates:          # no bf16 GEMM anywhere: the library says why
        return "openblas"
    if len(candidates) == 1:
        return candidates[0].name
    return cached_probe(candidates, precision)["choice"]


def select_blas(name: str, precision: str = "fp32") -> BlasLibrary:
    """Compute with the library ``name`` (or ``auto``'s) from now on, here and in the
    processes this one starts; returns it."""
    from .gemm import use_blas

    library = use_blas(resolve_blas(name, precision))
    if precision == "bf16" and library.bf16 is None:
        raise ConfigError(f"--precision bf16: the {library.name} BLAS has no bf16 GEMM "
                          f"({library.bf16_missing})")
    os.environ[BLAS_VARIABLE] = library.name
    return library


# ---- the probe and its cache --------------------------------------------------------

def probe_key(libraries: list[BlasLibrary], precision: str) -> str:
    """What the measurement depends on: the CPU, the libraries and their versions."""
    from .harness.environment import cpu_model

    versions = ", ".join(f"{lib.name} {lib.version}" for lib in libraries)
    return f"{cpu_model()} | {versions} | {precision}"


def cache_path() -> Path:
    from .data.sources import cache_dir

    return Path(cache_dir()) / CACHE_NAME


def cached_probe(libraries: list[BlasLibrary], precision: str) -> dict:
    """The probe's result for these libraries on this machine: as this process found it
    before, else from the cache, else measured now and cached (a cache that cannot be
    read or written is no error)."""
    from .fileio import OutputError, atomic_open

    key, path = probe_key(libraries, precision), cache_path()
    if key in _decided:
        return _decided[key]
    try:
        entries = json.loads(path.read_text())
        if not isinstance(entries, dict):
            raise ValueError("not an object")
    except (OSError, ValueError):
        entries = {}
    entry = entries.get(key)
    if isinstance(entry, dict) and entry.get("choice") in {lib.name for lib in libraries}:
        _decided[key] = entry
        return entry
    entry = _decided[key] = probe(libraries, precision)
    entries[key] = entry
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_open(path, "w", "BLAS probe cache") as handle:
            json.dump(entries, handle, indent=1)
    except (OSError, OutputError):
        pass                # measured again next time
    return entry


def probe(libraries: list[BlasLibrary], precision: str = "fp32") -> dict:
    """Time each library on :data:`PROBE_SHAPES`, one thread; the fastest by total time.

    Calls each library's routine directly: the process's choice is left as it is.
    The first round warms up (thread start, first touch) and does not count.
    Returns ``{"choice": name, "seconds": {name: total}, "date": ...}``.
    """
    from .gemm import blas_thread_limit

    rng = np.random.default_rng(0)
    dtype = np.float32
    if precision == "bf16":
        from .blas_libraries import bfloat16 as dtype
    products = []
    for m, k, n, transpose in PROBE_SHAPES:
        # a (m, k) as stored: C-ordered, or the transpose of a C-ordered (k, m).
        a = rng.random((k, m) if transpose else (m, k), np.float32).astype(dtype)
        b = rng.random((k, n), np.float32).astype(dtype)
        c = np.zeros((m, n), np.float32)
        products.append(((b"T", b"N", m, n, k) if transpose else (b"N", b"N", m, n, k),
                         (a, m if transpose else k), (b, n), c))
    routines = {lib.name: lib.bf16 if precision == "bf16" else lib.routines[np.dtype(np.float32)]
                for lib in libraries}
    # Rounds alternate between the libraries, so that a change of load on a shared
    # machine falls on all of them; each product's best round counts.
    best = {(name, i): float("inf") for name in routines for i in range(len(products))}
    deadline = time.perf_counter() + PROBE_BUDGET_S
    with contextlib.ExitStack() as limits:
        for library in libraries:
            limits.enter_context(blas_thread_limit(1, library))
        for round_ in range(PROBE_ROUNDS):
            for (name, i) in best:
                seconds = _time_product(routines[name], *products[i])
                best[name, i] = min(best[name, i], seconds) if round_ else best[name, i]
            if time.perf_counter() > deadline and round_ >= 2:
                break
    totals = {name: sum(best[name, i] for i in range(len(products))) for name in routines}
    return {"choice": min(totals, key=totals.get),
            "seconds": {name: round(s, 6) for name, s in totals.items()},
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _time_product(routine, shape, a_ld, b_ld, c) -> float:
    """Seconds of one product ``c -= 1e-3 a @ b``."""
    (a, lda), (b, ldb) = a_ld, b_ld
    start = time.perf_counter()
    routine(*shape, -1e-3, a, lda, b, ldb, 1.0, c, c.shape[1])
    return time.perf_counter() - start


__all__ = ["BLAS_CHOICES", "BLAS_VARIABLE", "cached_probe", "check_blas",
           "installed_blas", "probe", "resolve_blas", "select_blas"]
