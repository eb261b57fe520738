"""Accuracy and outputs of trained parameters."""

from __future__ import annotations

import numpy as np

from ..executors import BASELINE, Executor, make_executor
from ..network import Network


def accuracy(executor: Executor, network: Network, x: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``x`` (n, n_in) that ``executor`` classifies as ``labels``; NaN for no rows."""
    if x.shape[0] == 0:
        return float("nan")
    return float(np.mean(network.classify(executor.predict(x)) == labels))


def evaluate(network: Network, params: np.ndarray, x: np.ndarray, labels: np.ndarray,
             batch_size: int = 1024) -> float:
    """Accuracy of ``params`` on ``x`` (n, n_in) against ``labels`` (n,), on the baseline."""
    if x.shape[0] == 0:
        return float("nan")
    outputs = predict_outputs(network, params, x, batch_size)
    return float(np.mean(network.classify(outputs) == labels))


def predict_outputs(network: Network, params: np.ndarray, x: np.ndarray,
                    batch_size: int = 1024) -> np.ndarray:
    """Output activations (n, n_out) of ``params`` for ``x`` (n, n_in)."""
    with make_executor(BASELINE, network, params, batch_size=batch_size) as executor:
        return executor.predict(x)
