"""The reference backprop against float64 finite differences and PyTorch autograd."""

import numpy as np
import pytest

from helpers import assert_allclose_verbose, random_batch
from parallel_backprop.activations import register_activation
from parallel_backprop.backprop import Workspace, backward, forward, gradient
from parallel_backprop.network import Network

HIDDEN = ["sigmoid", "tanh", "relu", "linear"]
# (output activation, loss) pairs the network accepts.
OUTPUTS = [("sigmoid", "mse"), ("tanh", "mse"), ("relu", "mse"), ("linear", "mse"),
           ("softmax", "mse"), ("softmax", "cross-entropy"), ("sigmoid", "cross-entropy")]


def mean_loss(network, params, x, y):
    ws = Workspace(network, x.shape[0], params.dtype)
    loss, _ = gradient(network, params, x, y, ws)
    return loss


def finite_difference(network, params, x, y, eps=1e-6):
    grad = np.empty_like(params)
    for i in range(params.size):
        saved = params[i]
        params[i] = saved + eps
        up = mean_loss(network, params, x, y)
        params[i] = saved - eps
        down = mean_loss(network, params, x, y)
        params[i] = saved
        grad[i] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("hidden", HIDDEN)
@pytest.mark.parametrize("output,loss", OUTPUTS)
def test_gradient_matches_finite_differences(hidden, output, loss):
    rng = np.random.default_rng(7)
    n_out = 1 if (output == "sigmoid" and loss == "cross-entropy") else 3
    network = Network((5, 4, 3, n_out), (hidden, hidden, output), loss)
    params = network.init_params(rng, np.float64)
    # Biases nonzero so relu kinks and symmetric cases are exercised honestly.
    params += rng.normal(0, 0.1, params.shape)
    x, y = random_batch(network, 6, rng)
    _, grad = gradient(network, params, x, y)
    assert_allclose_verbose(grad, finite_difference(network, params, x, y),
                            rtol=1e-5, atol=1e-8, what=f"{hidden}/{output}/{loss}")


def test_user_defined_activation_from_output_and_from_input():
    rng = np.random.default_rng(3)
    register_activation("test_softsign", lambda z: z / (1 + np.abs(z)),
                        lambda a: (1 - np.abs(a)) ** 2)
    register_activation("test_softplus", lambda z: np.log1p(np.exp(z)),
                        lambda z: 1 / (1 + np.exp(-z)), derivative_from="input")
    network = Network((4, 5, 3, 2), ("test_softsign", "test_softplus", "sigmoid"))
    params = network.init_params(rng, np.float64)
    x, y = random_batch(network, 5, rng)
    _, grad = gradient(network, params, x, y)
    assert_allclose_verbose(grad, finite_difference(network, params, x, y),
                            rtol=1e-5, atol=1e-8, what="user activations")


TORCH_ACT = {"sigmoid": "sigmoid", "tanh": "tanh", "relu": "relu", "linear": None}


def torch_loss_and_grad(network, params, x, y):
    torch = pytest.importorskip("torch")
    flat = torch.tensor(params, requires_grad=True)
    a = torch.tensor(x)
    offset = 0
    for (n_in, n_out), name in zip(zip(network.sizes, network.sizes[1:]), network.activations):
        w = flat[offset:offset + n_in * n_out].view(n_in, n_out)
        offset += n_in * n_out
        b = flat[offset:offset + n_out]
        offset += n_out
        z = a @ w + b
        if name == "softmax":
            a = torch.softmax(z, dim=1)
        elif name == "linear":
            a = z
        else:
            a = getattr(torch, name)(z)
    target = torch.tensor(y)
    if network.loss == "mse":
        loss = 0.5 * ((a - target) ** 2).sum()
    elif network.activations[-1] == "softmax":
        loss = -(target * torch.log(a)).sum()
    else:
        loss = torch.nn.functional.binary_cross_entropy(a, target, reduction="sum")
    loss.backward()
    return loss.item(), flat.grad.numpy()


@pytest.mark.parametrize("sizes,acts,loss", [
    ((7, 3), ("sigmoid",), "mse"),
    ((13, 11, 5), ("tanh", "softmax"), "cross-entropy"),
    ((29, 17, 9, 4), ("relu", "sigmoid", "sigmoid"), "mse"),
    ((31, 19, 23, 7, 1), ("sigmoid", "relu", "tanh", "sigmoid"), "cross-entropy"),
    ((9, 8, 8, 8, 8, 6), ("linear", "tanh", "relu", "sigmoid", "softmax"), "mse"),
])
def test_gradient_matches_pytorch_autograd(sizes, acts, loss):
    rng = np.random.default_rng(11)
    network = Network(sizes, acts, loss)
    params = network.init_params(rng, np.float64) + rng.normal(0, 0.05, network.n_params)
    x, y = random_batch(network, 37, rng)
    loss_value, grad = gradient(network, params, x, y)
    torch_loss, torch_grad = torch_loss_and_grad(network, params, x, y)
    assert loss_value == pytest.approx(torch_loss, rel=1e-12)
    assert_allclose_verbose(grad, torch_grad, rtol=1e-10, atol=1e-13, what="gradient vs torch")


def test_forward_writes_only_workspace_buffers():
    rng = np.random.default_rng(0)
    network = Network((6, 5, 4), ("sigmoid", "sigmoid"))
    params = network.init_params(rng)
    ws = Workspace(network, 8)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    out = forward(network.layers(params), x, ws)
    assert np.shares_memory(out, ws.a[-1])
    expected = 1 / (1 + np.exp(-(1 / (1 + np.exp(-(x @ network.layers(params)[0][0]))))
                                 @ network.layers(params)[1][0]))
    assert_allclose_verbose(out, expected, rtol=1e-5, what="forward")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_update_equals_gradient_step_in_place(dtype):
    rng = np.random.default_rng(5)
    network = Network((13, 9, 7, 3), ("tanh", "relu", "sigmoid"))
    params = network.init_params(rng, dtype)
    x, y = random_batch(network, 11, rng, dtype)
    _, grad = gradient(network, params, x, y)
    expected = params - 0.3 / 11 * grad
    layers = network.layers(params)
    ws = Workspace(network, 16, dtype)
    forward(layers, x, ws)
    backward(layers, x, y, ws, update_scale=0.3 / 11)
    # The views still point into params: the update happened in place, not on a copy.
    assert all(np.shares_memory(w, params) for w, _ in layers)
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    assert_allclose_verbose(params, expected, rtol=rtol, atol=rtol * 1e-2, what="fused update")


def test_linear_lr_schedule():
    from parallel_backprop.errors import ConfigError
    from parallel_backprop.trainer import TrainConfig

    config = TrainConfig(lr=0.5, epochs=5, lr_schedule="linear")
    assert [config.epoch_lr(e) for e in range(1, 6)] == pytest.approx([0.5, 0.4, 0.3, 0.2, 0.1])
    assert TrainConfig(lr=0.5, epochs=5).epoch_lr(5) == 0.5
    with pytest.raises(ConfigError, match="schedule 'exponential'"):
        TrainConfig(lr_schedule="exponential")
