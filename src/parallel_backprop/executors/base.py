"""The executor contract between the trainer and wherever a step runs.

An executor owns the parameters for the duration of a run (on the host, on
other threads or ranks, or on a GPU) and offers three things: ``step`` (one
SGD step on a mini-batch), ``predict`` (the output layer's activations) and
``params`` (the flat parameters back on the host). The trainer knows nothing
else about it. Executors are context managers: entering may start threads or
pin BLAS, leaving undoes it.
"""

from __future__ import annotations

import numpy as np

from ..network import Network


class Executor:
    """Base class: subclasses implement ``step``, ``predict`` and ``params``."""

    name = "base"

    def __init__(self, network: Network, params: np.ndarray, *, batch_size: int,
                 threads: int = 1):
        self.network = network
        self.batch_size = batch_size
        self.threads = threads

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> float:
        """One SGD step on ``x`` (n, n_in), targets ``y`` (n, n_out); returns the loss sum.

        The update is ``params -= lr / n * sum of per-sample gradients``.
        The caller may overwrite ``x`` and ``y`` as soon as ``step`` returns.
        """
        raise NotImplementedError

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Output activations (n, n_out) for ``x`` (n, n_in), in chunks of the batch size."""
        raise NotImplementedError

    def params(self) -> np.ndarray:
        """A host copy of the flat parameters (n_params,)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release threads, BLAS limits or devices; idempotent."""

    def __enter__(self) -> "Executor":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()
