"""One benchmark configuration, in a process of its own.

    python -m parallel_backprop.bench.worker SPEC_JSON RESULT_PATH

The runner starts this with the thread variables (``OPENBLAS_NUM_THREADS``,
``OMP_NUM_THREADS``, ...) already set for the configuration, because BLAS
and OpenMP size their thread pools when they load. A system that ignores
them (XLA sizes its pool from the CPUs it may run on) gets a CPU affinity,
set here before its library is imported. Under ``mpiexec -n R`` every rank
runs this module; rank 0 writes the result.

The worker writes one JSON object to RESULT_PATH: ``status`` ``ok`` with
the timings, ``skipped`` with the reason the system cannot run here, or
``failed`` with the error.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import time
import traceback
from typing import Any, Callable

from ..fileio import one_line
from ..plugins import load_plugins
from ..harness import Status, throughput
from ..network import Network
from .systems import Setup, Unavailable, build


def measure(workload, warmup_s: float, min_time_s: float, repeats: int,
            agree: Callable[[Any], Any] = lambda decision: decision) -> dict:
    """Time ``workload`` at steady state; per-step seconds of each timed round.

    The first step (compilation, first touch of memory, thread start-up) is
    timed on its own and not counted. Warm-up, not counted either, runs 1,
    2, 4, ... steps until ``warmup_s`` has passed (at least once); its last
    call gives the step time that sizes a round of at least ``min_time_s``.
    Counting in steps, not passes over the data, bounds the time a very
    slow configuration takes: (2 + repeats) steps at worst beyond warm-up.
    Under MPI, ``agree`` hands every rank rank 0's decisions, so all ranks
    run the same number of (collective) steps.
    """
    start = time.perf_counter()
    workload.run(1)
    first_step_s = time.perf_counter() - start
    steps, warm_start = 1, time.perf_counter()
    while True:
        start = time.perf_counter()
        workload.run(steps)
        step_s = (time.perf_counter() - start) / steps
        if agree(time.perf_counter() - warm_start >= warmup_s):
            break
        steps *= 2
    steps = agree(max(1, math.ceil(min_time_s / max(step_s, 1e-9))))
    rounds = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    for _ in range(repeats):
        start = time.perf_counter()
        workload.run(steps)
        rounds.append((time.perf_counter() - start) / steps)
    # CPU seconds of every thread of this process per second: the cores it
    # really kept busy (spin-waiting included), whatever it was told.
    cores_busy = (time.process_time() - cpu_start) / (time.perf_counter() - wall_start)
    median, best = statistics.median(rounds), min(rounds)
    samples = workload.samples_per_step
    return {
        "first_step_s": first_step_s,
        "steps_per_round": steps,
        "step_s_rounds": rounds,
        "step_s_median": median,
        "step_s_min": best,
        "cores_busy": cores_busy,
        "samples_per_s": throughput(samples, median),
        "samples_per_s_best": throughput(samples, best),
        "gflops": workload.flops_per_step / median / 1e9,
        "gflops_best": workload.flops_per_step / best / 1e9,
        "flops_per_step": workload.flops_per_step,
    }


def threadpools() -> list[dict]:
    """The thread pools (BLAS, OpenMP) loaded in this process and their sizes."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads", "prefix")
    return [{key: info.get(key) for key in keys} for info in threadpool_info()]


def run(spec: dict) -> dict | None:
    """Build and time the configuration ``spec`` (see ``runner.Run.spec``).

    Under mpiexec every rank runs this; rank 0 returns the result, the others None.
    """
    if spec.get("cpus"):
        os.sched_setaffinity(0, spec["cpus"])   # before build() imports XLA
    load_plugins(spec.get("plugins", ()))       # executors they register, as in the runner
    rank, agree = 0, (lambda decision: decision)
    if spec.get("ranks"):
        from ..executors.mpi import import_mpi, world

        rank, _ = world()      # with several ranks, an error on one aborts them all
        comm = import_mpi().COMM_WORLD
        agree = lambda decision: comm.bcast(decision, root=0)  # noqa: E731

    sizes = spec["sizes"]            # None for a ceiling
    network = None if sizes is None else Network(tuple(sizes), ("sigmoid",) * (len(sizes) - 1))
    setup = Setup(
        system=spec["system"], network=network,
        n_classes=spec["n_classes"], batch_size=spec["batch_size"],
        optimizer=spec.get("optimizer") or "sgd",
        threads=spec["threads"], executor_threads=spec["executor_threads"],
        executor_blas_threads=spec["executor_blas_threads"], lr=spec["lr"], seed=spec["seed"],
        pool_samples=spec["pool_samples"], gemm_size=spec["gemm_size"],
        pool_file=spec.get("pool_file"), precision=spec.get("precision") or "fp32")
    start = time.perf_counter()
    try:
        workload = build(setup)
    except Unavailable as exc:
        return {"status": Status.SKIPPED, "notes": [str(exc)]} if rank == 0 else None
    setup_s = time.perf_counter() - start
    try:
        result = measure(workload, **spec["timing"], agree=agree)
        result["threadpools"] = threadpools()   # while the workload holds its limits
        if workload.blas is not None:
            result["blas"] = workload.blas["name"]
            result["blas_library"] = workload.blas
    finally:
        workload.close()
    if rank != 0:
        return None
    return {"status": Status.OK, "notes": workload.notes, "setup_s": setup_s, **result}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m parallel_backprop.bench.worker SPEC_JSON RESULT_PATH",
              file=sys.stderr)
        return 2
    spec_json, result_path = argv
    spec = json.loads(spec_json)
    try:
        result = run(spec)
    except Exception as exc:
        if (spec.get("ranks") or 1) > 1:
            raise   # the abort hook ends every rank; the runner reads the error from stderr
        traceback.print_exc()
        result = {"status": Status.FAILED, "notes": [one_line(exc)[:300]]}
    if result is not None:
        with open(result_path, "w") as handle:
            json.dump(result, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
