"""``--dataset`` and its options as one group (:class:`DataOptions`): loading, input files.

``--train-file F`` is the data set "file", a user's own table, with the
options of :data:`.options.table_options`; they reach ``load_dataset``
only for a data set that reads them (its ``DatasetSpec.options``), so the
built-in data sets are loaded as before.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from ..errors import ConfigError, DataError

TABLE_DATASET = "file"   # the data set of --train-file


class OptionGroup:
    """A dataclass of some of a command's options, taken out of click's keyword arguments."""

    @classmethod
    def take(cls, params: dict):
        """Remove this group's options from ``params`` and return them as one object."""
        return cls(**{f.name: params.pop(f.name) for f in fields(cls) if f.name in params})


def comma_list(text: str | None) -> list[str] | None:
    """``"a, b"`` -> ``["a", "b"]``; None stays None."""
    return None if text is None else [item.strip() for item in text.split(",") if item.strip()]


@dataclass(frozen=True)
class DataOptions(OptionGroup):
    """``--dataset`` and the options of :data:`.options.dataset_options` and
    :data:`.options.table_options` (a command without the latter gets their defaults)."""

    dataset: str | None
    data_dir: Path | None
    limit: int | None
    kdd_task: str
    kdd_encoding: str
    kdd_file: str | None
    test_file: Path | None
    samples: int
    features: int
    classes: int
    image_scaling: str = "standard"
    train_file: Path | None = None
    target_file: Path | None = None
    target: str | None = None
    task: str | None = None
    columns: str | None = None
    drop: str | None = None
    impute: str | None = None
    max_categories: int | None = None
    log_scale: bool = False
    schema: str | None = None

    @property
    def name(self) -> str | None:
        """The data set: ``--dataset``, else "file" when ``--train-file`` is given."""
        return self.dataset or (TABLE_DATASET if self.train_file is not None else None)

    def check(self) -> "DataOptions":
        """Refuse a missing data set, and a table option without its table; returns self."""
        if self.name is None:
            raise ConfigError("--dataset: missing; name a data set or give --train-file")
        if self.name == TABLE_DATASET and self.train_file is None:
            raise ConfigError(f"--dataset {TABLE_DATASET}: needs --train-file (the table to "
                              "train on)")
        if self.train_file is not None and self.name != TABLE_DATASET:
            raise ConfigError(f"--train-file: reads your own table, not --dataset {self.name};"
                              f" leave out --dataset (or give --dataset {TABLE_DATASET})")
        return self

    def table_settings(self) -> dict:
        """The ``load_dataset`` keywords of the table options that were given."""
        settings = {"train_file": self.train_file, "target_file": self.target_file,
                    "target": self.target, "task": self.task,
                    "columns": comma_list(self.columns), "drop": comma_list(self.drop),
                    "impute": self.impute, "max_categories": self.max_categories,
                    "log_scale": self.log_scale or None, "schema": self.schema}
        return {key: value for key, value in settings.items() if value is not None}

    def load(self, seed: int, quiet: bool, dataset: str | None = None, fitted=None):
        """The data set (``dataset`` overrides ``--dataset``), split with ``seed``."""
        from ..data import DATASETS, load_dataset

        name = dataset or self.check().name
        spec = DATASETS.get(name)
        reads = spec.options if spec is not None else ()
        own = self.table_settings() if "train_file" in reads else {}
        return load_dataset(
            name, data_dir=self.data_dir, limit=self.limit, seed=seed,
            progress=not quiet, kdd_task=self.kdd_task, kdd_encoding=self.kdd_encoding,
            kdd_file=self.kdd_file, synthetic_samples=self.samples,
            synthetic_features=self.features, synthetic_classes=self.classes, fitted=fitted,
            image_scaling=self.image_scaling, test_file=self.test_file, **own)

    def input_files(self, dataset: str | None = None) -> dict:
        """The files the data set (``dataset`` overrides ``--dataset``) is read from, by label:
        those found here without downloading, which no output may replace."""
        from ..data import DATASETS, fetch_dataset

        name = dataset or self.name
        spec = DATASETS.get(name)
        if spec is None or spec.generated:
            return {}
        if spec.user_files:
            return {"--train-file": self.train_file, "--test-file": self.test_file,
                    "--target-file": self.target_file}
        try:
            found = fetch_dataset(name, self.data_dir, progress=False, download=False,
                                  kdd_file=self.kdd_file)
        except DataError:      # not here: loading says so, or downloads them
            found = []
        given = self.kdd_file if "kdd_file" in spec.options and self.kdd_file != "full" else None
        files = {"--kdd-file" if given is not None and path == Path(given)
                 else f"{name} data file {path.name}": path for path in found}
        if "test_file" in spec.options:
            files["--test-file"] = self.test_file
        return files
