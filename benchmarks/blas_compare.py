"""Which BLAS is faster here? OpenBLAS against MKL on a step's products and on whole steps.

Two tables, each library's rounds interleaved in one process so that
machine noise hits all alike (medians of the rounds):

- products: GFLOP/s of a training step's GEMMs on one thread (a 784x1024
  layer at batches 128 and 1024: the forward ``x @ W`` and the update
  ``W -= s x^T @ delta``): OpenBLAS sgemm, MKL sgemm, MKL's bf16 GEMM;
- steps: samples/s of the executors (serial on one thread; threads and
  blas on ``--threads``) under each library, with its ratio.

    python benchmarks/blas_compare.py --threads 2 --rounds 5

``pbp bench --blas openblas`` and ``--blas mkl`` time the same in separate
runs, with the peers; ``--blas auto`` runs a short version of the first
table once per machine (see docs/blas.md).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from parallel_backprop import Network, make_executor
from parallel_backprop.blas_choice import installed_blas
from parallel_backprop.blas_libraries import bfloat16, load_library
from parallel_backprop.gemm import blas_thread_limit

SHAPES = {"fwd b128": (128, 784, 1024, False), "upd b128": (784, 128, 1024, True),
          "fwd b1024": (1024, 784, 1024, False), "upd b1024": (784, 1024, 1024, True)}


def product_rates(rounds: int) -> dict[tuple[str, str], float]:
    """(routine, shape) -> median GFLOP/s on one thread."""
    rng = np.random.default_rng(0)
    routines = {}
    for name in installed_blas():
        library = load_library(name)
        routines[f"{name} sgemm"] = library, library.routines[np.dtype(np.float32)], np.float32
        if library.bf16 is not None:
            routines[f"{name} bf16"] = library, library.bf16, bfloat16
    samples = {key: [] for key in ((r, s) for r in routines for s in SHAPES)}
    for _ in range(rounds):
        for (routine_name, shape_name) in samples:
            library, routine, dtype = routines[routine_name]
            m, k, n, transposed = SHAPES[shape_name]
            a = rng.random((k, m) if transposed else (m, k), np.float32).astype(dtype)
            b = rng.random((k, n), np.float32).astype(dtype)
            c = np.zeros((m, n), np.float32)
            args = ((b"T" if transposed else b"N"), b"N", m, n, k, -1e-3, a,
                    m if transposed else k, b, n, 1.0, c, n)
            with blas_thread_limit(1, library):
                routine(*args)                              # first touch, not timed
                start, calls = time.perf_counter(), 0
                while time.perf_counter() - start < 0.05:
                    routine(*args)
                    calls += 1
            samples[routine_name, shape_name].append(
                2 * m * k * n * calls / (time.perf_counter() - start) / 1e9)
    return {key: statistics.median(values) for key, values in samples.items()}


def step_rates(threads: int, rounds: int) -> dict[tuple[str, str, str], float]:
    """(executor, net and batch, library) -> median samples/s."""
    rng = np.random.default_rng(1)
    samples: dict[tuple[str, str, str], list[float]] = {}
    for _ in range(rounds):
        for spec in ("1h", "2h"):
            network = Network.from_spec(spec, 784, 10)
            for batch in (128, 1024):
                x = rng.random((batch, 784), dtype=np.float32)
                y = network.targets(rng.integers(0, 10, batch))
                for executor, count in (("serial", 1), ("threads", threads), ("blas", threads)):
                    for blas in installed_blas():
                        key = (f"{executor} {count}", f"Net-{spec} b{batch}", blas)
                        samples.setdefault(key, []).append(
                            _samples_per_s(executor, count, network, x, y, blas))
    return {key: statistics.median(values) for key, values in samples.items()}


def _samples_per_s(executor: str, threads: int, network, x, y, blas: str) -> float:
    with make_executor(executor, network, network.init_params(0), batch_size=len(x),
                       threads=threads, blas=blas) as ex:
        ex.step(x, y, 0.01)
        start, steps = time.perf_counter(), 0
        while time.perf_counter() - start < 0.3:
            ex.step(x, y, 0.01)
            steps += 1
        ex.params()                     # the last update finished
        return steps * len(x) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates = product_rates(args.rounds)
    routines = list(dict.fromkeys(routine for routine, _ in rates))
    print(f"{'GFLOP/s, 1 thread':<18}" + "".join(f"{r:>15}" for r in routines))
    for shape in SHAPES:
        print(f"{shape:<18}" + "".join(f"{rates[r, shape]:>15.1f}" for r in routines))
    steps = step_rates(args.threads, args.rounds)
    libraries = installed_blas()
    print(f"\n{'samples/s':<28}" + "".join(f"{name:>10}" for name in libraries)
          + ("   mkl/openblas" if len(libraries) > 1 else ""))
    for executor, work in dict.fromkeys((e, w) for e, w, _ in steps):
        values = [steps[executor, work, name] for name in libraries]
        ratio = f"{values[1] / values[0]:>15.2f}" if len(values) > 1 else ""
        print(f"{executor + ', ' + work:<28}" + "".join(f"{v:>10.0f}" for v in values) + ratio)


if __name__ == "__main__":
    main()
