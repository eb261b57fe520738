"""The gpu executor's Triton kernels and the executor, on the CPU under Triton's interpreter.

Triton reads ``TRITON_INTERPRET=1`` when it is first imported (its own
library functions), when ``@triton.jit`` decorates a kernel, and while an
interpreted kernel runs. So this module imports Triton and the kernels with
the variable set (re-importing the kernels if something imported them
compiled first), puts it back as it was, and sets it again around each of
its own tests only: other tests see no change. The executor follows
``gpu_kernels.INTERPRETED`` and runs on CPU tensors.

The interpreter costs ~5-60 ms per launch, growing with programs x loop
iterations: shapes are small and ragged (37 x 50 x 29 in blocks of 16, so
every dimension has several blocks and a tail), and 1 x 1 x 1.
"""

import importlib
import inspect
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from helpers import assert_allclose_verbose, random_batch
from parallel_backprop import optim
from parallel_backprop.activations import register_activation
from parallel_backprop.backprop import gradient
from parallel_backprop.cli import main
from parallel_backprop.errors import ConfigError
from parallel_backprop.executors import OptimizerState, SerialExecutor, make_executor
from parallel_backprop.executors import gpu as gpu_module
from parallel_backprop.executors import gpu_accuracy, gpu_tuning
from parallel_backprop.modelio import load_model
from parallel_backprop.network import Network
from parallel_backprop.optim import OptimizerConfig
from parallel_backprop.trainer import TrainConfig, train

torch = pytest.importorskip("torch", reason="the gpu extra (torch, triton) is not installed")


def import_interpreted_kernels():
    """Triton and the kernels, imported with TRITON_INTERPRET=1; the variable then put back."""
    previous = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "1"
    try:
        triton = pytest.importorskip("triton",
                                     reason="the gpu extra (torch, triton) is not installed")
        module = importlib.import_module("parallel_backprop.executors.gpu_kernels")
        if not module.INTERPRETED:
            module = importlib.reload(module)
    finally:
        if previous is None:
            del os.environ["TRITON_INTERPRET"]
        else:
            os.environ["TRITON_INTERPRET"] = previous
    if type(triton.language.zeros).__name__ != "InterpretedFunction":
        pytest.skip("triton was imported before TRITON_INTERPRET=1 was set; run this file on "
                    "its own or with TRITON_INTERPRET=1 in the environment",
                    allow_module_level=True)
    return module


gk = import_interpreted_kernels()


@pytest.fixture(autouse=True)
def triton_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")


ACTIVATIONS = ["sigmoid", "tanh", "relu", "linear"]
SHAPES = [(37, 50, 29), (1, 1, 1)]       # (M, K, N): rows, inputs, outputs
BLOCKS = (16, 16, 16)
LR = 0.3


# ---- PyTorch references, float64 ------------------------------------------------

def reference_activation(z, name):
    return {"sigmoid": torch.sigmoid, "tanh": torch.tanh, "relu": torch.relu,
            "linear": lambda t: t, "softmax": lambda t: torch.softmax(t, dim=1)}[name](z)


def reference_derivative(a, name):
    return {"sigmoid": a * (1 - a), "tanh": 1 - a * a, "relu": (a > 0).to(a.dtype),
            "linear": torch.ones_like(a)}[name]


def reference_loss(a, y, name, loss):
    if loss == "mse":
        return 0.5 * ((a - y) ** 2).sum()
    if name == "softmax":
        return -(y * torch.log(a)).sum()
    return -(y * torch.log(a) + (1 - y) * torch.log(1 - a)).sum()


def tensors(rng, *shapes, scale=1.0):
    return [torch.tensor(rng.standard_normal(s) * scale, dtype=torch.float32) for s in shapes]


def close(actual, expected, what, rtol=1e-5, atol=1e-5):
    assert_allclose_verbose(actual.double().numpy(), expected.double().numpy(), rtol=rtol,
                            atol=atol, what=what)


# ---- each kernel against PyTorch ------------------------------------------------

@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_forward_layer_kernel(activation, shape):
    M, K, N = shape
    x, w, b = tensors(np.random.default_rng(M), (M, K), (K, N), (N,), scale=0.5)
    out = torch.full((M, N), float("nan"))
    gk.forward_layer(x, w, b, out, activation, blocks=BLOCKS)
    expected = reference_activation(x.double() @ w.double() + b.double(), activation)
    close(out, expected, f"forward {activation} {shape}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_hidden_delta_kernel(activation, shape):
    M, K, N = shape                       # delta (M, N) back through W (K, N) to (M, K)
    rng = np.random.default_rng(M + 1)
    delta, w = tensors(rng, (M, N), (K, N))
    a_prev = torch.tensor(rng.uniform(-0.5, 1.0, (M, K)), dtype=torch.float32)
    if activation == "tanh":
        a_prev.clamp_(-0.99, 0.99)
    out = torch.full((M, K), float("nan"))
    gk.hidden_delta(delta, w, a_prev, out, activation, blocks=BLOCKS)
    expected = (delta.double() @ w.double().T) * reference_derivative(a_prev.double(), activation)
    close(out, expected, f"hidden delta {activation} {shape}")


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("update", gk.UPDATES)
def test_weight_update_kernel(update, shape):
    M, K, N = shape                       # a_prev (M, K), delta (M, N) -> W (K, N)
    a_prev, delta, w, b = tensors(np.random.default_rng(M + 2), (M, K), (M, N), (K, N), (N,))
    w0, b0 = w.double().clone(), b.double().clone()
    keep = 0.97
    scale = LR / M if update != "gradient" else 1 / M
    scalars = torch.tensor([scale, keep], dtype=torch.float32)
    gk.weight_update(a_prev, delta, w, b, scalars, blocks=BLOCKS, update=update)
    product, col_sum = a_prev.double().T @ delta.double(), delta.double().sum(0)
    if update == "gradient":              # the mean gradient, W and b not read
        expected_w, expected_b = product / M, col_sum / M
    else:
        expected_w = (keep if update == "sgd-decay" else 1.0) * w0 - scale * product
        expected_b = b0 - scale * col_sum
    close(w, expected_w, f"W {update} {shape}")
    close(b, expected_b, f"b {update} {shape}")


def test_weight_update_kernel_rejects_an_unknown_update():
    a_prev, delta, w, b = tensors(np.random.default_rng(0), (2, 3), (2, 4), (3, 4), (4,))
    with pytest.raises(ValueError, match="update 'adam': expected one of"):
        gk.weight_update(a_prev, delta, w, b, torch.ones(2), update="adam")


# Every rule of the optimizer step kernel, with weight decay (and without for adam).
STEP_CONFIGS = {
    "momentum-decay": OptimizerConfig("momentum", momentum=0.8, weight_decay=0.05),
    "nesterov-decay": OptimizerConfig("nesterov", momentum=0.9, weight_decay=0.05),
    "adam": OptimizerConfig("adam", beta1=0.8, beta2=0.99),
    "adam-decay": OptimizerConfig("adam", weight_decay=0.05),
    "adamw-decay": OptimizerConfig("adamw", weight_decay=0.1),
}


@pytest.mark.parametrize("name", list(STEP_CONFIGS))
def test_optimizer_step_kernel_matches_the_reference(name):
    # 37 entries in blocks of 16: three programs, the last with a tail; two
    # steps, so the state read back is the kernel's own; t = 3 and 4.
    config, n = STEP_CONFIGS[name], 37
    rng = np.random.default_rng(7)
    params, is_weight = rng.standard_normal(n), rng.random(n) < 0.7
    state = rng.random((config.n_buffers, n)) * 0.1      # moments >= 0, as Adam's are
    device = [torch.tensor(a, dtype=torch.float32) for a in (params, state)]
    mask = torch.tensor(is_weight.astype(np.uint8))
    for t, lr in ((3, 0.1), (4, 0.05)):
        grad = rng.standard_normal(n)
        scalars = torch.tensor(gpu_module.step_scalars(config, lr, 1, t), dtype=torch.float32)
        gk.optimizer_step(config, device[0], torch.tensor(grad, dtype=torch.float32),
                          device[1], mask, scalars, block=16)
        optim.reference_step(config, params, grad, state, lr, t, is_weight)
    close(device[0], torch.tensor(params), f"{name} params")
    close(device[1], torch.tensor(state), f"{name} state")


OUTPUTS = [(name, "mse") for name in [*ACTIVATIONS, "softmax"]] + [
    ("sigmoid", "cross-entropy"), ("softmax", "cross-entropy")]


@pytest.mark.parametrize("shape", [(37, 50, 29), (37, 50, 10), (1, 1, 1)],
                         ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("activation,loss", OUTPUTS)
def test_forward_output_delta_kernel(activation, loss, shape):
    M, K, N = shape
    rng = np.random.default_rng(M + N)
    x, w, b = tensors(rng, (M, K), (K, N), (N,), scale=0.5)
    if activation == "softmax":          # a distribution per row, as one-hot targets are
        y = torch.softmax(torch.tensor(rng.standard_normal((M, N)), dtype=torch.float32), 1)
    else:
        y = torch.tensor(rng.uniform(0, 1, (M, N)), dtype=torch.float32)
    out, delta = torch.full((M, N), float("nan")), torch.full((M, N), float("nan"))
    blocks = (16, max(16, 1 << (N - 1).bit_length()), 16) if activation == "softmax" else BLOCKS
    parts = gk.forward_output_delta(x, w, b, y, out, delta, torch.zeros(64), activation, loss,
                                    blocks=blocks)
    step_loss = torch.zeros(1)
    total = torch.tensor([1.5], dtype=torch.float64)
    gk.loss_total(parts, step_loss, total)

    z = (x.double() @ w.double() + b.double()).requires_grad_()
    a = reference_activation(z, activation)
    expected_loss = reference_loss(a, y.double(), activation, loss)
    expected_loss.backward()
    what = f"{activation}+{loss} {shape}"
    close(out, a.detach(), f"output {what}")
    close(delta, z.grad, f"output delta {what}")
    assert step_loss.item() == pytest.approx(expected_loss.item(), rel=1e-5), what
    assert total.item() == pytest.approx(1.5 + expected_loss.item(), rel=1e-5), what


def test_forward_output_without_loss_writes_only_the_activations():
    M, K, N = 5, 7, 3
    x, w, b = tensors(np.random.default_rng(0), (M, K), (K, N), (N,))
    out = torch.empty(M, N)
    gk.forward_output_delta(x, w, b, None, out, None, None, "softmax", None)
    close(out, torch.softmax(x.double() @ w.double() + b.double(), 1), "softmax predict")


def test_softmax_row_must_fit_one_block():
    x, w, b = tensors(np.random.default_rng(0), (2, 3), (3, 40), (40,))
    with pytest.raises(ValueError, match="a row must fit one"):
        gk.forward_output_delta(x, w, b, None, torch.empty(2, 40), None, None, "softmax", None,
                                blocks=(16, 32, 16))


def test_launcher_rejects_a_wrong_shape():
    x, w, b = tensors(np.random.default_rng(0), (4, 3), (5, 2), (2,))
    with pytest.raises(ValueError, match="w: expected float32 \\(3, 2\\)"):
        gk.forward_layer(x, w, b, torch.empty(4, 2), "relu")


# ---- the executor against the serial one -----------------------------------------

NETWORKS = {
    "tanh-sigmoid-sigmoid-mse": Network((13, 11, 7, 3), ("tanh", "sigmoid", "sigmoid"), "mse"),
    "relu-softmax-ce": Network((13, 11, 4), ("relu", "softmax"), "cross-entropy"),
    "linear-softmax-mse": Network((13, 11, 4), ("linear", "softmax"), "mse"),
    "relu-tanh-sigmoid-binary-ce": Network((13, 9, 6, 1), ("relu", "tanh", "sigmoid"),
                                           "cross-entropy"),
    "sigmoid-relu-mse": Network((13, 11, 5), ("sigmoid", "relu"), "mse"),
    "tanh-linear-mse": Network((13, 11, 5), ("tanh", "linear"), "mse"),
}


def run_steps(name, network, params, batches, batch_size, **kwargs):
    with make_executor(name, network, params, batch_size=batch_size, **kwargs) as executor:
        losses = [executor.step(x, y, LR) for x, y in batches]
        return losses, executor.params()


@pytest.mark.parametrize("batch_size,rows", [(37, 37), (37, 5), (1, 1)])
@pytest.mark.parametrize("net", list(NETWORKS))
def test_one_step_matches_serial(net, batch_size, rows):
    network = NETWORKS[net]
    rng = np.random.default_rng(rows)
    params = network.init_params(rng)
    batches = [random_batch(network, rows, rng, np.float32)]
    serial_losses, expected = run_steps("serial", network, params, batches, batch_size)
    losses, actual = run_steps("gpu", network, params, batches, batch_size)
    assert not np.array_equal(expected, params)
    assert losses == pytest.approx(serial_losses, rel=1e-4)
    assert_allclose_verbose(actual, expected, rtol=1e-4, atol=1e-6, what=f"gpu {net} n={rows}")


def test_steps_of_changing_size_and_rate_match_serial():
    network = NETWORKS["tanh-sigmoid-sigmoid-mse"]
    rng = np.random.default_rng(5)
    params = network.init_params(rng)
    batches = [random_batch(network, n, rng, np.float32) for n in (29, 29, 11, 29)]
    rates = [0.3, 0.3, 0.3, 0.1]
    results = {}
    for name in ("serial", "gpu"):
        with make_executor(name, network, params, batch_size=29) as executor:
            losses = [executor.step(x, y, lr) for (x, y), lr in zip(batches, rates)]
            results[name] = losses, executor.params()
    assert results["gpu"][0] == pytest.approx(results["serial"][0], rel=1e-4)
    assert_allclose_verbose(results["gpu"][1], results["serial"][1], rtol=1e-4, atol=1e-6,
                            what="four steps")


LAUNCHERS = ("forward_layer", "forward_output_delta", "hidden_delta", "weight_update")


@pytest.fixture
def precisions_launched(monkeypatch):
    """(launcher, precision) for every product the executor launches from now on."""
    launched = []
    for name in LAUNCHERS:
        launcher = getattr(gk, name)

        def spy(*args, _launcher=launcher, _name=name, **kwargs):
            bound = inspect.signature(_launcher).bind(*args, **kwargs)
            bound.apply_defaults()
            launched.append((_name, bound.arguments["precision"]))
            return _launcher(*args, **kwargs)

        monkeypatch.setattr(gk, name, spy)
    return launched


@pytest.mark.parametrize("precision", gpu_module.PRECISIONS)
def test_precision_reaches_every_product(precision, precisions_launched):
    network = NETWORKS["relu-tanh-sigmoid-binary-ce"]
    rng = np.random.default_rng(3)
    params = network.init_params(rng)
    batches = [random_batch(network, 9, rng, np.float32)]
    run_steps("gpu", network, params, batches, 9, precision=precision)
    assert {name for name, _ in precisions_launched} == set(LAUNCHERS)
    assert {used for _, used in precisions_launched} == {gk.PRECISIONS[precision]}


def one_step_update_errors(network, precision, rows=40, lr=0.1, seed=4):
    """Per-layer relative errors of one gpu step's update against float64's."""
    rng = np.random.default_rng(seed)
    params = network.init_params(rng)
    x, y = random_batch(network, rows, rng, np.float32)
    with make_executor("gpu", network, params, batch_size=rows, precision=precision) as ex:
        ex.step(x, y, lr)
        after = ex.params()
    return gpu_accuracy.update_errors(network, params, after,
                                      gpu_accuracy.sgd_step64(network, params, x, y, lr))


UPDATE_NET = Network((64, 48, 10), ("sigmoid", "sigmoid"), "mse")


def test_fp32_update_is_within_fp32_of_float64():
    errors = one_step_update_errors(UPDATE_NET, "fp32")
    assert gpu_accuracy.worst_error(errors) < gpu_accuracy.UPDATE_TOLERANCE["fp32"], errors


def test_bf16_update_is_within_bf16_of_float64_and_rounds():
    # The operands are rounded to bfloat16 (8 bits of mantissa): each layer's
    # update within ~1e-2 of float64's, and visibly not fp32's.
    errors = one_step_update_errors(UPDATE_NET, "bf16")
    worst = gpu_accuracy.worst_error(errors)
    assert worst < 1e-2, errors
    assert min(min(row["weights"], row["bias"]) for row in errors) > 1e-4, errors


def test_bf16_rounding_is_to_nearest_even():
    # The interpreter's own cast truncates; the kernels round as the GPU's cvt.rn does.
    rng = np.random.default_rng(8)
    x = torch.tensor(rng.standard_normal((16, 16)), dtype=torch.float32)
    eye = torch.eye(16)
    out = torch.empty(16, 16)
    gk.forward_layer(x, eye, torch.zeros(16), out, "linear", gk.PRECISIONS["bf16"],
                     blocks=(16, 16, 16))
    assert torch.equal(out, x.bfloat16().float())


@pytest.mark.parametrize("rows", [0, 1, 37])
def test_predict_matches_serial(rows):
    network = NETWORKS["relu-softmax-ce"]
    rng = np.random.default_rng(rows)
    params = network.init_params(rng)
    x = rng.standard_normal((rows, 13)).astype(np.float32)
    with make_executor("serial", network, params, batch_size=16) as serial:
        expected = serial.predict(x)
    with make_executor("gpu", network, params, batch_size=16) as executor:
        actual = executor.predict(x)
    assert actual.shape == (rows, 4) and actual.dtype == np.float32
    assert_allclose_verbose(actual, expected, rtol=1e-5, atol=1e-6, what="gpu predict")


def test_train_epoch_on_resident_data_equals_steps():
    network = NETWORKS["tanh-sigmoid-sigmoid-mse"]
    rng = np.random.default_rng(9)
    params = network.init_params(rng)
    x, y = random_batch(network, 45, rng, np.float32)
    order = rng.permutation(45)
    with make_executor("gpu", network, params, batch_size=16) as executor:
        losses = [executor.step(x[order[k:k + 16]], y[order[k:k + 16]], LR)
                  for k in range(0, 45, 16)]
        by_steps = executor.params()
    steps = []
    with make_executor("gpu", network, params, batch_size=16) as executor:
        assert executor.load_data(x, y)
        loss = executor.train_epoch(order, LR, on_step=lambda: steps.append(1))
        resident = executor.params()
    assert len(steps) == 3
    assert loss == pytest.approx(sum(losses), rel=1e-6)
    assert np.array_equal(resident, by_steps)


class FakeGraph:
    """A CUDA graph's behaviour on the CPU: a replay runs the launches recorded at
    capture, on the tensors they had then (a real graph holds their addresses)."""

    def __init__(self, executor, n, gather):
        self.executor, self.n, self.gather = executor, n, gather
        self.x_all, self.t_all = executor._x_all, executor._t_all

    def replay(self):
        ex = self.executor
        now = ex._x_all, ex._t_all
        ex._x_all, ex._t_all = self.x_all, self.t_all
        try:
            ex._launch_step(self.n, self.gather)
        finally:
            ex._x_all, ex._t_all = now


def test_a_second_load_data_drops_the_graphs_that_gather(monkeypatch):
    network = NETWORKS["tanh-sigmoid-sigmoid-mse"]
    rng = np.random.default_rng(10)
    params = network.init_params(rng)
    first, second = (random_batch(network, 20, rng, np.float32) for _ in range(2))
    order = rng.permutation(20)
    monkeypatch.setattr(gpu_module.GpuExecutor, "_capture",
                        lambda self, n, gather: FakeGraph(self, n, gather))
    with make_executor("gpu", network, params, batch_size=8) as executor:
        executor._graphs_on = True
        assert executor.load_data(*first)
        executor.train_epoch(order, LR)
        executor.step(*random_batch(network, 8, rng, np.float32), LR)
        assert set(executor.captured) == {(8, True), (4, True), (8, False)}
        midway = executor.params()
        assert executor.load_data(*second)
        assert executor.captured == ((8, False),)    # staged batches do not read the set
        executor.train_epoch(order, LR)
        reloaded = executor.params()
    with make_executor("gpu", network, midway, batch_size=8) as fresh:
        assert fresh.load_data(*second)
        fresh.train_epoch(order, LR)
        expected = fresh.params()
    assert np.array_equal(reloaded, expected)


def test_training_matches_serial():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((150, 10)).astype(np.float32)
    labels = np.argmax(x @ rng.standard_normal((10, 3)), axis=1)
    network = Network((10, 12, 3), ("sigmoid", "softmax"), "cross-entropy")
    results = {}
    for name in ("serial", "gpu"):
        config = TrainConfig(batch_size=40, lr=0.5, epochs=2, seed=1, executor=name)
        results[name] = train(network, config, x[:120], labels[:120], x[120:], labels[120:],
                              progress=False)
    gpu, serial = results["gpu"], results["serial"]
    assert_allclose_verbose(gpu.params, serial.params, rtol=1e-4, atol=1e-5, what="2 epochs")
    for a, b in zip(gpu.epochs, serial.epochs):
        assert a.loss == pytest.approx(b.loss, rel=1e-4)
        assert abs(a.val_accuracy - b.val_accuracy) <= 1 / 30   # one sample near a tie at most


def test_resumed_run_on_resident_data_matches_an_uninterrupted_one():
    # Checkpoints inside an epoch send batches through step(); the resumed run
    # takes the rest of that epoch on the device, from the same order.
    rng = np.random.default_rng(2)
    x = rng.standard_normal((120, 10)).astype(np.float32)
    labels = np.argmax(x @ rng.standard_normal((10, 3)), axis=1)
    network = Network((10, 12, 3), ("sigmoid", "softmax"), "cross-entropy")
    config = TrainConfig(batch_size=40, lr=0.5, epochs=2, seed=1, executor="gpu")
    full = train(network, config, x, labels, progress=False)
    states = []
    train(network, config, x, labels, progress=False, checkpoint=states.append,
          checkpoint_every=2)
    inside = next(state for state in states if state.step > 0)
    assert (inside.epoch, inside.step) == (1, 2)
    resumed = train(network, config, x, labels, progress=False, resume=inside)
    assert_allclose_verbose(resumed.params, full.params, rtol=1e-6, atol=1e-7, what="resumed")
    assert resumed.epochs[-1].loss == pytest.approx(full.epochs[-1].loss, rel=1e-6)


def test_pbp_train_gpu_saves_the_serial_model(tmp_path, capsys):
    small = ["train", "--dataset", "synthetic", "--samples", "150", "--features", "12",
             "--classes", "3", "--net", "12-16-3", "--batch-size", "32", "--epochs", "2",
             "--lr", "0.5", "--quiet"]
    models = {}
    for name in ("serial", "gpu"):
        path = tmp_path / f"{name}.npz"
        code = main([*small, "--executor", name, "--save", str(path)])
        assert code == 0, capsys.readouterr().err
        models[name] = load_model(path)
    assert models["gpu"].metadata["executor"] == "gpu"
    assert_allclose_verbose(models["gpu"].params, models["serial"].params, rtol=1e-4,
                            atol=1e-5, what="saved model")


# ---- every optimizer, against the serial executor or the float64 reference ----------

OPT_NET = Network((7, 5, 3), ("tanh", "softmax"), "cross-entropy")
OPT_BATCH = 6
# SGD with decay is fused into the product; the others go through the step kernel.
OPT_CONFIGS = {"sgd-decay": OptimizerConfig("sgd", weight_decay=0.05), **STEP_CONFIGS}
OPT_RATES = (0.1, 0.1, 0.05)              # a change of rate between steps


def opt_batches(rng, sizes=(6, 6, 5)):    # the last batch smaller, as an epoch's is
    return [random_batch(OPT_NET, n, rng, np.float32) for n in sizes]


def expected_after_steps(config, params, batches, rates):
    """(params, state) after the steps: the serial executor once it applies every
    optimizer, else optim.reference_step in float64 on backprop.gradient's mean."""
    if "adam" in SerialExecutor.optimizers:
        with make_executor("serial", OPT_NET, params, batch_size=OPT_BATCH,
                           optimizer=config) as executor:
            for (x, y), lr in zip(batches, rates):
                executor.step(x, y, lr)
            return executor.params(), executor.optimizer_state().buffers
    p, state = params.astype(np.float64), config.new_state(params.size, np.float64)
    is_weight = np.zeros(p.size, bool)
    for weights, _ in OPT_NET.layers(is_weight):
        weights[...] = True
    for t, ((x, y), lr) in enumerate(zip(batches, rates), start=1):
        _, grad_sum = gradient(OPT_NET, p, x.astype(np.float64), y.astype(np.float64))
        optim.reference_step(config, p, grad_sum / x.shape[0], state, lr, t, is_weight)
    return p, state


@pytest.mark.parametrize("name", list(OPT_CONFIGS))
def test_optimizer_steps_match(name):
    config = OPT_CONFIGS[name]
    rng = np.random.default_rng(11)
    params = OPT_NET.init_params(rng)
    batches = opt_batches(rng)
    expected, expected_state = expected_after_steps(config, params, batches, OPT_RATES)
    with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH,
                       optimizer=config) as executor:
        for (x, y), lr in zip(batches, OPT_RATES):
            executor.step(x, y, lr)
        actual, state = executor.params(), executor.optimizer_state()
    assert state.step == 3 and state.buffers.shape == (config.n_buffers, OPT_NET.n_params)
    assert_allclose_verbose(actual, expected, rtol=1e-5, atol=1e-7, what=f"{name} params")
    assert_allclose_verbose(state.buffers, expected_state, rtol=1e-5, atol=1e-7,
                            what=f"{name} state")


@pytest.mark.parametrize("name", ["sgd-decay", "adamw-decay"])
def test_train_epoch_applies_the_optimizer_as_steps_do(name):
    config = OPT_CONFIGS[name]
    rng = np.random.default_rng(12)
    params = OPT_NET.init_params(rng)
    x, y = random_batch(OPT_NET, 17, rng, np.float32)
    order = rng.permutation(17)
    runs = {}
    for how in ("steps", "resident"):
        with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH,
                           optimizer=config) as executor:
            if how == "steps":             # 6, 6, 5 rows, as train_epoch cuts them
                loss = sum(executor.step(x[order[k:k + 6]], y[order[k:k + 6]], LR)
                           for k in range(0, 17, 6))
            else:
                assert executor.load_data(x, y)
                loss = executor.train_epoch(order, LR)
            runs[how] = loss, executor.params(), executor.optimizer_state()
    (loss, by_steps, state), (resident_loss, resident, resident_state) = runs.values()
    assert resident_loss == pytest.approx(loss, rel=1e-6)
    assert np.array_equal(resident, by_steps) and not np.array_equal(resident, params)
    assert resident_state.step == state.step == 3
    assert np.array_equal(resident_state.buffers, state.buffers)


def test_optimizer_state_round_trip_continues_as_uninterrupted():
    config = OPT_CONFIGS["adam-decay"]
    rng = np.random.default_rng(13)
    params = OPT_NET.init_params(rng)
    batches = opt_batches(rng, (6, 6, 6))
    with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH,
                       optimizer=config) as executor:
        for (x, y), lr in zip(batches, OPT_RATES):
            executor.step(x, y, lr)
        uninterrupted = executor.params()
    with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH,
                       optimizer=config) as executor:
        for (x, y), lr in zip(batches[:2], OPT_RATES):
            executor.step(x, y, lr)
        midway, saved = executor.params(), executor.optimizer_state()
        saved.buffers[...] = np.nan        # a copy: the executor's state is untouched
        saved = executor.optimizer_state()
    assert saved.step == 2 and np.isfinite(saved.buffers).all()
    with make_executor("gpu", OPT_NET, midway, batch_size=OPT_BATCH, optimizer=config,
                       optimizer_state=saved) as executor:
        executor.step(*batches[2], OPT_RATES[2])
        resumed, state = executor.params(), executor.optimizer_state()
    assert state.step == 3
    assert np.array_equal(resumed, uninterrupted)


def test_plain_sgd_counts_steps_and_keeps_no_state():
    rng = np.random.default_rng(14)
    params = OPT_NET.init_params(rng)
    with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH) as executor:
        executor.step(*random_batch(OPT_NET, 3, rng, np.float32), LR)
        state = executor.optimizer_state()
    assert state.step == 1 and state.buffers.shape == (0, OPT_NET.n_params)


def test_rejects_sample_weights_and_a_wrong_optimizer_state():
    rng = np.random.default_rng(15)
    params = OPT_NET.init_params(rng)
    adam = OPT_CONFIGS["adam"]
    with make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH) as executor:
        x, y = random_batch(OPT_NET, 3, rng, np.float32)
        with pytest.raises(ConfigError, match="^the gpu executor does not take sample "
                                              "weights; use a CPU executor$"):
            executor.step(x, y, LR, weights=np.ones(3, np.float32))
    wrong = OptimizerState(np.zeros((1, OPT_NET.n_params), np.float32), 4)
    with pytest.raises(ConfigError, match=f"--optimizer adam keeps \\(2, {OPT_NET.n_params}\\) "
                                          "buffers"):
        make_executor("gpu", OPT_NET, params, batch_size=OPT_BATCH, optimizer=adam,
                      optimizer_state=wrong)


# ---- tiles chosen by measurement: the cache logic, on the CPU ------------------------

def test_tile_cache_lives_per_gpu_model_under_the_user_cache(tmp_path):
    path = gpu_tuning.cache_path("NVIDIA H200 (141 GB)", {"XDG_CACHE_HOME": str(tmp_path)})
    assert path == tmp_path / "parallel-backprop" / "gpu-tiles-nvidia-h200-141-gb.json"
    chosen = gpu_tuning.cache_path("H200", {"PBP_CACHE_DIR": str(tmp_path / "c"),
                                            "XDG_CACHE_HOME": "/elsewhere"})
    assert chosen == tmp_path / "c" / "gpu-tiles-h200.json"
    home = gpu_tuning.cache_path("NVIDIA H100 80GB HBM3", {})
    assert home.parts[-3:] == (".cache", "parallel-backprop",
                               "gpu-tiles-nvidia-h100-80gb-hbm3.json")
    key = gpu_tuning.cache_key("hidden_delta", (128, 1024, 10), "tf32", "3.9.0")
    assert key == "hidden_delta 128x1024x10 tf32 triton-3.9.0"


def test_tile_cache_round_trip_and_atomic_write(tmp_path, monkeypatch):
    path = tmp_path / "sub" / "tiles.json"
    cache = gpu_tuning.TileCache(path)
    assert cache.entries == {}
    cache.put("a", (64, 64, 32, 4, 3))
    assert gpu_tuning.TileCache(path).get("a") == (64, 64, 32, 4, 3)
    before = path.read_text()

    def broken_dump(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(gpu_tuning.json, "dump", broken_dump)
    with pytest.warns(UserWarning, match="not saved"):
        cache.put("b", (16, 16, 16, 4, 3))
    assert path.read_text() == before                     # the previous file, whole
    assert [p.name for p in path.parent.iterdir()] == ["tiles.json"]   # no temporary left
    assert cache.get("b") == (16, 16, 16, 4, 3)           # still holds for this run


@pytest.mark.parametrize("content", ["{not json", '{"k": [1, 2]}', "[1, 2, 3]"])
def test_a_corrupt_tile_cache_is_ignored_with_a_warning(tmp_path, content):
    path = tmp_path / "tiles.json"
    path.write_text(content)
    with pytest.warns(UserWarning, match="gpu tile cache .*tiles.json: ignored"):
        cache = gpu_tuning.TileCache(path)
    assert cache.entries == {}
    cache.put("k", (32, 32, 32, 4, 3))                    # replaced at the next save
    assert gpu_tuning.TileCache(path).get("k") == (32, 32, 32, 4, 3)


def test_choose_takes_the_fastest_passes_over_failures_and_then_the_cache(tmp_path):
    cache = gpu_tuning.TileCache(tmp_path / "tiles.json")
    options = [(16, 16, 16, 4, 3), (32, 32, 32, 4, 3), (64, 64, 64, 8, 3)]
    seconds = {options[0]: 3.0, options[1]: 1.0}          # the last one fails

    def measure(config):
        return seconds[config]

    assert gpu_tuning.choose("k", options, measure, cache) == options[1]
    never = lambda config: pytest.fail("measured although cached")   # noqa: E731
    assert gpu_tuning.choose("k", options, never, gpu_tuning.TileCache(cache.path)) == options[1]
    assert gpu_tuning.choose("none", options[2:], measure, cache) == options[2]
    assert cache.get("none") is None                      # nothing measured: not cached


def test_candidates_fit_the_shape_and_start_with_the_heuristic():
    options = gpu_tuning.candidates((10, 1024, 784), (16, 64, 32, 4, 3))
    assert options[0] == (16, 64, 32, 4, 3) and len(set(options)) == len(options)
    assert all(config[0] == 16 and config[1] <= 128 for config in options)


def test_the_executor_measures_at_its_first_full_batch_and_then_reads_the_cache(
        tmp_path, monkeypatch):
    # Under the interpreter the executor keeps the heuristic; forced here, with a
    # fake clock that prefers the largest tiles, the choice reaches every launch.
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "parallel-backprop"))
    monkeypatch.setattr(gk, "TUNED", {})
    timed = []

    def fake_time(launch):
        launch()
        timed.append(1)
        return 1.0 / len(timed)                           # the last candidate wins

    monkeypatch.setattr(gpu_tuning, "time_launch", fake_time)
    network = NETWORKS["tanh-sigmoid-sigmoid-mse"]
    rng = np.random.default_rng(16)
    params = network.init_params(rng)
    batches = [random_batch(network, rows, rng, np.float32) for rows in (20, 7)]
    _, expected = run_steps("serial", network, params, batches, 20)
    with make_executor("gpu", network, params, batch_size=20) as executor:
        executor._autotune = True
        for x, y in batches:
            executor.step(x, y, LR)
        actual = executor.params()
    assert_allclose_verbose(actual, expected, rtol=1e-4, atol=1e-6, what="tuned tiles")
    products = list(gpu_tuning.products(network.sizes, 20, False))
    assert {(kernel, shape) for kernel, shape, _ in gk.TUNED} == set(products)
    assert all(len(config) == 5 for config in gk.TUNED.values())
    cached = json.loads(next((tmp_path / "parallel-backprop").iterdir()).read_text())
    assert len(cached) == len(products)
    measured = len(timed)
    with make_executor("gpu", network, params, batch_size=20) as executor:
        executor._autotune = True
        executor.step(*batches[0], LR)
    assert len(timed) == measured                         # read from the disk, not measured


# ---- bad requests: one clear error ---------------------------------------------------

def test_rejects_what_it_cannot_run():
    network = NETWORKS["relu-softmax-ce"]
    params = network.init_params(0)
    with pytest.raises(ConfigError, match="threads 2: the gpu executor runs on one GPU"):
        make_executor("gpu", network, params, batch_size=8, threads=2)
    with pytest.raises(ConfigError, match="trains float32"):
        make_executor("gpu", network, params.astype(np.float64), batch_size=8)
    with pytest.raises(ConfigError, match="precision 'fp16': expected one of fp32, tf32, bf16"):
        make_executor("gpu", network, params, batch_size=8, precision="fp16")
    with pytest.raises(ConfigError,
                       match="precision 'tf32': expected one of fp32, bf16 for executor 'serial'"):
        make_executor("serial", network, params, batch_size=8, precision="tf32")
    wide = Network((3, gk.MAX_ROW_BLOCK + 1), ("softmax",), "cross-entropy")
    with pytest.raises(ConfigError, match=f"softmax output of {gk.MAX_ROW_BLOCK + 1} units"):
        make_executor("gpu", wide, wide.init_params(0), batch_size=8)
    with make_executor("gpu", network, params, batch_size=8) as executor:
        x, y = random_batch(network, 9, np.random.default_rng(0), np.float32)
        with pytest.raises(ConfigError, match="batch of 9 rows"):
            executor.step(x, y, LR)
        with pytest.raises(ConfigError, match="inputs of shape \\(9, 4\\)"):
            executor.predict(y)


def test_rejects_an_activation_without_kernels():
    register_activation("test_gpu_softsign", lambda z: z / (1 + np.abs(z)),
                        lambda a: (1 - np.abs(a)) ** 2)
    network = Network((4, 5, 2), ("test_gpu_softsign", "sigmoid"))
    with pytest.raises(ConfigError, match="activation 'test_gpu_softsign': the gpu executor"):
        make_executor("gpu", network, network.init_params(0), batch_size=8)


def test_without_a_gpu_or_the_interpreter_the_cli_says_what_to_do(monkeypatch, capsys):
    monkeypatch.setattr(gk, "INTERPRETED", False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code = main(["train", "--dataset", "synthetic", "--samples", "50", "--features", "4",
                 "--classes", "2", "--net", "4-3-1", "--executor", "gpu", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("pbp: error: executor 'gpu': PyTorch sees no CUDA GPU")
    assert "--executor serial" in err and "TRITON_INTERPRET=1" in err


def test_missing_triton_gives_the_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)     # import triton -> ImportError
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[gpu\]'"):
        gpu_module.load_backend()


# ---- on a real GPU only: compiled kernels and CUDA graphs ------------------------------

def run_compiled(script):
    """Runs ``script`` in a fresh Python without the interpreter; it prints "ok" when done."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    src = str(Path(__file__).resolve().parents[1] / "src")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))
    with tempfile.TemporaryDirectory() as cache:       # the measured tiles: not the user's
        env["PBP_CACHE_DIR"] = cache
        done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                              text=True, timeout=600)
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-3000:]


GRAPH_CHECK = textwrap.dedent("""
    import numpy as np
    from parallel_backprop.executors import gpu_kernels
    from parallel_backprop.executors.gpu import GpuExecutor
    from parallel_backprop.executors import make_executor
    from parallel_backprop.network import Network
    assert not gpu_kernels.INTERPRETED
    net = Network((50, 37, 29, 10), ("sigmoid", "tanh", "softmax"), "cross-entropy")
    rng = np.random.default_rng(0)
    params = net.init_params(rng)
    x = rng.standard_normal((300, 50)).astype(np.float32)
    y = net.targets(rng.integers(0, 10, 300))
    cuts = [(0, 64), (64, 128), (128, 150), (150, 214), (214, 236)]
    out = {}
    for name, kwargs in [("serial", {}), ("plain", {"cuda_graphs": False}), ("graph", {})]:
        if name == "serial":
            ex = make_executor("serial", net, params, batch_size=64)
        else:
            ex = GpuExecutor(net, params, batch_size=64, **kwargs)
        with ex:
            losses = [ex.step(x[a:b], y[a:b], 0.5) for a, b in cuts]
            out[name] = losses, ex.params()
    for name in ("plain", "graph"):
        np.testing.assert_allclose(out[name][0], out["serial"][0], rtol=1e-4)
        np.testing.assert_allclose(out[name][1], out["serial"][1], rtol=1e-4, atol=1e-6)
    assert np.array_equal(out["plain"][1], out["graph"][1])
    with GpuExecutor(net, params, batch_size=64) as ex:
        assert ex.load_data(x, y)
        order = rng.permutation(300)
        loss = ex.train_epoch(order, 0.5)
        loss2 = ex.train_epoch(order, 0.5)
        assert np.isfinite(loss) and loss2 < loss
    print("ok")
""")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_compiled_kernels_and_cuda_graphs_match_serial_on_a_gpu():
    run_compiled(GRAPH_CHECK)


TF32_CHECK = textwrap.dedent("""
    # One step of Net-1h at batch 128 and 4096 in each precision: the update of
    # every layer against float64's, and tf32 and bf16 really rounding.
    import numpy as np
    import torch
    from parallel_backprop.executors import gpu_accuracy as acc
    from parallel_backprop.executors.gpu import GpuExecutor
    from parallel_backprop.network import Network
    net = Network((784, 1024, 10), ("sigmoid", "sigmoid"), "mse")
    rng = np.random.default_rng(0)
    params = net.init_params(rng)
    for rows in (128, 4096):
        x = rng.random((rows, 784), dtype=np.float32)
        y = net.targets(rng.integers(0, 10, rows))
        expected = acc.sgd_step64(net, params, x, y, 0.1)
        after = {}
        for precision in ("fp32", "tf32", "bf16"):
            with GpuExecutor(net, params, batch_size=rows, precision=precision) as ex:
                ex.step(x, y, 0.1)
                after[precision] = ex.params()
            errors = acc.update_errors(net, params, after[precision], expected)
            worst = acc.worst_error(errors)
            assert worst < acc.UPDATE_TOLERANCE[precision], (precision, rows, errors)
        if torch.cuda.get_device_capability()[0] >= 8:        # tensor cores with tf32
            assert not np.array_equal(after["tf32"], after["fp32"]), "tf32 ignored"
            assert not np.array_equal(after["bf16"], after["tf32"]), "bf16 ignored"
    print("ok")
""")


@pytest.mark.skipif(not torch.cuda.is_available(),
                    reason="Triton's interpreter ignores input_precision (tf32 computes as "
                           "fp32 on the CPU): tf32 rounding is checked on a CUDA GPU")
def test_tf32_and_bf16_updates_within_their_tolerance_at_net_1h_on_a_gpu():
    run_compiled(TF32_CHECK)


OPTIMIZER_GRAPH_CHECK = textwrap.dedent("""
    # Graph replays follow a new rate and t: captured and plain launches, steps and
    # resident epochs give the same bits, for a rule with and one without t.
    import numpy as np
    from parallel_backprop.executors.gpu import GpuExecutor
    from parallel_backprop.network import Network
    from parallel_backprop.optim import OptimizerConfig
    net = Network((50, 37, 29, 10), ("sigmoid", "tanh", "softmax"), "cross-entropy")
    rng = np.random.default_rng(0)
    params = net.init_params(rng)
    x = rng.standard_normal((300, 50)).astype(np.float32)
    y = net.targets(rng.integers(0, 10, 300))
    order = rng.permutation(300)
    for config in (OptimizerConfig("adamw", weight_decay=0.01),
                   OptimizerConfig("momentum", weight_decay=0.01)):
        out = {}
        for graphs in (False, True):
            with GpuExecutor(net, params, batch_size=64, cuda_graphs=graphs,
                             optimizer=config) as ex:
                for lr in (0.01, 0.005):
                    for k in range(0, 300, 64):
                        ex.step(x[order[k:k + 64]], y[order[k:k + 64]], lr)
                out["steps", graphs] = ex.params(), ex.optimizer_state()
            with GpuExecutor(net, params, batch_size=64, cuda_graphs=graphs,
                             optimizer=config) as ex:
                assert ex.load_data(x, y)
                for lr in (0.01, 0.005):
                    ex.train_epoch(order, lr)
                out["epoch", graphs] = ex.params(), ex.optimizer_state()
        first, first_state = out["steps", False]
        assert not np.array_equal(first, params)
        for key, (p, state) in out.items():
            assert np.array_equal(p, first), (config.name, key)
            assert np.array_equal(state.buffers, first_state.buffers), (config.name, key)
            assert state.step == 10, (config.name, key, state.step)
    print("ok")
""")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_optimizers_in_cuda_graphs_follow_the_rate_and_step_count_on_a_gpu():
    run_compiled(OPTIMIZER_GRAPH_CHECK)
