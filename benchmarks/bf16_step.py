"""What the compiled element-wise passes of a bf16 step buy, executor by executor.

A bf16 step's sigmoid layers have two compiled passes in
``parallel_backprop._bf16`` (see docs/precision.md): the forward one (bias
add and sigmoid in one pass, with the bf16 copy of the result) and
the backward one (``delta *= a (1 - a)`` with the bf16 copy of the delta).
For each executor, network and batch size this times the steps of one
executor with the passes switched (``precision.use_fused_passes``) between
rounds, so that noise from other processes hits every variant alike, and
prints samples/s (median over rounds) and each variant's ratio to ``none``:

    none       NumPy's passes and the converter (the step before the passes)
    backward   the backward pass only
    both       both passes (the default)

    python benchmarks/bf16_step.py --systems serial,threads --nets 1h,2h \\
        --batch-sizes 128,1024 --threads 2 [--rounds 7]

``serial`` runs on one thread, the others on ``--threads``. MKL is used
(the BLAS bf16 needs); a CPU without bf16 products is refused in one line.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from parallel_backprop import Network, make_executor, precision
from parallel_backprop.gemm import use_blas

VARIANTS = {"none": (False, False), "backward": (False, True), "both": (True, True)}


def batches(network: Network, batch_size: int) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [(rng.random((batch_size, network.sizes[0]), dtype=np.float32),
             network.targets(rng.integers(0, network.sizes[-1], batch_size)))
            for _ in range(4)]


def rates(system: str, net: str, batch_size: int, threads: int, rounds: int) -> dict:
    """Samples/s of each variant, the median over ``rounds`` interleaved rounds."""
    network = Network.from_spec(net, 784, 10)
    data = batches(network, batch_size)
    steps = max(8, 16384 // batch_size)
    seen: dict[str, list[float]] = {name: [] for name in VARIANTS}
    with make_executor(system, network, network.init_params(0), batch_size=batch_size,
                       threads=threads, precision="bf16") as executor:
        for x, y in data:                                   # warm-up
            executor.step(x, y, 0.01)
        for _ in range(rounds):
            for name, switches in VARIANTS.items():
                precision.use_fused_passes(*switches)
                executor.params()                           # the last update is done
                start = time.perf_counter()
                for i in range(steps):
                    executor.step(*data[i % len(data)], 0.01)
                executor.params()
                seen[name].append(steps * batch_size / (time.perf_counter() - start))
    precision.use_fused_passes(True, True)
    return {name: statistics.median(values) for name, values in seen.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="serial,threads")
    parser.add_argument("--nets", default="1h,2h")
    parser.add_argument("--batch-sizes", default="128,1024")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    use_blas("mkl")
    print(f"{'system':8s} {'net':4s} {'batch':>5s}  " + "  ".join(f"{v:>16s}" for v in VARIANTS))
    for system in args.systems.split(","):
        threads = 1 if system == "serial" else args.threads
        for net in args.nets.split(","):
            for batch_size in map(int, args.batch_sizes.split(",")):
                got = rates(system, net, batch_size, threads, args.rounds)
                cells = "  ".join(f"{got[v]:>8,.0f} ({got[v] / got['none']:.2f}x)"
                                  for v in VARIANTS)
                print(f"{system:8s} {net:4s} {batch_size:5d}  {cells}", flush=True)


if __name__ == "__main__":
    main()
