"""The gpu executor against PyTorch on one GPU: eager, torch.compile, compile + CUDA graphs.

Per network (the seed's Net-1h 784-1024-10 and Net-2h 784-1024-1024-10,
sigmoid, MSE) and batch size, every system trains whole epochs on the same
MNIST-sized synthetic training set, resident on the device, from the same
initial weights and the same shuffled orders:

    gpu              this package's Triton kernels, CUDA graphs, data on the device
    eager            nn.Sequential(Linear, Sigmoid, ...) + optim.SGD, autograd
    compile          the same model under torch.compile(dynamic=False) + compiled SGD step
    compile-graphs   torch.compile(mode="reduce-overhead", dynamic=False): with CUDA graphs

``dynamic=False`` keeps the full-size steps on a static-shape graph when the
epoch's last, smaller batch arrives (it gets a graph of its own).

Every system is checked first: one step from the same weights on the same
batch, each layer's weight and bias CHANGE against float64's, as a relative
error (``executors/gpu_accuracy.py``; within 1e-4 in fp32, 1e-2 in tf32
and bf16, 3e-2 for PyTorch's bf16 autocast, which also stores bf16
activations); and the gpu executor's timed path, ``train_epoch`` on the
resident data, against the same steps one by one through ``step``, bitwise.
Then every system is timed: one warm-up epoch not counted (compilation,
graph capture), then ``--rounds`` epochs per system taken in turns so that
noise hits all alike; min / median / max epoch are reported with samples/s,
TFLOP/s from ``Network.train_flops_per_sample`` (median) and the fraction of
the device's fp32 GEMM rate measured in the same run (torch.mm, 8192^3).
Precision is matched: fp32 (IEEE: TF32 off in PyTorch, ``ieee`` in the
kernels), ``--precision tf32`` for both, or ``--precision bf16`` (the
kernels' bf16 operands; PyTorch under bf16 autocast).

Goals, from the project's plan: gpu >= 5x eager and >= 1.5x compile per
epoch at batch 128, and >= 1.0x PyTorch at batch 4096.

    python benchmarks/gpu_vs_torch.py                       # all nets, batches 128..4096
    python benchmarks/gpu_vs_torch.py --nets 1h --batches 128 4096 --json gpu.json

Needs a CUDA GPU. ``--dry-run`` runs every code path on the CPU at toy
sizes (with ``TRITON_INTERPRET=1`` set for the gpu system) to check the
script itself; its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

from parallel_backprop import Network
from parallel_backprop.errors import PbpError
from parallel_backprop.executors.gpu_accuracy import (UPDATE_TOLERANCE, sgd_step64,
                                                      update_errors, worst_error)

SYSTEMS = ("gpu", "eager", "compile", "compile-graphs")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nets", nargs="+", default=["1h", "2h"],
                        help="1h, 2h or sizes such as 784-1024-10")
    parser.add_argument("--batches", nargs="+", type=int,
                        default=[128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--systems", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    parser.add_argument("--samples", type=int, default=60000, help="training set size")
    parser.add_argument("--rounds", type=int, default=5, help="timed epochs per system")
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--precision", choices=tuple(UPDATE_TOLERANCE), default="fp32")
    parser.add_argument("--json", help="also write the rows to this file")
    parser.add_argument("--dry-run", action="store_true",
                        help="toy sizes on the CPU, to check the script without a GPU")
    args = parser.parse_args(argv)
    if args.dry_run:
        args.nets, args.batches, args.samples, args.rounds = ["64-32-10"], [16, 40], 100, 1
    return args


class Data:
    """The training set on the device and one shuffled order per epoch, shared by all systems."""

    def __init__(self, torch, device, network: Network, samples: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.x = rng.random((samples, network.sizes[0]), dtype=np.float32)
        self.targets = network.targets(rng.integers(0, network.sizes[-1], samples))
        self.x_dev = torch.tensor(self.x, device=device)
        self.t_dev = torch.tensor(self.targets, device=device)
        self.rng = np.random.default_rng(seed + 1)

    def order(self) -> np.ndarray:
        return self.rng.permutation(self.x.shape[0])


class GpuSystem:
    """The gpu executor: load the data once, then train_epoch per epoch."""

    def __init__(self, torch, network, params, batch, data, lr, precision):
        from parallel_backprop.executors.gpu import GpuExecutor

        self.make = lambda: GpuExecutor(network, params, batch_size=batch, precision=precision)
        self.executor = self.make()
        if not self.executor.load_data(data.x, data.targets):
            raise PbpError("the training set does not fit in the GPU's memory")
        self.lr, self.batch, self.data = lr, batch, data

    def epoch(self, order: np.ndarray) -> float:
        return self.executor.train_epoch(order, self.lr)

    def one_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        with self.make() as executor:       # the timed executor keeps its weights
            return executor.step(x, y, self.lr), executor.params()

    def epoch_matches_steps(self, order: np.ndarray) -> bool:
        """``train_epoch`` on the resident data gives the bits of the same steps one by one."""
        x, y = self.data.x, self.data.targets
        with self.make() as by_steps:
            for start in range(0, order.shape[0], self.batch):
                rows = order[start:start + self.batch]
                by_steps.step(x[rows], y[rows], self.lr)
            expected = by_steps.params()
        with self.make() as resident:
            resident.load_data(x, y)
            resident.train_epoch(order, self.lr)
            return np.array_equal(resident.params(), expected)


class TorchSystem:
    """nn.Sequential + SGD (no momentum), the loss 0.5 * sum((a - y)^2) / b: our update exactly."""

    def __init__(self, torch, network, params, batch, data, lr, mode, precision="fp32"):
        self.torch, self.network, self.batch, self.data = torch, network, batch, data
        device = data.x_dev.device
        modules = []
        for weights, bias in network.layers(params):
            linear = torch.nn.Linear(*weights.shape, device=device)
            with torch.no_grad():
                linear.weight.copy_(torch.from_numpy(weights.T.copy()))  # torch: (n_out, n_in)
                linear.bias.copy_(torch.from_numpy(bias.copy()))
            modules += [linear, torch.nn.Sigmoid()]
        self.model = model = torch.nn.Sequential(*modules)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=0.0)

        autocast = precision == "bf16" and device.type == "cuda"

        def loss(x, y):   # the mean over the batch for autograd; the epoch adds it up * b
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=autocast):
                out = model(x).float()
            return 0.5 * ((out - y) ** 2).sum() / x.shape[0]

        self.loss, self.update = loss, self.optimizer.step
        if mode is not None:   # compile forward + loss (and so the backward), and the SGD step
            self.loss = torch.compile(loss, mode=mode, dynamic=False)
            self.update = torch.compile(self.optimizer.step, mode=mode, dynamic=False)
        self.order_dev = torch.empty(data.x.shape[0], dtype=torch.int64, device=device)
        self.total = torch.zeros((), dtype=torch.float64, device=device)

    def _step(self, x, y):
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(x, y)
        loss.backward()
        self.update()
        return loss.detach()

    def epoch(self, order: np.ndarray) -> float:
        torch = self.torch
        self.order_dev.copy_(torch.from_numpy(order))
        self.total.zero_()
        for start in range(0, order.shape[0], self.batch):
            idx = self.order_dev[start:start + self.batch]
            loss = self._step(self.data.x_dev.index_select(0, idx),
                              self.data.t_dev.index_select(0, idx))
            self.total.add_(loss, alpha=idx.shape[0])     # a sum, as every executor's
        return float(self.total)

    def one_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
        torch, device = self.torch, self.data.x_dev.device
        loss = float(self._step(torch.tensor(x, device=device),
                                torch.tensor(y, device=device))) * x.shape[0]
        flat = []
        for module in self.model:
            if isinstance(module, torch.nn.Linear):
                flat += [module.weight.detach().T.reshape(-1), module.bias.detach()]
        return loss, torch.cat(flat).cpu().numpy()


def make_system(name, torch, network, params, batch, data, args):
    if name == "gpu":
        return GpuSystem(torch, network, params, batch, data, args.lr, args.precision)
    mode = {"eager": None, "compile": "default", "compile-graphs": "reduce-overhead"}[name]
    return TorchSystem(torch, network, params, batch, data, args.lr, mode, args.precision)


def gemm_ceiling(torch, device, size: int) -> float:
    """TFLOP/s of one fp32 ``torch.mm`` (size^3), best of 5 after a warm-up."""
    a = torch.rand(size, size, device=device)
    b = torch.rand(size, size, device=device)
    c = torch.empty(size, size, device=device)
    best = float("inf")
    for i in range(6):
        sync(torch, device)
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        sync(torch, device)
        if i:
            best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best / 1e12


def sync(torch, device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def environment(torch, device) -> dict:
    import triton

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        commit = None
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__, "triton": triton.__version__,
            "cuda": torch.version.cuda, "python": platform.python_version(), "commit": commit}


def check(name, system, network, params, x, y, args) -> str | None:
    """Why ``system`` fails the checks before timing, or None."""
    _, after = system.one_step(x, y)
    expected = sgd_step64(network, params, x, y, args.lr)
    errors = update_errors(network, params, after, expected)
    tolerance = UPDATE_TOLERANCE[args.precision]
    if args.precision == "bf16" and name != "gpu":   # autocast also rounds activations
        tolerance *= 3
    if worst_error(errors) > tolerance:
        layers = ", ".join(f"layer {row['layer']} W {row['weights']:.1e} b {row['bias']:.1e}"
                           for row in errors)
        return f"one step's update differs from float64's by more than {tolerance:g} ({layers})"
    if name == "gpu":
        order = system.data.order()[:4 * x.shape[0] + x.shape[0] // 2 + 1]  # a ragged tail
        if not system.epoch_matches_steps(order):
            return "train_epoch differs from the same steps one by one"
    return None


def benchmark(torch, device, network: Network, batch: int, args, ceiling: float) -> list[dict]:
    data = Data(torch, device, network, args.samples)
    params = network.init_params(0)
    flops = network.train_flops_per_sample() * args.samples
    systems, rows = {}, []
    x, y = data.x[:batch], data.targets[:batch]
    for name in args.systems:
        try:
            system = make_system(name, torch, network, params, batch, data, args)
            problem = check(name, system, network, params, x, y, args)
        except Exception as exc:   # a peer that cannot run here is reported, not fatal
            rows.append({"system": name, "error": f"{type(exc).__name__}: {exc}"[:300]})
            continue
        if problem:
            rows.append({"system": name, "error": problem})
            continue
        system.epoch(data.order())               # warm-up, not counted
        systems[name] = system
    times = {name: [] for name in systems}
    for _ in range(args.rounds):
        order = data.order()
        for name, system in systems.items():
            sync(torch, device)
            start = time.perf_counter()
            loss = system.epoch(order)           # ends with a read of the loss: synchronised
            times[name].append(time.perf_counter() - start)
            if not np.isfinite(loss):
                raise PbpError(f"{name}: the loss became {loss}")
    for name, seconds in times.items():
        epoch_s = statistics.median(seconds)
        rows.append({"system": name, "epoch_s": epoch_s, "epoch_min_s": min(seconds),
                     "epoch_max_s": max(seconds), "samples_per_s": args.samples / epoch_s,
                     "tflops": flops / epoch_s / 1e12,
                     "of_ceiling": flops / epoch_s / 1e12 / ceiling if ceiling else None})
    return rows


def report(net: str, batch: int, rows: list[dict]) -> None:
    timed = {row["system"]: row for row in rows if "epoch_s" in row}
    for row in rows:
        if "error" in row:
            print(f"{net:>5} {batch:5d}  {row['system']:15s} skipped: {row['error']}")
            continue
        ratios = "" if row["system"] != "gpu" else "  ".join(
            f"{timed[other]['epoch_s'] / row['epoch_s']:5.2f}x vs {other}"
            for other in timed if other != "gpu")
        print(f"{net:>5} {batch:5d}  {row['system']:15s} {row['epoch_s']:8.4f} s/epoch "
              f"[{row['epoch_min_s']:.4f}..{row['epoch_max_s']:.4f}] "
              f"{row['samples_per_s']:12,.0f} samples/s {row['tflops']:7.2f} TFLOP/s "
              f"({(row['of_ceiling'] or 0) * 100:5.1f}% of GEMM)  {ratios}")


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        import torch
        import triton  # noqa: F401
    except ImportError as exc:
        sys.exit(f"gpu_vs_torch: needs PyTorch and Triton ({exc}): "
                 "pip install -e '.[gpu]'")
    if args.dry_run:
        if "gpu" in args.systems and os.environ.get("TRITON_INTERPRET") != "1":
            sys.exit("gpu_vs_torch: --dry-run runs the gpu system under Triton's interpreter: "
                     "start it with TRITON_INTERPRET=1 (or leave gpu out of --systems)")
        device = torch.device("cpu")
    elif not torch.cuda.is_available():
        sys.exit("gpu_vs_torch: needs a CUDA GPU (torch.cuda.is_available() is False); "
                 "--dry-run checks the script on the CPU")
    else:
        device = torch.device("cuda")
    tf32 = args.precision == "tf32"   # bf16: the kernels' operands, PyTorch's autocast
    torch.backends.cuda.matmul.allow_tf32 = tf32     # PyTorch's default is False: IEEE fp32
    torch.backends.cudnn.allow_tf32 = tf32
    env = environment(torch, device)
    ceiling = gemm_ceiling(torch, device, 256 if args.dry_run else 8192)
    print(f"{env['device']}: fp32{' (tf32)' if tf32 else ''} GEMM {ceiling:.1f} TFLOP/s; "
          f"torch {env['torch']}, triton {env['triton']}, commit {env['commit']}")
    results = []
    for spec in args.nets:
        network = Network.from_spec(spec, 784 if not args.dry_run else 64, 10)
        for batch in args.batches:
            rows = benchmark(torch, device, network, batch, args, ceiling)
            report(spec, batch, rows)
            results += [{"net": network.spec, "batch": batch, "precision": args.precision,
                         **row} for row in rows]
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"environment": env, "gemm_tflops": ceiling, "rows": results}, handle,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
