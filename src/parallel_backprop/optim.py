"""Update rules over flat buffers laid out like the parameters: SGD, momentum, Nesterov, Adam, AdamW.

A step's gradient ``g`` is the batch MEAN of the per-sample gradients. The
optimizer's state is ``k`` buffers of the parameters' shape (one flat array
(k, n_params), so a checkpoint or an Allreduce stays one call), viewed per
layer like the parameters (``Network.layers(state[i])``). :func:`apply`
updates any slice of the parameters from the same slice of ``g`` and of the
state, so each worker updates the columns it owns and every MPI rank applies
the same update to its replica, with no other coordination.

    sgd        p -= lr * g'                              g' = g + wd * p  (weights only)
    momentum   v = mu * v + g';  p -= lr * v             (PyTorch's convention)
    nesterov   v = mu * v + g';  p -= lr * (g' + mu * v)
    adam       m = b1 m + (1 - b1) g';  s = b2 s + (1 - b2) g'^2
               p -= lr / (1 - b1^t) * m / (sqrt(s) / sqrt(1 - b2^t) + eps)
    adamw      p *= 1 - lr * wd (decoupled), then adam on g (no L2 term)

``t`` counts the steps taken, from 1. Weight decay applies to weights only,
never to biases (scikit-learn's ``alpha`` and common practice). Plain SGD
keeps no state; the executors fold it into the gradient product (see
:func:`..backprop.update`), so it costs nothing over the seed's method.

Two implementations of each rule, equal bit for bit: the compiled module
:data:`native` (``parallel_backprop._fused``, from ``_native/fused.c``),
which reads and writes every element once, and NumPy's passes
(:func:`numpy_apply`), a dozen for Adam, used where the module was not
built (an install without a C compiler). :func:`apply` takes the first
there is. Measured on one core (Xeon, Net-1h's 814,090 float32
parameters, alone): Adam 0.8 ms compiled against 4.5 ms in NumPy's passes
(1.75 ms when they go in cache-sized blocks); a whole Net-1h step at batch
128 takes 4.5 ms against plain SGD's 3.7 ms (6.1 ms in NumPy's passes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from . import compiled
from .errors import ConfigError

native = compiled.optional("_fused")       # None: NumPy's passes instead

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
# State buffers each keeps: velocity; first and second moments.
STATE_BUFFERS = {"sgd": 0, "momentum": 1, "nesterov": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class OptimizerConfig:
    """An update rule and its settings; validated when made (one line naming the option)."""

    name: str = "sgd"
    momentum: float = 0.9       # momentum, nesterov
    weight_decay: float = 0.0   # L2 on the weights; decoupled for adamw
    beta1: float = 0.9          # adam, adamw
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"--optimizer {self.name!r}: expected one of "
                              f"{', '.join(OPTIMIZERS)}")
        for option, value, low, high in (("--momentum", self.momentum, 0.0, 1.0),
                                         ("--beta1", self.beta1, 0.0, 1.0),
                                         ("--beta2", self.beta2, 0.0, 1.0)):
            if not (_number(value) and low <= value < high):
                raise ConfigError(f"{option} {value!r}: expected a number in [0, 1)")
        if not (_number(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay {self.weight_decay!r}: expected a number >= 0")
        if not (_number(self.eps) and self.eps > 0):
            raise ConfigError(f"--eps {self.eps!r}: expected a positive number")
        if self.name == "nesterov" and self.momentum == 0:
            raise ConfigError("--optimizer nesterov: needs --momentum above 0 (Nesterov's "
                              "look-ahead is along the velocity)")

    @property
    def n_buffers(self) -> int:
        """State buffers of the parameters' shape this optimizer keeps."""
        return STATE_BUFFERS[self.name]

    @property
    def is_plain_sgd(self) -> bool:
        """SGD without weight decay: the seed's update, folded into the gradient product."""
        return self.name == "sgd" and self.weight_decay == 0

    def new_state(self, n_params: int, dtype=np.float32) -> np.ndarray:
        """Zeroed state, (n_buffers, n_params)."""
        return np.zeros((self.n_buffers, n_params), dtype)


def _number(value) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def apply(config: OptimizerConfig, p: np.ndarray, g: np.ndarray, state: list[np.ndarray],
          lr: float, t: int, *, decay: bool, scratch: np.ndarray | None) -> None:
    """One update of ``p`` in place from the mean gradient ``g``, which may be overwritten.

    ``p``, ``g``, each of ``state`` (the optimizer's buffers) and ``scratch``
    are arrays of one shape: the same slice of the flat layout (a layer's W
    or b, or a block of their columns). ``t`` is this step's number, from 1;
    ``decay``: whether ``p`` holds weights (weight decay applies) or biases.
    The compiled pass where :data:`native` was built (``scratch`` unused,
    may be None), else :func:`numpy_apply`; the same result to the bit.
    """
    if native is None:
        numpy_apply(config, p, g, state, lr, t, decay=decay, scratch=scratch)
        return
    wd = config.weight_decay if decay else 0.0
    if config.name in ("adam", "adamw"):
        native.adam(p, g, *state, *_adam_constants(config, lr, t),
                    0.0 if config.name == "adamw" else wd,
                    1.0 - lr * wd if config.name == "adamw" and wd else 1.0)
    elif config.name == "sgd":
        native.sgd(p, g, lr, wd)
    else:
        native.momentum(p, g, *state, config.momentum, lr, wd, config.name == "nesterov")


def descend(p: np.ndarray, velocity: np.ndarray, lr: float, wd: float,
            scratch: np.ndarray | None) -> None:
    """Momentum's step once ``velocity`` holds ``mu * v + g`` (the executors fold that into
    the gradient product): ``v += wd * p`` (when ``wd``), then ``p -= lr * v``.

    Compiled where :data:`native` was built, else NumPy's passes (``scratch``
    of ``p``'s shape); the same result to the bit.
    """
    if native is not None:
        native.descend(p, velocity, lr, wd)
        return
    if wd:
        np.multiply(p, wd, out=scratch)
        velocity += scratch
    np.multiply(velocity, lr, out=scratch)
    p -= scratch


def _adam_constants(config: OptimizerConfig, lr: float, t: int) -> tuple[float, ...]:
    """b1, 1 - b1, b2, 1 - b2, 1 / sqrt(1 - b2^t), eps, lr / (1 - b1^t): Adam's factors."""
    b1, b2 = config.beta1, config.beta2
    return (b1, 1.0 - b1, b2, 1.0 - b2, 1.0 / math.sqrt(1.0 - b2 ** t), config.eps,
            lr / (1.0 - b1 ** t))


def numpy_apply(config: OptimizerConfig, p: np.ndarray, g: np.ndarray,
                state: list[np.ndarray], lr: float, t: int, *, decay: bool,
                scratch: np.ndarray) -> None:
    """:func:`apply` in NumPy's element-wise passes; ``g`` is overwritten.

    No array is allocated: ``scratch`` holds the intermediate products.
    """
    wd = config.weight_decay if decay else 0.0
    if config.name == "adamw":
        if wd:
            p *= 1.0 - lr * wd
    elif wd:
        np.multiply(p, wd, out=scratch)
        g += scratch                                   # g' = g + wd * p
    if config.name == "sgd":
        g *= lr
        p -= g
    elif config.name in ("momentum", "nesterov"):
        (velocity,) = state
        velocity *= config.momentum
        velocity += g
        if config.name == "nesterov":
            np.multiply(velocity, config.momentum, out=scratch)
            g += scratch                               # g' + mu * v
            g *= lr
            p -= g
        else:
            np.multiply(velocity, lr, out=scratch)
            p -= scratch
    else:
        _adam(config, p, g, state, lr, t, scratch)


def _adam(config: OptimizerConfig, p: np.ndarray, g: np.ndarray, state: list[np.ndarray],
          lr: float, t: int, scratch: np.ndarray) -> None:
    """Adam's moments and step, with PyTorch's placement of eps and bias corrections."""
    first, second = state
    b1, one_minus_b1, b2, one_minus_b2, c2, eps, c1 = _adam_constants(config, lr, t)
    first *= b1
    np.multiply(g, one_minus_b1, out=scratch)
    first += scratch
    second *= b2
    np.multiply(g, g, out=scratch)
    scratch *= one_minus_b2
    second += scratch
    np.sqrt(second, out=scratch)
    scratch *= c2
    scratch += eps
    np.divide(first, scratch, out=scratch)
    scratch *= c1
    p -= scratch


def reference_step(config: OptimizerConfig, params: np.ndarray, grad: np.ndarray,
                   state: np.ndarray, lr: float, t: int, weight_mask: np.ndarray) -> None:
    """The whole flat update in float64, written from the formulas above (for tests).

    ``params`` (P,), ``grad`` (P,) the mean gradient, ``state`` (k, P), all
    updated in place; ``weight_mask`` (P,) bool: which entries are weights.
    """
    wd = np.where(weight_mask, config.weight_decay, 0.0)
    if config.name == "adamw":
        params *= 1.0 - lr * wd
        g = grad.copy()
    else:
        g = grad + wd * params
    if config.name == "sgd":
        params -= lr * g
    elif config.name == "momentum":
        state[0] = config.momentum * state[0] + g
        params -= lr * state[0]
    elif config.name == "nesterov":
        state[0] = config.momentum * state[0] + g
        params -= lr * (g + config.momentum * state[0])
    else:
        state[0] = config.beta1 * state[0] + (1 - config.beta1) * g
        state[1] = config.beta2 * state[1] + (1 - config.beta2) * g * g
        m_hat = state[0] / (1 - config.beta1 ** t)
        s_hat = state[1] / (1 - config.beta2 ** t)
        params -= lr * m_hat / (np.sqrt(s_hat) + config.eps)


__all__ = ["OPTIMIZERS", "OptimizerConfig", "apply", "descend", "native", "numpy_apply",
           "reference_step"]
