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
