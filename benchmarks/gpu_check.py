"""The gpu executor's open questions, settled in one short run on a GPU.

    python benchmarks/gpu_check.py --out gpu_check.json        # on a CUDA GPU, < 8 min
    python benchmarks/gpu_check.py --quick --out quick.json    # tiny shapes, CPU interpreter
    python benchmarks/gpu_check.py --offline --out sm90.json   # compile facts only, no GPU

Sections, in this order so that a run cut short still answers the first
questions; each writes its results into the JSON (``--out``) as soon as it
finishes, and prints its summary:

    correctness  Net-1h (784-1024-10) and Net-2h (784-1024-1024-10), batches 128
                 and 4096 and a ragged tail, fp32 / tf32 / bf16: one step's update
                 per layer against float64's (relative error of the weight and bias
                 changes); CUDA graphs against plain launches and train_epoch against
                 the same steps one by one, bitwise, over two epochs with a change of
                 learning rate between them and a second training set loaded between
                 them (the graphs that gather must follow it)
    compile      per compiled kernel variant: registers, spills, shared memory,
                 warps, stages, and FMA against tensor-core instructions in its PTX
                 (and SASS when cuobjdump is there)
    kernels      each product of a step, our kernel against torch.mm / addmm on the
                 same shapes with TF32 off and on (and bf16), median time
    enqueue      at batch 128: the host's time to enqueue a step against the device's
                 time per graph replay (the device kept busy so replays run back to back)
    epochs       whole epochs against PyTorch eager and torch.compile(dynamic=False)
                 with and without CUDA graphs (benchmarks/gpu_vs_torch.py's systems and
                 checks), min / median / max

``--offline`` needs no GPU: only the compile facts, of every product
kernel x precision x tuning candidate compiled for sm_90 with Triton's
bundled ptxas (registers, spills, shared memory, FMA or tensor cores).

``--quick`` runs every section it can at tiny shapes on the CPU under
Triton's interpreter (setting ``TRITON_INTERPRET=1`` itself), so that the
script cannot rot; what needs CUDA says "skipped: no CUDA". ``--budget-s``
skips the sections (and epochs rows) that would start after it is spent.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import statistics
import sys
import time
from pathlib import Path

SECTIONS = ("correctness", "compile", "kernels", "enqueue", "epochs")
PRECISIONS = ("fp32", "tf32", "bf16")
LR, SECOND_LR = 0.1, 0.05


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="gpu_check.json", help="the JSON written")
    parser.add_argument("--quick", action="store_true",
                        help="tiny shapes on the CPU under Triton's interpreter (CI)")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=360.0,
                        help="start no section (or epochs row) after this many seconds")
    parser.add_argument("--samples", type=int, default=60000,
                        help="training set size of the epochs section")
    parser.add_argument("--offline", action="store_true",
                        help="no GPU needed: only the compile facts, of every product kernel, "
                             "precision and tuning candidate compiled for sm_90")
    args = parser.parse_args(argv)
    if args.offline:
        args.sections, args.quick = ["compile"], False
    if args.quick:
        args.nets = {"1h": (24, 40, 10), "2h": (24, 40, 40, 10)}
        # the interpreter's blocks stop at 32: a second batch size adds nothing to time
        args.batches, args.timed_batches, args.samples, args.rounds = (16, 40), (16,), 40, 1
    else:
        args.nets = {"1h": (784, 1024, 10), "2h": (784, 1024, 1024, 10)}
        args.batches = args.timed_batches = (128, 4096)
        args.rounds = 3
    return args


def tail_rows(batch: int) -> int:
    """A ragged number of rows below the batch size, as an epoch's last batch."""
    return batch * 5 // 8 + 3


class Run:
    """The JSON being built, written whole (atomically) after every section."""

    def __init__(self, args, torch, device):
        self.args, self.torch, self.device = args, torch, device
        self.cuda = device.type == "cuda"
        self.start = time.perf_counter()
        self.data = {"quick": args.quick, "environment": environment(torch, device),
                     "sections": {}}

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def over_budget(self) -> bool:
        return self.elapsed() > self.args.budget_s

    def record(self, name: str, result) -> None:
        from parallel_backprop.fileio import atomic_open

        self.data["sections"][name] = result
        self.data["elapsed_s"] = round(self.elapsed(), 2)
        with atomic_open(self.args.out, "w", what="--out") as handle:
            json.dump(self.data, handle, indent=1, default=str)

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()


def environment(torch, device) -> dict:
    import platform

    import triton

    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        interpreted = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
        name = "cpu (interpreter)" if interpreted else "cpu (compiling for sm_90, no GPU)"
    return {"device": name, "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version()}


def network(sizes):
    from parallel_backprop import Network

    return Network(sizes, ("sigmoid",) * (len(sizes) - 1), "mse")


def dataset(net, rows: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    return (rng.random((rows, net.sizes[0]), dtype=np.float32),
            net.targets(rng.integers(0, net.sizes[-1], rows)))


# ---- (a) correctness ------------------------------------------------------------------

def guarded(row: dict, compute) -> dict:
    """``row`` with ``compute()``'s fields, or with the error it raised (and ok False):
    one failing precision does not hide the others."""
    try:
        return {**row, **compute()}
    except Exception as exc:
        return {**row, "ok": False, "error": f"{type(exc).__name__}: {exc}"[:1000]}


def update_rows(run: Run, name: str, net, batch: int) -> list[dict]:
    """One step at the batch size and at a ragged tail, per precision, against float64."""
    from parallel_backprop.executors.gpu import GpuExecutor
    from parallel_backprop.executors.gpu_accuracy import (UPDATE_TOLERANCE, sgd_step64,
                                                          update_errors, worst_error)

    params = net.init_params(0)

    def one_step(x, y, expected, precision) -> dict:
        with GpuExecutor(net, params, batch_size=batch, precision=precision) as ex:
            ex.step(x, y, LR)
            after = ex.params()
        layers = update_errors(net, params, after, expected)
        worst, tolerance = worst_error(layers), UPDATE_TOLERANCE[precision]
        return {"worst": worst, "tolerance": tolerance, "ok": worst <= tolerance,
                "layers": layers}

    rows_out = []
    for rows in (batch, tail_rows(batch)):
        x, y = dataset(net, rows, seed=rows)
        expected = sgd_step64(net, params, x, y, LR)
        for precision in PRECISIONS:
            row = {"net": name, "batch": batch, "rows": rows, "precision": precision}
            rows_out.append(guarded(row, lambda p=precision: one_step(x, y, expected, p)))
    return rows_out


def two_epochs(net, params, batch, precision, sets, orders, how: str):
    """Parameters after an epoch on each set in turn (rates LR then SECOND_LR), by
    ``how``: "graphs" / "plain" (train_epoch, CUDA graphs on / off) or "steps"."""
    from parallel_backprop.executors.gpu import GpuExecutor

    with GpuExecutor(net, params, batch_size=batch, precision=precision,
                     cuda_graphs=how != "plain") as ex:
        for (x, y), order, lr in zip(sets, orders, (LR, SECOND_LR)):
            if how == "steps":
                for start in range(0, order.shape[0], batch):
                    rows = order[start:start + batch]
                    ex.step(x[rows], y[rows], lr)
            else:
                assert ex.load_data(x, y)
                ex.train_epoch(order, lr)
        return ex.params()


def bitwise_rows(run: Run, name: str, net, batch: int) -> list[dict]:
    import numpy as np

    samples = 4 * batch + tail_rows(batch)
    sets = [dataset(net, samples, seed) for seed in (1, 2)]
    orders = [np.random.default_rng(seed).permutation(samples) for seed in (3, 4)]
    params = net.init_params(1)
    precisions = PRECISIONS if not run.args.quick else PRECISIONS[:1]
    out = []
    def compare(precision) -> dict:
        got = {how: two_epochs(net, params, batch, precision, sets, orders, how)
               for how in ("graphs", "plain", "steps")}
        facts = {"graphs_vs_plain": bool(np.array_equal(got["graphs"], got["plain"])),
                 "epoch_vs_steps": bool(np.array_equal(got["plain"], got["steps"])),
                 "trained": not np.array_equal(got["graphs"], params)}
        return {**facts, "ok": all(facts.values())}

    for precision in precisions:
        row = {"net": name, "batch": batch, "precision": precision}
        out.append(guarded(row, lambda p=precision: compare(p)))
    return out


def correctness(run: Run) -> dict:
    updates, bitwise = [], []
    for name, sizes in run.args.nets.items():
        net = network(sizes)
        for batch in run.args.batches:
            updates += update_rows(run, name, net, batch)
        bitwise += bitwise_rows(run, name, net, run.args.batches[0])
        # what is known so far, in case the run is cut short in this long section
        run.record("correctness", {"partial": True, "updates": updates, "bitwise": bitwise})
    ok = all(row["ok"] for row in updates + bitwise)
    return {"ok": ok, "updates": updates, "bitwise": bitwise}


def summarize_correctness(result: dict) -> list[str]:
    lines = []
    for row in result["updates"]:
        head = f"{row['net']} b{row['batch']:<5} rows {row['rows']:<5} {row['precision']}: "
        lines.append(head + (row["error"] if "error" in row else
                             f"worst {row['worst']:.1e} (<= {row['tolerance']:g}) "
                             f"{'ok' if row['ok'] else 'FAIL'}"))
    for row in result["bitwise"]:
        head = f"{row['net']} b{row['batch']} {row['precision']}: "
        lines.append(head + (row["error"] if "error" in row else
                             f"graphs = plain {row['graphs_vs_plain']}, train_epoch = steps "
                             f"{row['epoch_vs_steps']}"))
    return lines


# ---- (b) compile facts -----------------------------------------------------------------

PTX_PATTERNS = {   # instruction -> what it says about the product's path
    "fma_f32": r"\bfma\.rn\.f32\b",                     # FMA: "ieee" fp32
    "mma_sync": r"\bmma\.sync\.",                       # tensor cores (Ampere-style)
    "wgmma": r"\bwgmma\.mma_async\.",                   # tensor cores (Hopper)
    "tf32_ops": r"\.tf32\b",
    "bf16_ops": r"\.bf16\b",
}
SASS_PATTERNS = {"FFMA": r"\bFFMA\b", "HMMA": r"\bHMMA\b", "HGMMA": r"\bHGMMA\b"}


def count_instructions(text: str, patterns: dict) -> dict:
    return {name: len(re.findall(pattern, text)) for name, pattern in patterns.items()}


def compiled_variants(jit_function):
    """The compiled kernels of a Triton JIT function, across Triton 3.x's cache layouts."""
    caches = getattr(jit_function, "device_caches", None)
    if caches is not None:
        return [kernel for entry in caches.values() for kernel in entry[0].values()]
    return [kernel for cache in getattr(jit_function, "cache", {}).values()
            for kernel in cache.values()]


def constexprs(kernel) -> dict:
    """A compiled variant's compile-time arguments by name (Triton 3.2+ keys them by
    argument index; older versions by name)."""
    src = getattr(kernel, "src", None)
    names = getattr(getattr(src, "fn", None), "arg_names", [])
    named = {}
    for key, value in (getattr(src, "constants", None) or {}).items():
        if isinstance(key, tuple) and len(key) == 1 and key[0] < len(names):
            key = names[key[0]]
        if isinstance(key, str) and isinstance(value, (int, float, str)):
            named[key] = value
    return named


def variant_facts(kernel) -> dict:
    kernel.run                                   # loads it: sets n_regs and n_spills
    meta = kernel.metadata
    facts = {"name": meta.name, "num_warps": meta.num_warps,
             "num_stages": getattr(meta, "num_stages", None), "shared_bytes": meta.shared,
             "registers": getattr(kernel, "n_regs", None),
             "spills": getattr(kernel, "n_spills", None),
             "constants": constexprs(kernel),
             "ptx": count_instructions(kernel.asm.get("ptx", ""), PTX_PATTERNS)}
    try:
        from triton.tools.disasm import get_sass

        facts["sass"] = count_instructions(get_sass(kernel.asm["cubin"]), SASS_PATTERNS)
    except Exception as exc:                     # no cuobjdump: the PTX still tells
        facts["sass"] = f"unavailable: {type(exc).__name__}"
    return facts


def ptxas_facts(ptx: str, arch: str) -> dict:
    """Registers, spills and stack of a PTX module, from Triton's bundled ptxas -v."""
    import subprocess
    import tempfile

    try:                                         # the ptxas Triton itself uses for sm_90
        from triton.backends.nvidia.compiler import get_ptxas

        ptxas = get_ptxas(90).path
    except (ImportError, AttributeError):
        from triton import knobs

        ptxas = knobs.nvidia.ptxas.path
    with tempfile.NamedTemporaryFile("w", suffix=".ptx") as handle:
        handle.write(ptx)
        handle.flush()
        done = subprocess.run([ptxas, f"-arch={arch}", "-v", handle.name,
                               "-o", os.devnull], capture_output=True, text=True, timeout=120)
    text = done.stdout + done.stderr
    find = lambda pattern: [int(v) for v in re.findall(pattern, text)]   # noqa: E731
    if done.returncode != 0:
        return {"ptxas": text.strip()[-300:]}
    return {"registers": max(find(r"Used (\d+) registers"), default=None),
            "spill_store_bytes": sum(find(r"(\d+) bytes spill stores")),
            "spill_load_bytes": sum(find(r"(\d+) bytes spill loads")),
            "stack_bytes": max(find(r"(\d+) bytes stack frame"), default=None)}


def offline_variant(kernel: str, precision: str, config: tuple) -> dict:
    """One product kernel compiled for sm_90 without a GPU, at one configuration."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    from triton.tools.disasm import get_sass

    from parallel_backprop.executors import gpu_kernels

    fn, pointers, block_names, extra = gpu_kernels.PRODUCT_KERNELS[kernel]
    constants = {**extra, **dict(zip(block_names, config[:3])), "PRECISION": precision}
    signature = {name: "constexpr" if name in constants else "*fp32" if name in pointers
                 else "i32" for name in fn.arg_names}
    compiled = triton.compile(ASTSource(fn, signature, constexprs=constants),
                              target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": config[3], "num_stages": config[4]})
    return {"kernel": kernel, "precision": precision, "config": list(config),
            "shared_bytes": compiled.metadata.shared,
            **ptxas_facts(compiled.asm["ptx"], "sm_90a"),
            "ptx": count_instructions(compiled.asm["ptx"], PTX_PATTERNS),
            "sass": count_instructions(get_sass(compiled.asm["cubin"]), SASS_PATTERNS)}


def offline_compile_facts(run: Run) -> dict:
    """Every product kernel x precision x tuning candidate, compiled for an H100/H200."""
    from parallel_backprop.executors import gpu_kernels, gpu_tuning

    variants = []
    for kernel in gpu_kernels.PRODUCT_KERNELS:
        for precision in ("ieee", "tf32", "bf16"):
            for config in gpu_tuning.CANDIDATES:
                try:
                    variants.append(offline_variant(kernel, precision, config))
                except Exception as exc:       # a configuration the compiler refuses
                    variants.append({"kernel": kernel, "precision": precision,
                                     "config": list(config),
                                     "error": f"{type(exc).__name__}: {exc}"[:300]})
    return {"target": "sm_90a, compiled without a GPU (no divisibility specialisation)",
            "variants": variants}


def summarize_offline(result: dict) -> list[str]:
    return [f"{v['kernel']} {v['precision']} {v['config']}: "
            + (v["error"] if "error" in v else
               f"{v.get('registers')} regs, spills {v.get('spill_store_bytes')}/"
               f"{v.get('spill_load_bytes')} B, {v['shared_bytes']} B shared, sass {v['sass']}")
            for v in result["variants"]]


def compile_facts(run: Run) -> dict:
    if run.args.offline:
        return offline_compile_facts(run)
    if not run.cuda:
        return {"skipped": "no CUDA"}
    from parallel_backprop.executors import gpu_kernels

    variants = []
    for name in dir(gpu_kernels):
        if name.endswith("_kernel"):
            variants += [{"kernel": name, **variant_facts(kernel)}
                         for kernel in compiled_variants(getattr(gpu_kernels, name))]
    tuned = {f"{kernel} {'x'.join(map(str, shape))} {precision}": list(config)
             for (kernel, shape, precision), config in gpu_kernels.TUNED.items()}
    return {"variants": variants, "tuned": tuned,
            "tuned_as": "BLOCK_rows, BLOCK_cols, BLOCK_reduce, num_warps, num_stages"}


def summarize_compile(result: dict) -> list[str]:
    if "target" in result:
        return summarize_offline(result)
    lines = [f"tuned {key}: {config}" for key, config in result.get("tuned", {}).items()]
    for v in result.get("variants", []):
        const = v["constants"]
        blocks = "x".join(str(const.get(f"BLOCK_{d}", "")) for d in "MNK")
        lines.append(f"{v['kernel']} {const.get('PRECISION', '')} {blocks} w{v['num_warps']} "
                     f"s{v['num_stages']}: {v['registers']} regs, {v['spills']} spills, "
                     f"{v['shared_bytes']} B shared, ptx {v['ptx']}")
    return lines


# ---- (c) kernels against cuBLAS -----------------------------------------------------------

def median_ms(run: Run, fn, reps: int = 20) -> float:
    """Median time of ``fn`` in milliseconds (CUDA events on a GPU, the clock on the CPU)."""
    if run.cuda:
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=5, rep=reps, return_mode="median"))
    fn()
    times = []
    for _ in range(1):            # the interpreter: only that the path runs
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def torch_product(fn, *tensors):
    """``dtype -> (() -> fn(*tensors))`` with the tensors cast to dtype beforehand."""
    return lambda dtype: functools.partial(fn, *(t.to(dtype) for t in tensors))


def layer_products(run: Run, k, net, batch: int):
    """(what, shape, our launches by precision, torch's product by dtype) for each
    product of a step."""
    torch, dev = run.torch, run.device
    rnd = lambda *shape: torch.rand(*shape, device=dev) * 0.1      # noqa: E731
    zero = torch.zeros(4, device=dev)                               # W unchanged by the update
    for l in range(len(net.sizes) - 1):
        K, N = net.sizes[l], net.sizes[l + 1]
        x, w, b, out, d, a = rnd(batch, K), rnd(K, N), rnd(N), rnd(batch, N), rnd(batch, N), \
            rnd(batch, K)
        shape = f"{batch}x{K}x{N}"
        yield ("forward", shape, lambda p, x=x, w=w, b=b, out=out:
               k.forward_layer(x, w, b, out, "sigmoid", k.PRECISIONS[p]),
               torch_product(torch.addmm, b, x, w))
        if l > 0:
            yield ("hidden delta", shape, lambda p, d=d, w=w, a=a, x=x:
                   k.hidden_delta(d, w, a, x, "sigmoid", k.PRECISIONS[p]),
                   torch_product(torch.mm, d, w.T))
        yield ("weight update", shape, lambda p, a=a, d=d, w=w, b=b:
               k.weight_update(a, d, w, b, zero, k.PRECISIONS[p]),
               torch_product(torch.mm, a.T, d))


def torch_times(run: Run, product) -> dict:
    """torch's product in fp32 with TF32 off and on, and on bf16 operands."""
    torch = run.torch
    times = {}
    for flag in (False, True):
        torch.backends.cuda.matmul.allow_tf32 = flag
        times["torch_tf32" if flag else "torch_fp32"] = median_ms(run, product(torch.float32))
    torch.backends.cuda.matmul.allow_tf32 = False
    times["torch_bf16"] = median_ms(run, product(torch.bfloat16))
    return times


def kernel_times(run: Run) -> dict:
    from parallel_backprop.executors import gpu_kernels as k

    rows = []
    for name, sizes in run.args.nets.items():
        net = network(sizes)
        for batch in run.args.timed_batches:
            for what, shape, ours, theirs in layer_products(run, k, net, batch):
                row = {"net": name, "batch": batch, "product": what, "shape": shape}
                for precision in PRECISIONS:
                    row[f"ours_{precision}"] = median_ms(run, lambda p=precision: ours(p))
                row.update(torch_times(run, theirs))
                rows.append(row)
    return {"unit": "ms, median", "rows": rows}


def summarize_kernels(result: dict) -> list[str]:
    return [f"{r['net']} b{r['batch']:<5} {r['product']:13s} {r['shape']:16s} ours fp32 "
            f"{r['ours_fp32']:.4f} tf32 {r['ours_tf32']:.4f} bf16 {r['ours_bf16']:.4f} | "
            f"torch fp32 {r['torch_fp32']:.4f} tf32 {r['torch_tf32']:.4f} "
            f"bf16 {r['torch_bf16']:.4f}"
            for r in result["rows"]]


# ---- (d) host enqueue against device time ---------------------------------------------------

def enqueue_row(run: Run, name: str, net, batch: int, steps: int) -> dict:
    """A resident epoch of ``steps`` full batches after a warm-up one (graphs captured).
    On a GPU the first step also queues a long sleep, so that the later replays wait
    behind it and then run back to back: their events time the device alone."""
    import numpy as np

    from parallel_backprop.executors.gpu import GpuExecutor

    torch = run.torch
    x, y = dataset(net, steps * batch, seed=5)
    order = np.random.default_rng(6).permutation(steps * batch)
    marks, events = [], []

    def on_step():
        marks.append(time.perf_counter())
        if run.cuda and len(marks) == 1:
            torch.cuda._sleep(200_000_000)               # ~0.1 s of the device's cycles
            events.append(torch.cuda.Event(enable_timing=True))
            events[-1].record()
        elif run.cuda and len(marks) == steps:
            events.append(torch.cuda.Event(enable_timing=True))
            events[-1].record()

    with GpuExecutor(net, net.init_params(2), batch_size=batch) as ex:
        assert ex.load_data(x, y)
        ex.train_epoch(order, LR)                       # compiles and captures
        ex.train_epoch(order, LR, on_step=on_step)
        captured = ex.captured
    host_ms = (marks[-1] - marks[0]) * 1e3 / (steps - 1)
    device_ms = events[0].elapsed_time(events[1]) / (steps - 1) if run.cuda else None
    return {"net": name, "batch": batch, "steps_timed": steps - 1, "graphs": list(captured),
            "host_enqueue_ms_per_step": host_ms, "device_ms_per_replay": device_ms,
            "host_bound": None if device_ms is None else host_ms > device_ms}


def enqueue(run: Run) -> dict:
    steps = 3 if run.args.quick else 64
    rows = [enqueue_row(run, name, network(sizes), run.args.batches[0], steps)
            for name, sizes in run.args.nets.items()]
    return {"rows": rows, **({} if run.cuda else {"device": "skipped: no CUDA"})}


def summarize_enqueue(result: dict) -> list[str]:
    lines = []
    for r in result["rows"]:
        device = r["device_ms_per_replay"]
        lines.append(f"{r['net']} b{r['batch']}: host {r['host_enqueue_ms_per_step']:.4f} "
                     f"ms/step, device {'-' if device is None else f'{device:.4f}'} ms/replay"
                     + ("" if r["host_bound"] is None else
                        f" ({'host' if r['host_bound'] else 'device'}-bound)"))
    return lines


# ---- (e) epochs against PyTorch --------------------------------------------------------------

def epochs(run: Run) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_vs_torch

    from parallel_backprop.network import Network

    systems = list(gpu_vs_torch.SYSTEMS) if run.cuda else ["gpu", "eager"]
    rows, skipped = [], []
    ceiling = gpu_vs_torch.gemm_ceiling(run.torch, run.device, 8192 if run.cuda else 128)
    for name, sizes in run.args.nets.items():
        for batch in run.args.timed_batches:
            if run.over_budget():
                skipped.append(f"{name} b{batch}: over --budget-s")
                continue
            settings = argparse.Namespace(systems=systems, samples=run.args.samples,
                                          rounds=run.args.rounds, lr=LR, precision="fp32")
            net = Network(sizes, ("sigmoid",) * (len(sizes) - 1), "mse")
            for row in gpu_vs_torch.benchmark(run.torch, run.device, net, batch, settings,
                                              ceiling):
                rows.append({"net": name, "batch": batch, **row})
    result = {"gemm_tflops": ceiling, "rows": rows, "skipped": skipped}
    if not run.cuda:
        result["compile"] = "skipped: no CUDA (torch.compile systems)"
    return result


def summarize_epochs(result: dict) -> list[str]:
    lines = []
    for r in result["rows"]:
        if "error" in r:
            lines.append(f"{r['net']} b{r['batch']} {r['system']}: {r['error']}")
        else:
            lines.append(f"{r['net']} b{r['batch']:<5} {r['system']:15s} min {r['epoch_min_s']:.4f}"
                         f" median {r['epoch_s']:.4f} max {r['epoch_max_s']:.4f} s/epoch")
    return lines + result["skipped"]


STEPS = {"correctness": (correctness, summarize_correctness),
         "compile": (compile_facts, summarize_compile),
         "kernels": (kernel_times, summarize_kernels),
         "enqueue": (enqueue, summarize_enqueue),
         "epochs": (epochs, summarize_epochs)}


def run_sections(run: Run) -> None:
    for name in SECTIONS:
        if name not in run.args.sections:
            continue
        if run.over_budget():
            result = {"skipped": f"over --budget-s {run.args.budget_s:g}"}
        else:
            compute, _ = STEPS[name]
            started = time.perf_counter()
            try:
                result = compute(run)
            except Exception as exc:           # report it and go on: later sections may run
                result = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            finally:                           # IEEE fp32 again, whatever a section left
                run.torch.backends.cuda.matmul.allow_tf32 = False
            result["seconds"] = round(time.perf_counter() - started, 2)
        run.record(name, result)
        print(f"== {name} ({result.get('seconds', 0):.1f} s)", flush=True)
        if "error" in result or ("skipped" in result and len(result) <= 2):
            print(f"  {result.get('error') or 'skipped: ' + str(result['skipped'])}", flush=True)
            continue
        for line in STEPS[name][1](result):
            print(f"  {line}", flush=True)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.quick:       # before Triton is imported: it reads the variable then
        os.environ["TRITON_INTERPRET"] = "1"
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as exc:
        sys.exit(f"gpu_check: needs PyTorch and Triton ({exc}): pip install -e '.[gpu]'")
    if args.quick or args.offline:
        device = torch.device("cpu")
    elif os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") or \
            not torch.cuda.is_available():
        sys.exit("gpu_check: the full check needs a CUDA GPU and TRITON_INTERPRET unset; "
                 "--quick runs it at tiny shapes on the CPU")
    else:
        device = torch.device("cuda")
        torch.backends.cuda.matmul.allow_tf32 = False        # IEEE fp32 unless asked
    run = Run(args, torch, device)
    print(f"gpu_check on {run.data['environment']['device']}: torch "
          f"{torch.__version__}, triton {run.data['environment']['triton']}", flush=True)
    run_sections(run)
    sections = run.data["sections"]
    failed = "correctness" in sections and sections["correctness"].get("ok") is False
    print(f"wrote {args.out} after {run.elapsed():.1f} s; correctness "
          f"{'FAILED' if failed else sections.get('correctness', {}).get('ok', 'not run')}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
