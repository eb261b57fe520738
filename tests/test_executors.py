"""The parallel executors (threads, blas, hybrid) against the serial reference.

One step from the same parameters must agree with the serial executor (float32)
and with ``params - lr/n * gradient`` (float64), for 1..4 workers and odd
batch sizes, more workers than rows, and a last batch smaller than the batch
size. Runs must be bitwise reproducible; threads must not leak or hang.
"""

import threading
import warnings
import tracemalloc

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from helpers import assert_allclose_verbose, random_batch
from parallel_backprop.activations import get_activation, register_activation
from parallel_backprop.backprop import gradient
from parallel_backprop.errors import ConfigError
from parallel_backprop.executors import make_executor
from parallel_backprop.executors.threads import ExecutorStopped, shard_bounds
from parallel_backprop.network import Network
from parallel_backprop.trainer import TrainConfig, train

PARALLEL = ["threads", "blas", "hybrid"]
WORKERS = [1, 2, 3, 4]
# (executor batch size, rows in the step): full, a smaller last batch, fewer
# rows than workers, and a batch size smaller than the worker count.
BATCHES = [(37, 37), (37, 7), (37, 3), (37, 1), (3, 3), (1, 1)]
LR = 0.3


def small_network():
    # Three layers so hidden deltas chain; widths 67 and 35 so that 2..4 workers
    # split their columns (in slices of 16) unevenly; the 3 outputs go to one worker.
    return Network((13, 67, 35, 3), ("tanh", "sigmoid", "sigmoid"), "mse")


def executor_kwargs(name, workers):
    # hybrid: T workers with 2 BLAS threads each, the case that differs from threads.
    return {"threads": workers, "blas_threads": 2 if name == "hybrid" else 1}


def one_step(name, network, params, x, y, batch_size, **kwargs):
    with make_executor(name, network, params, batch_size=batch_size, **kwargs) as executor:
        loss = executor.step(x, y, LR)
        return loss, executor.params()


def test_shard_bounds_cover_the_batch_in_order():
    for n in range(0, 12):
        for parts in range(1, 6):
            bounds = [shard_bounds(n, parts, k) for k in range(parts)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            sizes = [stop - start for start, stop in bounds]
            assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


@pytest.mark.parametrize("batch_size,rows", BATCHES)
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", PARALLEL)
def test_one_step_matches_serial_float32(name, workers, batch_size, rows):
    rng = np.random.default_rng(rows * 10 + workers)
    network = small_network()
    params = network.init_params(rng)
    x, y = random_batch(network, rows, rng, np.float32)
    serial_loss, expected = one_step("serial", network, params, x, y, batch_size)
    loss, actual = one_step(name, network, params, x, y, batch_size,
                            **executor_kwargs(name, workers))
    assert loss == pytest.approx(serial_loss, rel=1e-5)
    assert not np.array_equal(expected, params)  # the step did something
    assert_allclose_verbose(actual, expected, rtol=1e-5, atol=1e-7,
                            what=f"{name} T={workers} n={rows}")


@pytest.mark.parametrize("batch_size,rows", BATCHES)
@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", PARALLEL)
def test_one_step_is_the_gradient_step_float64(name, workers, batch_size, rows):
    rng = np.random.default_rng(rows * 10 + workers)
    network = small_network()
    params = network.init_params(rng, np.float64)
    x, y = random_batch(network, rows, rng, np.float64)
    loss_sum, grad = gradient(network, params, x, y)
    loss, actual = one_step(name, network, params, x, y, batch_size,
                            **executor_kwargs(name, workers))
    assert actual.dtype == np.float64
    assert loss == pytest.approx(loss_sum, rel=1e-12)
    assert_allclose_verbose(actual, params - LR / rows * grad, rtol=1e-12, atol=1e-15,
                            what=f"{name} T={workers} n={rows} float64")


def run_steps(name, network, params, batches, **kwargs):
    with make_executor(name, network, params, batch_size=batches[0][0].shape[0],
                       **kwargs) as executor:
        losses = [executor.step(x, y, LR) for x, y in batches]
        return losses, executor.params()


def five_batches(network, rng, batch=29):
    # The last one smaller, as at the end of an epoch.
    return [random_batch(network, batch if i < 4 else 11, rng, np.float32) for i in range(5)]


@pytest.mark.parametrize("workers", WORKERS)
@pytest.mark.parametrize("name", PARALLEL)
def test_repeated_runs_are_bitwise_identical(name, workers):
    rng = np.random.default_rng(17)
    network = small_network()
    params = network.init_params(rng)
    batches = five_batches(network, rng)
    kwargs = executor_kwargs(name, workers)
    losses_a, params_a = run_steps(name, network, params, batches, **kwargs)
    losses_b, params_b = run_steps(name, network, params, batches, **kwargs)
    assert losses_a == losses_b
    assert np.array_equal(params_a, params_b)


@pytest.mark.parametrize("name", PARALLEL)
def test_caller_may_overwrite_the_batch_once_step_returns(name):
    # As the trainer does: one batch buffer, refilled right after each step
    # while the workers may still be finishing that step's update.
    rng = np.random.default_rng(29)
    network = small_network()
    params = network.init_params(rng)
    batches = five_batches(network, rng)
    expected = run_steps(name, network, params, batches, **executor_kwargs(name, 3))
    x_buffer = np.empty_like(batches[0][0])
    with make_executor(name, network, params, batch_size=x_buffer.shape[0],
                       **executor_kwargs(name, 3)) as executor:
        losses = []
        for x, y in batches:
            rows = x_buffer[:x.shape[0]]
            rows[...] = x
            losses.append(executor.step(rows, y, LR))
            x_buffer.fill(np.nan)
        assert losses == expected[0]
        assert np.array_equal(executor.params(), expected[1])


def test_threads_with_one_worker_is_serial():
    # One worker makes exactly the serial executor's calls, in the same order.
    rng = np.random.default_rng(23)
    network = small_network()
    params = network.init_params(rng)
    batches = five_batches(network, rng)
    serial_losses, expected = run_steps("serial", network, params, batches)
    losses, actual = run_steps("threads", network, params, batches, threads=1)
    assert losses == serial_losses
    assert np.array_equal(actual, expected)


@pytest.mark.parametrize("name", PARALLEL)
@pytest.mark.parametrize("rows", [0, 1, 5, 37, 100])
def test_predict_matches_serial(name, rows):
    rng = np.random.default_rng(rows)
    network = small_network()
    params = network.init_params(rng)
    x = rng.standard_normal((rows, 13)).astype(np.float32)
    with make_executor("serial", network, params, batch_size=8) as serial:
        expected = serial.predict(x)
    with make_executor(name, network, params, batch_size=8, **executor_kwargs(name, 3)) as ex:
        actual = ex.predict(x)
    assert actual.shape == (rows, 3)
    assert_allclose_verbose(actual, expected, rtol=1e-5, atol=1e-7, what=f"{name} predict")


def learnable_problem(seed=0, n=2000, features=20, classes=5):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    teacher = rng.standard_normal((features, classes))
    return x, np.argmax(x @ teacher, axis=1)


def test_training_reaches_serial_accuracy():
    # 3400 validation samples: a 1% tolerance is 34 of them, well above the
    # few that rounding differences between executors move.
    x, labels = learnable_problem(n=5000)
    network = Network((20, 32, 5), ("sigmoid", "sigmoid"), "mse")
    split = 1600
    accuracy = {}
    for name in ["serial", *PARALLEL]:
        config = TrainConfig(batch_size=50, lr=2.0, epochs=8, seed=3, executor=name,
                             threads=1 if name == "serial" else 2)
        result = train(network, config, x[:split], labels[:split], x[split:], labels[split:],
                       progress=False)
        accuracy[name] = result.epochs[-1].val_accuracy
    assert accuracy["serial"] > 0.8, accuracy  # the problem is learnt at all
    for name in PARALLEL:
        assert abs(accuracy[name] - accuracy["serial"]) <= 0.01, accuracy


@pytest.mark.parametrize("name", PARALLEL)
def test_no_thread_leak_and_close_is_idempotent(name):
    network = small_network()
    params = network.init_params(0)
    before = threading.active_count()
    with make_executor(name, network, params, batch_size=8, threads=4) as executor:
        x, y = random_batch(network, 8, np.random.default_rng(0), np.float32)
        executor.step(x, y, LR)
    assert threading.active_count() == before
    executor.close()
    executor2 = make_executor(name, network, params, batch_size=8, threads=3)
    executor2.close()
    executor2.close()
    assert threading.active_count() == before


def blas_threads_now():
    return [info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas"]


@pytest.mark.parametrize("name,kwargs,inside", [
    ("threads", {"threads": 2}, 1),
    ("blas", {"threads": 2}, 2),
    ("hybrid", {"threads": 2, "blas_threads": 2}, 2),
])
def test_blas_threads_pinned_while_open_and_restored(name, kwargs, inside):
    network = small_network()
    before = blas_threads_now()
    with make_executor(name, network, network.init_params(0), batch_size=8, **kwargs):
        assert set(blas_threads_now()) == {inside}
    assert blas_threads_now() == before


def run_with_timeout(func, seconds=10.0):
    """Run ``func`` in a thread; fail (instead of hanging the suite) if it doesn't return."""
    outcome = {}

    def target():
        try:
            outcome["value"] = func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), f"still running after {seconds} s: a hang"
    return outcome


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("where", ["worker", "everywhere"])
@pytest.mark.parametrize("call", ["step", "predict"])
def test_worker_exception_surfaces_without_hang(where, call):
    caller = {}
    sigmoid = get_activation("sigmoid")

    def function(z):  # sigmoid that fails in a worker thread (or in every thread)
        if where == "everywhere" or threading.current_thread() is not caller["thread"]:
            raise Boom("activation failed")
        return sigmoid.function(z)

    name = f"test_boom_{where}"
    register_activation(name, function, sigmoid.derivative)
    network = Network((5, 6, 2), (name, "sigmoid"))
    params = network.init_params(0)
    x, y = random_batch(network, 8, np.random.default_rng(0), np.float32)
    before = threading.active_count()

    def body():
        caller["thread"] = threading.current_thread()
        executor = make_executor("threads", network, params, batch_size=8, threads=3)
        try:
            with pytest.raises(Boom):
                if call == "step":
                    executor.step(x, y, LR)
                else:
                    executor.predict(x)
            with pytest.raises(ExecutorStopped):  # and it stays stopped
                executor.step(x, y, LR)
        finally:
            executor.close()

    outcome = run_with_timeout(body)
    if "error" in outcome:
        raise outcome["error"]
    assert threading.active_count() == before


def step_allocations(name, network, params, x, y, **kwargs):
    """(peak, retained) bytes traced by tracemalloc over two steps after warm-up."""
    with make_executor(name, network, params, batch_size=x.shape[0], **kwargs) as executor:
        for _ in range(3):
            executor.step(x, y, LR)
        executor.params()
        tracemalloc.start()
        try:
            start, _ = tracemalloc.get_traced_memory()
            executor.step(x, y, LR)
            executor.step(x, y, LR)
            executor.params()       # the other workers finish their updates first
            end, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    return peak - start, end - start


@pytest.mark.parametrize("workers", [1, 2])
def test_step_allocates_no_buffers_after_warm_up(workers):
    rng = np.random.default_rng(0)
    network = Network((64, 512, 10), ("sigmoid", "sigmoid"))
    params = network.init_params(rng)  # 133 KB; a gradient is as big, a workspace 64 KB
    x, y = random_batch(network, 64, rng, np.float32)
    # The shared math itself has transients: NumPy's ufunc buffer for the
    # broadcast bias add (up to 8192 elements) and the loss's (a - y). Each
    # worker may hold those at once; anything more would be the executor's.
    serial_peak, _ = step_allocations("serial", network, params, x, y)
    peak, retained = step_allocations("threads", network, params, x, y, threads=workers)
    assert peak <= workers * serial_peak + 8192, (peak, serial_peak)
    assert retained < 4096, f"{retained} bytes kept after two steps"


def test_make_executor_validates_blas_threads():
    network = small_network()
    params = network.init_params(0)
    with pytest.raises(ConfigError, match="blas threads 0"):
        make_executor("hybrid", network, params, batch_size=8, threads=2, blas_threads=0)
    with pytest.raises(ConfigError, match="only the hybrid executor"):
        make_executor("threads", network, params, batch_size=8, threads=2, blas_threads=2)


def test_step_rejects_a_batch_larger_than_the_batch_size():
    network = small_network()
    x, y = random_batch(network, 9, np.random.default_rng(0), np.float32)
    with make_executor("threads", network, network.init_params(0), batch_size=8,
                       threads=2) as executor:
        with pytest.raises(ConfigError, match="batch of 9 rows"):
            executor.step(x, y, LR)


@pytest.mark.parametrize("threads", [2, 3])
def test_workers_follow_the_callers_numpy_error_handling(threads):
    # NumPy's error state is per thread: a worker must not warn of an overflow the
    # caller silenced (the trainer leaves divergence to its own one-line check).
    network = Network((64, 512, 10), ("linear", "linear"))   # diverges at this rate
    params = network.init_params(0)
    x, y = random_batch(network, 64, np.random.default_rng(0), np.float32)
    with make_executor("threads", network, params, batch_size=64, threads=threads) as executor:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with np.errstate(over="ignore", invalid="ignore"):
                for _ in range(4):
                    executor.step(x, y, 1e3)
                assert not np.isfinite(executor.params()).all()
    with make_executor("threads", network, params, batch_size=64, threads=threads) as executor:
        with np.errstate(over="raise", invalid="raise"), pytest.raises(FloatingPointError):
            for _ in range(4):
                executor.step(x, y, 1e3)
