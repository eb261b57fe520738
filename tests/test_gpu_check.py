"""benchmarks/gpu_check.py, the one command run on a GPU: its --quick run on the CPU
under Triton's interpreter, its JSON, and its reading of compiled kernels."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Found, not imported: Triton must first be imported with TRITON_INTERPRET=1 (test_gpu.py).
if not all(importlib.util.find_spec(name) for name in ("torch", "triton")):
    pytest.skip("the gpu extra (torch, triton) is not installed", allow_module_level=True)

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_run_answers_every_section(tmp_path):
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(SCRIPT.parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert list(sections) == ["correctness", "compile", "kernels", "enqueue", "epochs"]
    correctness = sections["correctness"]
    assert correctness["ok"] is True
    checked = {(r["net"], r["batch"], r["precision"]) for r in correctness["updates"]}
    assert len(checked) == 2 * 2 * 3                        # nets x batches x precisions
    assert {r["rows"] < r["batch"] for r in correctness["updates"]} == {True, False}
    assert all(len(r["layers"]) in (2, 3) for r in correctness["updates"])
    assert sections["compile"]["skipped"] == "no CUDA"
    assert sections["enqueue"]["device"] == "skipped: no CUDA"
    assert {r["product"] for r in sections["kernels"]["rows"]} == {
        "forward", "hidden delta", "weight update"}
    timed = {r["system"] for r in sections["epochs"]["rows"] if "epoch_s" in r}
    assert timed == {"gpu", "eager"}
    assert "skipped: no CUDA" in sections["epochs"]["compile"]
    assert "correctness True" in done.stdout and "skipped: no CUDA" in done.stdout


def test_a_spent_budget_skips_the_sections_and_still_writes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TRITON_INTERPRET", "1")          # main sets it; put back after
    module = load_script()
    out = tmp_path / "check.json"
    assert module.main(["--quick", "--budget-s", "0", "--out", str(out),
                        "--sections", "correctness", "epochs"]) == 0
    sections = json.loads(out.read_text())["sections"]
    assert sections == {name: {"skipped": "over --budget-s 0"}
                        for name in ("correctness", "epochs")}
    assert "skipped: over --budget-s 0" in capsys.readouterr().out


def test_instruction_counts_tell_fma_from_tensor_cores():
    module = load_script()
    ptx = """
        fma.rn.f32 %f1, %f2, %f3, %f1;
        fma.rn.f32 %f4, %f5, %f6, %f4;
        wgmma.mma_async.sync.aligned.m64n64k8.f32.tf32.tf32 {%f1}, %rd1, %rd2;
        mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f1}, {%r1}, {%r2}, {%f2};
    """
    counts = module.count_instructions(ptx, module.PTX_PATTERNS)
    assert counts == {"fma_f32": 2, "mma_sync": 1, "wgmma": 1, "tf32_ops": 2, "bf16_ops": 2}
    sass = module.count_instructions("FFMA R1, R2, R3, R1 ;\nHGMMA.64x64x8.F32.TF32 R0 ;",
                                     module.SASS_PATTERNS)
    assert sass == {"FFMA": 1, "HMMA": 0, "HGMMA": 1}


def test_correctness_at_the_real_shapes_on_a_gpu(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU: --quick above runs the same checks at tiny shapes")
    out = tmp_path / "check.json"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(SCRIPT.parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env["PBP_CACHE_DIR"] = str(tmp_path / "cache")      # the measured tiles: not the user's
    done = subprocess.run([sys.executable, str(SCRIPT), "--sections", "correctness", "compile",
                           "--out", str(out)], env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    sections = json.loads(out.read_text())["sections"]
    assert sections["correctness"]["ok"] is True
    assert sections["compile"]["variants"] and sections["compile"]["tuned"]


SM90_CHECK = r"""
# Two product kernels compiled for an H100/H200 (sm_90) without a GPU, as
# gpu_check --offline does: ptxas runs, no driver is needed. ieee products must
# be FMA instructions, tf32 and bf16 ones tensor-core wgmma (HGMMA in SASS).
import sys
sys.path.insert(0, sys.argv[1])
import gpu_check
from parallel_backprop.executors import gpu_kernels
assert not gpu_kernels.INTERPRETED
for kernel in ("forward_layer", "weight_update"):
    for precision, operands in (("ieee", None), ("tf32", "tf32_ops"), ("bf16", "bf16_ops")):
        facts = gpu_check.offline_variant(kernel, precision, (64, 64, 32, 4, 3))
        ptx, sass = facts["ptx"], facts["sass"]
        assert 0 < facts["registers"] <= 255 and facts["shared_bytes"] > 0, facts
        if precision == "ieee":
            assert ptx["fma_f32"] > 0 and sass["FFMA"] > 0 and sass["HGMMA"] == 0, facts
        else:
            assert ptx["wgmma"] > 0 and ptx[operands] > 0 and sass["HGMMA"] > 0, facts
print("ok")
"""


def test_kernels_compile_for_sm90_to_fma_or_tensor_cores_by_precision():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(SCRIPT.parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    done = subprocess.run([sys.executable, "-c", SM90_CHECK, str(SCRIPT.parent)], env=env,
                          capture_output=True, text=True, timeout=600)
    if "ptxas" in done.stderr and "not found" in done.stderr.lower():
        pytest.skip("Triton's bundled ptxas is missing: cannot compile for sm_90")
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


def test_a_failing_check_is_one_row_that_fails_not_the_section():
    module = load_script()

    def broken():
        raise RuntimeError("out of resources: shared memory")

    row = module.guarded({"precision": "bf16"}, broken)
    assert row == {"precision": "bf16", "ok": False,
                   "error": "RuntimeError: out of resources: shared memory"}
    assert module.guarded({"precision": "fp32"}, lambda: {"ok": True}) == {
        "precision": "fp32", "ok": True}
    lines = module.summarize_correctness({"updates": [{"net": "1h", "batch": 128, "rows": 83,
                                                       **row}], "bitwise": []})
    assert lines == ["1h b128   rows 83    bf16: RuntimeError: out of resources: shared memory"]


def load_benchmark(name):
    spec = importlib.util.spec_from_file_location(name, SCRIPT.parent / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeSystem:
    """A system whose one step is float64's, with what ``change`` does to it."""

    def __init__(self, network, params, lr, change, epoch_ok=True):
        from parallel_backprop.executors.gpu_accuracy import sgd_step64

        self.step64 = lambda x, y: sgd_step64(network, params, x, y, lr)
        self.change, self.epoch_ok = change, epoch_ok
        self.data = type("Data", (), {"order": lambda self: __import__("numpy").arange(50)})()

    def one_step(self, x, y):
        return 0.0, self.change(self.step64(x, y).astype("float32"))

    def epoch_matches_steps(self, order):
        return self.epoch_ok


def test_gpu_vs_torch_checks_each_layers_update_not_the_weights():
    # Net-1h's first layer left without its update: the weights then differ by
    # at most ~1e-3, which the old absolute check in tf32 (1e-2) passed.
    import argparse

    import numpy as np

    from parallel_backprop import Network

    bench = load_benchmark("gpu_vs_torch")
    network = Network((784, 1024, 10), ("sigmoid", "sigmoid"), "mse")
    params = network.init_params(0)
    rng = np.random.default_rng(0)
    x = rng.random((128, 784), dtype=np.float32)
    y = network.targets(rng.integers(0, 10, 128))
    args = argparse.Namespace(lr=0.1, precision="tf32")

    def without_first_update(after):
        after[:784 * 1024] = params[:784 * 1024]
        return after

    exact = FakeSystem(network, params, 0.1, lambda after: after)
    assert bench.check("eager", exact, network, params, x, y, args) is None
    missing = FakeSystem(network, params, 0.1, without_first_update)
    assert np.abs(missing.one_step(x, y)[1] - exact.one_step(x, y)[1]).max() < 1e-2
    problem = bench.check("eager", missing, network, params, x, y, args)
    assert problem.startswith("one step's update differs from float64's by more than 0.01")
    assert "layer 1 W 1.0e+00" in problem
    apart = FakeSystem(network, params, 0.1, lambda after: after, epoch_ok=False)
    assert bench.check("gpu", apart, network, params, x, y, args) == (
        "train_epoch differs from the same steps one by one")
