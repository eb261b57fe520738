"""A scaling model for the mpi executor: per-step compute against a ring Allreduce.

``python -m parallel_backprop.scaling`` prints the tables of docs/scaling.md;
its options put in your own node speed and network.

The model, for one data-parallel step on ``N`` nodes (one rank each) with a
global batch of ``B`` samples::

    compute    t_c(b) = F * b / R          F: training FLOPs per sample (forward + backward,
                                           Network.train_flops_per_sample), R: FLOP/s a
                                           node achieves, b = B / N rows per node
    allreduce  t_a(N) = 2 (N - 1) * alpha + 2 (N - 1) / N * M / beta
                                           ring Allreduce of the M-byte gradient: 2 (N - 1)
                                           messages of latency alpha, and every node sends
                                           (and receives) 2 (N - 1) / N * M bytes at beta
    step       t(N) = t_c(B / N) + t_a(N)  (no overlap of the two; t_a(1) = 0)
    speedup    S(N) = t_c(B) / t(N)        the same global batch, so the same training

Efficiency ``S / N = t_c(B/N) / (t_c(B/N) + t_a)`` reaches a target ``e``
once ``t_c(B/N) >= e / (1 - e) * t_a``, i.e. from the global batch

    B_e(N) = N * R * t_a(N) * e / (1 - e) / F.

What is left out, and why it is small here: the update and the step's fixed
overheads (barriers, Python; ~0.2 ms, less than a step at the batches that
scale), the lower efficiency of BLAS on short shards (~10% at 64 rows), and
the cost of a larger global batch on convergence (a training question, not a
speed one: the batch each row needs is given so that it can be weighed).
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

from .network import Network

# The seed's networks: MNIST-sized inputs, 1024 sigmoid units per hidden
# layer; KDD Cup 99 with its 117 one-hot encoded features and one output.
NETWORKS = {
    "Net-1h": Network((784, 1024, 10), ("sigmoid", "sigmoid")),
    "Net-2h": Network((784, 1024, 1024, 10), ("sigmoid", "sigmoid", "sigmoid")),
    "KDD-1h": Network((117, 1024, 1), ("sigmoid", "sigmoid")),
}

NODES = (1, 2, 4, 8, 16, 32, 64)
BATCHES = (128, 1024)

# Training rate of one node, FLOP/s. Default: the 2-core machine these
# numbers were checked on, threads executor at 2 workers, Net-1h, batch 512
# (~150 GFLOP/s measured; its float32 GEMM peaks at ~196 on 2 cores).
NODE_GFLOPS = 150.0


@dataclass(frozen=True)
class Link:
    """A network between nodes: bandwidth per direction and per-message latency."""

    name: str
    gbit_s: float
    latency_us: float

    @property
    def bytes_per_s(self) -> float:
        return self.gbit_s * 1e9 / 8


# 10 Gb/s Ethernet through the kernel's TCP stack (MPI latency ~20 us), and a
# 100 Gb/s RDMA fabric (InfiniBand EDR / RoCE, ~2 us).
LINKS = (Link("10 Gb/s", 10, 20), Link("100 Gb/s", 100, 2))


def allreduce_s(n_bytes: float, nodes: int, link: Link) -> float:
    """Ring Allreduce time: 2 (N - 1) latencies + 2 (N - 1) / N * bytes / bandwidth."""
    if nodes == 1:
        return 0.0
    return (2 * (nodes - 1) * link.latency_us * 1e-6
            + 2 * (nodes - 1) / nodes * n_bytes / link.bytes_per_s)


def compute_s(network: Network, rows: float, flops: float) -> float:
    """Forward + backward of ``rows`` samples at ``flops`` FLOP/s."""
    return network.train_flops_per_sample() * rows / flops


def gradient_bytes(network: Network) -> int:
    """What the executor reduces each step: float32 gradient plus the loss sum."""
    return 4 * (network.n_params + 1)


def speedup(network: Network, batch: int, nodes: int, link: Link, flops: float) -> float:
    """Predicted speedup of ``nodes`` nodes over one, at the same global batch."""
    step = compute_s(network, batch / nodes, flops) + allreduce_s(
        gradient_bytes(network), nodes, link)
    return compute_s(network, batch, flops) / step


def batch_for_efficiency(network: Network, nodes: int, link: Link, flops: float,
                         efficiency: float) -> int:
    """Smallest global batch (a multiple of ``nodes``) with speedup >= efficiency * nodes."""
    if nodes == 1:
        return 1
    allreduce = allreduce_s(gradient_bytes(network), nodes, link)
    rows = allreduce * efficiency / (1 - efficiency) * flops / network.train_flops_per_sample()
    return nodes * max(1, math.ceil(rows - 1e-9))


def table(network: Network, link: Link, flops: float, efficiency: float,
          nodes=NODES, batches=BATCHES) -> str:
    """One Markdown table: a row per node count."""
    pct = f"{efficiency:.0%}"
    head = (["nodes", "allreduce ms", *(f"step ms at B={b}" for b in batches),
             *(f"speedup B={b}" for b in batches), f"B for {pct} eff.", "rows/node"])
    lines = ["| " + " | ".join(head) + " |", "|" + "---:|" * len(head)]
    for n in nodes:
        allreduce = allreduce_s(gradient_bytes(network), n, link)
        steps = [compute_s(network, b / n, flops) + allreduce for b in batches]
        need = batch_for_efficiency(network, n, link, flops, efficiency)
        cells = [str(n), f"{allreduce * 1e3:.2f}", *(f"{s * 1e3:.2f}" for s in steps),
                 *(f"{speedup(network, b, n, link, flops):.1f}" for b in batches),
                 *((f"{need:,}", f"{need // n:,}") if n > 1 else ("-", "-"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(flops: float = NODE_GFLOPS * 1e9, links=LINKS, efficiency: float = 0.8,
           networks=None) -> str:
    """Every table, with a heading per network and link."""
    networks = NETWORKS if networks is None else networks
    parts = [f"Node: {flops / 1e9:g} GFLOP/s of training; target efficiency "
             f"{efficiency:.0%}.\n"]
    for name, network in networks.items():
        flop = network.train_flops_per_sample()
        for link in links:
            parts.append(
                f"### {name} ({network.spec}, {network.n_params:,} parameters = "
                f"{gradient_bytes(network) / 1e6:.2f} MB, {flop / 1e6:.2f} MFLOP/sample), "
                f"{link.name}, latency {link.latency_us:g} us\n")
            parts.append(table(network, link, flops, efficiency) + "\n")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m parallel_backprop.scaling",
        description="Predicted data-parallel speedup of the mpi executor (docs/scaling.md).")
    parser.add_argument("--gflops", type=float, default=NODE_GFLOPS,
                        help="training GFLOP/s one node achieves (default %(default)s)")
    parser.add_argument("--link", action="append", metavar="GBIT_S:LATENCY_US",
                        help="a network, e.g. 25:5; repeatable (default 10:20 and 100:2)")
    parser.add_argument("--efficiency", type=float, default=0.8,
                        help="target parallel efficiency for the batch column (default 0.8)")
    args = parser.parse_args(argv)
    if not 0 < args.efficiency < 1:
        parser.error(f"--efficiency {args.efficiency}: expected a number between 0 and 1")
    if args.gflops <= 0:
        parser.error(f"--gflops {args.gflops}: expected a positive number")
    links = LINKS
    if args.link:
        links = []
        for text in args.link:
            try:
                gbit, latency = (float(part) for part in text.split(":"))
            except ValueError:
                parser.error(f"--link {text}: expected GBIT_S:LATENCY_US such as 25:5")
            links.append(Link(f"{gbit:g} Gb/s", gbit, latency))
    print(render(args.gflops * 1e9, links, args.efficiency))


if __name__ == "__main__":
    main()
