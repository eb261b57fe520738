"""What the optional compiled modules buy: steps with them and without (PBP_PURE_PYTHON=1).

Each configuration's step is timed in a fresh process, with the compiled
modules and without them in turn (``--rounds`` times each), and the medians
and their ratio printed. Both compute the same bits (tests/test_kernels.py).

    python benchmarks/compiled_step.py
    python benchmarks/compiled_step.py --configs 784-1024-10:128:threads:2 --rounds 5

A configuration is ``sizes:batch:executor:threads[:precision[:optimizer]]``;
hidden layers are ReLU, the output softmax with cross-entropy (``--sigmoid``:
the seed's sigmoid and MSE).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys

DEFAULT_CONFIGS = ("64-256-10:200:serial:1::adam", "784-256-10:200:serial:1::adam",
                   "784-256-10:200:blas:2::adam", "784-1024-10:128:blas:2",
                   "784-1024-10:128:threads:2", "784-1024-10:1024:threads:2")

CHILD = """
import sys, time
import numpy as np
from parallel_backprop.executors import make_executor
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig

spec, batch, executor, threads, precision, rule, sigmoid, seconds = sys.argv[1:9]
sizes = tuple(int(n) for n in spec.split("-"))
hidden = ("sigmoid" if sigmoid == "1" else "relu",) * (len(sizes) - 2)
network = (Network(sizes, hidden + ("sigmoid",), "mse") if sigmoid == "1"
           else Network(sizes, hidden + ("softmax",), "cross-entropy"))
rng = np.random.default_rng(0)
x = rng.standard_normal((int(batch), sizes[0])).astype(np.float32)
y = network.targets(rng.integers(0, sizes[-1], int(batch)), np.float32)
with make_executor(executor, network, network.init_params(0).astype(np.float32),
                   batch_size=int(batch), threads=int(threads), precision=precision,
                   optimizer=OptimizerConfig(rule)) as ex:
    for _ in range(5):
        ex.step(x, y, 1e-3)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < float(seconds):
        ex.step(x, y, 1e-3)
        steps += 1
    print((time.perf_counter() - start) / steps)
"""


def step_seconds(config: str, pure: bool, sigmoid: bool, seconds: float) -> float:
    """One process's mean step time for ``config``, with or without the compiled modules."""
    parts = (config.split(":") + ["", ""])[:6]
    spec, batch, executor, threads = parts[:4]
    precision, rule = parts[4] or "fp32", parts[5] or "sgd"
    env = dict(os.environ, PBP_PURE_PYTHON="1" if pure else "0")
    done = subprocess.run([sys.executable, "-c", CHILD, spec, batch, executor, threads,
                           precision, rule, "1" if sigmoid else "0", str(seconds)],
                          env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                        help="comma-separated sizes:batch:executor:threads[:precision[:rule]]")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0, help="timed per process")
    parser.add_argument("--sigmoid", action="store_true",
                        help="sigmoid layers and MSE (the seed's) instead of ReLU, softmax")
    args = parser.parse_args()
    print(f"{'configuration':<34}{'compiled (us)':>15}{'pure Python (us)':>18}{'ratio':>8}")
    for config in args.configs.split(","):
        times = {True: [], False: []}
        for _ in range(args.rounds):
            for pure in (False, True):
                times[pure].append(step_seconds(config, pure, args.sigmoid, args.seconds))
        fast, slow = (statistics.median(times[pure]) for pure in (False, True))
        print(f"{config:<34}{fast * 1e6:>15.0f}{slow * 1e6:>18.0f}{slow / fast:>8.2f}")


if __name__ == "__main__":
    main()
