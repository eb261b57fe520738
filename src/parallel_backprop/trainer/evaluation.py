"""Accuracy, the regression metrics (R², RMSE, MAE) and outputs of trained parameters.

A run's task is "classify" (targets are class indices, scored by accuracy)
or "regress" (float targets (n, k), scored by R², RMSE and MAE); each
metric is defined once, here.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError, InputError
from ..executors import BASELINE, Executor, make_executor
from ..network import Network
from ..resources import check_allocation, prediction_batch, prediction_bytes

TASKS = ("classify", "regress")
REGRESSION_METRICS = ("r2", "rmse", "mae")


def infer_task(y: np.ndarray | None) -> str:
    """"regress" for float targets (n, k), else "classify" (class indices, or no targets)."""
    if y is not None and y.ndim == 2 and np.issubdtype(y.dtype, np.floating):
        return "regress"
    return "classify"


def task_of(task: str | None, y_train: np.ndarray, y_val: np.ndarray | None = None) -> str:
    """``task`` checked; None: inferred from ``y_val``'s kind (without one, ``y_train``'s).

    The validation targets decide, since they are what is scored: class
    indices with float training targets (given as outputs) still classify.
    """
    if task is None:
        return infer_task(y_val if y_val is not None else y_train)
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: expected one of {', '.join(TASKS)}")
    return task


def r2_score(predicted: np.ndarray, targets: np.ndarray) -> float:
    """R² = 1 - SS_res / SS_tot per output column, averaged over the columns.

    Both (n, k) (or (n,)). A column whose targets are all equal has no
    variance to explain: it is left out of the average; NaN when every
    column is so (one validation sample) or there are no rows.
    """
    predicted, targets = _columns(predicted), _columns(targets)
    if targets.shape[0] == 0:
        return float("nan")
    ss_res = np.sum((targets - predicted) ** 2, axis=0)
    ss_tot = np.sum((targets - targets.mean(axis=0)) ** 2, axis=0)
    varies = ss_tot > 0
    if not varies.any():
        return float("nan")
    return float(np.mean(1.0 - ss_res[varies] / ss_tot[varies]))


def rmse(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Root mean squared error over every value of (n, k); NaN for no rows."""
    diff = _columns(predicted) - _columns(targets)
    return float(np.sqrt(np.mean(diff ** 2))) if diff.size else float("nan")


def mae(predicted: np.ndarray, targets: np.ndarray) -> float:
    """Mean absolute error over every value of (n, k); NaN for no rows."""
    diff = _columns(predicted) - _columns(targets)
    return float(np.mean(np.abs(diff))) if diff.size else float("nan")


def regression_metrics(predicted: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """``{"r2", "rmse", "mae"}`` of ``predicted`` against ``targets``, both (n, k)."""
    return {"r2": r2_score(predicted, targets), "rmse": rmse(predicted, targets),
            "mae": mae(predicted, targets)}


def _columns(values: np.ndarray) -> np.ndarray:
    """(n, k) float64: a 1-D array is one column; float64 so that sums do not lose digits."""
    values = np.asarray(values, dtype=np.float64)
    return values.reshape(-1, 1) if values.ndim == 1 else values


def accuracy(executor: Executor, network: Network, x: np.ndarray, labels: np.ndarray) -> float:
    """Share of ``x`` (n, n_in) that ``executor`` classifies as ``labels``; NaN for no rows."""
    if x.shape[0] == 0:
        return float("nan")
    return float(np.mean(network.classify(executor.predict(x)) == labels))


def evaluate_regression(network: Network, params: np.ndarray, x: np.ndarray,
                        targets: np.ndarray, inverse=None) -> dict[str, float]:
    """R², RMSE and MAE of ``params`` on ``x`` against ``targets`` (n, k), on the baseline.

    ``inverse``: maps standardised values (n, k) back to the original units
    (a table preprocessor's ``inverse_targets``); both the outputs and the
    targets pass through it, so the errors are in those units.
    """
    if x.shape[0] == 0:
        return dict.fromkeys(REGRESSION_METRICS, float("nan"))
    outputs = predict_outputs(network, params, x)
    if inverse is not None:
        outputs, targets = inverse(outputs), inverse(targets)
    return regression_metrics(outputs, targets)


def evaluate(network: Network, params: np.ndarray, x: np.ndarray, labels: np.ndarray,
             batch_size: int = 1024) -> float:
    """Accuracy of ``params`` on ``x`` (n, n_in) against ``labels`` (n,), on the baseline."""
    if x.shape[0] == 0:
        return float("nan")
    outputs = predict_outputs(network, params, x, batch_size)
    return float(np.mean(network.classify(outputs) == labels))


def class_probabilities(outputs: np.ndarray) -> np.ndarray:
    """Class probabilities, float64 (n, n_classes) with rows summing to 1, from outputs.

    One output unit (two classes, a sigmoid): ``[1 - p, p]``. Several:
    softmax outputs already sum to 1; sigmoid units (mse) are normalised,
    and a row with no positive output is uniform.
    """
    out = np.asarray(outputs, dtype=np.float64)
    if out.shape[1] == 1:
        p = np.clip(out[:, 0], 0.0, 1.0)
        return np.column_stack([1.0 - p, p])
    out = np.clip(out, 0.0, None)
    total = out.sum(axis=1, keepdims=True)
    uniform = total[:, 0] <= 0
    out[uniform], total[uniform] = 1.0, out.shape[1]
    return out / total


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
