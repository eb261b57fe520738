"""The data sets that come with the package: MNIST, Fashion-MNIST, KDD Cup 99, synthetic,
and "file", a table of the user's own (``userfile.py``).

Each is a ``DatasetSpec`` (``BUILTIN``, in the order of the table), made of
a loader ``load(request, rng) -> Dataset`` and a ``locate(request)`` that
finds its files. ``image_dataset`` makes the spec of any data set published
as four IDX files, MNIST-style.

Splits, all seeded by ``request.seed`` through one generator:

- test: MNIST / Fashion-MNIST's own 10,000 images; KDD a held-out
  ``test_fraction`` of the file (or ``test_file``); synthetic an
  independent draw of ceil(samples / 6).
- the rest is the training pool: ``limit`` keeps a random subset of it, then
  it is split into train and validation, ``val_fraction`` (1/6, i.e. 5:1)
  going to validation: MNIST's 60,000 become 50,000 + 10,000.
"""

from __future__ import annotations

import math
from dataclasses import replace
from functools import partial

import numpy as np

from ..errors import DataError
from .base import Dataset, DatasetSpec, LoadRequest, Located, hold_out, split_pool
from .idx import load_idx_pair
from .kdd import TASKS, kdd_schema, read_kdd
from .preprocess import Identity, ImageScaler, KddPreprocessor
from .tabular import TablePreprocessor
from .sources import FASHION_MNIST_FILES, MNIST_FILES, IdxFiles, locate_kdd
from .userfile import FILE_DATASET, load_table
from .validate import check_choice, check_fraction, check_int

IMAGE_SHAPE = (28, 28)
IMAGE_SCALINGS = ("standard", "unit")
FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                   "Sneaker", "Bag", "Ankle boot")

# Synthetic data are a fixed function of their sizes (like a file on disk):
# ``seed`` only moves the train/validation split, as for the real data sets.
SYNTHETIC_SEED = 20140901
# Refuse a synthetic request whose float32 inputs would not fit a workstation.
MAX_SYNTHETIC_BYTES = 8 << 30

KDD_OPTIONS = ("kdd_task", "kdd_encoding", "kdd_file", "test_file", "test_fraction")
SYNTHETIC_OPTIONS = ("synthetic_samples", "synthetic_features", "synthetic_classes")


# ---- images -------------------------------------------------------------------------------

def image_dataset(name: str, description: str, files: IdxFiles,
                  class_names: tuple[str, ...]) -> DatasetSpec:
    """The spec of a data set of 28x28 images published as four IDX files."""
    return DatasetSpec(name, description, partial(_load_images, name, files, class_names),
                       ImageScaler.kind, partial(_locate_images, name, files),
                       options=("image_scaling",))


def _locate_images(name: str, files: IdxFiles, request: LoadRequest) -> Located:
    paths = files.locate(name, request.data_dir, request.download, request.progress)
    folder = paths["train-images"].parent
    return Located(tuple(paths.values()), {"data_dir": folder}, str(folder))


def _load_images(name: str, files: IdxFiles, class_names: tuple[str, ...],
                 request: LoadRequest, rng: np.random.Generator) -> Dataset:
    check_choice("image scaling", request.image_scaling, IMAGE_SCALINGS)
    paths = files.locate(name, request.data_dir, request.download, request.progress)
    x_pool, y_pool = load_idx_pair(paths["train-images"], paths["train-labels"])
    x_test, y_test = load_idx_pair(paths["test-images"], paths["test-labels"])
    n_pixels = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
    for path, x in ((paths["train-images"], x_pool), (paths["test-images"], x_test)):
        if x.shape[1] != n_pixels:
            raise DataError(f"{path}: images of {x.shape[1]} pixels, expected "
                            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} for {name}")
    for path, y in ((paths["train-labels"], y_pool), (paths["test-labels"], y_test)):
        if y.min() < 0 or y.max() >= len(class_names):
            raise DataError(f"{path}: label {int(y.max())} outside 0..{len(class_names) - 1}")
    train, val = split_pool(len(x_pool), request.limit, request.val_fraction, rng)
    scaler = request.fitted
    if scaler is None:
        scaler = ImageScaler(IMAGE_SHAPE, len(class_names))
        if request.image_scaling == "standard":
            scaler.fit(x_pool[train])
    return Dataset(name, scaler.transform(x_pool[train]), y_pool[train],
                   scaler.transform(x_pool[val]), y_pool[val], scaler.transform(x_test), y_test,
                   len(class_names), scaler, list(class_names))


# ---- KDD Cup 99 ---------------------------------------------------------------------------

def _locate_kdd(request: LoadRequest) -> Located:
    path = locate_kdd(request.kdd_file, request.data_dir, request.download, request.progress)
    return Located((path,), {"kdd_file": path}, str(path))


def _load_kdd(request: LoadRequest, rng: np.random.Generator) -> Dataset:
    """The KDD file as a table with the KDD schema (``kdd.kdd_schema``): the "file" data set's
    pipeline; a model saved with the earlier ``KddPreprocessor`` is applied as before."""
    if request.fitted is not None and request.fitted.kind == KddPreprocessor.kind:
        return _load_kdd_rows(request, rng)
    schema = kdd_schema(request.kdd_task, request.kdd_encoding)   # checked before any reading
    test_file = None if request.test_file is None else locate_kdd(
        request.test_file, request.data_dir, request.download, request.progress,
        what="KDD test file")
    table_request = replace(
        request, train_file=_locate_kdd(request).paths[0], test_file=test_file, target=None,
        target_file=None, task=None, columns=None, drop=None, impute=None, log_scale=False,
        schema=schema)
    return load_table(table_request, rng, "kdd99", "KDD file")


def _load_kdd_rows(request: LoadRequest, rng: np.random.Generator) -> Dataset:
    """KDD rows read by ``read_kdd`` and a saved ``KddPreprocessor`` (models of kind "kdd")."""
    fitted = request.fitted
    task = fitted.task if fitted is not None else request.kdd_task
    # Both options are checked before any reading.
    prep = KddPreprocessor(request.kdd_encoding, task)
    table = read_kdd(_locate_kdd(request).paths[0])
    if request.test_file is not None:
        test = read_kdd(locate_kdd(request.test_file, request.data_dir, request.download,
                                   request.progress, what="KDD test file"))
        pool = np.arange(len(table))
    else:
        check_fraction("test_fraction", request.test_fraction)
        test_rows, pool = hold_out(len(table), request.test_fraction, rng, table.source)
        test = table.take(test_rows)
    train, val = split_pool(len(pool), request.limit, request.val_fraction, rng)
    train_table, val_table = table.take(pool[train]), table.take(pool[val])
    prep = fitted if fitted is not None else prep.fit(train_table)
    return Dataset(
        "kdd99", prep.transform(train_table), prep.targets(train_table.labels),
        prep.transform(val_table), prep.targets(val_table.labels),
        prep.transform(test), prep.targets(test.labels),
        len(TASKS[task]), prep, prep.class_names)


# ---- synthetic ----------------------------------------------------------------------------

def _synthetic_sizes(request: LoadRequest) -> tuple[int, int, int]:
    check_int("synthetic samples", request.synthetic_samples, 1)
    check_int("synthetic features", request.synthetic_features, 1)
    check_int("synthetic classes", request.synthetic_classes, 2)
    return request.synthetic_samples, request.synthetic_features, request.synthetic_classes


def _locate_synthetic(request: LoadRequest) -> Located:
    """Nothing to find: the sizes alone say which synthetic data set it is."""
    samples, features, classes = _synthetic_sizes(request)
    return Located((), dict(zip(SYNTHETIC_OPTIONS, (samples, features, classes))),
                   f"synthetic, {samples} samples x {features} features, {classes} classes")


def _load_synthetic(request: LoadRequest, rng: np.random.Generator) -> Dataset:
    samples, features, classes = _synthetic_sizes(request)
    limit = request.limit
    n_pool = samples if limit is None else min(samples, limit)
    n_test = math.ceil(samples / 6)
    # The inputs, their one-hot targets (built by the trainer) and the teacher: with
    # 10**9 classes the targets, not the inputs, are what cannot fit.
    nbytes = ((n_pool + n_test) * (features + classes) + features * classes) * 4
    if nbytes > MAX_SYNTHETIC_BYTES:
        raise DataError(f"synthetic data of {n_pool} + {n_test} samples x {features} features, "
                        f"{classes} classes: {nbytes / 2**30:.1f} GiB of float32 with the "
                        f"targets, over the {MAX_SYNTHETIC_BYTES >> 30} GiB limit; ask for fewer")
    # A fixed random linear teacher labels the inputs: argmax(x @ T) is a
    # function a network can learn exactly (test accuracy near 1 with enough data).
    streams = [np.random.default_rng([SYNTHETIC_SEED, features, classes, i]) for i in range(3)]
    teacher = streams[0].standard_normal((features, classes)).astype(np.float32)
    x_pool, y_pool = _draw(streams[1], n_pool, teacher)
    x_test, y_test = _draw(streams[2], n_test, teacher)
    train, val = split_pool(n_pool, None, request.val_fraction, rng)
    return Dataset(
        "synthetic", x_pool[train], y_pool[train], x_pool[val], y_pool[val], x_test, y_test,
        classes, Identity(features, classes), [str(c) for c in range(classes)])


def _draw(rng: np.random.Generator, n: int, teacher: np.ndarray):
    """n inputs float32 (n, features) ~ N(0, 1) and their labels int64 (n,)."""
    features = teacher.shape[0]
    x = np.empty((n, features), dtype=np.float32)
    y = np.empty(n, dtype=np.int64)
    # Chunks of ~16 MB: the labels' product (chunk, classes) never needs a second copy of x.
    chunk = max(1, (1 << 22) // max(features, teacher.shape[1]))
    for start in range(0, n, chunk):
        block = x[start:start + chunk]
        rng.standard_normal(dtype=np.float32, out=block)
        y[start:start + chunk] = np.argmax(block @ teacher, axis=1)
    return x, y


BUILTIN = (
    image_dataset("mnist", "MNIST handwritten digits, 28x28 grey images, 10 classes",
                  MNIST_FILES, tuple(str(digit) for digit in range(10))),
    image_dataset("fashion-mnist", "Fashion-MNIST clothing, 28x28 grey images, 10 classes",
                  FASHION_MNIST_FILES, FASHION_CLASSES),
    DatasetSpec("kdd99", "KDD Cup 1999 network connections: normal or attack (or its category)",
                _load_kdd, TablePreprocessor.kind, _locate_kdd, options=KDD_OPTIONS,
                older_preprocessing=(KddPreprocessor.kind,)),
    DatasetSpec("synthetic", "Gaussian inputs labelled by a fixed random linear teacher",
                _load_synthetic, Identity.kind, _locate_synthetic, generated=True,
                options=SYNTHETIC_OPTIONS),
    FILE_DATASET,
)
