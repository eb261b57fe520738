"""The checks of data at the boundaries: inputs, labels and the options that shape them.

``check_xy`` is the one validation of an (inputs, labels) pair: every data
set's splits, a user's file for ``pbp predict``, and the arrays given to the
estimator and the trainer go through it, so that the code behind those
boundaries can trust its arrays. Every failure is a one-line ``DataError``
that names the data and what was expected.
"""

from __future__ import annotations

import numbers

import numpy as np

from ..errors import DataError


def check_xy(x: np.ndarray, y: np.ndarray | None, n_classes: int | None, name: str) -> None:
    """Raise a one-line DataError unless x (n, d) is finite and y (n,) holds classes.

    Parameters
    ----------
    x : ndarray, numeric, shape (n, d)
    y : ndarray, integer, shape (n,), or None to check x alone
    n_classes : int, or None to only require non-negative labels
    name : str
        What to call the data in the message (a file name, "mnist train split").
    """
    x = np.asarray(x)
    if x.ndim != 2:
        raise DataError(f"{name}: inputs of shape {x.shape}, expected 2-D (n_samples, n_features)")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{name}: inputs of type {x.dtype}, expected numbers")
    finite = np.isfinite(x)
    if not finite.all():
        raise DataError(f"{name}: NaN or infinity in the inputs, first at "
                        f"{first_position(~finite)}")
    if y is None:
        return
    y = np.asarray(y)
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{name}: labels of shape {y.shape} for {len(x)} samples, "
                        f"expected ({len(x)},)")
    if y.dtype.kind not in "iu":
        raise DataError(f"{name}: labels of type {y.dtype}, expected integers")
    high = n_classes if n_classes is not None else np.inf
    bad = (y < 0) | (y >= high)
    if bad.any():
        row = int(np.argmax(bad))
        allowed = f"[0, {n_classes})" if n_classes is not None else "non-negative"
        raise DataError(f"{name}: label {int(y[row])} at sample index {row} outside {allowed}")


def check_regression_targets(x: np.ndarray, y: np.ndarray, n_targets: int, name: str) -> None:
    """Raise a one-line DataError unless x (n, d) is finite and y float (n, n_targets) too."""
    check_xy(x, None, None, name)
    y = np.asarray(y)
    if y.ndim != 2 or y.shape != (len(x), n_targets) or y.dtype.kind != "f":
        raise DataError(f"{name}: targets of shape {y.shape} and type {y.dtype} for {len(x)} "
                        f"samples, expected float ({len(x)}, {n_targets})")
    finite = np.isfinite(y)
    if not finite.all():
        row, col = np.unravel_index(np.argmin(finite), finite.shape)
        raise DataError(f"{name}: NaN or infinity in the targets, first at sample index {row}, "
                        f"target index {col}")


def as_features(x, n_features: int, what: str) -> np.ndarray:
    """``x`` checked to be numeric (n, n_features) and finite, as C-contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise DataError(f"{what}: array of shape {x.shape}, expected (n, {n_features})")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{what}: array of type {x.dtype}, expected numbers")
    finite = np.isfinite(x)
    if not finite.all():
        raise DataError(f"{what}: contains NaN or infinity, first at {first_position(~finite)}")
    return to_float32(x, what)


def to_float32(x: np.ndarray, what: str) -> np.ndarray:
    """Finite numbers (n, d) as C-contiguous float32, refused where one is beyond float32.

    Beyond float32's range (magnitude above 3.4e38) a value would become
    infinite, and every prediction from its row NaN or meaningless: it is
    named instead (row and column), never cast with a warning.
    """
    with np.errstate(over="ignore"):
        out = np.ascontiguousarray(x, dtype=np.float32)
    finite = np.isfinite(out)
    if not finite.all():
        row, col = np.unravel_index(np.argmin(finite), finite.shape)
        raise DataError(f"{what}: value {float(x[row, col]):.3g} at sample index {row}, "
                        f"feature index {col} is beyond float32's range (magnitude at most "
                        f"{float(np.finfo(np.float32).max):.3g}); expected inputs on the scale "
                        "of the training data")
    return out


def first_position(bad: np.ndarray) -> str:
    """Where the first True of ``bad`` (n, d) is: "sample index i, feature index j"."""
    row, col = np.unravel_index(np.argmax(bad), bad.shape)
    return f"sample index {row}, feature index {col}"


def check_int(what: str, value, minimum: int) -> None:
    """Raise unless ``value`` is an integer (not a bool) of at least ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{what} {value!r}: expected an integer >= {minimum}")


def check_fraction(what: str, value) -> None:
    """Raise unless ``value`` is a number strictly between 0 and 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise DataError(f"{what} {value!r}: expected a number between 0 and 1 (exclusive)")


def check_choice(what: str, value, choices) -> None:
    """Raise unless ``value`` is one of ``choices`` (the message lists them)."""
    if value not in choices:
        raise DataError(f"{what} {value!r}: expected one of {', '.join(choices)}")
