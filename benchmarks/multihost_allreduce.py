"""The Allreduce per step across namespaced hosts on shaped links, beside docs/scaling.md's model.

Needs root (tests/netns_rig.py makes the hosts). For each link rate and
host count: ``benchmarks/mpi_allreduce.py --no-steps`` over the rig's
TCP links (one rank per host), and the model's ring Allreduce time for the
same bytes, rate and latency. Example::

    python benchmarks/multihost_allreduce.py --rates 1gbit,10gbit,none --hosts 2,3,4
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

import netns_rig  # noqa: E402
from parallel_backprop.executors.mpi import find_mpiexec  # noqa: E402
from parallel_backprop.scaling import NETWORKS, Link, allreduce_s, gradient_bytes  # noqa: E402


def measure(rig, hosts: int, nets: str, repeats: int) -> dict[str, float]:
    """Median Allreduce milliseconds per network on ``hosts`` rig hosts."""
    command = rig.mpiexec(find_mpiexec(), hosts, rig.hostfile(list(range(1, hosts + 1))),
                          [sys.executable, str(ROOT / "benchmarks" / "mpi_allreduce.py"),
                           "--no-steps", "--nets", nets, "--repeats", str(repeats)])
    out = subprocess.run(command, env=rig.env(), capture_output=True, text=True, timeout=600,
                         check=True).stdout
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+)\s+[\d.]+\s+([\d.]+)", out, re.M)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="1gbit,10gbit")
    parser.add_argument("--hosts", default="2,3,4")
    parser.add_argument("--nets", default="Net-1h,Net-2h")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--latency-us", type=float, default=50.0,
                        help="the model's per-message latency for these links")
    args = parser.parse_args()
    counts = [int(h) for h in args.hosts.split(",")]
    rig = netns_rig.Rig(max(counts)).up()
    try:
        print(f"{'rate':8} {'hosts':>5} {'network':8} {'measured ms':>12} {'model ms':>9}")
        for rate in args.rates.split(","):     # "none": the links as fast as the machine goes
            rig.shape(None if rate == "none" else rate)
            link = (None if rate == "none"
                    else Link(rate, float(rate.removesuffix("gbit")), args.latency_us))
            for hosts in counts:
                for name, ms in measure(rig, hosts, args.nets, args.repeats).items():
                    model = (f"{allreduce_s(gradient_bytes(NETWORKS[name]), hosts, link) * 1e3:9.2f}"
                             if link else f"{'-':>9}")
                    print(f"{rate:8} {hosts:>5} {name:8} {ms:>12.2f} {model}", flush=True)
    finally:
        rig.down()


if __name__ == "__main__":
    main()
