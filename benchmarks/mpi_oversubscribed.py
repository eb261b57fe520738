"""Samples/s of ``pbp train --executor mpi --ranks N`` for several N, interleaved.

More ranks than cores used to cost ~100x (ranks spinning in the Allreduce on
the cores the others need); this measures it. Each round runs every rank
count once (and, with ``--before SRC``, the same with another source tree
on PYTHONPATH, e.g. a checkout of an older commit), so that a busy machine
slows all alike; ratios are what to read. Example::

    python benchmarks/mpi_oversubscribed.py --ranks 2,4 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

TRAIN = ["train", "--dataset", "fashion-mnist", "--net", "1h", "--batch-size", "512",
         "--limit", "6144", "--epochs", "1", "--executor", "mpi", "--quiet"]


def samples_per_s(ranks: int, source: str | None) -> float:
    env = dict(os.environ, PBP_OFFLINE="1")
    if source:
        env["PYTHONPATH"] = source
    with tempfile.TemporaryDirectory() as tmp:
        metrics = Path(tmp) / "metrics.json"
        subprocess.run([sys.executable, "-m", "parallel_backprop.cli", *TRAIN, "--ranks",
                        str(ranks), "--metrics-json", str(metrics)], env=env, check=True,
                       timeout=1800)
        return json.loads(metrics.read_text())["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", default="2,4")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--before", help="another source tree (its src/) to compare with")
    args = parser.parse_args()
    trees = {"now": os.environ.get("PYTHONPATH")} | ({"before": args.before} if args.before
                                                      else {})
    counts = [int(r) for r in args.ranks.split(",")]
    runs: dict[tuple[str, int], list[float]] = {}
    for _ in range(args.rounds):
        for name, source in trees.items():
            for ranks in counts:
                runs.setdefault((name, ranks), []).append(samples_per_s(ranks, source))
    for (name, ranks), values in runs.items():
        print(f"{name:6} {ranks} ranks: median {statistics.median(values):9,.0f} samples/s "
              f"({', '.join(f'{v:,.0f}' for v in values)})")


if __name__ == "__main__":
    main()
