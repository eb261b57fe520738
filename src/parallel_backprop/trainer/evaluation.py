"""Accuracy and outputs of trained parameters."""

from __future__ import annotations

import numpy as np

from ..errors import InputError
from ..executors import BASELINE, Executor, make_executor
from ..network import Network
from ..resources import check_allocation, prediction_batch, prediction_bytes


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
                    batch_size: int = 1024, what: str = "inputs") -> np.ndarray:
    """Output activations (n, n_out) of ``params`` for ``x`` (n, n_in), all finite.

    ``what`` names the inputs in an error. Batches shrink to what memory
    holds (ConfigError, before allocating, when not even one row fits);
    rows whose outputs are NaN or infinite are an InputError
    (see :func:`check_outputs`).
    """
    # No buffers for rows that are not there, nor more than memory holds.
    batch = prediction_batch(network, max(1, min(batch_size, x.shape[0])))
    check_allocation(prediction_bytes(network, batch),
                     f"predicting with net {network.spec} at batch {batch}")
    # An overflow is named by check_outputs, with its rows, instead of warned about.
    with make_executor(BASELINE, network, params, batch_size=batch) as executor, \
            np.errstate(over="ignore", invalid="ignore"):
        outputs = executor.predict(x)
    check_outputs(outputs, params, x, what)
    return outputs


def check_outputs(outputs: np.ndarray, params: np.ndarray, x: np.ndarray, what: str) -> None:
    """Raise InputError naming the rows of ``x`` whose ``outputs`` are NaN or infinite.

    Inputs are checked finite where they enter, so a non-finite output is an
    overflow in the forward pass: inputs far beyond the scale the weights
    were trained on, or weights that grew without bound (a diverged run).
    Returned silently, such rows would be classified as class 0, or as
    nothing at all; the message gives both magnitudes to tell the two apart.
    """
    finite = np.isfinite(outputs).all(axis=1)
    if finite.all():
        return
    rows = np.flatnonzero(~finite)
    listed = ", ".join(str(i) for i in rows[:5]) + (", ..." if len(rows) > 5 else "")
    if not np.all(np.isfinite(params)):
        cause = ("the weights are NaN or infinite: a model from a diverged run; train it "
                 "again with a smaller learning rate")
    else:
        cause = (f"likely cause: inputs far outside the range the model was trained on "
                 f"(largest magnitude in these rows {float(np.abs(x[rows]).max()):.3g}), or "
                 f"weights from a diverging run (largest {float(np.abs(params).max()):.3g})")
    raise InputError(f"{what}: the network's outputs are NaN or infinite for {len(rows)} of "
                     f"{len(outputs)} samples (sample index {listed}); {cause}")
