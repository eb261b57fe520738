"""User-supplied samples: ``pbp predict --input FILE``.

``load_features_file`` reads a ``.npy`` array or a CSV file and runs it
through a saved model's preprocessor:

- ``.npy`` (loaded with allow_pickle=False): images (n, 28, 28) or
  (n, 784) for image models; already encoded features (n, n_features) for
  KDD and synthetic models. No labels.
- anything else is CSV. KDD models: the raw KDD Cup 99 format, labels used
  when rows have 42 fields. Other models: numeric rows of n_features
  values, or n_features + 1 with the integer label last.

The samples are checked with ``validate.check_xy``, as every data set's.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import one_line
from ..modelio import read_npy_header
from .io import check_file, open_data, read_error
from .kdd import read_kdd
from .validate import check_xy


def load_features_file(path: str | os.PathLike, preprocessor, n_features: int, *,
                       n_classes: int | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read samples to predict from ``path`` for a model with this preprocessor.

    Parameters
    ----------
    path : str or PathLike
        ``.npy`` or CSV (see the module docstring).
    preprocessor : Preprocessor
        The model's, as saved with it.
    n_features : int
        The network's input width.
    n_classes : int, optional
        Labels outside [0, n_classes) are refused; default: the
        preprocessor's ``n_classes``.

    Returns
    -------
    x : float32 (n, n_features)
    y : int64 (n,), or None when the file has no labels
    """
    path = Path(path)
    check_file(path)
    if path.suffix.lower() == ".npy":
        x, y = _read_npy(path, preprocessor, n_features), None
    elif preprocessor.kind == "kdd":
        table = read_kdd(path, require_labels=False)
        x = preprocessor.transform(table, what=str(path))
        y = None if table.labels is None else preprocessor.targets(table.labels)
    else:
        x, y = _read_numeric_csv(path, preprocessor, n_features)
    if x.shape[1] != n_features:
        raise DataError(f"{path}: {x.shape[1]} features after preprocessing, the model "
                        f"expects {n_features}")
    if n_classes is None:
        n_classes = getattr(preprocessor, "n_classes", None)
    check_xy(x, y, n_classes, str(path))
    return x, y


def _read_npy(path: Path, preprocessor, n_features: int) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            magic = handle.read(6)
            if magic.startswith(b"PK"):
                raise DataError(f"{path}: an .npz archive, expected one .npy array")
            # np.load takes anything that is not .npy / .npz for a pickle: say what it is.
            if magic != b"\x93NUMPY":
                raise DataError(f"{path}: not a valid .npy file (no .npy header)")
            handle.seek(0)
            # np.load allocates the whole array its header claims before reading
            # it: a 100-byte file claiming (10**12, 784) must be refused first.
            read_npy_header(handle, os.fstat(handle.fileno()).st_size, f"{path}: the array",
                            DataError)
    except OSError as exc:
        raise read_error(path, False, exc) from None
    except ValueError as exc:
        raise DataError(f"{path}: not a valid .npy file ({one_line(exc)})") from None
    try:
        array = np.load(path, allow_pickle=False)   # objects: already refused from the header
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: not a valid .npy file ({one_line(exc)})") from None
    if preprocessor.kind == "kdd":
        # Raw KDD rows mix text and numbers: only CSV carries them. A .npy
        # must already be encoded by this model's encoder.
        if array.ndim != 2 or array.shape[1] != n_features or array.dtype.kind not in "iuf":
            raise DataError(f"{path}: array of shape {array.shape} and type {array.dtype}; a "
                            f"KDD model takes encoded features (n, {n_features}) as .npy, "
                            "or raw KDD Cup 99 rows as CSV")
        return np.ascontiguousarray(array, dtype=np.float32)
    return preprocessor.transform(array, what=str(path))


def _read_numeric_csv(path: Path, preprocessor, n_features: int):
    """Numeric CSV rows: n_features values, or n_features + 1 with the label last."""
    with open_data(path) as stream:
        try:
            values = np.loadtxt(stream, delimiter=",", dtype=np.float64, ndmin=2,
                                comments="#", encoding="utf-8")
        except ValueError as exc:
            raise DataError(f"{path}: not numeric CSV ({one_line(exc)})") from None
    if values.size == 0:
        raise DataError(f"{path}: no rows, expected CSV rows of {n_features} numbers")
    if values.shape[1] == n_features:
        x, y = values, None
    elif values.shape[1] == n_features + 1:
        x, labels = values[:, :-1], values[:, -1]
        whole = np.isfinite(labels) & (labels == np.round(labels))
        if not whole.all():
            row = int(np.argmin(whole))
            raise DataError(f"{path}: row {row + 1}: label {float(labels[row])!r} in the last "
                            "column is not an integer")
        y = labels.astype(np.int64)
    else:
        raise DataError(f"{path}: rows of {values.shape[1]} values, expected {n_features} "
                        f"features (or {n_features + 1} with the label last)")
    check_xy(x, None, None, str(path))  # NaN / inf named before scaling hides them
    return preprocessor.transform(x, what=str(path)), y
