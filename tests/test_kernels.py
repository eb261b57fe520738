"""The compiled step kernels (parallel_backprop._kernels) against NumPy and ctypes.

Each element-wise pass equals the NumPy passes it replaces bit for bit, on
float32 and float64, on column blocks of wider arrays, with NaN, infinities
and signed zeros; the compiled BLAS call equals the ctypes one for every
routine of every BLAS installed; a step of every CPU executor equals the
step without the module bit for bit; floating-point errors follow
np.seterr as NumPy's would; bad operands raise one-line errors.
"""

import warnings

import numpy as np
import pytest

from helpers import random_batch
from parallel_backprop import activations, blas_libraries, compiled
from parallel_backprop.backprop import column_sums
from parallel_backprop.executors import make_executor
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig

kernels = compiled.kernels
pytestmark = pytest.mark.skipif(kernels is None, reason="parallel_backprop._kernels was not "
                                "built (no C compiler at install)")

DTYPES = [np.float32, np.float64]


def hostile(shape, dtype, seed=0):
    """Values of every kind: normal, huge, tiny, NaN, +-inf, +-0, in the first row at least."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-40, -1e-40,
                         np.finfo(dtype).max, -np.finfo(dtype).max], dtype)
    flat = x.reshape(-1)
    flat[:specials.size] = specials
    flat[-specials.size:] = specials[::-1]
    return x


def column_block(x):
    """Columns 3.. of ``x`` minus the last: rows contiguous, a row stride wider than a row."""
    return x[:, 3:-1]


def same_bits(a, b):
    np.testing.assert_array_equal(np.asarray(a).view(np.uint8), np.asarray(b).view(np.uint8))


def with_numpy(function, *arrays):
    """``function`` run with the kernels switched off, on copies; the copies returned."""
    copies = [a.copy() for a in arrays]
    saved, compiled.kernels = compiled.kernels, None
    try:
        with np.errstate(all="ignore"):
            function(*copies)
    finally:
        compiled.kernels = saved
    return copies


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh", "linear", "softmax"])
@pytest.mark.parametrize("block", [False, True])
def test_activate_equals_numpy_bit_for_bit(dtype, name, block):
    function = activations.get_activation(name)
    z_full, bias_full = hostile((37, 70), dtype), hostile((70,), dtype, seed=1)
    z = column_block(z_full) if block else z_full
    bias = bias_full[3:-1] if block else bias_full
    expected_full, _ = with_numpy(lambda zz, b: activations.activate(
        function, column_block(zz) if block else zz, b), z_full, bias)
    with np.errstate(all="ignore"):
        activations.activate(function, z, bias)
    same_bits(z_full, expected_full)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("width", [1, 2, 10])
def test_softmax_equals_numpy_bit_for_bit(dtype, width):
    z = hostile((60, width), dtype, seed=5)
    z[20:30] = np.random.default_rng(6).standard_normal((10, width))
    for row, column in enumerate(range(width)):      # a NaN or -inf at every position
        z[30 + row, column], z[45 + row, column] = np.nan, -np.inf
    softmax = activations.get_activation("softmax")
    expected, = with_numpy(softmax.function, z)
    with np.errstate(all="ignore"):
        softmax.function(z)
    same_bits(z, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_scale_delta_equals_numpy_bit_for_bit(dtype, name):
    function = activations.get_activation(name)
    delta, a = hostile((41, 33), dtype), hostile((41, 33), dtype, seed=2)
    a[5] = np.abs(a[5]) / (1 + np.abs(a[5]))          # some outputs in (0, 1) as sigmoid's
    expected, _ = with_numpy(lambda d, aa: function.scale_delta(d, aa, None, np.empty_like(d)),
                             delta, a)
    with np.errstate(all="ignore"):
        function.scale_delta(delta, a, None, np.empty_like(delta))
    same_bits(delta, expected)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("rows", [0, 1, 2, 200])
@pytest.mark.parametrize("scale", [1.0, 0.37])
def test_column_sums_equal_numpys_sum_over_rows(dtype, rows, scale):
    delta = column_block(hostile((rows, 70), dtype)) if rows else np.zeros((0, 66), dtype)
    if rows:
        delta[:, 7] = -0.0                            # NumPy's sum of -0s is +0
    out = np.full(delta.shape[1], 99, dtype)
    expected = np.empty_like(out)
    with np.errstate(all="ignore"):
        np.sum(delta, axis=0, out=expected)
        if scale != 1.0:
            expected *= scale
        column_sums(delta, out, scale)
    same_bits(out, expected)


def blas_routines():
    """(library name, routine key) of every routine of every BLAS installed."""
    found = [("openblas", np.dtype(np.float32)), ("openblas", np.dtype(np.float64))]
    if blas_libraries.mkl_installed():
        found += [("mkl", np.dtype(np.float32)), ("mkl", np.dtype(np.float64))]
        if blas_libraries.bfloat16 is not None:
            found.append(("mkl", "bf16"))
    return found


def routine_pair(name, key, monkeypatch):
    """The library's compiled routine and the same routine through ctypes."""
    library = blas_libraries.load_library(name)
    direct = library.bf16 if key == "bf16" else library.routines[key]
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "kernels", None)
        ctypes_library = blas_libraries._LOADERS[name]()
    through_ctypes = ctypes_library.bf16 if key == "bf16" else ctypes_library.routines[key]
    return direct, through_ctypes


@pytest.mark.parametrize("name,key", blas_routines())
@pytest.mark.parametrize("trans", [(b"N", b"N"), (b"T", b"N"), (b"N", b"T")])
@pytest.mark.parametrize("m,n,k", [(5, 7, 3), (64, 96, 80)])   # below and above the GIL cut
def test_compiled_blas_call_equals_ctypes(name, key, trans, m, n, k, monkeypatch):
    direct, through_ctypes = routine_pair(name, key, monkeypatch)
    assert direct is not through_ctypes
    rng = np.random.default_rng(3)
    operand = blas_libraries.bfloat16 if key == "bf16" else key
    result = np.float32 if key == "bf16" else key
    a = rng.standard_normal((k, m) if trans[0] == b"T" else (m, k)).astype(operand)
    b = rng.standard_normal((n, k) if trans[1] == b"T" else (k, n)).astype(operand)
    c0 = rng.standard_normal((m, n)).astype(result)
    outputs, c = [], np.empty_like(c0)       # one buffer: MKL may round by alignment
    for routine in (direct, through_ctypes):
        c[...] = c0
        routine(*trans, m, n, k, 0.5, a, a.shape[1], b, b.shape[1], 0.25, c, n)
        outputs.append(c.copy())
    same_bits(*outputs)
    a32, b32 = (v.astype(np.float64) for v in (a, b))
    a32 = a32.T if trans[0] == b"T" else a32
    b32 = b32.T if trans[1] == b"T" else b32
    np.testing.assert_allclose(outputs[0], 0.5 * a32 @ b32 + 0.25 * c0, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("executor,threads", [("serial", 1), ("threads", 2), ("threads", 3),
                                              ("blas", 2)])
@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_steps_equal_the_steps_without_the_kernels(executor, threads, optimizer, monkeypatch):
    network = Network((13, 70, 40, 3), ("relu", "sigmoid", "softmax"), "cross-entropy")
    params = network.init_params(0).astype(np.float32)
    rng = np.random.default_rng(4)
    batches = [random_batch(network, n, rng, np.float32) for n in (32, 32, 19)]

    def train():
        with make_executor(executor, network, params, batch_size=32, threads=threads,
                           optimizer=OptimizerConfig(optimizer)) as ex:
            losses = [ex.step(x, y, 0.05) for x, y in batches]
            return losses, ex.params()

    with_kernels = train()
    monkeypatch.setattr(compiled, "kernels", None)
    without = train()
    assert with_kernels[0] == without[0]
    same_bits(with_kernels[1], without[1])


def test_floating_point_errors_follow_numpys_settings():
    big = np.full((4, 8), np.finfo(np.float32).max, np.float32)
    bias = np.full(8, np.finfo(np.float32).max, np.float32)
    relu = activations.get_activation("relu")
    with np.errstate(over="raise"), pytest.raises(FloatingPointError,
                                                  match="overflow encountered in bias_relu"):
        activations.activate(relu, big.copy(), bias)
    with np.errstate(over="warn"), pytest.warns(RuntimeWarning, match="overflow"):
        column_sums(big, np.empty(8, np.float32), 1.0)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("error")
        activations.activate(relu, big.copy(), bias)
    calls = []
    with np.errstate(invalid="call"):
        saved = np.seterrcall(lambda kind, flag: calls.append((kind, flag)))
        try:
            activations.get_activation("relu").scale_delta(
                np.full((2, 3), np.inf, np.float32), np.zeros((2, 3), np.float32), None, None)
        finally:
            np.seterrcall(saved)
    assert calls == [("invalid value", 8)]


def test_bad_operands_are_refused_in_one_line():
    z = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="bias_relu: operand shapes or dtypes differ"):
        kernels.bias_relu(z, np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="bias_relu: operand shapes or dtypes differ"):
        kernels.bias_relu(z, np.zeros(6, np.float64))
    with pytest.raises(ValueError, match="scale_delta: expected contiguous rows"):
        kernels.scale_delta(0, z[:, ::2], z[:, ::2])
    with pytest.raises(ValueError, match="expected 1-D or 2-D float32 or float64"):
        kernels.column_sums(z.astype(np.int32), np.zeros(6, np.int32), 1.0)
    with pytest.raises(ValueError, match="scale_delta: kind 0"):
        kernels.scale_delta(7, z, z)
    with pytest.raises(ValueError, match="unknown routine kind"):
        kernels.gemm(9, 1, b"N", b"N", 1, 1, 1, 1.0, 0, 1, 0, 1, 0.0, 0, 1)


@pytest.mark.parametrize("spin", [True, False])    # False: waiters sleep at once
def test_barrier_releases_every_party_together_many_times(spin):
    import threading
    parties, rounds = 3, 300
    barrier = kernels.Barrier(parties, spin)
    arrivals = [0] * rounds
    seen = []
    lock = threading.Lock()

    def party():
        for r in range(rounds):
            with lock:
                arrivals[r] += 1
            barrier.wait()
            seen.append(arrivals[r])         # nobody passes before everyone arrived
            barrier.wait()

    threads = [threading.Thread(target=party) for _ in range(parties - 1)]
    for thread in threads:
        thread.start()
    party()
    for thread in threads:
        thread.join()
    assert seen == [parties] * (parties * rounds)


def test_barrier_abort_breaks_waiting_and_later_waits():
    import threading
    import time
    barrier = kernels.Barrier(2)
    outcome = []

    def waiter():
        try:
            barrier.wait()
            outcome.append("released")
        except threading.BrokenBarrierError:
            outcome.append("broken")

    thread = threading.Thread(target=waiter)
    thread.start()
    time.sleep(0.3)                          # past the spin: the waiter sleeps
    barrier.abort()
    thread.join(timeout=5)
    assert outcome == ["broken"]
    with pytest.raises(threading.BrokenBarrierError):
        barrier.wait()
    with pytest.raises(ValueError, match="parties must be at least 1"):
        kernels.Barrier(0)


def test_barrier_wait_lets_signal_handlers_run():
    # A waiter asleep wakes every 50 ms to run Python's signal handlers, so Ctrl-C
    # reaches a main thread that waits for workers that never come.
    import signal
    import time

    class Interrupted(Exception):
        pass

    def handler(signum, frame):
        raise Interrupted

    previous = signal.signal(signal.SIGALRM, handler)
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        start = time.perf_counter()
        with pytest.raises(Interrupted):
            kernels.Barrier(2).wait()
        assert time.perf_counter() - start < 2.0
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


PURE_PYTHON_SCRIPT = """
import sys
import numpy as np
from parallel_backprop import compiled, optim, precision
from parallel_backprop.executors import make_executor
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig

out, pure = sys.argv[1], sys.argv[2] == "1"
assert (compiled.kernels is None and optim.native is None) == pure
network = Network((13, 70, 40, 3), ("relu", "sigmoid", "softmax"), "cross-entropy")
rng = np.random.default_rng(4)
x = rng.standard_normal((32, 13)).astype(np.float32)
y = network.targets(rng.integers(0, 3, 32), np.float32)
results = {}
for executor, threads in (("serial", 1), ("threads", 2)):
    for rule in ("sgd", "adam"):
        with make_executor(executor, network, network.init_params(0).astype(np.float32),
                           batch_size=32, threads=threads,
                           optimizer=OptimizerConfig(rule)) as ex:
            losses = [ex.step(x, y, 0.05) for _ in range(3)]
            results[f"{executor}-{rule}"] = np.append(ex.params(), losses)
np.savez(out, **results)
"""


def test_pure_python_switch_trains_to_the_same_bits(tmp_path):
    # PBP_PURE_PYTHON=1 runs without any compiled module (ctypes BLAS calls, NumPy's
    # passes, threading.Barrier): the same steps, bit for bit.
    import os
    import subprocess
    import sys
    runs = {}
    for pure in ("0", "1"):
        path = tmp_path / f"pure{pure}.npz"
        env = dict(os.environ, PBP_PURE_PYTHON=pure)
        subprocess.run([sys.executable, "-c", PURE_PYTHON_SCRIPT, str(path), pure], env=env,
                       check=True, timeout=120)
        runs[pure] = dict(np.load(path))
    assert runs["0"].keys() == runs["1"].keys()
    for key in runs["0"]:
        same_bits(runs["0"][key], runs["1"][key])
