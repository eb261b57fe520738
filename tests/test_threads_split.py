"""The threads executor's products split by output columns, against the serial reference.

Where a layer's W outweighs the rows it multiplies, each worker computes
its own columns of that layer for every row (forward) or its own columns of
the delta below (backward) instead of its rows with all of W. The networks
of these tests are small, so the size floor is lowered to 0 to make every
product that qualifies by shape go by columns: the same checks as
test_executors.py's (serial parity, the exact float64 step, bitwise
reproducibility) then cover the split in all its mixtures with rows.
"""

import numpy as np
import pytest

from helpers import assert_allclose_verbose, random_batch
from parallel_backprop.activations import register_activation
from parallel_backprop.backprop import gradient
from parallel_backprop.executors import make_executor, threads
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig
from test_executors import (BATCHES, LR, PARALLEL, five_batches, one_step, run_steps,
                            small_network)
from test_executors import test_one_step_matches_serial_float32 as one_step_matches_serial


@pytest.fixture
def split_small(monkeypatch):
    monkeypatch.setattr(threads, "COLUMN_SPLIT_MIN", 0)


@pytest.mark.parametrize("batch_size,rows", BATCHES)
@pytest.mark.parametrize("workers", [2, 3, 4])
@pytest.mark.parametrize("name", PARALLEL)
def test_split_step_matches_serial_float32(split_small, name, workers, batch_size, rows):
    one_step_matches_serial(name, workers, batch_size, rows)


@pytest.mark.parametrize("rows", [37, 7, 3])
@pytest.mark.parametrize("workers", [2, 3])
def test_split_step_is_the_gradient_step_float64(split_small, workers, rows):
    rng = np.random.default_rng(rows + workers)
    network = small_network()
    params = network.init_params(rng, np.float64)
    x, y = random_batch(network, rows, rng, np.float64)
    weights = rng.random(rows)
    loss_sum, grad = gradient(network, params, x, y, weights=weights)
    with make_executor("threads", network, params, batch_size=37, threads=workers) as executor:
        loss = executor.step(x, y, LR, weights)
        actual = executor.params()
    assert loss == pytest.approx(loss_sum, rel=1e-12)
    assert_allclose_verbose(actual, params - LR / rows * grad, rtol=1e-12, atol=1e-15,
                            what=f"T={workers} n={rows} weighted float64")


@pytest.mark.parametrize("optimizer", ["sgd", "momentum"])
@pytest.mark.parametrize("workers", [2, 3])
def test_split_runs_are_bitwise_identical(split_small, workers, optimizer):
    rng = np.random.default_rng(5)
    network = small_network()
    params = network.init_params(rng)
    batches = five_batches(network, rng, batch=23)   # widths 67, 35 over 23 rows: columns
    kwargs = {"threads": workers, "optimizer": OptimizerConfig(optimizer)}
    first = run_steps("threads", network, params, batches, **kwargs)
    again = run_steps("threads", network, params, batches, **kwargs)
    assert first[0] == again[0] and np.array_equal(first[1], again[1])
    serial_losses, serial_params = run_steps("serial", network, params, batches,
                                             optimizer=OptimizerConfig(optimizer))
    assert first[0] == pytest.approx(serial_losses, rel=1e-5)
    assert_allclose_verbose(first[1], serial_params, rtol=1e-4, atol=1e-6,
                            what=f"{optimizer} T={workers}")


def test_split_takes_any_input_rows(split_small):
    # The first layer's columns read the caller's rows whole: float64 rows and
    # rows with a stride of two must give what contiguous float32 rows give.
    rng = np.random.default_rng(3)
    network = small_network()
    params = network.init_params(rng)
    x, y = random_batch(network, 9, rng, np.float32)
    expected = one_step("threads", network, params, x, y, 9, threads=2)
    wide = np.zeros((9, 26), np.float64)
    wide[:, ::2] = x
    for rows in (x.astype(np.float64), wide[:, ::2], np.asfortranarray(x)):
        assert one_step("threads", network, params, rows, y, 9, threads=2)[0] == expected[0]


def test_split_with_an_activation_whose_derivative_needs_its_input(split_small):
    register_activation("softsign-z", lambda z: z / (1 + np.abs(z)),
                        lambda z: 1 / (1 + np.abs(z)) ** 2, derivative_from="input")
    network = Network((13, 67, 35, 3), ("softsign-z", "softsign-z", "sigmoid"), "mse")
    rng = np.random.default_rng(11)
    params = network.init_params(rng, np.float64)
    x, y = random_batch(network, 7, rng, np.float64)
    loss_sum, grad = gradient(network, params, x, y)
    _, actual = one_step("threads", network, params, x, y, 7, threads=3)
    assert_allclose_verbose(actual, params - LR / 7 * grad, rtol=1e-12, atol=1e-15,
                            what="input-derivative activation by columns")


def test_plan_splits_wide_layers_of_small_batches_by_columns():
    network = Network((784, 1024, 1024, 10), ("sigmoid",) * 3)
    params = np.zeros(network.n_params, np.float32)
    with make_executor("threads", network, params, batch_size=1024, threads=2) as executor:
        # batch 128: both hidden layers and the delta of the first by columns
        # (W 1024 wide over 128 rows); the output layer and its delta by rows.
        assert executor._plan(128) == ([(0, 1, True), (1, 2, True), (2, 3, False)], 1)
        assert executor._plan(1024) == ([(0, 3, False)], 0)   # W no wider than the rows
    with make_executor("threads", network, params, batch_size=128, threads=1) as executor:
        assert executor._plan(128) == ([(0, 3, False)], 0)    # one worker: serial's calls
