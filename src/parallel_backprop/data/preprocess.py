"""Preprocessors: raw samples -> float32 network inputs, saved with the model.

One class per kind of data, all with the same small interface::

    kind                      "image" | "kdd" | "identity"
    n_features                width of the output
    n_classes                 number of classes of the labels (None: unknown),
                              so that labels in a user's file can be checked
    transform(raw)            -> float32 (n, n_features), C-contiguous
    to_arrays()               -> dict of plain arrays (numbers, fixed-width
                                 unicode; never objects: model files are
                                 loaded with allow_pickle=False)

``preprocessor_from_arrays`` rebuilds any of them from ``to_arrays``. What a
preprocessor learns (KDD vocabularies and scaling) is fitted on the
training split by ``datasets.py``; here it is only applied.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from ..errors import DataError
from .kdd import TASKS, KddEncoder, KddTable, kdd_targets


class Preprocessor(Protocol):
    kind: str
    n_classes: int | None

    @property
    def n_features(self) -> int: ...

    def transform(self, raw) -> np.ndarray: ...

    def to_arrays(self) -> dict[str, np.ndarray]: ...


def _as_features(x: np.ndarray, n_features: int, what: str) -> np.ndarray:
    """Check a 2-D (n, n_features) numeric array; return it as C-contiguous float32."""
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[1] != n_features:
        raise DataError(f"{what}: array of shape {x.shape}, expected (n, {n_features})")
    if x.dtype.kind not in "iuf":
        raise DataError(f"{what}: array of type {x.dtype}, expected numbers")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: contains NaN or infinity")
    return x


class ImageScaler:
    """Pixel images -> float32 features, one flattened image per row.

    Pixels are first brought to [0, 1]. Input: (n, rows, cols) or
    (n, rows * cols), either

    - integers (uint8 as in IDX files, or any integer type) in 0..255,
      divided by 255; or
    - floats already in [0, 1], used as they are; floats outside [0, 1]
      that are all whole numbers in 0..255 are taken as pixel values and
      divided by 255. Anything else is refused rather than guessed.

    Then ``(x - mean) / std`` with two scalars: 0 and 1 (the seed's inputs in
    [0, 1]) unless :meth:`fit` learnt them from a training split. Centred
    inputs train a sigmoid network markedly faster (Fashion-MNIST, Net-1h,
    10 epochs: about 2 points of test accuracy).
    """

    kind = "image"

    def __init__(self, image_shape: tuple[int, int] = (28, 28), n_classes: int | None = 10,
                 mean: float = 0.0, std: float = 1.0):
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.n_classes = n_classes
        if not (np.isfinite(mean) and np.isfinite(std) and std > 0):
            raise DataError(f"image scaling mean {mean}, std {std}: expected finite numbers "
                            "and a positive std")
        self.mean, self.std = float(mean), float(std)

    def fit(self, raw: np.ndarray) -> "ImageScaler":
        """Learn the mean and standard deviation of the pixels of ``raw`` (training images)."""
        self.mean, self.std = 0.0, 1.0
        x = self.transform(raw)
        self.mean = float(x.mean(dtype=np.float64))
        self.std = float(x.std(dtype=np.float64)) or 1.0
        return self

    @property
    def n_features(self) -> int:
        return self.image_shape[0] * self.image_shape[1]

    def transform(self, raw: np.ndarray, what: str = "images") -> np.ndarray:
        raw = np.asarray(raw)
        if raw.ndim == 3 and raw.shape[1:] == self.image_shape:
            raw = raw.reshape(len(raw), -1)
        if raw.ndim != 2 or raw.shape[1] != self.n_features:
            rows, cols = self.image_shape
            raise DataError(f"{what}: array of shape {raw.shape}, expected (n, {rows}, {cols}) "
                            f"or (n, {self.n_features})")
        if raw.dtype.kind in "iu":
            if raw.dtype != np.uint8 and raw.size and (raw.min() < 0 or raw.max() > 255):
                raise DataError(f"{what}: integer pixel values outside 0..255")
            x = np.ascontiguousarray(raw, dtype=np.float32) / np.float32(255)
        else:
            x = _as_features(raw, self.n_features, what)
            if x.size and not (x.min() >= 0 and x.max() <= 1):
                if not (x.min() >= 0 and x.max() <= 255 and np.all(x == np.round(x))):
                    raise DataError(f"{what}: float pixel values outside [0, 1] that are not "
                                    "whole numbers in 0..255; expected scaled values or pixel "
                                    "values")
                x = x / np.float32(255)
        if (self.mean, self.std) != (0.0, 1.0):
            x = np.subtract(x, np.float32(self.mean))  # a new array: the caller's stays
            x /= np.float32(self.std)
        return x

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"kind": np.array(self.kind), "image_shape": np.array(self.image_shape, np.int64),
                "mean": np.array(self.mean), "std": np.array(self.std),
                **_classes_array(self.n_classes)}


class Identity:
    """Inputs that are already features (synthetic data): checked, cast to float32."""

    kind = "identity"

    def __init__(self, n_features: int, n_classes: int | None = None):
        self._n_features = int(n_features)
        self.n_classes = n_classes

    @property
    def n_features(self) -> int:
        return self._n_features

    def transform(self, raw: np.ndarray, what: str = "inputs") -> np.ndarray:
        return _as_features(raw, self.n_features, what)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"kind": np.array(self.kind), "n_features": np.array(self.n_features, np.int64),
                **_classes_array(self.n_classes)}


class KddPreprocessor:
    """KDD Cup 99 rows (a ``KddTable``) -> encoded features, and labels -> classes.

    Parameters
    ----------
    encoder : KddEncoder, fitted
    task : {"binary", "category"}
    """

    kind = "kdd"

    def __init__(self, encoder: KddEncoder, task: str = "binary"):
        if task not in TASKS:
            raise DataError(f"KDD task {task!r}: expected one of {', '.join(TASKS)}")
        self.encoder = encoder
        self.task = task

    @property
    def n_features(self) -> int:
        return self.encoder.n_features

    @property
    def n_classes(self) -> int:
        return len(TASKS[self.task])

    @property
    def class_names(self) -> list[str]:
        return list(TASKS[self.task])

    def transform(self, raw: KddTable, what: str = "KDD rows") -> np.ndarray:
        if not isinstance(raw, KddTable):
            raise DataError(f"{what}: expected KDD Cup 99 rows (a KddTable), "
                            f"got {type(raw).__name__}")
        return self.encoder.transform(raw)

    def targets(self, labels: np.ndarray) -> np.ndarray:
        """int64 (n,) class indices of string labels (n,) for this task."""
        return kdd_targets(labels, self.task)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"kind": np.array(self.kind), "task": np.array(self.task),
                **self.encoder.to_arrays()}


def _classes_array(n_classes: int | None) -> dict[str, np.ndarray]:
    return {} if n_classes is None else {"n_classes": np.array(n_classes, np.int64)}


def preprocessor_from_arrays(arrays: dict[str, np.ndarray]):
    """Rebuild a preprocessor from its ``to_arrays``; a bad set of arrays is a DataError."""
    if "kind" not in arrays:
        raise DataError("preprocessor arrays: missing 'kind'")
    kind = str(arrays["kind"])
    try:
        if kind == ImageScaler.kind:
            shape = np.asarray(arrays["image_shape"]).reshape(-1)
            if len(shape) != 2 or np.any(shape < 1):
                raise DataError(f"image preprocessor: image_shape {shape.tolist()}, "
                                "expected two positive sizes")
            # Files without mean/std predate fitted scaling: inputs in [0, 1].
            return ImageScaler((int(shape[0]), int(shape[1])), _read_classes(arrays, kind),
                               float(arrays.get("mean", 0.0)), float(arrays.get("std", 1.0)))
        if kind == Identity.kind:
            n_features = int(arrays["n_features"])
            if n_features < 1:
                raise DataError(f"identity preprocessor: n_features {n_features}, expected > 0")
            return Identity(n_features, _read_classes(arrays, kind))
        if kind == KddPreprocessor.kind:
            return KddPreprocessor(KddEncoder.from_arrays(arrays), str(arrays["task"]))
    except KeyError as exc:
        raise DataError(f"{kind} preprocessor arrays: missing {exc}") from None
    except (TypeError, ValueError) as exc:
        raise DataError(f"{kind} preprocessor arrays: unreadable ({exc})") from None
    raise DataError(f"preprocessor kind {kind!r}: expected image, kdd or identity")


def _read_classes(arrays: dict[str, np.ndarray], kind: str) -> int | None:
    if "n_classes" not in arrays:
        return None
    n_classes = int(arrays["n_classes"])
    if n_classes < 1:
        raise DataError(f"{kind} preprocessor: n_classes {n_classes}, expected > 0")
    return n_classes
