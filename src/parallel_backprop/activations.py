"""Activation functions and losses: name -> function tables.

Each activation is a pair: ``function`` maps the pre-activation ``z`` to
``a = f(z)`` (in place: it may overwrite and return ``z``), and
``derivative`` gives ``f'`` from the stored output ``a``, the seed paper's
sigmoid trick (``f'(z) = a * (1 - a)``): backprop needs no copy of ``z``.

A user-defined activation is registered with :func:`register_activation`.
If its derivative cannot be written from the output, pass
``derivative_from="input"``; the forward pass then keeps ``z`` as well.

Softmax is not element-wise and only valid on the output layer; its
Jacobian product lives in :func:`output_delta` together with the losses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from . import compiled
from .errors import ConfigError

Array = np.ndarray


@dataclass(frozen=True)
class Activation:
    """An element-wise activation.

    Parameters
    ----------
    name : str
    function : callable
        ``function(z) -> a``; may work in place and return ``z``.
    derivative : callable
        ``derivative(a) -> f'`` when ``derivative_from == "output"``,
        ``derivative(z) -> f'`` when ``derivative_from == "input"``.
    derivative_from : {"output", "input"}
    scale_in_place : callable, optional
        ``scale_in_place(delta, a, scratch)`` does ``delta *= f'(a)`` with no
        allocation, using ``scratch`` (same shape); the built-ins have one so
        the training loop allocates nothing.
    bf16_kernel : str, optional
        The prefix of this built-in's compiled passes in :mod:`._bf16`, which
        compute the activation or ``delta *= f'(a)`` and write the bfloat16
        copy of the result in the same pass, with the same float32 result
        (:func:`.precision.activate_to_bf16`, :func:`.precision.scale_to_bf16`).
    scale_kind : int, optional
        This built-in's ``f'`` in the compiled ``scale_delta`` pass
        (:mod:`.compiled`): one pass instead of NumPy's two or three, same result.
    """

    name: str
    function: Callable[[Array], Array]
    derivative: Callable[[Array], Array]
    derivative_from: str = "output"
    scale_in_place: Callable[[Array, Array, Array], None] | None = None
    bf16_kernel: str | None = None
    scale_kind: int | None = None

    def scale_delta(self, delta: Array, a: Array, z: Array | None, scratch: Array) -> None:
        """``delta *= f'``, from the stored output (or input) of this layer."""
        kernels = compiled.kernels
        if (self.scale_kind is not None and kernels is not None
                and delta.dtype.char in compiled.KERNEL_DTYPES and a.dtype == delta.dtype):
            compiled.check(kernels.scale_delta(self.scale_kind, delta, a), "scale_delta")
        elif self.scale_in_place is not None:
            self.scale_in_place(delta, a, scratch)
        elif self.derivative_from == "input":
            delta *= self.derivative(z)
        else:
            delta *= self.derivative(a)


def _sigmoid(z: Array) -> Array:
    # 1 / (1 + exp(-z)) computed in place as 0.5 * tanh(z / 2) + 0.5: the same
    # function, no overflow for any z, and about twice as fast as negate, exp,
    # add, reciprocal (NumPy's tanh is vectorised; measured 33 vs 72 us on a
    # 128 x 1024 float32 batch).
    z *= 0.5
    np.tanh(z, out=z)
    z *= 0.5
    z += 0.5
    return z


def _tanh(z: Array) -> Array:
    return np.tanh(z, out=z)


def _relu(z: Array) -> Array:
    return np.maximum(z, 0.0, out=z)


def _linear(z: Array) -> Array:
    return z


def _softmax(z: Array) -> Array:
    # Row-wise, shifted by the row maximum so exp never overflows (compiled: one
    # pass instead of NumPy's reduction over short rows, 12 us for 200 x 10).
    kernels = compiled.kernels
    if kernels is not None and z.dtype.char in compiled.KERNEL_DTYPES and z.ndim == 2:
        compiled.check(kernels.shift_rows(z), "shift_rows")
    else:
        z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z


def _sigmoid_scale(delta: Array, a: Array, scratch: Array) -> None:
    np.subtract(1.0, a, out=scratch)  # f' = a (1 - a)
    scratch *= a
    delta *= scratch


def _tanh_scale(delta: Array, a: Array, scratch: Array) -> None:
    np.multiply(a, a, out=scratch)  # f' = 1 - a^2
    np.subtract(1.0, scratch, out=scratch)
    delta *= scratch


def _relu_scale(delta: Array, a: Array, scratch: Array) -> None:
    np.greater(a, 0.0, out=scratch)  # f' = [a > 0]
    delta *= scratch


def _identity_scale(delta: Array, a: Array, scratch: Array) -> None:
    pass  # f' = 1


_ACTIVATIONS: dict[str, Activation] = {
    "sigmoid": Activation("sigmoid", _sigmoid, lambda a: a * (1.0 - a),
                          scale_in_place=_sigmoid_scale, bf16_kernel="sigmoid", scale_kind=1),
    "tanh": Activation("tanh", _tanh, lambda a: 1.0 - a * a, scale_in_place=_tanh_scale,
                       scale_kind=2),
    "relu": Activation("relu", _relu, lambda a: (a > 0).astype(a.dtype),
                       scale_in_place=_relu_scale, scale_kind=0),
    "linear": Activation("linear", _linear, np.ones_like, scale_in_place=_identity_scale),
    # Softmax's derivative is a Jacobian: output_delta handles it, and
    # Network refuses softmax on a hidden layer.
    "softmax": Activation("softmax", _softmax, np.ones_like, scale_in_place=_identity_scale),
}

BUILTIN_ACTIVATIONS = tuple(_ACTIVATIONS)
LOSSES = ("mse", "cross-entropy")


def register_activation(
    name: str,
    function: Callable[[Array], Array],
    derivative: Callable[[Array], Array],
    derivative_from: str = "output",
) -> Activation:
    """Make a user-defined activation available by name.

    Parameters
    ----------
    name : str
        The name used in ``Network`` and ``pbp train --activation``.
    function : callable
        ``function(z) -> a`` element-wise, ``z`` of shape (batch, units).
    derivative : callable
        ``f'`` from the output ``a`` (default) or from the input ``z``.
    derivative_from : {"output", "input"}

    Examples
    --------
    >>> import numpy as np
    >>> softsign = register_activation(
    ...     "softsign", lambda z: z / (1 + np.abs(z)),
    ...     lambda a: (1 - np.abs(a)) ** 2)
    """
    if name in BUILTIN_ACTIVATIONS:
        raise ConfigError(f"activation {name!r}: a built-in activation cannot be redefined")
    if derivative_from not in ("output", "input"):
        raise ConfigError(
            f"derivative_from={derivative_from!r}: expected 'output' or 'input'")
    activation = Activation(name, function, derivative, derivative_from)
    _ACTIVATIONS[name] = activation
    return activation


def get_activation(name: str) -> Activation:
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        raise ConfigError(
            f"activation {name!r}: expected one of {', '.join(_ACTIVATIONS)}") from None


def activation_names() -> tuple[str, ...]:
    return tuple(_ACTIVATIONS)


def activate(function: Activation, z: Array, bias: Array) -> None:
    """``z := f(z + bias)`` in place: a layer's element-wise work in the forward pass.

    ReLU in one compiled pass, sigmoid's bias add and affine steps fused
    around NumPy's tanh (:mod:`.compiled`, same result as the NumPy passes);
    otherwise the bias add, then ``function``.
    """
    kernels = compiled.kernels
    if kernels is not None and z.dtype.char in compiled.KERNEL_DTYPES and z.dtype == bias.dtype:
        if function.name == "relu":            # built-in: register_activation refuses the name
            compiled.check(kernels.bias_relu(z, bias), "bias_relu")
            return
        if function.name == "sigmoid":         # 1/2 tanh(z/2) + 1/2, as _sigmoid
            compiled.check(kernels.bias_scale(z, bias, 0.5), "bias_scale")
            np.tanh(z, out=z)
            compiled.check(kernels.affine(z, 0.5, 0.5), "affine")
            return
    z += bias
    a = function.function(z)                   # in place for the built-ins
    if a is not z:
        z[...] = a


def loss_sum(output_activation: str, loss: str, a: Array, y: Array,
             weights: Array | None = None) -> float:
    """Loss summed over the batch (callers divide by the batch size once).

    MSE is ``0.5 * sum((a - y)**2)``, the seed's. Cross-entropy is
    categorical for a softmax output and per-unit binary otherwise.
    ``weights`` (n,): per-row sample weights, row i's loss counted
    ``weights[i]`` times (scikit-learn's ``sample_weight``).
    """
    def weigh(rows: Array) -> Array:       # the per-row factor, on one operand of each dot
        return rows if weights is None else rows * weights[:, None]

    if loss == "mse":
        diff = a - y
        return 0.5 * float(np.vdot(weigh(diff), diff))
    eps = np.finfo(a.dtype).tiny
    if output_activation == "softmax":
        return -float(np.vdot(weigh(y), np.log(np.maximum(a, eps))))
    return -float(np.vdot(weigh(y), np.log(np.maximum(a, eps)))
                  + np.vdot(weigh(1.0 - y), np.log(np.maximum(1.0 - a, eps))))


def output_delta(output_activation: Activation, loss: str, a: Array, y: Array,
                 z: Array | None, out: Array, scratch: Array) -> Array:
    """dLoss/dz at the output layer, written into ``out`` (batch, n_out).

    MSE: ``(a - y) * f'(a)``, the seed's output delta; for softmax the
    Jacobian product ``a * (g - sum(g * a))`` with ``g = a - y``.
    Cross-entropy with its matching output (softmax, or sigmoid for binary
    cross-entropy): ``a - y``, the derivative's terms cancel.
    """
    np.subtract(a, y, out=out)
    if loss == "cross-entropy":
        return out
    if output_activation.name == "softmax":
        out -= np.einsum("ij,ij->i", out, a)[:, None]
        out *= a
        return out
    output_activation.scale_delta(out, a, z, scratch)
    return out
