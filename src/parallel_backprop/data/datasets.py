"""The data sets by name: ``load_dataset("mnist")`` -> a ready ``Dataset``.

Every data set comes out the same way::

    x_train, x_val, x_test   float32 (n_split, n_features), C-contiguous
    y_train, y_val, y_test   int64 (n_split,), class indices in [0, n_classes)
    preprocessor             fitted on the training split only, saved with the model

Splits, all seeded by ``seed`` through one ``np.random.default_rng(seed)``:

- test: MNIST / Fashion-MNIST's own 10,000 images; KDD a held-out
  ``kdd_test_fraction`` of the file (or ``kdd_test_file``); synthetic an
  independent draw of ceil(samples / 6).
- the rest is the training pool: ``limit`` keeps a random subset of it, then
  it is split into train and validation, ``val_fraction`` (1/6, i.e. 5:1)
  going to validation: MNIST's 60,000 become 50,000 + 10,000.

Where files come from is ``sources.py``; file formats are ``idx.py`` and
``kdd.py``.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from ..errors import DataError
from .features import check_xy
from .idx import load_idx_pair
from .kdd import TASKS, KddEncoder, read_kdd
from .preprocess import Identity, ImageScaler, KddPreprocessor, Preprocessor
from .sources import locate_images, locate_kdd

DATASETS = ("mnist", "fashion-mnist", "kdd99", "synthetic")
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion-mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                      "Sneaker", "Bag", "Ankle boot"],
}
IMAGE_SHAPE = (28, 28)
IMAGE_SCALINGS = ("standard", "unit")

# Synthetic data are a fixed function of their sizes (like a file on disk):
# ``seed`` only moves the train/validation split, as for the real data sets.
SYNTHETIC_SEED = 20140901
# Refuse a synthetic request whose float32 inputs would not fit a workstation.
MAX_SYNTHETIC_BYTES = 8 << 30


@dataclass
class Dataset:
    """Train, validation and test splits of one data set, ready for the network."""

    name: str
    x_train: np.ndarray   # float32 (n_train, n_features), C-contiguous
    y_train: np.ndarray   # int64 (n_train,) class indices
    x_val: np.ndarray     # float32 (n_val, n_features)
    y_val: np.ndarray     # int64 (n_val,)
    x_test: np.ndarray    # float32 (n_test, n_features)
    y_test: np.ndarray    # int64 (n_test,)
    n_classes: int        # KDD binary: 2 (the network may use one sigmoid output)
    preprocessor: Preprocessor
    class_names: list[str]

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


def load_dataset(name: str, *, data_dir=None, limit: int | None = None, seed: int = 0,
                 val_fraction: float = 1 / 6, progress: bool = True,
                 kdd_task: str = "binary", kdd_encoding: str = "onehot", kdd_file=None,
                 kdd_test_file=None, kdd_test_fraction: float = 0.2,
                 synthetic_samples: int = 60000, synthetic_features: int = 784,
                 synthetic_classes: int = 10, download: bool | None = None,
                 fitted: Preprocessor | None = None,
                 image_scaling: str = "standard") -> Dataset:
    """Load data set ``name`` (one of ``DATASETS``), split and preprocessed.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist", "kdd99", "synthetic"}
    data_dir : path, optional
        Folder searched first for the files (see ``sources.py`` for the order).
    limit : int, optional
        Keep at most this many samples of the training pool (quick runs).
    seed : int
        Seeds every split.
    val_fraction : float in (0, 1)
        Share of the training pool that goes to validation.
    progress : bool
        Show download progress.
    kdd_task : {"binary", "category"}
    kdd_encoding : {"onehot", "ordinal"}
    kdd_file : path or "full", optional
        KDD file (default: the 10% file; "full": kddcup.data.gz).
    kdd_test_file : path, optional
        KDD test file (e.g. corrected.gz) instead of a held-out fraction.
    kdd_test_fraction : float in (0, 1)
    synthetic_samples, synthetic_features, synthetic_classes : int
        Size of the synthetic training pool, input width, number of classes.
    download : bool, optional
        False: never download (also when $PBP_OFFLINE is set).
    image_scaling : {"standard", "unit"}
        MNIST and Fashion-MNIST: pixels in [0, 1] standardised with the
        training split's mean and standard deviation, or left in [0, 1] (the
        seed's inputs).
    fitted : Preprocessor, optional
        Apply this already-fitted preprocessing (a saved model's) instead of
        fitting one on the training split; for KDD it also sets the task.
    """
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}, expected one of {', '.join(DATASETS)}")
    if limit is not None:
        _check_int("limit", limit, 1)
    _check_int("seed", seed, 0)
    _check_fraction("val_fraction", val_fraction)
    expected_kind = {"kdd99": "kdd", "synthetic": "identity"}.get(name, "image")
    if fitted is not None and fitted.kind != expected_kind:
        raise DataError(f"fitted preprocessing of kind {fitted.kind!r} cannot be applied to "
                        f"{name}: expected {expected_kind!r}")
    rng = np.random.default_rng(seed)
    if name == "kdd99":
        return _load_kdd(rng, data_dir, limit, val_fraction, progress, download, kdd_task,
                         kdd_encoding, kdd_file, kdd_test_file, kdd_test_fraction, fitted)
    if name == "synthetic":
        return _load_synthetic(rng, limit, val_fraction, synthetic_samples,
                               synthetic_features, synthetic_classes)
    return _load_images(name, rng, data_dir, limit, val_fraction, progress, download,
                        image_scaling, fitted)


def _check_int(what: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise DataError(f"{what} {value!r}: expected an integer >= {minimum}")


def _check_fraction(what: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < 1:
        raise DataError(f"{what} {value!r}: expected a number between 0 and 1 (exclusive)")


def split_pool(n: int, limit: int | None, val_fraction: float,
               rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) into a pool of ``n``: a seeded subset of ``limit``, split.

    Returns int64 arrays of sizes m - v and v, with m = min(n, limit) and
    v = round(m * val_fraction) kept within [1, m - 1].
    """
    order = rng.permutation(n)[:limit]
    if len(order) < 2:
        raise DataError(f"training pool of {len(order)} sample(s) (limit {limit}): need at "
                        "least 2, one for training and one for validation")
    n_val = min(max(round(len(order) * val_fraction), 1), len(order) - 1)
    return order[n_val:], order[:n_val]


def _finish(dataset: Dataset) -> Dataset:
    """Validate every split at the boundary: the trainer can then trust them."""
    for split in ("train", "val", "test"):
        check_xy(getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}"),
                 dataset.n_classes, f"{dataset.name} {split} split")
    return dataset


def _load_images(name, rng, data_dir, limit, val_fraction, progress, download,
                 image_scaling, fitted) -> Dataset:
    if image_scaling not in IMAGE_SCALINGS:
        raise DataError(f"image scaling {image_scaling!r}: expected one of "
                        f"{', '.join(IMAGE_SCALINGS)}")
    paths = locate_images(name, data_dir, download, progress)
    x_pool, y_pool = load_idx_pair(paths["train-images"], paths["train-labels"])
    x_test, y_test = load_idx_pair(paths["test-images"], paths["test-labels"])
    n_pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    for path, x in ((paths["train-images"], x_pool), (paths["test-images"], x_test)):
        if x.shape[1] != n_pixels:
            raise DataError(f"{path}: images of {x.shape[1]} pixels, expected "
                            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} for {name}")
    for path, y in ((paths["train-labels"], y_pool), (paths["test-labels"], y_test)):
        if y.min() < 0 or y.max() >= len(CLASS_NAMES[name]):
            raise DataError(f"{path}: label {int(y.max())} outside 0..{len(CLASS_NAMES[name]) - 1}")
    train, val = split_pool(len(x_pool), limit, val_fraction, rng)
    if fitted is not None:
        scaler = fitted
    else:
        scaler = ImageScaler(IMAGE_SHAPE, len(CLASS_NAMES[name]))
        if image_scaling == "standard":
            scaler.fit(x_pool[train])
    return _finish(Dataset(
        name, scaler.transform(x_pool[train]), y_pool[train],
        scaler.transform(x_pool[val]), y_pool[val], scaler.transform(x_test), y_test,
        len(CLASS_NAMES[name]), scaler, list(CLASS_NAMES[name])))


def _load_kdd(rng, data_dir, limit, val_fraction, progress, download, task, encoding,
              kdd_file, kdd_test_file, test_fraction, fitted) -> Dataset:
    if fitted is not None:
        task = fitted.task
    if task not in TASKS:
        raise DataError(f"KDD task {task!r}: expected one of {', '.join(TASKS)}")
    encoder = KddEncoder(encoding)  # validates the encoding before any reading
    table = read_kdd(locate_kdd(kdd_file, data_dir, download, progress))
    if kdd_test_file is not None:
        test = read_kdd(locate_kdd(kdd_test_file, data_dir, download, progress,
                                   what="KDD test file"))
        pool = np.arange(len(table))
    else:
        # The test rows are held out before `limit`, so they do not move with it.
        _check_fraction("kdd_test_fraction", test_fraction)
        if len(table) < 3:
            raise DataError(f"{table.source}: {len(table)} rows, too few to hold out a test "
                            "split and keep a training and a validation sample")
        order = rng.permutation(len(table))
        n_test = min(max(round(len(table) * test_fraction), 1), len(table) - 2)
        test, pool = table.take(order[:n_test]), order[n_test:]
    train, val = split_pool(len(pool), limit, val_fraction, rng)
    train_table, val_table = table.take(pool[train]), table.take(pool[val])
    prep = fitted if fitted is not None else KddPreprocessor(encoder.fit(train_table), task)
    return _finish(Dataset(
        "kdd99", prep.transform(train_table), prep.targets(train_table.labels),
        prep.transform(val_table), prep.targets(val_table.labels),
        prep.transform(test), prep.targets(test.labels),
        len(TASKS[task]), prep, prep.class_names))


def _load_synthetic(rng, limit, val_fraction, samples, features, classes) -> Dataset:
    _check_int("synthetic samples", samples, 1)
    _check_int("synthetic features", features, 1)
    _check_int("synthetic classes", classes, 2)
    n_pool = samples if limit is None else min(samples, limit)
    n_test = math.ceil(samples / 6)
    nbytes = (n_pool + n_test) * features * 4
    if nbytes > MAX_SYNTHETIC_BYTES:
        raise DataError(f"synthetic data of {n_pool} + {n_test} samples x {features} features: "
                        f"{nbytes / 2**30:.1f} GiB of float32, over the "
                        f"{MAX_SYNTHETIC_BYTES >> 30} GiB limit; ask for fewer")
    # A fixed random linear teacher labels the inputs: argmax(x @ T) is a
    # function a network can learn exactly (test accuracy near 1 with enough data).
    streams = [np.random.default_rng([SYNTHETIC_SEED, features, classes, i]) for i in range(3)]
    teacher = streams[0].standard_normal((features, classes)).astype(np.float32)
    x_pool, y_pool = _draw(streams[1], n_pool, teacher)
    x_test, y_test = _draw(streams[2], n_test, teacher)
    train, val = split_pool(n_pool, None, val_fraction, rng)
    return _finish(Dataset(
        "synthetic", x_pool[train], y_pool[train], x_pool[val], y_pool[val], x_test, y_test,
        classes, Identity(features, classes), [str(c) for c in range(classes)]))


def _draw(rng: np.random.Generator, n: int, teacher: np.ndarray):
    """n inputs float32 (n, features) ~ N(0, 1) and their labels int64 (n,)."""
    features = teacher.shape[0]
    x = np.empty((n, features), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    # Chunks of ~16 MB: the labels' product never needs a second copy of x.
    chunk = max(1, (1 << 22) // features)
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        rng.standard_normal(dtype=np.float32, out=block)
        y[start:start + chunk] = np.argmax(block @ teacher, axis=1)
    return x, y
