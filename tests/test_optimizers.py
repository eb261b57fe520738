"""Every update rule of optim on the CPU executors, and per-row sample weights.

Checked: every CPU executor (threads 1-4, blas, hybrid 2x1) takes the serial
executor's steps with every rule, with and without weight decay, on odd
batch sizes; the serial executor is the float64 reference update on the
float64 gradient; a run resumed from ``optimizer_state()`` continues bit for
bit; a weighted step is the unweighted step on rows repeated by their
integer weights, and the weighted gradient is the finite-difference one;
MPI ranks (2 and 4) take the serial steps with adam and momentum; the
compiled update pass (``parallel_backprop._fused``) equals NumPy's passes bit
for bit, alone and inside the executors.
"""

import re
import sys
import textwrap

import numpy as np
import pytest

from helpers import assert_allclose_verbose, random_batch
from parallel_backprop.backprop import gradient
from parallel_backprop.errors import ConfigError
from parallel_backprop import optim
from parallel_backprop.executors import OptimizerState, make_executor
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig, numpy_apply, reference_step

# Hidden widths that the threads executor splits into several column blocks
# (16-column aligned) for up to 4 workers; the output goes to worker 0.
NETWORK = Network((11, 70, 40, 3), ("tanh", "sigmoid", "softmax"), "cross-entropy")
CONFIGS = {
    "sgd": OptimizerConfig("sgd"),
    "sgd-wd": OptimizerConfig("sgd", weight_decay=0.05),
    "momentum": OptimizerConfig("momentum", momentum=0.8),
    "momentum-wd": OptimizerConfig("momentum", momentum=0.9, weight_decay=0.01),
    "nesterov": OptimizerConfig("nesterov", momentum=0.7, weight_decay=0.02),
    "adam": OptimizerConfig("adam"),
    "adam-wd": OptimizerConfig("adam", beta1=0.8, beta2=0.99, weight_decay=0.01),
    "adamw": OptimizerConfig("adamw", weight_decay=0.1),
}
EXECUTORS = [("threads", 1, 1), ("threads", 2, 1), ("threads", 3, 1), ("threads", 4, 1),
             ("blas", 2, 1), ("hybrid", 2, 1)]
ROWS = (13, 7, 13, 1, 9)          # odd batches, one of a single row
LR = 0.05


def batches(dtype=np.float32, seed=3, weighted=False):
    rng = np.random.default_rng(seed)
    for rows in ROWS:
        x, y = random_batch(NETWORK, rows, rng, dtype)
        weights = rng.uniform(0.0, 3.0, rows).astype(np.float32) if weighted else None
        yield x, y, weights


def run_steps(name, config, params, *, threads=1, blas_threads=1, weighted=False,
              dtype=np.float32):
    """Params, optimizer state and losses after the steps of :func:`batches`."""
    with make_executor(name, NETWORK, params, batch_size=max(ROWS), threads=threads,
                       blas_threads=blas_threads, optimizer=config) as executor:
        losses = [executor.step(x, y, LR, weights)
                  for x, y, weights in batches(dtype, weighted=weighted)]
        return executor.params(), executor.optimizer_state(), losses


def weight_mask(network):
    """(P,) bool: True where the flat parameters hold weights (not biases)."""
    mask = np.zeros(network.n_params, bool)
    for weights, _ in network.layers(mask):
        weights[...] = True
    return mask


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("optimizer", list(CONFIGS))
def test_every_cpu_executor_takes_the_serial_steps(optimizer, weighted):
    config = CONFIGS[optimizer]
    params = NETWORK.init_params(1)
    expected, expected_state, expected_losses = run_steps("serial", config, params,
                                                          weighted=weighted)
    assert expected_state.step == len(ROWS)
    assert expected_state.buffers.shape == (config.n_buffers, NETWORK.n_params)
    for name, threads, blas_threads in EXECUTORS:
        what = f"{name} {threads}x{blas_threads} {optimizer}"
        actual, state, losses = run_steps(name, config, params, threads=threads,
                                          blas_threads=blas_threads, weighted=weighted)
        # Adam divides by the gradient's own size: an entry whose mean gradient
        # is a cancellation near float32 rounding moves by an amount (at most lr
        # a step) that rounding decides. Seen: 1.9e-6 on one entry of 3803.
        atol = 1e-4 * LR if config.n_buffers == 2 else 1e-6 * np.abs(expected).max()
        assert_allclose_verbose(actual, expected, rtol=1e-5, atol=atol, what=what)
        assert state.step == expected_state.step
        for i, buffer in enumerate(state.buffers):
            reference = expected_state.buffers[i]
            assert_allclose_verbose(buffer, reference, rtol=1e-4,
                                    atol=1e-5 * np.abs(reference).max(),
                                    what=f"{what} state {i}")
        assert_allclose_verbose(losses, expected_losses, rtol=1e-5, what=f"{what} losses")


needs_compiled = pytest.mark.skipif(optim.native is None, reason="parallel_backprop._fused "
                                    "was not built (no C compiler at install)")


@pytest.fixture(params=["compiled", "numpy"])
def rule_path(request, monkeypatch):
    """Run the test with the compiled update pass, then with NumPy's passes."""
    if request.param == "compiled" and optim.native is None:
        pytest.skip("parallel_backprop._fused was not built (no C compiler at install)")
    if request.param == "numpy":
        monkeypatch.setattr(optim, "native", None)
    return request.param


@pytest.mark.parametrize("name,threads", [("serial", 1), ("threads", 3)])
@pytest.mark.parametrize("optimizer", list(CONFIGS))
def test_float64_steps_are_the_reference_update(optimizer, name, threads, rule_path):
    config = CONFIGS[optimizer]
    params = NETWORK.init_params(2, np.float64)
    actual, state, _ = run_steps(name, config, params, threads=threads, weighted=True,
                                 dtype=np.float64)
    expected, buffers = params.copy(), config.new_state(NETWORK.n_params, np.float64)
    for t, (x, y, weights) in enumerate(batches(np.float64, weighted=True), start=1):
        _, grad = gradient(NETWORK, expected, x, y, weights=weights.astype(np.float64))
        reference_step(config, expected, grad / x.shape[0], buffers, LR, t,
                       weight_mask(NETWORK))
    assert_allclose_verbose(actual, expected, rtol=1e-10, atol=1e-13, what=optimizer)
    assert_allclose_verbose(state.buffers, buffers, rtol=1e-9, atol=1e-13,
                            what=f"{optimizer} state")


@pytest.mark.parametrize("name,threads", [("serial", 1), ("threads", 2), ("hybrid", 2)])
@pytest.mark.parametrize("optimizer", ["momentum", "adam-wd", "adamw", "sgd-wd"])
def test_a_resumed_run_continues_bit_for_bit(optimizer, name, threads):
    config = CONFIGS[optimizer]
    params = NETWORK.init_params(4)
    steps = list(batches(weighted=True))
    options = dict(batch_size=max(ROWS), threads=threads, optimizer=config)
    with make_executor(name, NETWORK, params, **options) as whole:
        for x, y, weights in steps:
            whole.step(x, y, LR, weights)
        expected, expected_state = whole.params(), whole.optimizer_state()
    with make_executor(name, NETWORK, params, **options) as first:
        for x, y, weights in steps[:2]:
            first.step(x, y, LR, weights)
        halfway, state = first.params(), first.optimizer_state()
    first_state = state.buffers.copy()
    with make_executor(name, NETWORK, halfway, optimizer_state=state, **options) as second:
        for x, y, weights in steps[2:]:
            second.step(x, y, LR, weights)
        actual, actual_state = second.params(), second.optimizer_state()
    assert np.array_equal(actual, expected)
    assert np.array_equal(actual_state.buffers, expected_state.buffers)
    assert actual_state.step == expected_state.step == len(steps)
    assert np.array_equal(state.buffers, first_state)   # the executor took a copy


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("optimizer", list(CONFIGS))
def test_compiled_pass_equals_numpy_passes_bit_for_bit(optimizer, dtype):
    config = CONFIGS[optimizer]
    rng = np.random.default_rng(11)
    # A column block of a (37, 300) layer: rows of 150 contiguous entries, strided;
    # and a flat range. Moments of mixed sizes, so sqrt and division are exercised.
    blocks = [(slice(None), slice(70, 220)), slice(None)]
    for shape, block in zip(((37, 300), (5001,)), blocks):
        arrays = [rng.standard_normal(shape).astype(dtype) for _ in range(2)]
        arrays += [(np.abs(rng.standard_normal(shape)) * 10.0 ** rng.integers(-8, 0, shape)
                    ).astype(dtype) for _ in range(config.n_buffers)]
        compiled, passes = ([a.copy() for a in arrays] for _ in range(2))
        for t, decay in ((1, True), (2, False), (30, True)):
            gradient_ = 0.01 * rng.standard_normal(shape).astype(dtype)
            optim.apply(config, compiled[0][block], gradient_.copy()[block],
                        [a[block] for a in compiled[2:]], 0.03, t, decay=decay, scratch=None)
            numpy_apply(config, passes[0][block], gradient_.copy()[block],
                        [a[block] for a in passes[2:]], 0.03, t, decay=decay,
                        scratch=np.empty_like(passes[0][block]))
        for mine, theirs in zip(compiled, passes):
            assert mine.dtype == dtype and np.array_equal(mine, theirs), (optimizer, shape)
        assert not np.array_equal(compiled[0], arrays[0])


@needs_compiled
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_compiled_momentum_descent_equals_numpy_passes(dtype, monkeypatch):
    rng = np.random.default_rng(13)
    p, v = (rng.standard_normal((23, 90)).astype(dtype) for _ in range(2))
    results = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(optim, "native", None)
        mine_p, mine_v = p.copy(), v.copy()
        for wd in (0.01, 0.0):
            optim.descend(mine_p[:, 10:80], mine_v[:, 10:80], 0.05, wd,
                          np.empty((23, 70), dtype))
        results.append((mine_p, mine_v))
    (p1, v1), (p2, v2) = results
    assert np.array_equal(p1, p2) and np.array_equal(v1, v2)
    assert not np.array_equal(p1, p) and not np.array_equal(v1, v)
    assert np.array_equal(p1[:, :10], p[:, :10]) and np.array_equal(v1[:, 80:], v[:, 80:])


@needs_compiled
def test_compiled_pass_refuses_arrays_that_do_not_match():
    p, g, v = (np.zeros((4, 6), np.float32) for _ in range(3))
    with pytest.raises(ValueError, match="share one shape and type"):
        optim.native.momentum(p, g, v[:, :5], 0.9, 0.1, 0.0, False)
    with pytest.raises(ValueError, match="share one shape and type"):
        optim.native.sgd(p, g.astype(np.float64), 0.1, 0.0)
    with pytest.raises(ValueError, match="contiguous rows"):
        optim.native.sgd(p[:, ::2], g[:, ::2], 0.1, 0.0)
    with pytest.raises(ValueError, match="share one shape and type"):
        optim.native.sgd(p, np.zeros((), np.float32), 0.1, 0.0)
    with pytest.raises(ValueError, match="1 or 2"):
        optim.native.sgd(np.zeros((), np.float32), np.zeros((), np.float32), 0.1, 0.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        optim.native.sgd(p.astype(np.int32), g.astype(np.int32), 0.1, 0.0)
    with pytest.raises(TypeError, match="takes 4 arguments"):
        optim.native.sgd(p, g, 0.1)


@needs_compiled
@pytest.mark.parametrize("name,threads", [("serial", 1), ("threads", 2), ("threads", 3),
                                          ("hybrid", 2)])
@pytest.mark.parametrize("optimizer", ["momentum-wd", "nesterov", "adam-wd", "adamw"])
def test_executors_take_the_same_steps_without_the_compiled_pass(optimizer, name, threads,
                                                                 monkeypatch):
    config = CONFIGS[optimizer]
    params = NETWORK.init_params(12)
    compiled = run_steps(name, config, params, threads=threads, weighted=True)
    monkeypatch.setattr(optim, "native", None)
    passes = run_steps(name, config, params, threads=threads, weighted=True)
    assert np.array_equal(compiled[0], passes[0])
    assert np.array_equal(compiled[1].buffers, passes[1].buffers)
    assert compiled[2] == passes[2]


@pytest.mark.parametrize("name,threads", [("serial", 1), ("threads", 2)])
@pytest.mark.parametrize("optimizer", ["momentum-wd", "adam-wd"])
def test_bf16_products_see_every_update(optimizer, name, threads, rule_path):
    # The bf16 copy of W that products read is refreshed after the rule (on a
    # worker's columns, or on flat ranges): else the loss would not follow fp32's.
    bf16_test = pytest.importorskip("test_bf16")
    if bf16_test.SKIP_REASON is not None:
        pytest.skip(f"no bf16 here: {bf16_test.SKIP_REASON}")
    from parallel_backprop import gemm as gemm_module
    before = gemm_module.current_blas().name
    config, rng = CONFIGS[optimizer], np.random.default_rng(14)
    x, y = random_batch(NETWORK, 64, rng, np.float32)
    losses = {}
    try:
        for precision in ("fp32", "bf16"):
            with make_executor(name, NETWORK, NETWORK.init_params(15), batch_size=64,
                               threads=threads, precision=precision,
                               optimizer=config) as executor:
                losses[precision] = [executor.step(x, y, 0.02 if "adam" in optimizer else 0.3)
                                     for _ in range(8)]
    finally:
        gemm_module.use_blas(before)
    assert losses["fp32"][-1] < 0.85 * losses["fp32"][0]       # a stale copy would show
    assert losses["bf16"][-1] == pytest.approx(losses["fp32"][-1], rel=0.02), losses


@pytest.mark.parametrize("name,threads", [("serial", 1), ("threads", 3)])
@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "adam-wd"])
def test_integer_weights_are_repeated_rows(optimizer, name, threads):
    config = CONFIGS[optimizer]
    rng = np.random.default_rng(6)
    x, y = random_batch(NETWORK, 8, rng)
    counts = np.array([2, 0, 1, 3, 0, 1, 1, 0])       # sums to 8: the same mean's n
    weights = counts.astype(np.float32)
    params = NETWORK.init_params(7, np.float64)
    results = []
    for batch_x, batch_y, batch_weights in ((x, y, weights),
                                            (np.repeat(x, counts, axis=0),
                                             np.repeat(y, counts, axis=0), None)):
        with make_executor(name, NETWORK, params, batch_size=8, threads=threads,
                           optimizer=config) as executor:
            loss = executor.step(batch_x, batch_y, LR, batch_weights)
            loss += executor.step(batch_x, batch_y, LR, batch_weights)
            results.append((loss, executor.params()))
    (weighted_loss, weighted), (repeated_loss, repeated) = results
    assert weighted_loss == pytest.approx(repeated_loss, rel=1e-12)
    assert_allclose_verbose(weighted, repeated, rtol=1e-11, atol=1e-14, what=optimizer)


@pytest.mark.parametrize("network", [
    NETWORK,
    Network((5, 8, 4), ("relu", "sigmoid"), "mse"),
    Network((6, 7, 1), ("tanh", "sigmoid"), "cross-entropy"),
    Network((4, 6, 3), ("sigmoid", "softmax"), "mse"),
], ids=["softmax-ce", "sigmoid-mse", "binary-ce", "softmax-mse"])
def test_weighted_gradient_is_the_finite_difference_one(network):
    rng = np.random.default_rng(8)
    params = network.init_params(9, np.float64)
    params += 0.1 * rng.standard_normal(params.shape)   # biases away from zero too
    x, y = random_batch(network, 6, rng)
    weights = rng.uniform(0.0, 2.0, 6)
    loss, grad = gradient(network, params, x, y, weights=weights)
    plain_loss, _ = gradient(network, params, x, y)
    assert loss != pytest.approx(plain_loss)            # the weights matter
    h = 1e-6
    for i in rng.choice(network.n_params, 25, replace=False):
        step = np.zeros_like(params)
        step[i] = h
        up, _ = gradient(network, params + step, x, y, weights=weights)
        down, _ = gradient(network, params - step, x, y, weights=weights)
        assert grad[i] == pytest.approx((up - down) / (2 * h), rel=1e-5, abs=1e-8), i


@pytest.mark.parametrize("name", ["serial", "threads"])
def test_bad_weights_and_state_give_one_line(name):
    params = NETWORK.init_params(0)
    x, y = random_batch(NETWORK, 5, np.random.default_rng(0), np.float32)
    with make_executor(name, NETWORK, params, batch_size=5, threads=2,
                       optimizer=CONFIGS["adam"]) as executor:
        for bad in (np.ones(4, np.float32), np.ones((5, 1), np.float32), np.ones(5, int)):
            with pytest.raises(ConfigError, match=r"sample weights of shape .*expected float \(5,\)"):
                executor.step(x, y, LR, bad)
    wrong = OptimizerState(np.zeros((1, NETWORK.n_params), np.float32), 3)
    with pytest.raises(ConfigError, match=r"optimizer state of shape \(1, \d+\): expected "
                                          r"\(2, \d+\) for --optimizer adam"):
        make_executor(name, NETWORK, params, batch_size=5, threads=2,
                      optimizer=CONFIGS["adam"], optimizer_state=wrong)


def test_plain_sgd_counts_steps_and_keeps_no_state():
    params = NETWORK.init_params(0)
    with make_executor("threads", NETWORK, params, batch_size=max(ROWS), threads=2) as executor:
        for x, y, weights in batches():
            executor.step(x, y, LR, weights)
        state = executor.optimizer_state()
    assert state.step == len(ROWS) and state.buffers.shape == (0, NETWORK.n_params)


MPI_SCRIPT = """
    import sys
    import numpy as np
    from parallel_backprop.executors import make_executor
    from parallel_backprop.network import Network
    from parallel_backprop.optim import OptimizerConfig

    network = Network((13, 67, 35, 3), ("tanh", "sigmoid", "softmax"), "cross-entropy")
    rng = np.random.default_rng(5)                    # the same draws on every rank
    params = network.init_params(rng, np.float64)
    for config in (OptimizerConfig("adam", weight_decay=0.01),
                   OptimizerConfig("momentum", momentum=0.9)):
        options = dict(batch_size=7, optimizer=config)
        with make_executor("mpi", network, params, threads=2, **options) as ranks, \\
                make_executor("serial", network, params, **options) as serial:
            # 7 rows on 4 ranks: 2/2/2/1; 2 rows: 1/1/0/0; 1 row: 1/0/0/0.
            for rows in (7, 2, 5, 1):
                x = rng.standard_normal((rows, 13))
                y = network.targets(rng.integers(0, 3, rows), np.float64)
                weights = rng.uniform(0, 2, rows).astype(np.float32)
                loss = ranks.step(x, y, 0.1, weights)
                expected = serial.step(x, y, 0.1, weights)
                assert abs(loss - expected) <= 1e-12 * expected, (rows, loss, expected)
            actual, reference = ranks.params(), serial.params()
            worst = np.max(np.abs(actual - reference) / (np.abs(reference) + 1e-3))
            assert worst < 1e-11, (config.name, worst)
            state, reference_state = ranks.optimizer_state(), serial.optimizer_state()
            assert state.step == reference_state.step == 4
            assert np.allclose(state.buffers, reference_state.buffers, rtol=1e-9, atol=1e-15)
    print(f"rank {ranks.rank} of {ranks.ranks}: ok")
"""


@pytest.mark.parametrize("ranks", [2, 4])
def test_mpi_ranks_take_the_serial_steps(ranks, tmp_path):
    test_mpi = pytest.importorskip("test_mpi")
    if test_mpi.MPIEXEC is None:
        pytest.skip("needs mpi4py and mpiexec: pip install -e '.[mpi]'")
    script = tmp_path / "optimizers.py"
    script.write_text(textwrap.dedent(MPI_SCRIPT))
    code, out, err, _ = test_mpi.run_job([test_mpi.MPIEXEC, "-n", str(ranks), sys.executable,
                                          str(script)])
    assert code == 0, err
    assert sorted(re.findall(rf"rank (\d) of {ranks}: ok", out)) == [
        str(r) for r in range(ranks)], out


def test_bench_times_each_optimizer_and_skips_peers_without_it():
    from parallel_backprop.bench import BenchConfig
    from parallel_backprop.bench.runner import plan

    config = BenchConfig(systems=("serial", "threads", "numpy", "sklearn", "gemm"),
                         nets=("20-16-3",), batch_sizes=(8,), threads=(2,),
                         optimizers=("sgd", "adamw"))
    runs = {(run.system, run.optimizer): run for run in plan(config)}
    assert runs[("gemm", None)].skip is None
    for system in ("serial", "threads"):
        assert runs[(system, "sgd")].skip is None and runs[(system, "adamw")].skip is None
    assert "numpy is timed with sgd only, not adamw" in runs[("numpy", "adamw")].skip
    assert "not adamw" in runs[("sklearn", "adamw")].skip
    assert runs[("sklearn", "sgd")].spec(config)["optimizer"] == "sgd"
    assert runs[("threads", "adamw")].record().optimizer == "adamw"
    with pytest.raises(ConfigError, match=r"--optimizers 'lbfgs': expected some of sgd, "):
        BenchConfig(optimizers=("lbfgs",))


def test_bench_executor_workload_steps_with_the_optimizer(monkeypatch):
    from parallel_backprop.bench import systems

    made = []

    def recording(*args, **kwargs):
        made.append(make_executor(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(systems, "make_executor", recording)
    network = Network((20, 16, 3), ("sigmoid", "sigmoid"), "mse")
    setup = systems.Setup(system="threads", network=network, n_classes=3, batch_size=8,
                          threads=2, executor_threads=2, executor_blas_threads=1, lr=0.1,
                          seed=0, pool_samples=16, gemm_size=8, optimizer="adam")
    workload = systems.build(setup)
    try:
        workload.run(3)
        state = made[0].optimizer_state()
    finally:
        workload.close()
    assert state.step == 3 and state.buffers.shape == (2, network.n_params)
