"""How fast MKL's bf16 GEMM runs on the shapes and layouts a bf16 step could use.

The bf16 products of a step are ``z = a16 @ W16`` (forward), ``delta @ W16^T``
and the update ``W -= s * a16^T @ delta16``; how a parallel executor splits
them decides the shapes MKL sees. This prints, on one thread:

    shapes     each M x K x N product with contiguous operands and output
    split      two workers side by side on a batch's forward product: by rows
               (each worker its rows times all of W, what ``threads`` does in
               bf16), by columns with each worker's block of W and output in
               buffers of its own, and by columns writing into the shared output

    python benchmarks/bf16_gemm_shapes.py [--batch 1024] [--inputs 784,1024] [--repeats 3]

MKL is required (the bf16 GEMM); a CPU without native bf16 is refused in one line.
"""

from __future__ import annotations

import argparse
import threading
import time

import numpy as np

from parallel_backprop.blas_libraries import bfloat16
from parallel_backprop.gemm import blas_thread_limit, gemm
from parallel_backprop.precision import use_bf16_blas


def seconds(run, reps: int) -> float:
    """Mean seconds of ``run()`` over ``reps`` calls, after one untimed call."""
    run()
    start = time.perf_counter()
    for _ in range(reps):
        run()
    return (time.perf_counter() - start) / reps


def shapes(batch: int, inputs: int, width: int, repeats: int) -> None:
    rng = np.random.default_rng(0)
    half = batch // 2
    for m, k, n in ((half, inputs, width), (batch, inputs, width // 2),
                    (batch, inputs, width), (half, inputs, width // 2)):
        a = rng.random((m, k)).astype(bfloat16)
        b = rng.random((k, n)).astype(bfloat16)
        c = np.empty((m, n), np.float32)
        best = min(seconds(lambda: gemm(a, b, c), 30) for _ in range(repeats))
        print(f"shapes  {m:5d} x {k:4d} x {n:4d}  {best * 1e3:7.3f} ms  "
              f"{2 * m * k * n / best / 1e9:5.0f} GFLOP/s")


def split(batch: int, inputs: int, width: int, repeats: int) -> None:
    rng = np.random.default_rng(1)
    half, cut = batch // 2, width // 2
    x = rng.random((batch, inputs)).astype(bfloat16)
    weights = rng.random((inputs, width)).astype(bfloat16)
    z = np.empty((batch, width), np.float32)
    blocks = [np.ascontiguousarray(weights[:, :cut]), np.ascontiguousarray(weights[:, cut:])]
    outputs = [np.empty((batch, width - cut), np.float32) for _ in range(2)]
    ways = {
        "by rows": lambda k: gemm(x[k * half:(k + 1) * half], weights,
                                  z[k * half:(k + 1) * half]),
        "by columns, own buffers": lambda k: gemm(x, blocks[k], outputs[k]),
        "by columns, shared output": lambda k: gemm(x, blocks[k], z[:, k * cut:(k + 1) * cut]),
    }
    for name, work in ways.items():
        times = []
        for _ in range(repeats):
            worst = [0.0, 0.0]

            def worker(k: int) -> None:
                worst[k] = seconds(lambda: work(k), 30)

            threads = [threading.Thread(target=worker, args=(k,)) for k in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            times.append(max(worst))
        print(f"split   {batch} x {inputs} x {width}, {name:26s} "
              f"{min(times) * 1e3:7.3f} ms per worker (slowest of two, best of {repeats})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--inputs", default="784,1024", help="K of the products (layer inputs)")
    parser.add_argument("--width", type=int, default=1024, help="N: the layer's outputs")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    use_bf16_blas()                       # MKL, or one line saying why not
    limit = blas_thread_limit(1)
    try:
        for inputs in map(int, args.inputs.split(",")):
            shapes(args.batch, inputs, args.width, args.repeats)
            split(args.batch, inputs, args.width, args.repeats)
    finally:
        limit.restore()


if __name__ == "__main__":
    main()
