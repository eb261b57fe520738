"""float32 -> bfloat16 conversion: the ways to do it, and what each costs a bf16 step.

A bf16 step converts, every step, its input, each hidden activation, each
delta, and the weights (the bf16 copy of W refreshed after the update):
Net-1h at batch 128 about 0.36 M activations/deltas plus 0.81 M weights.
This times, per million elements (median of interleaved rounds):

    astype      NumPy's cast through ml_dtypes, into a new array
    copyto      the same cast into a preallocated buffer (the pure-NumPy fallback)
    truncate    the high 16 bits of each float32, copied (rounds toward zero)
    rne-numpy   round to nearest even from integer ops in NumPy (four passes)
    native      parallel_backprop._bf16 (AVX512-BF16 VCVTNE2PS2BF16 where the CPU has it)
    portable    the same extension's portable C loop

then one serial bf16 step of each network with the native converter and
with the NumPy fallback, and the fp32 step for scale, all through the BLAS
bf16 needs (MKL), so that only the precision differs.

    python benchmarks/bf16_convert.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from parallel_backprop import precision
from parallel_backprop.blas_libraries import bfloat16
from parallel_backprop.executors import make_executor
from parallel_backprop.network import Network


def best_of(function, repeats: int) -> float:
    """Seconds per call, the median of ``repeats`` rounds of enough calls for ~20 ms."""
    function()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < 0.02:
        function()
        calls += 1
    rounds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            function()
        rounds.append((time.perf_counter() - start) / calls)
    return statistics.median(rounds)


def converters(source: np.ndarray) -> dict:
    out = np.empty(source.shape, bfloat16)
    bits = out.view(np.uint16)
    high = source.view(np.uint16)[1::2]          # little-endian: the high half of each float
    words = source.view(np.uint32)
    scratch = np.empty(source.shape, np.uint32)

    def rne_numpy():
        np.right_shift(words, 16, out=scratch)
        np.bitwise_and(scratch, 1, out=scratch)
        np.add(scratch, 0x7FFF, out=scratch)
        np.add(scratch, words, out=scratch)
        np.right_shift(scratch, 16, out=scratch)
        np.copyto(bits, scratch, casting="unsafe")

    found = {"astype": lambda: source.astype(bfloat16),
             "copyto": lambda: np.copyto(out, source, casting="unsafe"),
             "truncate": lambda: np.copyto(bits, high),
             "rne-numpy": rne_numpy}
    try:
        from parallel_backprop import _bf16
    except ImportError:
        return found
    found["native"] = lambda: _bf16.to_bf16(source, bits)
    found["portable"] = lambda: _bf16.to_bf16_portable(source, bits)
    return found


def step_times(spec: str, batch: int, repeats: int) -> dict[str, float]:
    """Seconds per serial step: fp32, bf16 with the native converter, bf16 with NumPy's."""
    network = Network.from_spec(spec, 784, 10)
    params = network.init_params(0)
    rng = np.random.default_rng(0)
    x = rng.random((batch, 784), dtype=np.float32)
    y = network.targets(rng.integers(0, 10, batch))
    precision.use_bf16_blas()        # fp32 too through the BLAS bf16 uses (MKL): one library
    times = {}
    for label, prec, native in (("fp32", "fp32", True), ("bf16 native", "bf16", True),
                                ("bf16 numpy", "bf16", False)):
        before = precision.use_native_converter(native)
        try:
            with make_executor("serial", network, params, batch_size=batch,
                               precision=prec) as executor:
                times[label] = best_of(lambda: executor.step(x, y, 0.01), repeats)
        finally:
            precision.use_native_converter(before)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    source = (np.random.default_rng(0).standard_normal(814_090)).astype(np.float32)
    print(f"float32 -> bfloat16, {source.size:,} elements (Net-1h's parameters), "
          f"native kernel: {precision.NATIVE_KERNEL}")
    for name, function in converters(source).items():
        print(f"  {name:<10} {best_of(function, args.rounds) / source.size * 1e9:7.3f} ms per "
              "million")
    if precision.bf16_unavailable() is not None:
        print(f"no bf16 steps: {precision.bf16_unavailable()}")
        return
    for spec in ("1h", "2h"):
        for batch in (128, 1024):
            times = step_times(spec, batch, args.rounds)
            print(f"Net-{spec} b{batch}: " + ", ".join(
                f"{label} {seconds * 1e3:.2f} ms" for label, seconds in times.items())
                + f"; bf16 native / fp32 {times['fp32'] / times['bf16 native']:.2f}x faster")


if __name__ == "__main__":
    main()
