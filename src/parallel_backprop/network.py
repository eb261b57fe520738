"""The network: layer sizes, activations, loss, and the flat parameter buffer.

All parameters live in ONE flat array; each layer's weight matrix and bias
vector are views into it. A gradient has the same layout, so summing
gradients, an MPI Allreduce, the SGD update or a checkpoint is one call on
one array. Layer l holds, in order::

    W_l  (n_in, n_out)  row-major: z = a_prev @ W_l + b_l
    b_l  (n_out,)
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from .activations import LOSSES, get_activation
from .errors import ConfigError

# The seed paper's networks: one or two hidden layers of 1024 sigmoid units.
SHORTHANDS = {"1h": (1024,), "2h": (1024, 1024)}


@dataclass(frozen=True)
class Network:
    """An MLP architecture (no parameters: those live in a flat array).

    Parameters
    ----------
    sizes : tuple of int
        Units per layer, input first: ``(784, 1024, 10)``.
    activations : tuple of str
        One per weight layer (``len(sizes) - 1``); the last is the output's.
    loss : {"mse", "cross-entropy"}
    """

    sizes: tuple[int, ...]
    activations: tuple[str, ...]
    loss: str = "mse"

    def __post_init__(self) -> None:
        if len(self.sizes) < 2 or any(int(n) < 1 for n in self.sizes):
            raise ConfigError(
                f"layer sizes {self.sizes}: expected at least two positive sizes")
        if len(self.activations) != len(self.sizes) - 1:
            raise ConfigError(
                f"activations {self.activations}: expected {len(self.sizes) - 1}, "
                "one per layer after the input")
        for name in self.activations:
            get_activation(name)  # raises for an unknown name
        if "softmax" in self.activations[:-1]:
            raise ConfigError("activation 'softmax' is only valid on the output layer")
        if self.loss not in LOSSES:
            raise ConfigError(f"loss {self.loss!r}: expected one of {', '.join(LOSSES)}")
        if self.loss == "cross-entropy" and self.activations[-1] not in ("softmax", "sigmoid"):
            raise ConfigError(
                f"loss 'cross-entropy' needs a softmax or sigmoid output, "
                f"got output activation {self.activations[-1]!r}")
        if self.activations[-1] == "softmax" and self.sizes[-1] < 2:
            raise ConfigError("a softmax output needs at least 2 units")

    @classmethod
    def from_spec(cls, spec: str, n_inputs: int, n_classes: int, *,
                  activation: str = "sigmoid", output_activation: str | None = None,
                  loss: str = "mse", n_outputs: int | None = None) -> "Network":
        """Build a network from a spec such as ``784-1024-10``, ``1h`` or ``2h``.

        Parameters
        ----------
        spec : str
            Sizes joined by ``-`` (input first), or a shorthand: ``1h`` is
            ``n_inputs-1024-outputs``, ``2h`` is ``n_inputs-1024-1024-outputs``.
        n_inputs, n_classes : int
            The data's feature and class counts, which a full spec must match.
        activation : str
            Hidden activation, or a comma-separated list, one per hidden layer.
        output_activation : str, optional
            Defaults to the hidden activation for MSE (the seed's all-sigmoid
            network), and to softmax (sigmoid for 2 classes) for cross-entropy.
        n_outputs : int, optional
            Output units when they are not classes' (a regression's targets).
        """
        if output_activation is None:
            if loss == "cross-entropy":
                output_activation = "sigmoid" if n_classes == 2 else "softmax"
            else:
                output_activation = activation.split(",")[-1]
        n_outputs = n_outputs or output_units(n_classes, output_activation)
        spec = spec.strip()
        if spec in SHORTHANDS:
            sizes = (n_inputs, *SHORTHANDS[spec], n_outputs)
        elif re.fullmatch(r"\d+(-\d+)+", spec):
            sizes = tuple(int(n) for n in spec.split("-"))
            if sizes[0] != n_inputs:
                raise ConfigError(
                    f"net {spec!r}: input size {sizes[0]} does not match the data's "
                    f"{n_inputs} features")
            if sizes[-1] != n_outputs:
                raise ConfigError(
                    f"net {spec!r}: output size {sizes[-1]} does not match the "
                    f"{n_outputs} output unit(s) needed for {n_classes} classes "
                    f"with a {output_activation} output")
        else:
            raise ConfigError(
                f"net {spec!r}: expected sizes joined by '-' such as "
                f"{n_inputs}-1024-{n_outputs}, or one of {', '.join(SHORTHANDS)}")
        hidden = [name.strip() for name in activation.split(",")]
        n_hidden = len(sizes) - 2
        if len(hidden) == 1:
            hidden = hidden * n_hidden
        elif len(hidden) != n_hidden:
            raise ConfigError(
                f"activation {activation!r}: {len(hidden)} names for {n_hidden} "
                "hidden layers; give one name or one per hidden layer")
        return cls(sizes, (*hidden, output_activation), loss)

    @property
    def n_layers(self) -> int:
        return len(self.sizes) - 1

    @property
    def n_params(self) -> int:
        return sum((n_in + 1) * n_out for n_in, n_out in zip(self.sizes, self.sizes[1:]))

    @property
    def spec(self) -> str:
        return "-".join(str(n) for n in self.sizes)

    def layers(self, flat: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per-layer ``(W, b)`` views into a flat parameter (or gradient) array."""
        if flat.shape != (self.n_params,):
            raise ConfigError(
                f"parameter array of shape {flat.shape}: expected ({self.n_params},) "
                f"for net {self.spec}")
        views, offset = [], 0
        for n_in, n_out in zip(self.sizes, self.sizes[1:]):
            weights = flat[offset:offset + n_in * n_out].reshape(n_in, n_out)
            offset += n_in * n_out
            bias = flat[offset:offset + n_out]
            offset += n_out
            views.append((weights, bias))
        return views

    def init_params(self, rng: np.random.Generator | int,
                    dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Glorot-uniform weights, zero biases, in one new flat array."""
        rng = np.random.default_rng(rng)
        flat = np.zeros(self.n_params, dtype=dtype)
        for weights, _ in self.layers(flat):
            fan_in, fan_out = weights.shape
            limit = np.sqrt(6.0 / (fan_in + fan_out))
            weights[...] = rng.uniform(-limit, limit, size=weights.shape)
        return flat

    def train_flops_per_sample(self) -> int:
        """Exact FLOPs of one sample's forward + backward (multiply-adds as 2).

        Forward ``2 * n_in * n_out`` per layer, the weight gradient the same,
        and the hidden deltas ``2 * n_in * n_out`` for every layer but the
        first (the input needs no delta). Element-wise work is left out.
        """
        products = [n_in * n_out for n_in, n_out in zip(self.sizes, self.sizes[1:])]
        return 2 * (2 * sum(products) + sum(products[1:]))

    def targets(self, labels: np.ndarray, dtype: np.dtype | type = np.float32) -> np.ndarray:
        """Training targets (n, n_outputs) from class indices (n,).

        One output unit encodes two classes as 0/1; more units are one-hot.
        """
        n_outputs = self.sizes[-1]
        if n_outputs == 1:
            return labels.astype(dtype).reshape(-1, 1)
        targets = np.zeros((labels.shape[0], n_outputs), dtype=dtype)
        targets[np.arange(labels.shape[0]), labels] = 1.0
        return targets

    def classify(self, outputs: np.ndarray) -> np.ndarray:
        """Class indices (n,) from the output layer's activations (n, n_outputs)."""
        if outputs.shape[1] == 1:
            return (outputs[:, 0] > 0.5).astype(np.int64)
        return outputs.argmax(axis=1)


def output_units(n_classes: int, output_activation: str) -> int:
    """Two classes take one sigmoid unit (the seed's KDD network); softmax needs two."""
    if n_classes == 2 and output_activation != "softmax":
        return 1
    return n_classes
