"""Is the serial executor an honest baseline? Compare it with a plain NumPy step.

The plain step is what a reader would write first: ``x @ W + b``, ``1 / (1 +
exp(-z))``, new arrays everywhere, one update per layer. Both run on one
BLAS thread, the same network, data and batches, interleaved in rounds so
that machine noise hits both alike; the ratio of medians is reported.

    OPENBLAS_NUM_THREADS=1 python benchmarks/serial_vs_numpy.py --net 1h --batch-size 128

The plain step is also the ``numpy`` peer of ``pbp bench``; this script
interleaves the two in one process for a tighter ratio than separate runs give.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from threadpoolctl import threadpool_limits

from parallel_backprop import Network, make_executor
from parallel_backprop.bench.systems import naive_step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="1h")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=100, help="steps per round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()

    network = Network.from_spec(args.net, 784, 10)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch_size, 784), dtype=np.float32)
    y = network.targets(rng.integers(0, 10, args.batch_size))
    params = network.init_params(0)
    naive_params = params.copy()
    naive_layers = network.layers(naive_params)
    flops = network.train_flops_per_sample() * args.batch_size * args.steps

    times = {"serial": [], "numpy": []}
    with threadpool_limits(1, user_api="blas"), \
            make_executor("serial", network, params, batch_size=args.batch_size) as serial:
        for _ in range(3):  # warm-up, not counted
            serial.step(x, y, 0.01)
            naive_step(naive_layers, x, y, 0.01)
        for _ in range(args.rounds):
            start = time.perf_counter()
            for _ in range(args.steps):
                serial.step(x, y, 0.01)
            times["serial"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for _ in range(args.steps):
                naive_step(naive_layers, x, y, 0.01)
            times["numpy"].append(time.perf_counter() - start)
    medians = {k: float(np.median(v)) for k, v in times.items()}
    for name, seconds in medians.items():
        print(f"{name:7s} {args.batch_size * args.steps / seconds:10,.0f} samples/s  "
              f"{flops / seconds / 1e9:6.1f} GFLOP/s  (median of {args.rounds} rounds)")
    print(f"serial / numpy speed ratio: {medians['numpy'] / medians['serial']:.3f}")


if __name__ == "__main__":
    main()
