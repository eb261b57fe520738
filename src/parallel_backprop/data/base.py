"""What a data set is made of: its splits, the request that loads it, its entry in the table.

- ``Dataset``      the train / validation / test splits, ready for the network
- ``LoadRequest``  every option of ``load_dataset``, handed to a data set's loader
- ``DatasetSpec``  one row of the table ``DATASETS``: name, loader, files, options
- ``Located``      where a data set's files are, and the options that read exactly them
- ``split_pool``   the seeded train / validation split every loader uses
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataError
from .preprocess import Preprocessor


@dataclass
class Dataset:
    """Train, validation and test splits of one data set, ready for the network."""

    name: str
    x_train: np.ndarray   # float32 (n_train, n_features), C-contiguous
    y_train: np.ndarray   # int64 (n_train,) class indices; regress: float32 (n_train, n_targets)
    x_val: np.ndarray     # float32 (n_val, n_features)
    y_val: np.ndarray     # int64 (n_val,)
    x_test: np.ndarray    # float32 (n_test, n_features)
    y_test: np.ndarray    # int64 (n_test,)
    n_classes: int        # KDD binary: 2 (the network may use one sigmoid output);
                          # regress: the number of targets (the network's outputs)
    preprocessor: Preprocessor  # fitted on the training split, saved with the model
    class_names: list[str]      # regress: the target columns' names
    task: str = "classify"      # "classify" or "regress"
    notes: list[str] = field(default_factory=list)  # choices made for the user, one line each

    @property
    def n_features(self) -> int:
        return self.x_train.shape[1]


@dataclass(frozen=True)
class LoadRequest:
    """The options of ``load_dataset``; each loader reads those that concern it.

    Common to every data set:

    data_dir        folder searched first for the files (see ``sources.py``)
    limit           keep at most this many samples of the training pool
    seed            seeds every split
    val_fraction    share of the training pool that goes to validation, in (0, 1)
    progress        show download progress
    download        False: never download (also when $PBP_OFFLINE is set)
    fitted          apply this already-fitted preprocessor (a saved model's)
                    instead of fitting one on the training split

    MNIST, Fashion-MNIST: ``image_scaling`` "standard" (pixels in [0, 1]
    standardised with the training split's mean and deviation) or "unit"
    (left in [0, 1], the seed's inputs).

    KDD Cup 99: ``kdd_task`` "binary" or "category"; ``kdd_encoding``
    "onehot" or "ordinal"; ``kdd_file`` a path, or "full" for kddcup.data.gz
    (default: the 10% file); ``kdd_test_file`` a test file (corrected.gz)
    instead of a held-out ``kdd_test_fraction``.

    Synthetic: ``synthetic_samples``, ``synthetic_features``,
    ``synthetic_classes``: training pool size, input width, classes.
    """

    data_dir: str | Path | None = None
    limit: int | None = None
    seed: int = 0
    val_fraction: float = 1 / 6
    progress: bool = True
    download: bool | None = None
    fitted: Preprocessor | None = None
    image_scaling: str = "standard"
    kdd_task: str = "binary"
    kdd_encoding: str = "onehot"
    kdd_file: str | Path | None = None
    test_file: str | Path | None = None
    test_fraction: float = 0.2
    train_file: str | Path | None = None
    target_file: str | Path | None = None
    target: str | None = None
    task: str | None = None
    columns: tuple[str, ...] | None = None
    drop: tuple[str, ...] | None = None
    impute: str | None = None
    max_categories: int = 50
    log_scale: bool = False
    schema: object = None          # a TableSchema or a registered schema's name (schema.py)
    synthetic_samples: int = 60000
    synthetic_features: int = 784
    synthetic_classes: int = 10


# Every option of load_dataset, and those that every data set reads.
LOAD_OPTIONS = tuple(option.name for option in fields(LoadRequest))
COMMON_OPTIONS = ("data_dir", "limit", "seed", "val_fraction", "progress", "download", "fitted")


@dataclass(frozen=True)
class Located:
    """A data set's files as found, and the ``load_dataset`` options that read exactly them.

    ``load`` holds only options that say where the data come from (``data_dir``,
    ``kdd_file``, a generated data set's sizes); ``where`` says it in a few words.
    """

    paths: tuple[Path, ...]
    load: dict = field(default_factory=dict)
    where: str = ""


@dataclass(frozen=True)
class DatasetSpec:
    """One data set of the table ``DATASETS``.

    name           what ``load_dataset``, ``pbp --dataset`` and the study call it
    description    one line for listings and help texts
    load           ``load(request, rng) -> Dataset``: reads (or generates) the data,
                   splits it with ``rng`` (seeded by ``request.seed``) and fits the
                   preprocessing on the training split, unless ``request.fitted``
    preprocessing  the ``kind`` of preprocessor it fits ("image", "kdd",
                   "identity", "table"); a ``fitted`` preprocessor of another kind
                   is refused, unless one of ``older_preprocessing``
    locate         ``locate(request) -> Located``: finds the files, downloading them
                   when ``request.download`` allows. For a generated data set it
                   finds nothing and returns its sizes as ``load`` options.
    generated      made in memory: no files to fetch
    user_files     read from files the user names (``train_file``): none to fetch
    options        the ``LoadRequest`` options it reads besides ``COMMON_OPTIONS``
    """

    name: str
    description: str
    load: Callable[[LoadRequest, np.random.Generator], Dataset]
    preprocessing: str
    locate: Callable[[LoadRequest], Located]
    generated: bool = False
    options: tuple[str, ...] = ()
    user_files: bool = False
    older_preprocessing: tuple[str, ...] = ()   # kinds of earlier saved models it still applies


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


def hold_out(n: int, fraction: float, rng: np.random.Generator,
             source: str) -> tuple[np.ndarray, np.ndarray]:
    """Indices (test, pool) of a file of ``n`` rows: a seeded ``fraction`` held out for testing.

    Held out before ``limit`` applies, so the test rows do not move with it;
    at least one test row and two pool rows (training and validation).
    """
    if n < 3:
        raise DataError(f"{source}: {n} rows, too few to hold out a test split and keep a "
                        "training and a validation sample")
    order = rng.permutation(n)
    n_test = min(max(round(n * fraction), 1), n - 2)
    return order[:n_test], order[n_test:]
