"""2 MPI ranks x 1 thread against 2 threads in one process (and serial), side by side.

Each configuration is a separate ``pbp train`` process on the same synthetic
Net-1h data, run in turns (``--rounds`` times each) so that the noise of a
shared machine falls on all of them alike. Throughput is the trainer's
steady-state samples/s (epochs after the first, training only). Prints the
median and the best run per configuration, each as a ratio to ``threads``.

    python benchmarks/mpi_vs_threads.py --batch-size 512 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CONFIGS = {
    "serial": ["--executor", "serial"],
    "threads 2": ["--executor", "threads", "--threads", "2"],
    "mpi 2 x 1": ["--executor", "mpi", "--ranks", "2"],
}


def run(config: list[str], batch: int, samples: int, epochs: int, folder: Path) -> float:
    metrics = folder / "metrics.json"
    command = [sys.executable, "-m", "parallel_backprop.cli", "train", "--dataset", "synthetic",
               "--samples", str(samples), "--net", "1h", "--batch-size", str(batch),
               "--epochs", str(epochs), "--lr", "0.1", "--quiet", "--metrics-json",
               str(metrics), *config]
    subprocess.run(command, check=True, timeout=600)
    return json.loads(metrics.read_text())["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--samples", type=int, default=12288,
                        help="synthetic pool; 5/6 of it is trained on")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[float]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.rounds):
            for name, config in CONFIGS.items():
                results[name].append(run(config, args.batch_size, args.samples, args.epochs,
                                         Path(folder)))
    # On a shared machine the best run is the one least disturbed by others.
    base, base_best = statistics.median(results["threads 2"]), max(results["threads 2"])
    print(f"Net-1h, batch {args.batch_size}, {args.rounds} rounds; samples/s")
    print(f"{'':10} {'median':>9} {'ratio':>6} {'best':>9} {'ratio':>6}  all runs")
    for name, values in results.items():
        median, best = statistics.median(values), max(values)
        runs = ", ".join(f"{v:,.0f}" for v in values)
        print(f"{name:10} {median:>9,.0f} {median / base:6.2f} {best:>9,.0f} "
              f"{best / base_best:6.2f}  [{runs}]")


if __name__ == "__main__":
    main()
