"""The table of data sets by name, and what reads it: loading, fetching, finding.

``DATASETS`` maps each name to its ``DatasetSpec`` (``base.py``), in the
order of ``builtin.BUILTIN``, then those added with ``register_dataset``.
The CLI's ``--dataset`` choices, ``pbp fetch`` and the study all read it.

Every data set comes out of ``load_dataset`` the same way::

    x_train, x_val, x_test   float32 (n_split, n_features), C-contiguous
    y_train, y_val, y_test   int64 (n_split,), class indices in [0, n_classes)
    preprocessor             fitted on the training split only, saved with the model

How each data set is read and split is ``builtin.py``; where its files come
from is ``sources.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import COMMON_OPTIONS, LOAD_OPTIONS, Dataset, DatasetSpec, LoadRequest
from .builtin import BUILTIN
from .preprocess import PREPROCESSORS
from .validate import check_fraction, check_int, check_regression_targets, check_xy

DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in BUILTIN}

# The pbp options that set load_dataset's keywords: what a command line
# needs to reload a data source (``DataSource.args``).
CLI_OPTIONS = {
    "data_dir": "--data-dir", "limit": "--limit", "seed": "--seed",
    "image_scaling": "--image-scaling",
    "kdd_task": "--kdd-task", "kdd_encoding": "--kdd-encoding", "kdd_file": "--kdd-file",
    "test_file": "--test-file", "synthetic_samples": "--samples",
    "train_file": "--train-file", "target_file": "--target-file", "target": "--target",
    "synthetic_features": "--features", "synthetic_classes": "--classes",
}


def register_dataset(spec: DatasetSpec, *, replace: bool = False) -> DatasetSpec:
    """Add ``spec`` to ``DATASETS``: ``load_dataset(spec.name)`` then loads it.

    A name already in the table is refused unless ``replace``. Returns ``spec``.
    """
    if not isinstance(spec, DatasetSpec):
        raise DataError(f"register_dataset: {spec!r} is not a DatasetSpec")
    name = spec.name
    if not isinstance(name, str) or not name or name != name.strip() or " " in name:
        raise DataError(f"data set name {name!r}: expected a non-empty name without spaces")
    if name in DATASETS and not replace:
        raise DataError(f"data set {name!r} is already registered; pass replace=True to "
                        "replace it")
    if spec.preprocessing not in PREPROCESSORS:
        raise DataError(f"data set {name!r}: preprocessing {spec.preprocessing!r}, expected "
                        f"one of {', '.join(PREPROCESSORS)}")
    if not callable(spec.load) or not callable(spec.locate):
        raise DataError(f"data set {name!r}: load and locate must be functions")
    unknown = sorted(set(spec.options) - set(LOAD_OPTIONS))
    if unknown:
        raise DataError(f"data set {name!r}: options {', '.join(unknown)} are not "
                        "load_dataset options")
    DATASETS[name] = spec
    return spec


def dataset_spec(name: str) -> DatasetSpec:
    """The table's entry for ``name``; an unknown name is a one-line DataError."""
    if name not in DATASETS:
        raise DataError(f"unknown data set {name!r}, expected one of {', '.join(DATASETS)}")
    return DATASETS[name]


def load_dataset(name: str, *, data_dir=None, limit: int | None = None, seed: int = 0,
                 val_fraction: float = 1 / 6, progress: bool = True,
                 kdd_task: str = "binary", kdd_encoding: str = "onehot", kdd_file=None,
                 test_file=None, test_fraction: float = 0.2,
                 synthetic_samples: int = 60000, synthetic_features: int = 784,
                 synthetic_classes: int = 10, download: bool | None = None,
                 fitted=None, image_scaling: str = "standard", train_file=None,
                 target_file=None, target: str | None = None, task: str | None = None,
                 columns=None, drop=None, impute: str | None = None,
                 max_categories: int = 50, log_scale: bool = False, schema=None,
                 kdd_test_file=None, kdd_test_fraction: float | None = None) -> Dataset:
    """Load data set ``name`` (a key of ``DATASETS``), split and preprocessed.

    The keyword options are described on ``LoadRequest``; each data set reads
    the common ones and its own (``DATASETS[name].options``). ``fitted``: a
    saved model's preprocessor, applied instead of one fitted on the training
    split; for KDD it also sets the task. ``kdd_test_file`` and
    ``kdd_test_fraction``, the earlier names of ``test_file`` and
    ``test_fraction``, are accepted.
    """
    spec = dataset_spec(name)
    test_file = _renamed("test_file", test_file, kdd_test_file)
    test_fraction = _renamed("test_fraction", test_fraction, kdd_test_fraction)
    if limit is not None:
        check_int("limit", limit, 1)
    check_int("seed", seed, 0)
    check_fraction("val_fraction", val_fraction)
    if fitted is not None and fitted.kind not in (spec.preprocessing,
                                                  *spec.older_preprocessing):
        raise DataError(f"fitted preprocessing of kind {fitted.kind!r} cannot be applied to "
                        f"{name}: expected {spec.preprocessing!r}")
    request = LoadRequest(
        data_dir=data_dir, limit=limit, seed=seed, val_fraction=val_fraction,
        progress=progress, download=download, fitted=fitted, image_scaling=image_scaling,
        kdd_task=kdd_task, kdd_encoding=kdd_encoding, kdd_file=kdd_file,
        synthetic_samples=synthetic_samples, synthetic_features=synthetic_features,
        synthetic_classes=synthetic_classes, train_file=train_file, target_file=target_file,
        target=target, task=task, columns=_names(columns), drop=_names(drop), impute=impute,
        max_categories=max_categories, log_scale=log_scale, test_file=test_file,
        test_fraction=test_fraction, schema=schema)
    dataset = spec.load(request, np.random.default_rng(seed))
    # Every split is validated here, at the boundary: the trainer can then trust them.
    for split in ("train", "val", "test"):
        x, y = getattr(dataset, f"x_{split}"), getattr(dataset, f"y_{split}")
        if dataset.task == "regress":
            check_regression_targets(x, y, dataset.n_classes, f"{name} {split} split")
        else:
            check_xy(x, y, dataset.n_classes, f"{name} {split} split")
    return dataset


# Keywords of load_dataset that have a newer, generic name.
RENAMED = {"kdd_test_file": "test_file", "kdd_test_fraction": "test_fraction"}


def _renamed(name: str, value, earlier):
    """The value of option ``name``, also given under its earlier name (``RENAMED``)."""
    if earlier is None:
        return value
    if value not in (earlier, LoadRequest.__dataclass_fields__[name].default):
        old = next(key for key, new in RENAMED.items() if new == name)
        raise DataError(f"{old} {earlier!r} and {name} {value!r}: one option under two names; "
                        f"give {name}")
    return earlier


def _names(value) -> tuple[str, ...] | None:
    """Column names or indices as a tuple of strings: "a,b" (as typed), or a list."""
    if value is None:
        return None
    if isinstance(value, (str, int)):
        value = str(value).split(",")
    return tuple(str(item).strip() for item in value)


def fetchable() -> list[str]:
    """The data sets made of files to fetch (``pbp fetch``'s choices), in table order."""
    return [name for name, spec in DATASETS.items()
            if not (spec.generated or spec.user_files)]


def fetch_dataset(name: str, data_dir=None, *, progress: bool = True,
                  download: bool | None = None, **options) -> list[Path]:
    """Find data set ``name``'s files, downloading (checksum-verified) what is missing.

    ``options`` are ``load_dataset`` options that choose the files, such as
    ``kdd_file="full"`` for KDD Cup 99's full file; those another data set
    does not read are ignored. Returns the paths of the files.
    """
    spec = dataset_spec(name)
    if spec.generated:
        raise DataError(f"{name}: generated in memory, there are no files to fetch; "
                        f"expected one of {', '.join(fetchable())}")
    if spec.user_files:
        raise DataError(f"{name}: reads your own files (--train-file), there is nothing to "
                        f"fetch; expected one of {', '.join(fetchable())}")
    return list(spec.locate(_request(spec, data_dir, download, progress, options)).paths)


@dataclass(frozen=True)
class DataSource:
    """A data set found on this machine, and how to load exactly it again.

    name    the data set
    args    ``pbp train`` options that select it (``--dataset NAME`` first)
    load    ``load_dataset`` keyword arguments that select it
    where   where it is, in a few words (a folder, a file, a generated data set's sizes)
    """

    name: str
    args: tuple[str, ...]
    load: dict
    where: str


def find_source(name: str, data_dir=None, *, download: bool | None = False,
                progress: bool = False, **options) -> DataSource:
    """Where data set ``name`` is (by default never downloading), as a ``DataSource``.

    ``options`` are ``load_dataset`` options (``kdd_file``, the synthetic
    sizes); those the data set does not read are ignored. A data set that is
    not here raises a one-line DataError.
    """
    spec = dataset_spec(name)
    located = spec.locate(_request(spec, data_dir, download, progress, options))
    load = dict(located.load)
    if download is not None and not spec.generated:
        load["download"] = download
    args = ["--dataset", name]
    for key, value in located.load.items():
        if key in CLI_OPTIONS:  # val_fraction and test_fraction have no option
            args += [CLI_OPTIONS[key], str(value)]
    return DataSource(name, tuple(args), load, located.where)


def _request(spec: DatasetSpec, data_dir, download, progress, options: dict) -> LoadRequest:
    """The request of a fetch or find: ``options`` the data set does not read are dropped."""
    options = {RENAMED.get(key, key): value for key, value in options.items()}
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise DataError(f"{', '.join(unknown)}: not load_dataset options")
    read = set(COMMON_OPTIONS) | set(spec.options)
    return LoadRequest(data_dir=data_dir, download=download, progress=progress,
                       **{key: value for key, value in options.items() if key in read})
