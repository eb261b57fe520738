"""The BLAS libraries behind gemm (SciPy's OpenBLAS, MKL) and the choice between them.

gemm's contract holds for each library: in place, beta accumulation, leading
dimensions (column slices of the output), transposed operands, the GIL
released during the product. MKL's results equal OpenBLAS's for every
executor's step; its bf16 GEMM equals float32 within bf16 rounding. ``--blas
auto`` measures once per machine and caches; ``--blas`` reaches the executors,
the records and the processes a command starts. MKL tests skip, with the
reason, where the ``mkl`` extra is not installed.
"""

import importlib.util
import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from helpers import random_batch
from parallel_backprop import blas_choice
from parallel_backprop.blas_choice import installed_blas, resolve_blas, select_blas
from parallel_backprop.blas_libraries import bfloat16, load_library
from parallel_backprop.precision import cpu_bf16_missing
from parallel_backprop.errors import ConfigError
from parallel_backprop.executors import EXECUTORS, make_executor
from parallel_backprop.gemm import blas_record, current_blas, gemm, use_blas
from parallel_backprop.network import Network

HAVE_MKL = "mkl" in installed_blas()
needs_mkl = pytest.mark.skipif(not HAVE_MKL, reason="MKL is not installed (the mkl extra)")
LIBRARIES = [pytest.param("openblas"), pytest.param("mkl", marks=needs_mkl)]


@pytest.fixture(params=LIBRARIES)
def library(request):
    return use_blas(request.param)


def operands(rng, m, k, n, dtype=np.float32):
    return (rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((k, n)).astype(dtype),
            rng.standard_normal((m, n)).astype(dtype))


@pytest.mark.parametrize("dtype,rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
def test_gemm_in_place_with_beta(library, dtype, rtol):
    a, b, c = operands(np.random.default_rng(0), 37, 29, 23, dtype)
    expected = 0.5 * a @ b - 2.0 * c
    out = gemm(a, b, c, alpha=0.5, beta=-2.0)
    assert out is c
    np.testing.assert_allclose(c, expected, rtol=rtol, atol=rtol)


def test_gemm_beta_zero_ignores_nan(library):
    a, b, _ = operands(np.random.default_rng(1), 5, 4, 3)
    c = np.full((5, 3), np.nan, np.float32)
    gemm(a, b, c)
    np.testing.assert_allclose(c, a @ b, rtol=1e-5)


def test_gemm_transposes_and_column_slices(library):
    # What the executors do: W[:, c0:c1] -= s * x^T @ delta[:, c0:c1], in place.
    rng = np.random.default_rng(2)
    x, delta = rng.standard_normal((31, 19), np.float32), rng.standard_normal((31, 40), np.float32)
    w = rng.standard_normal((19, 40), np.float32)
    expected = w.copy()
    expected[:, 8:24] -= 0.1 * x.T @ delta[:, 8:24]
    gemm(x.T, delta[:, 8:24], w[:, 8:24], alpha=-0.1, beta=1.0)
    np.testing.assert_allclose(w, expected, rtol=1e-5, atol=1e-5)
    # a @ b^T with b a column slice's transpose: leading dimensions, no copy
    out = np.empty((31, 16), np.float32)
    wide = rng.standard_normal((16, 50), np.float32)
    gemm(x, wide[:, 3:22].T, out)
    np.testing.assert_allclose(out, x @ wide[:, 3:22].T, rtol=1e-5, atol=1e-5)


def test_gemm_releases_the_gil(library):
    # Python keeps running in this thread while the other is inside one long product.
    a, b, c = operands(np.random.default_rng(3), 1024, 1024, 1024)
    inside, done, count = threading.Event(), threading.Event(), 0

    def product():
        inside.set()
        for _ in range(3):
            gemm(a, b, c)
        done.set()

    worker = threading.Thread(target=product)
    worker.start()
    inside.wait()
    while not done.is_set():
        count += 1
    worker.join()
    assert count > 1000


@needs_mkl
@pytest.mark.skipif(bfloat16 is None, reason="ml_dtypes is not installed")
def test_bf16_gemm_matches_float32_within_bf16_rounding():
    use_blas("mkl")
    rng = np.random.default_rng(4)
    a, b, c = operands(rng, 64, 300, 48)
    a16, b16 = a.astype(bfloat16), b.astype(bfloat16)
    out = c.copy()
    gemm(a16.T.copy().T, b16, out, alpha=0.5, beta=1.0)     # a transposed layout too
    rounded = 0.5 * a16.astype(np.float32) @ b16.astype(np.float32) + c
    np.testing.assert_allclose(out, rounded, rtol=1e-4, atol=1e-4)   # fp32 accumulation
    exact = 0.5 * a @ b + c
    assert np.linalg.norm(out - exact) <= 1e-2 * np.linalg.norm(exact)


def test_bf16_products_without_a_bf16_gemm_are_a_one_line_error():
    use_blas("openblas")
    if bfloat16 is None:
        pytest.skip("ml_dtypes is not installed")
    a = np.ones((2, 2), bfloat16)
    with pytest.raises(ConfigError, match="openblas BLAS has no bf16 GEMM") as error:
        gemm(a, a, np.zeros((2, 2), np.float32))
    assert "\n" not in str(error.value)
    with pytest.raises(ConfigError, match="--precision bf16: the openblas BLAS"):
        select_blas("openblas", "bf16")


CPU_EXECUTORS = [name for name, cls in EXECUTORS.items() if cls.device == "cpu"]


def step_under_each_blas(name: str) -> dict:
    """blas -> (loss, params) of one step of executor ``name`` from the same start."""
    network = Network((50, 67, 35, 3), ("tanh", "sigmoid", "sigmoid"), "mse")
    params = network.init_params(0)
    x, y = random_batch(network, 33, np.random.default_rng(5), np.float32)
    kwargs = {"threads": 2, "blas_threads": 2 if EXECUTORS[name].nested_blas else 1}
    results = {}
    for blas in ("openblas", "mkl"):
        with make_executor(name, network, params, batch_size=33, blas=blas, **kwargs) as ex:
            assert current_blas().name == blas
            loss = ex.step(x, y, 0.3)
            results[blas] = loss, ex.params()
    return results


def assert_same_step(results: dict) -> None:
    (loss_o, params_o), (loss_m, params_m) = results["openblas"], results["mkl"]
    assert loss_m == pytest.approx(loss_o, rel=1e-5)
    np.testing.assert_allclose(params_m, params_o, rtol=1e-5, atol=1e-6)


@needs_mkl
@pytest.mark.parametrize("name", [n for n in CPU_EXECUTORS if not EXECUTORS[n].distributed])
def test_every_executor_step_under_mkl_equals_openblas(name):
    assert_same_step(step_under_each_blas(name))


@needs_mkl
@pytest.mark.parametrize("name", [n for n in CPU_EXECUTORS if EXECUTORS[n].distributed])
def test_distributed_executor_step_under_mkl_equals_openblas(name, tmp_path):
    # One rank (MPI's singleton start) in a process of its own: this one must not start
    # MPI (test_mpi.py checks that commands do not).
    if EXECUTORS[name].unavailable():
        pytest.skip(EXECUTORS[name].unavailable())
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]);"
            "from test_blas import step_under_each_blas;"
            "r = step_under_each_blas(sys.argv[2]);"
            "np.savez(sys.argv[3], **{k: np.append(v[1], v[0]) for k, v in r.items()})")
    subprocess.run([sys.executable, "-c", code, os.path.dirname(__file__), name,
                    str(tmp_path / "r.npz")], check=True)
    with np.load(tmp_path / "r.npz") as saved:
        assert_same_step({k: (float(saved[k][-1]), saved[k][:-1]) for k in ("openblas", "mkl")})


def thread_ids() -> set[str]:
    return set(os.listdir("/proc/self/task"))


@needs_mkl
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="no /proc/self/task")
def test_two_workers_under_mkl_start_no_threads_of_their_own():
    # MKL's own limit binds one thread only: without its process-wide count, each
    # worker ran an OpenMP team of every core (2 workers x 2 threads on 2 cores).
    use_blas("mkl")
    network = Network((300, 512, 10), ("sigmoid", "sigmoid"), "mse")
    x, y = random_batch(network, 256, np.random.default_rng(6), np.float32)
    a = np.ones((256, 256), np.float32)
    gemm(a, a, a.copy())                      # MKL's runtime started on this thread
    before = thread_ids()
    with make_executor("threads", network, network.init_params(0), batch_size=256,
                       threads=2) as executor:
        for _ in range(3):
            executor.step(x, y, 0.1)
        during = thread_ids() - before
    assert len(during) == 1, f"threads started: {len(during)} (expected the one worker)"


@needs_mkl
@pytest.mark.skipif(importlib.util.find_spec("torch") is None, reason="PyTorch is not installed")
def test_mkl_after_pytorch_runs_on_its_openmp_and_computes_right():
    # PyTorch makes libgomp's omp_* global; MKL's Intel layer would call them and
    # every thread would add the whole product (about twice the result).
    code = ("import torch, numpy as np; from parallel_backprop.gemm import *\n"
            "use_blas('mkl'); rng = np.random.default_rng(0)\n"
            "a, b = rng.random((512, 784), np.float32), rng.random((784, 1024), np.float32)\n"
            "c = np.empty((512, 1024), np.float32)\n"
            "with blas_thread_limit(2): gemm(a, b, c)\n"
            "print(blas_record()['threading_layer'], float(np.abs(c - a @ b).max()))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if k != "MKL_THREADING_LAYER"})
    layer, error = done.stdout.split()
    assert layer == "gnu" and float(error) < 1e-3, done.stderr


# ---- --blas auto: the probe and its cache -------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder, and nothing decided yet in this process."""
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(blas_choice, "_decided", {})
    return tmp_path / blas_choice.CACHE_NAME


def test_auto_with_one_library_measures_nothing(cache, monkeypatch):
    monkeypatch.setattr(blas_choice, "installed_blas", lambda: ["openblas"])
    monkeypatch.setattr(blas_choice, "probe", lambda *a: pytest.fail("probed"))
    assert resolve_blas("auto") == "openblas"
    assert not cache.exists()


@needs_mkl
def test_auto_measures_once_and_caches_per_machine(cache, monkeypatch):
    started = time.perf_counter()
    chosen = resolve_blas("auto")
    assert time.perf_counter() - started < 5      # the probe is well under 1 s on a quiet core
    entries = json.loads(cache.read_text())
    (key, entry), = entries.items()
    assert entry["choice"] == chosen == min(entry["seconds"], key=entry["seconds"].get)
    assert set(entry["seconds"]) == {"openblas", "mkl"}
    assert load_library("mkl").version in key
    monkeypatch.setattr(blas_choice, "probe", lambda *a: pytest.fail("probed again"))
    assert resolve_blas("auto") == chosen
    monkeypatch.setattr(blas_choice, "_decided", {})      # another process: reads the file
    assert resolve_blas("auto") == chosen


@needs_mkl
def test_a_corrupt_cache_is_measured_again_and_rewritten(cache):
    cache.write_text("{not json")
    chosen = resolve_blas("auto")
    assert json.loads(cache.read_text())  # valid again
    assert chosen in ("openblas", "mkl")


@needs_mkl
@pytest.mark.skipif(bfloat16 is None, reason="ml_dtypes is not installed")
def test_auto_for_bf16_picks_a_library_with_a_bf16_gemm(cache):
    assert resolve_blas("auto", "bf16") == "mkl"
    assert select_blas("auto", "bf16").bf16 is not None


def test_select_blas_exports_the_choice_to_child_processes(cache):
    library = select_blas("openblas")
    assert os.environ[blas_choice.BLAS_VARIABLE] == "openblas"
    child = subprocess.run([sys.executable, "-c",
                            "from parallel_backprop.gemm import current_blas;"
                            "print(current_blas().name)"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == library.name == "openblas"


def test_a_bad_blas_name_is_a_one_line_error(monkeypatch):
    with pytest.raises(ConfigError, match=r"blas 'fast': expected one of auto, openblas, mkl"):
        resolve_blas("fast")
    child = subprocess.run([sys.executable, "-c", "from parallel_backprop.gemm import gemm;"
                            "import numpy as np; a = np.ones((2, 2)); gemm(a, a, a.copy())"],
                           capture_output=True, text=True,
                           env={**os.environ, blas_choice.BLAS_VARIABLE: "fast"})
    assert "ConfigError: $PBP_BLAS 'fast': expected one of auto, openblas, mkl" in child.stderr


# ---- the command line and the records ----------------------------------------------

def run_train(tmp_path, *args, env=None):
    metrics = tmp_path / "metrics.json"
    command = [sys.executable, "-m", "parallel_backprop.cli", "train", "--dataset", "synthetic",
               "--samples", "300", "--features", "20", "--classes", "3", "--epochs", "1",
               "--net", "20-16-3", "--metrics-json", str(metrics), *args]
    variables = {name: value for name, value in os.environ.items() if name != "PBP_BLAS"}
    variables.update(PBP_OFFLINE="1", PBP_CACHE_DIR=str(tmp_path), **(env or {}))
    done = subprocess.run(command, capture_output=True, text=True, env=variables)
    return done, (json.loads(metrics.read_text()) if done.returncode == 0 else None)


@needs_mkl
def test_blas_option_and_variable_reach_the_metrics(tmp_path):
    done, metrics = run_train(tmp_path, "--blas", "mkl", "--executor", "blas", "--threads", "2")
    assert done.returncode == 0, done.stderr
    record = metrics["blas"]
    assert record["name"] == "mkl" and record["threads"] == 2 and record["version"]
    assert record["threading_layer"] == "intel" and record["path"].endswith(".so.3")
    done, metrics = run_train(tmp_path, env={"PBP_BLAS": "openblas"})
    assert done.returncode == 0, done.stderr
    assert metrics["blas"]["name"] == "openblas" and metrics["blas"]["threads"] == 1


def test_missing_mkl_is_a_one_line_error_with_the_install_hint(tmp_path):
    # An environment without libmkl_rt: the interpreter's prefixes point elsewhere.
    code = ("import sys; sys.prefix = sys.base_prefix = sys.argv[1];"
            "from parallel_backprop.cli import main; sys.exit(main(sys.argv[2:]))")
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path), "train", "--dataset",
                           "synthetic", "--samples", "100", "--blas", "mkl"],
                          capture_output=True, text=True,
                          env={**os.environ, "PBP_OFFLINE": "1"})
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "MKL (libmkl_rt) is not installed" in lines[0]
    assert "pip install -e '.[mkl]'" in lines[0]


@needs_mkl
@pytest.mark.filterwarnings("ignore:.*has not converged")
def test_estimator_blas_parameter():
    from parallel_backprop.estimator import BackpropClassifier

    rng = np.random.default_rng(7)
    x, y = rng.standard_normal((60, 5)), rng.integers(0, 2, 60)
    BackpropClassifier((8,), max_iter=2, blas="mkl", random_state=0).fit(x, y)
    assert current_blas().name == "mkl"
    with pytest.raises(ConfigError, match="blas"):
        BackpropClassifier((8,), max_iter=1, blas="fastest").fit(x, y)


def test_environment_names_every_installed_blas_and_the_one_in_use():
    from parallel_backprop.harness.environment import environment

    use_blas("openblas")
    env = environment()
    assert {lib["internal_api"] for lib in env["blas"]} >= set(installed_blas())
    assert env["gemm_blas"] == blas_record() and env["gemm_blas"]["name"] == "openblas"


@needs_mkl
def test_bf16_ceiling_notes_a_cpu_without_bf16_instructions():
    from parallel_backprop.bench.systems import SYSTEMS, Setup, build

    assert SYSTEMS["gemm-mkl"].unavailable() is None
    setup = Setup(system="gemm-bf16", network=None, n_classes=10, batch_size=1,
                  optimizer="sgd", threads=1, executor_threads=1, executor_blas_threads=1,
                  lr=0.1, seed=0, pool_samples=1, gemm_size=64)
    workload = build(setup)
    workload.run(2)          # the operands outlive the builder (a freed c would be written)
    workload.run(2)
    assert workload.blas["name"] == "mkl" and workload.flops_per_step == 2 * 64 ** 3
    assert bool(workload.notes) == bool(cpu_bf16_missing())
