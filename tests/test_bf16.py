"""bf16 mixed precision on the CPU: products in bfloat16, accumulated and updated in float32.

A bf16 step's gradient must stay within bf16's tolerance of the float32 one,
layer by layer; every CPU executor must agree with the serial one in bf16; a
run must repeat bit for bit; and where the machine has no native bf16 path
(no AMX or AVX512-BF16, or a BLAS without a bf16 GEMM) bf16 must be refused
in one line, never emulated. The float32 -> bfloat16 converter (compiled or
NumPy's) must round to nearest even on every path.
"""

import importlib.util
import sys
import textwrap

import numpy as np
import pytest

from helpers import random_batch
from parallel_backprop import blas_choice
from parallel_backprop import gemm as gemm_module
from parallel_backprop import precision
from parallel_backprop.activations import get_activation
from parallel_backprop.backprop import gradient
from parallel_backprop.blas_choice import resolve_blas, select_blas
from parallel_backprop.blas_libraries import bfloat16, load_library, mkl_installed
from parallel_backprop.errors import ConfigError
from parallel_backprop.executors import check_options, make_executor
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig


def _bf16_skip_reason():
    reason = precision.bf16_unavailable()
    if reason is not None:
        return reason
    try:
        load_library("mkl")
    except ConfigError as exc:
        return str(exc)
    return None


SKIP_REASON = _bf16_skip_reason()
needs_bf16 = pytest.mark.skipif(SKIP_REASON is not None, reason=f"no bf16 here: {SKIP_REASON}")
needs_ml_dtypes = pytest.mark.skipif(bfloat16 is None, reason="ml_dtypes is not installed")
LR = 0.3


@pytest.fixture(autouse=True)
def restore_blas():
    """Executors in bf16 switch the process to a BLAS with bf16: put the old one back."""
    before = gemm_module.current_blas().name
    yield
    gemm_module.use_blas(before)


def network_and_batch(rows=64, seed=3, sizes=(40, 96, 50, 10)):
    # Widths that split unevenly across workers (columns go in blocks of 16).
    activations = ("tanh",) + ("sigmoid",) * (len(sizes) - 3) + ("softmax",)
    network = Network(sizes, activations, "cross-entropy")
    rng = np.random.default_rng(seed)
    params = network.init_params(rng)
    x, y = random_batch(network, rows, rng, np.float32)
    return network, params, x, y


@needs_bf16
@pytest.mark.parametrize("sizes", [(40, 96, 50, 10), (40, 60, 20, 50, 10)])
def test_bf16_gradient_is_within_bf16_tolerance_of_fp32_per_layer(sizes):
    # The second network has a hidden layer narrower than BF16_MIN_INNER: its
    # delta feeds the product below in float32, so the pass that scales it
    # must write it, where the others give only their bf16 copy and sums.
    network, params, x, y = network_and_batch(rows=128, sizes=sizes)
    loss32, grad32 = gradient(network, params, x, y)
    loss16, grad16 = gradient(network, params, x, y, precision="bf16")
    assert abs(loss16 - loss32) <= 1e-2 * abs(loss32)
    for l, ((w32, b32), (w16, b16)) in enumerate(zip(network.layers(grad32),
                                                     network.layers(grad16))):
        for what, exact, low in (("W", w32, w16), ("b", b32, b16)):
            relative = np.linalg.norm(low - exact) / np.linalg.norm(exact)
            assert relative < 1e-2, f"layer {l} {what}: relative error {relative:.3g}"
            # bf16 products, not float32 ones: the rounding must show
            assert what == "b" or relative > 1e-6, f"layer {l}: no bf16 rounding at all"


def cpu_executors():
    """(name, kwargs) for every CPU executor that runs in this process."""
    return [("serial", {}), ("threads", {"threads": 2}), ("threads", {"threads": 3}),
            ("blas", {"threads": 2}), ("hybrid", {"threads": 2, "blas_threads": 2})]


def steps(name, network, params, batches, prec="bf16", optimizer=None, **kwargs):
    # Adam moves every weight by ~lr whatever its gradient's size: a small lr
    lr = LR if optimizer is None or optimizer.name == "sgd" else 0.01
    with make_executor(name, network, params, batch_size=batches[0][0].shape[0],
                       precision=prec, optimizer=optimizer, **kwargs) as executor:
        losses = [executor.step(x, y, lr) for x, y in batches]
        return losses, executor.params()


def batches(network, seed=4, rows=(37, 37, 11)):
    rng = np.random.default_rng(seed)
    return [random_batch(network, n, rng, np.float32) for n in rows]


@needs_bf16
@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam"),
                                       OptimizerConfig("sgd", weight_decay=1e-3)],
                         ids=["sgd", "adam", "sgd-decay"])
def test_every_cpu_executor_in_bf16_agrees_with_serial_bf16(optimizer):
    network, params, _, _ = network_and_batch()
    data = batches(network)
    serial_losses, serial = steps("serial", network, params, data, optimizer=optimizer)
    _, fp32 = steps("serial", network, params, data, prec="fp32", optimizer=optimizer)
    moved = np.abs(serial - params).max()
    if optimizer is None or optimizer.name == "sgd":     # bf16 trains like fp32
        assert np.abs(serial - fp32).max() < 0.05 * moved
    for name, kwargs in cpu_executors():
        losses, got = steps(name, network, params, data, optimizer=optimizer, **kwargs)
        assert np.allclose(losses, serial_losses, rtol=1e-2), (name, kwargs)
        assert np.abs(got - serial).max() <= 1e-2 * moved, (name, kwargs)


@needs_bf16
@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("momentum")], ids=["sgd", "momentum"])
def test_workers_without_rows_add_nothing_to_the_bias(optimizer):
    # Each worker sums its rows of every delta for the bias; with fewer rows
    # than workers, the sums a worker left from an earlier step must not count.
    network, params, _, _ = network_and_batch()
    data = batches(network, rows=(37, 2, 1, 37))
    _, serial = steps("serial", network, params, data, optimizer=optimizer)
    _, got = steps("threads", network, params, data, optimizer=optimizer, threads=3)
    moved = np.abs(serial - params).max()
    assert np.abs(got - serial).max() <= 1e-2 * moved


@needs_bf16
@pytest.mark.parametrize("name,kwargs", [("serial", {}), ("threads", {"threads": 2})])
def test_bf16_runs_repeat_bit_for_bit(name, kwargs):
    network, params, _, _ = network_and_batch()
    data = batches(network)
    first = steps(name, network, params, data, **kwargs)
    second = steps(name, network, params, data, **kwargs)
    assert first[0] == second[0]
    assert np.array_equal(first[1], second[1])


@needs_bf16
@pytest.mark.parametrize("name,kwargs", cpu_executors())
@pytest.mark.parametrize("optimizer", [None, OptimizerConfig("adam")], ids=["sgd", "adam"])
def test_rows_handed_over_in_bf16_give_the_same_steps(name, kwargs, optimizer):
    # The trainer gathers bf16 executors' batches from a bf16 copy of the data
    # (step_input_dtype): the same bits as float32 rows converted each step.
    network, params, _, _ = network_and_batch()
    data = batches(network)
    as_bf16 = [(x.astype(bfloat16), y) for x, y in data]
    with make_executor(name, network, params, batch_size=37, precision="bf16",
                       **kwargs) as executor:
        assert executor.step_input_dtype() == bfloat16
    fp32_rows = steps(name, network, params, data, optimizer=optimizer, **kwargs)
    bf16_rows = steps(name, network, params, as_bf16, optimizer=optimizer, **kwargs)
    assert fp32_rows[0] == bf16_rows[0]
    assert np.array_equal(fp32_rows[1], bf16_rows[1])


@needs_bf16
def test_the_trainer_gathers_bf16_batches_for_a_bf16_executor(monkeypatch):
    from parallel_backprop.executors.serial import SerialExecutor
    from parallel_backprop.trainer import TrainConfig, train
    network, _, x, _ = network_and_batch(rows=90)
    labels = np.random.default_rng(5).integers(0, 10, 90)
    seen = []
    real_step = SerialExecutor.step

    def spying_step(self, rows, *args, **kw):
        seen.append(rows.dtype)
        return real_step(self, rows, *args, **kw)

    monkeypatch.setattr(SerialExecutor, "step", spying_step)
    config = TrainConfig(epochs=1, batch_size=32, precision="bf16")
    result = train(network, config, x, labels, progress=False, log=False)
    assert set(seen) == {bfloat16} and len(seen) == 3
    assert np.isfinite(result.params).all()


@needs_bf16
def test_bf16_predictions_follow_the_bf16_products():
    network, params, x, _ = network_and_batch(rows=50)
    with make_executor("serial", network, params, batch_size=16, precision="bf16") as low, \
            make_executor("serial", network, params, batch_size=16) as exact:
        got, want = low.predict(x), exact.predict(x)
    assert not np.array_equal(got, want)
    assert np.abs(got - want).max() < 2e-2


@needs_bf16
def test_bf16_switches_to_a_blas_with_a_bf16_gemm():
    network, params, x, y = network_and_batch()
    gemm_module.use_blas("openblas")
    with make_executor("serial", network, params, batch_size=64, precision="bf16") as executor:
        executor.step(x, y, LR)
    assert gemm_module.current_blas().bf16 is not None


@needs_ml_dtypes
def test_a_blas_without_bf16_refuses_bf16_products_in_one_line():
    gemm_module.use_blas("openblas")
    a = np.ones((4, 3), bfloat16)
    with pytest.raises(ConfigError, match="no bf16 GEMM") as caught:
        gemm_module.gemm(a, np.ones((3, 2), bfloat16), np.zeros((4, 2), np.float32))
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="the openblas BLAS has no bf16 GEMM") as caught:
        select_blas("openblas", "bf16")
    assert "\n" not in str(caught.value)
    assert resolve_blas("auto", "bf16") == "mkl"


def test_a_cpu_without_native_bf16_is_refused_in_one_line(monkeypatch):
    # An AVX-512 CPU without its bf16 instructions (AMD EPYC of Zen 3, Intel before Cooper Lake).
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512bw", "fma"})
    for name in ("serial", "threads", "blas", "hybrid", "mpi"):
        with pytest.raises(ConfigError, match="no native bf16 products") as caught:
            check_options(name, precision="bf16")
        assert "\n" not in str(caught.value) and "emulated" in str(caught.value)
    assert precision.cpu_bf16_missing({"amx_bf16"}) is None
    assert precision.cpu_bf16_missing({"avx512_bf16"}) is None


@pytest.mark.skipif(bfloat16 is None or not mkl_installed(), reason="needs MKL and ml_dtypes")
def test_a_bf16_gemm_measured_slower_than_fp32_is_refused_in_one_line(monkeypatch):
    # The CPU's flags promise bf16, but the library emulates it (another vendor's CPU):
    # the probe's timings, cached per machine, decide.
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512_bf16"})
    seconds = {"fp32": 0.010, "bf16": 0.031}
    monkeypatch.setattr(blas_choice, "cached_probe", lambda libraries, precision_: {
        "choice": libraries[0].name, "seconds": {libraries[0].name: seconds[precision_]}})
    for name in ("serial", "threads"):
        with pytest.raises(ConfigError, match="took 3.1x the time of its fp32") as caught:
            check_options(name, precision="bf16")
        assert "\n" not in str(caught.value) and "emulated, not native" in str(caught.value)
    seconds["bf16"] = 0.004
    assert check_options("serial", precision="bf16") is not None


def converter_inputs():
    rng = np.random.default_rng(0)
    # Normal numbers only: AVX512-BF16's conversion flushes float32 subnormals
    # (below 1.2e-38, never met in training) to zero; see test_subnormals_*.
    values = (rng.standard_normal(1000) * 10.0 ** rng.integers(-37, 38, 1000)).astype(np.float32)
    values[np.abs(values) < np.finfo(np.float32).tiny] = 1.0
    ties = np.array([0x3F808000, 0x3F818000, 0x3F80FFFF, 0x7F7FFFFF],
                    np.uint32).view(np.float32)       # halfway cases both ways, the largest
    special = np.array([0.0, -0.0, np.inf, -np.inf, -3.4e38], np.float32)
    return np.concatenate([values, ties, special])


@needs_ml_dtypes
@pytest.mark.parametrize("length", [0, 1, 15, 16, 17, 31, 32, 33, 1011])
def test_converters_round_to_nearest_even_like_numpy(length):
    source = converter_inputs()[:length]
    expected = source.astype(bfloat16).view(np.uint16)
    out = np.empty(source.shape, bfloat16)
    assert np.array_equal(precision.to_bf16(source, out).view(np.uint16), expected)
    native = sys.modules.get("parallel_backprop._bf16")
    if native is None:
        pytest.skip("the compiled converter is not built (pip install -e . builds it)")
    for convert in (native.to_bf16, native.to_bf16_portable):
        bits = np.zeros(source.shape, np.uint16)
        convert(source, bits)
        assert np.array_equal(bits, expected), convert.__name__


@needs_ml_dtypes
def test_converters_write_only_the_columns_asked():
    matrix = converter_inputs()[:1000].reshape(40, 25)
    out = np.zeros((40, 25), bfloat16)
    precision.to_bf16(matrix[:, 7:20], out[:, 7:20])
    assert np.array_equal(out[:, 7:20], matrix[:, 7:20].astype(bfloat16))
    assert not out[:, :7].any() and not out[:, 20:].any()


def test_subnormals_become_zero_or_their_rounding():
    source = np.array([1e-45, -1e-40, 1e-39], np.float32)
    got = precision.to_bf16(source, np.empty(3, bfloat16)).astype(np.float32)
    exact = source.astype(bfloat16).astype(np.float32)
    assert ((got == exact) | (got == 0)).all()


def test_nan_stays_nan():
    if "parallel_backprop._bf16" not in sys.modules:
        pytest.skip("the compiled converter is not built (pip install -e . builds it)")
    native = sys.modules["parallel_backprop._bf16"]
    source = np.array([np.nan, -np.nan, 1.0], np.float32)
    for convert in (native.to_bf16, native.to_bf16_portable):
        bits = np.zeros(3, np.uint16)
        convert(source, bits)
        assert (bits[:2] & 0x7F80 == 0x7F80).all() and (bits[:2] & 0x7F).any(), convert
        assert bits[2] == 0x3F80


MPI_SCRIPT = """
    import numpy as np
    from parallel_backprop.executors import make_executor
    from parallel_backprop.network import Network

    network = Network((40, 96, 50, 10), ("tanh", "sigmoid", "softmax"), "cross-entropy")
    rng = np.random.default_rng(3)
    params = network.init_params(rng)
    data = [(rng.standard_normal((n, 40)).astype(np.float32),
             network.targets(rng.integers(0, 10, n))) for n in (37, 37, 11)]
    results = {}
    for name in ("mpi", "serial"):
        with make_executor(name, network, params, batch_size=37, precision="bf16") as executor:
            losses = [executor.step(x, y, 0.3) for x, y in data]
            results[name] = (losses, executor.params())
    moved = np.abs(results["serial"][1] - params).max()
    assert np.allclose(results["mpi"][0], results["serial"][0], rtol=1e-2)
    assert np.abs(results["mpi"][1] - results["serial"][1]).max() <= 1e-2 * moved
    print("ok")
"""


@needs_bf16
def test_mpi_in_bf16_agrees_with_serial_bf16(tmp_path):
    test_mpi = pytest.importorskip("test_mpi")
    if test_mpi.MPIEXEC is None:
        pytest.skip("needs mpi4py and mpiexec: pip install -e '.[mpi]'")
    script = tmp_path / "bf16_mpi.py"
    script.write_text(textwrap.dedent(MPI_SCRIPT))
    code, out, err, _ = test_mpi.run_job([test_mpi.MPIEXEC, "-n", "2", sys.executable,
                                          str(script)])
    assert code == 0, err
    assert out.count("ok") == 2, out


@needs_bf16
@pytest.mark.filterwarnings("ignore:.*max_iter")
def test_estimators_train_in_bf16_like_fp32():
    estimator = pytest.importorskip("parallel_backprop.estimator")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    scores = {}
    for prec in ("fp32", "bf16"):
        model = estimator.BackpropClassifier((32,), solver="sgd", learning_rate_init=0.1,
                                             max_iter=20, random_state=0, precision=prec)
        scores[prec] = model.fit(x, y).score(x, y)
    assert scores["bf16"] > 0.9 and abs(scores["bf16"] - scores["fp32"]) < 0.05, scores
    regressor = estimator.BackpropRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0,
                                            precision="bf16")
    assert regressor.fit(x, x[:, 0]).predict(x).shape == (300,)


def test_estimators_name_a_bad_precision():
    estimator = pytest.importorskip("parallel_backprop.estimator")
    x = np.zeros((10, 3), np.float32)
    with pytest.raises(ConfigError, match=r"precision.*expected one of") as caught:
        estimator.BackpropClassifier(precision="fp8").fit(x, np.arange(10) % 2)
    assert "\n" not in str(caught.value)


# ---- pbp bench at matched precision ---------------------------------------------------

def test_bench_plans_each_system_at_the_precisions_it_computes_in(monkeypatch):
    from parallel_backprop.bench import runner
    from parallel_backprop.bench.config import BenchConfig, Timing

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"amx_bf16"})
    config = BenchConfig(systems=("serial", "threads", "torch", "torch-bf16", "gemm"),
                         nets=("20-16-3",), batch_sizes=(8,), threads=(2,),
                         precisions=("fp32", "bf16"), timing=Timing(0, 0, 1))
    runs = [(r.system, r.precision) for r in runner.plan(config) if r.net]
    assert runs == [("serial", "fp32"), ("threads", "fp32"), ("torch", "fp32"),
                    ("serial", "bf16"), ("threads", "bf16"), ("torch-bf16", "bf16")]
    assert all(r.record().precision == r.precision for r in runner.plan(config))
    # Without native bf16 the executors' bf16 runs are skipped with the reason, the peer runs.
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f"})
    skipped = {(r.system, r.precision): r.skip for r in runner.plan(config)}
    assert "no native bf16" in skipped["threads", "bf16"] and skipped["threads", "fp32"] is None
    assert skipped["torch-bf16", "bf16"] is None or "torch" in skipped["torch-bf16", "bf16"]


def test_bench_refuses_an_unknown_precision_in_one_line():
    from parallel_backprop.bench.config import BenchConfig

    with pytest.raises(ConfigError, match="--precisions 'fp8': expected some of fp32"):
        BenchConfig(precisions=("fp32", "fp8"))


def test_bf16_records_are_drawn_beside_fp32_and_speedups_are_over_fp32_serial():
    from parallel_backprop.bench.plots import system_colors, system_style
    from parallel_backprop.harness import Measurement, series, speedups

    records = [Measurement("serial", "executor", precision=p, status="ok", samples_per_s=rate)
               for p, rate in (("fp32", 100.0), ("bf16", 250.0))]
    records.append(Measurement("torch-bf16", "peer", precision="bf16", status="ok",
                               samples_per_s=150.0))
    assert speedups(records, lambda r: None) == [1.0, 2.5, 1.5]
    docs = [r.to_dict() for r in records]
    assert [series(d) for d in docs] == ["serial", "serial bf16", "torch-bf16"]
    colors = system_colors(docs)
    assert colors["serial"] == colors["serial bf16"] != colors["torch-bf16"]
    assert system_style("serial bf16")["linestyle"] == ":"
    assert system_style("serial")["linestyle"] == "-"


@pytest.mark.parametrize("system", ["torch-bf16", "jax-bf16", "serial"])
def test_bf16_workloads_take_steps(system):
    from parallel_backprop.bench.systems import SYSTEMS, Setup, build

    needs = SYSTEMS[system].requires
    if needs and importlib.util.find_spec(needs[0]) is None:
        pytest.skip(f"{needs[0]} not installed")
    if system == "serial" and SKIP_REASON:
        pytest.skip(SKIP_REASON)
    network = Network((6, 5, 3), ("sigmoid", "sigmoid"))
    setup = Setup(system=system, network=network, n_classes=3, batch_size=4, threads=1,
                  executor_threads=1, executor_blas_threads=1, lr=0.1, seed=0,
                  pool_samples=8, gemm_size=8, precision="bf16")
    workload = build(setup)
    try:
        workload.run(3)
    finally:
        workload.close()


def test_study_report_compares_bf16_executors_with_bf16_peers():
    from parallel_backprop.study.report import best_rows

    def record(system, kind, prec, rate):
        return {"system": system, "kind": kind, "precision": prec, "status": "ok",
                "net": "784-1024-10", "net_name": "Net-1h", "batch_size": 128, "threads": 2,
                "samples_per_s": rate, "speedup_vs_serial": None, "gflops": 1.0,
                "efficiency": None}

    grid = {"records": [record("threads", "executor", "fp32", 100.0),
                        record("torch", "peer", "fp32", 90.0),
                        record("threads", "executor", "bf16", 300.0),
                        record("torch-bf16", "peer", "bf16", 200.0)]}
    rows = best_rows(grid)
    assert [(r["best"]["precision"], r["peer"]["system"], r["peer_ratio"]) for r in rows] == \
        [("fp32", "torch", 100 / 90), ("bf16", "torch-bf16", 1.5)]


@needs_bf16
def test_a_bf16_step_is_the_same_with_and_without_the_compiled_converter():
    # The forward sigmoid pass computes its own exp (not bit for bit NumPy's: see
    # the tests of it below), so it is off here; the backward pass is NumPy's bits.
    network, params, _, _ = network_and_batch()
    data = batches(network)
    before = precision.use_native_converter(True)
    passes = precision.use_fused_passes(False, True)
    try:
        native = steps("threads", network, params, data, threads=2)
        precision.use_native_converter(False)
        fallback = steps("threads", network, params, data, threads=2)
    finally:
        precision.use_native_converter(before)
        precision.use_fused_passes(*passes)
    assert native[0] == fallback[0] and np.array_equal(native[1], fallback[1])


@needs_bf16
def test_the_one_pass_sigmoid_trains_as_numpys_does():
    network, params, _, _ = network_and_batch()
    data = batches(network)
    one_pass = steps("threads", network, params, data, threads=2)
    passes = precision.use_fused_passes(False, True)
    try:
        numpys = steps("threads", network, params, data, threads=2)
    finally:
        precision.use_fused_passes(*passes)
    moved = np.abs(numpys[1] - params).max()
    assert np.allclose(one_pass[0], numpys[0], rtol=1e-3)
    assert np.abs(one_pass[1] - numpys[1]).max() < 1e-2 * moved


@needs_ml_dtypes
def test_any_layout_converts():
    matrix = converter_inputs()[:1000].reshape(40, 25)
    for source in (matrix.T, matrix[::3, ::2], matrix.astype(np.float64)):
        out = np.empty(source.shape, bfloat16)
        assert np.array_equal(precision.to_bf16(source, out), source.astype(bfloat16))


def sigmoid_pass_cases(columns: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """A float32 matrix whose rows have a stride (a column block) and a second operand."""
    rng = np.random.default_rng(columns)
    first = (rng.standard_normal((5, 80)) * scale).astype(np.float32)[:, :columns]
    return first, rng.random((5, columns), dtype=np.float32)


def sigmoid_scaled_by_numpy(delta: np.ndarray, a: np.ndarray) -> np.ndarray:
    """``delta * a * (1 - a)`` by the float32 activation's own NumPy pass, on a copy."""
    scaled = delta.copy()
    get_activation("sigmoid").scale_delta(scaled, a, None, np.empty_like(scaled))
    return scaled


def check_both_paths(run, start: np.ndarray, expected: np.ndarray) -> None:
    """``run(values, out)`` through NumPy's passes and through the compiled ones gives
    ``expected`` and its bf16 copy, bit for bit."""
    expected_bits = expected.astype(bfloat16).view(np.uint16)
    for fused in (False, True):
        before = precision.use_fused_passes(fused, fused)
        try:
            got, out = start.copy(), np.empty(start.shape, bfloat16)
            run(got, out)
        finally:
            precision.use_fused_passes(*before)
        assert np.array_equal(got, expected), fused
        assert np.array_equal(out.view(np.uint16), expected_bits), fused


def compiled_module():
    native = sys.modules.get("parallel_backprop._bf16")
    if native is None:
        pytest.skip("the compiled converter is not built (pip install -e . builds it)")
    return native


@needs_ml_dtypes
@pytest.mark.parametrize("columns", [1, 31, 32, 33, 70])
def test_the_sigmoid_scale_and_its_bf16_copy_match_numpys_passes_bit_for_bit(columns):
    delta, a = sigmoid_pass_cases(columns, 1.0)
    sigmoid = get_activation("sigmoid")
    expected = sigmoid_scaled_by_numpy(delta, a)
    check_both_paths(lambda got, out: precision.scale_to_bf16(sigmoid, got, a, None,
                                                              np.empty_like(got), out),
                     delta, expected)
    native = compiled_module()
    for kernel in (native.sigmoid_scale_to_bf16, native.sigmoid_scale_to_bf16_portable):
        check_both_paths(lambda got, out: kernel(got, a, out.view(np.uint16)), delta, expected)


@needs_ml_dtypes
@pytest.mark.parametrize("columns", [1, 31, 32, 33, 70])
def test_the_sigmoid_scale_sums_its_columns_as_numpy_does(columns):
    # The bias gradient: NumPy's sum over axis 0 adds the rows in order, as the
    # compiled pass does, so every path gives the same bits.
    delta, a = sigmoid_pass_cases(columns, 1.0)
    sigmoid = get_activation("sigmoid")
    scaled = sigmoid_scaled_by_numpy(delta, a)
    expected = scaled.sum(axis=0)
    runs = []
    for fused in (False, True):
        before = precision.use_fused_passes(fused, fused)
        try:
            sums = np.full(columns, np.nan, np.float32)    # overwritten, not added to
            precision.scale_to_bf16(sigmoid, delta.copy(), a, None, np.empty_like(delta),
                                    np.empty(delta.shape, bfloat16), sums)
        finally:
            precision.use_fused_passes(*before)
        runs.append(sums)
    native = compiled_module()
    expected_bits = scaled.astype(bfloat16).view(np.uint16)
    for kernel in (native.sigmoid_scale_to_bf16, native.sigmoid_scale_to_bf16_portable):
        sums, got, bits = np.full(columns, np.nan, np.float32), delta.copy(), \
            np.empty(delta.shape, np.uint16)
        kernel(got, a, bits, sums)
        assert np.array_equal(got, delta)              # with sums, delta is only read
        assert np.array_equal(bits, expected_bits)
        runs.append(sums)
    for sums in runs:
        assert np.array_equal(sums, expected)
    with pytest.raises(ValueError, match="shapes differ"):
        kernel(delta.copy(), a, np.empty(delta.shape, np.uint16), np.empty(columns + 1, np.float32))


def sigmoid_inputs() -> np.ndarray:
    """Pre-activations over the whole float32 range, the special values included."""
    rng = np.random.default_rng(8)
    return np.concatenate([
        np.linspace(-120, 120, 24001, dtype=np.float32),
        (rng.standard_normal(5000) * 6).astype(np.float32),
        np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38,
                  np.finfo(np.float32).tiny], np.float32)])


@needs_ml_dtypes
@pytest.mark.parametrize("columns", [1, 31, 32, 33, 70])
def test_the_one_pass_sigmoid_is_within_3_ulp_and_its_bf16_copy_is_its_rounding(columns):
    native = compiled_module()
    values = sigmoid_inputs()
    values = values[:len(values) // columns * columns].reshape(-1, columns)
    bias = np.linspace(-0.5, 0.5, columns, dtype=np.float32)
    pre = values + bias                                        # rounded as the pass rounds it
    with np.errstate(over="ignore"):
        exact = 1.0 / (1.0 + np.exp(-pre.astype(np.float64)))
    results = []
    for kernel in (native.sigmoid_to_bf16, native.sigmoid_to_bf16_portable):
        got, out = values.copy(), np.empty(values.shape, np.uint16)
        kernel(got, bias, out)
        assert np.array_equal(out, got.astype(bfloat16).view(np.uint16)), kernel.__name__
        results.append(got)
    got = results[0]
    assert np.array_equal(got, results[1], equal_nan=True)   # any CPU, the same values
    assert np.array_equal(np.isnan(got), np.isnan(pre))
    held = pre >= -80                  # below, held at sigmoid(-80) < 2e-35
    ulps = np.abs(got[held] - exact[held]) / np.spacing(exact[held].astype(np.float32))
    assert ulps.max() <= 3
    assert (got[~held & ~np.isnan(pre)] < 2e-35).all()
    assert got[pre == np.inf].tolist() == [1.0] * int((pre == np.inf).sum())


@needs_ml_dtypes
def test_activate_to_bf16_takes_the_one_pass_sigmoid_and_numpys_without_it():
    sigmoid = get_activation("sigmoid")
    z, bias = sigmoid_pass_cases(33, 4.0)
    bias = bias[0] - 0.5
    numpys = sigmoid.function(z + bias)
    passes = precision.use_fused_passes(False, True)
    try:
        got, out = z.copy(), np.empty(z.shape, bfloat16)
        precision.activate_to_bf16(sigmoid, got, bias, out)
    finally:
        precision.use_fused_passes(*passes)
    assert np.array_equal(got, numpys) and np.array_equal(out, numpys.astype(bfloat16))
    native = compiled_module()
    want, want_bits = z.copy(), np.empty(z.shape, np.uint16)
    native.sigmoid_to_bf16(want, bias, want_bits)
    got, out = z.copy(), np.empty(z.shape, bfloat16)
    precision.activate_to_bf16(sigmoid, got, bias, out)
    assert np.array_equal(got, want) and np.array_equal(out.view(np.uint16), want_bits)
