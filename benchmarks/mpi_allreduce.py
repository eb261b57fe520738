"""Time the mpi executor's one collective per step against the whole step.

Run under mpiexec, e.g. ``mpiexec -n 2 python benchmarks/mpi_allreduce.py``.
For each network: an in-place Allreduce(SUM) of n_params + 1 float32 (the
gradient and the loss sum), blocking and as the executor does it (a
non-blocking Iallreduce polled by ``wait_for``, which can time out), and a full
``MPIExecutor.step`` at ``--batch-size`` global rows on random data. Warm-up
calls are not counted. Printed on rank 0: median and minimum milliseconds
(the slowest rank's, call by call), the Allreduce's share of the median step,
and the bus bandwidth the Allreduce achieved, ``2 (N - 1) / N * bytes / t``
(the bandwidth term of docs/scaling.md's model).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI

from parallel_backprop.executors import make_executor
from parallel_backprop.executors.mpi import wait_for
from parallel_backprop.scaling import NETWORKS


def slowest(comm, times: list[float]) -> np.ndarray:
    """Per call, the slowest rank's time: it is what the step waits for."""
    times = np.array(times)
    comm.Allreduce(MPI.IN_PLACE, times, op=MPI.MAX)
    return times


def time_allreduce(comm, n: int, repeats: int, warmup: int = 5,
                   polled: bool = False) -> np.ndarray:
    """The blocking Allreduce, or (``polled``) the executor's: Iallreduce + ``wait_for``."""
    buffer = np.ones(n, np.float32)
    times = []
    for i in range(warmup + repeats):
        comm.Barrier()
        start = time.perf_counter()
        if polled:
            wait_for(comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM), 60.0, "nothing")
        else:
            comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return slowest(comm, times)


def time_steps(comm, network, batch: int, threads: int, repeats: int,
               warmup: int = 3) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, network.sizes[0])).astype(np.float32)
    y = network.targets(rng.integers(0, max(2, network.sizes[-1]), batch))
    times = []
    with make_executor("mpi", network, network.init_params(rng), batch_size=batch,
                       threads=threads) as executor:
        for i in range(warmup + repeats):
            comm.Barrier()
            start = time.perf_counter()
            executor.step(x, y, 0.01)
            if i >= warmup:
                times.append(time.perf_counter() - start)
    return slowest(comm, times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="workers per rank")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--no-steps", action="store_true", help="time the Allreduce only")
    parser.add_argument("--nets", default=",".join(NETWORKS), help="comma-separated names")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    size, root = comm.Get_size(), comm.Get_rank() == 0
    if root:
        print(f"{size} ranks x {args.threads} threads, global batch {args.batch_size}, "
              f"{MPI.Get_library_version().splitlines()[0].strip()}")
        print(f"{'network':8} {'MB':>5} {'allreduce ms':>16} {'polled ms':>16} "
              f"{'step ms':>14} {'share':>6} {'bus GB/s':>9}")
        print(f"{'':8} {'':>5} {'median':>8}{'min':>8} {'median':>8}{'min':>8} "
              f"{'median':>7}{'min':>7}")
    for name in args.nets.split(","):
        network = NETWORKS[name]
        n = network.n_params + 1
        reduce = time_allreduce(comm, n, args.repeats)
        polled = time_allreduce(comm, n, args.repeats, polled=True)
        step = (np.full(1, np.nan) if args.no_steps else
                time_steps(comm, network, args.batch_size, args.threads, args.repeats))
        if root:
            median = float(np.median(reduce))
            bus = 2 * (size - 1) / size * 4 * n / median / 1e9 if size > 1 else float("nan")
            print(f"{name:8} {4 * n / 1e6:>5.2f} {median * 1e3:>8.3f}{reduce.min() * 1e3:>8.3f} "
                  f"{np.median(polled) * 1e3:>8.3f}{polled.min() * 1e3:>8.3f} "
                  f"{np.median(step) * 1e3:>7.2f}{step.min() * 1e3:>7.2f} "
                  f"{median / np.median(step):>6.1%} {bus:>9.2f}")


if __name__ == "__main__":
    main()
