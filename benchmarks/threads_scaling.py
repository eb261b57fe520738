"""How much of the machine's own two-core gain the parallel executors reach.

The yardstick is the machine, not 2.0: a float32 GEMM (the ``gemm`` ceiling
of ``pbp bench``, 2048^3 through the BLAS the executors call) on T BLAS
threads against one. On some machines T cores deliver well under T times
one core (two cores sharing a physical core's units, memory bandwidth, a
noisy host), and no executor can beat that. For each network and batch
size the script times ``serial``, ``threads`` (also with every product
split by rows, as before wide layers went by columns) and ``blas``, and
the GEMM at 1 and T threads, interleaved in rounds so that noise from
other processes hits them alike, and prints medians of per-round ratios:

    speedup   serial's step time / the executor's, same round
    of gain   speedup / (GEMM rate at T threads / at 1), same round

    python benchmarks/threads_scaling.py --nets 1h,2h --batch-sizes 128,1024 --threads 2

``of gain`` >= 0.95 means the executor scales as well as BLAS itself does
on this machine. ``pbp bench --systems serial,threads,blas,gemm --threads
2`` measures the same things in separate processes (the ceiling at 1 and 2
threads, each executor's speedup over serial).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from parallel_backprop import Network, make_executor
from parallel_backprop.executors import threads as threads_module
from parallel_backprop.gemm import blas_thread_limit, gemm


def gemm_rate(operands: tuple[np.ndarray, np.ndarray, np.ndarray], threads: int,
              repeats: int) -> float:
    """GFLOP/s of ``c = a @ b`` on ``threads`` BLAS threads, the best of ``repeats``."""
    a, b, c = operands
    # blas_thread_limit loads the BLAS first: threadpoolctl alone misses a
    # library not loaded yet (SciPy's, on the first gemm) and leaves it on all cores.
    with blas_thread_limit(threads):
        gemm(a, b, c)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            gemm(a, b, c)
            best = min(best, time.perf_counter() - start)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best / 1e9


def step_time(name: str, network: Network, batches: list, threads: int, steps: int,
              split_by_rows: bool = False) -> float:
    """Seconds per step of executor ``name``, ``steps`` steps after three of warm-up."""
    floor = threads_module.COLUMN_SPLIT_MIN
    if split_by_rows:                  # every product by rows: no W is large enough
        threads_module.COLUMN_SPLIT_MIN = 1 << 62
    try:
        with make_executor(name, network, network.init_params(0),
                           batch_size=batches[0][0].shape[0], threads=threads) as executor:
            for x, y in batches[:3]:
                executor.step(x, y, 0.01)
            executor.params()
            start = time.perf_counter()
            for i in range(steps):
                executor.step(*batches[i % len(batches)], 0.01)
            executor.params()                        # waits for the last update
            return (time.perf_counter() - start) / steps
    finally:
        threads_module.COLUMN_SPLIT_MIN = floor


def measure(net: str, batch_size: int, threads: int, rounds: int, operands) -> dict:
    network = Network.from_spec(net, 784, 10)
    rng = np.random.default_rng(0)
    batches = []
    for _ in range(4):
        x = rng.random((batch_size, 784), dtype=np.float32)
        batches.append((x, network.targets(rng.integers(0, 10, batch_size))))
    steps = max(10, 20_000 // batch_size)
    variants = {"threads": {}, "threads by rows": {"split_by_rows": True}, "blas": {}}
    ratios: dict[str, list[float]] = {name: [] for name in variants}
    gains: dict[str, list[float]] = {name: [] for name in variants}
    machine = []
    for _ in range(rounds):
        one, many = gemm_rate(operands, 1, 3), gemm_rate(operands, threads, 3)
        machine.append(many / one)
        serial = step_time("serial", network, batches, 1, steps)
        for label, options in variants.items():
            name = label.split()[0]
            speedup = serial / step_time(name, network, batches, threads, steps, **options)
            ratios[label].append(speedup)
            gains[label].append(speedup / machine[-1])
    return {"gemm gain": statistics.median(machine),
            **{label: (statistics.median(ratios[label]), statistics.median(gains[label]))
               for label in variants}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", default="1h,2h")
    parser.add_argument("--batch-sizes", default="128,1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--gemm-size", type=int, default=2048)
    args = parser.parse_args()
    rng = np.random.default_rng(1)
    size = args.gemm_size
    operands = tuple(rng.random((size, size), dtype=np.float32) for _ in range(3))
    print(f"T = {args.threads}; medians over {args.rounds} rounds; "
          "speedup over serial (share of the GEMM's own gain)")
    for net in args.nets.split(","):
        for batch_size in (int(b) for b in args.batch_sizes.split(",")):
            result = measure(net, batch_size, args.threads, args.rounds, operands)
            cells = ", ".join(f"{label} {speedup:.2f}x ({gain:.0%})"
                              for label, value in result.items() if label != "gemm gain"
                              for speedup, gain in [value])
            print(f"Net-{net} b{batch_size}: GEMM {args.threads}T/1T "
                  f"{result['gemm gain']:.2f}x; {cells}")


if __name__ == "__main__":
    main()
