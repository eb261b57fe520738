"""Data: MNIST, Fashion-MNIST, KDD Cup 1999, synthetic data and a user's own tables.

- :mod:`.datasets`    the table ``DATASETS`` (name -> ``DatasetSpec``), ``register_dataset``,
                      ``load_dataset(name)`` -> ``Dataset``, ``fetch_dataset``, ``find_source``
- :mod:`.base`        ``Dataset``, ``LoadRequest``, ``DatasetSpec``, ``split_pool``, ``hold_out``
- :mod:`.builtin`     the data sets that come with the package, ``image_dataset``
- :mod:`.userfile`    the data set "file": a user's table (``--train-file``), split
- :mod:`.tables`      ``read_table``: CSV, TSV, Parquet, ... -> a ``pyarrow.Table``
- :mod:`.tabular`     ``TablePreprocessor``: a table's columns -> float32 inputs, saved
- :mod:`.columns`     one column of a table as numbers or categories, checked
- :mod:`.targets`     ``TargetCode``: target columns -> classes or standardised values,
                      ``infer_task``
- :mod:`.sources`     where files are looked for, cached and downloaded from
- :mod:`.download`    checksum-verified downloads over several mirrors
- :mod:`.io`          opening data files (gzipped or not) and their one-line read errors
- :mod:`.idx`         the IDX format (MNIST, Fashion-MNIST)
- :mod:`.kdd`         the KDD Cup 99 CSV format and its labels
- :mod:`.preprocess`  raw samples -> float32 inputs, fitted on a training split, saved
                      with a model (``KddPreprocessor`` encodes KDD rows)
- :mod:`.validate`    ``check_xy`` and the other checks of data at the boundaries
- :mod:`.features`    samples from a user's file (``pbp predict``)
"""

from .base import Dataset, DatasetSpec, LoadRequest, Located, hold_out, split_pool
from .builtin import image_dataset
from .datasets import (DATASETS, DataSource, dataset_spec, fetch_dataset, fetchable, find_source,
                       load_dataset, register_dataset)
from .download import fetch
from .features import load_features_file
from .idx import load_idx_pair, read_idx, write_idx
from .kdd import CATEGORIES, FEATURES, KddTable, attack_category, kdd_targets, read_kdd
from .preprocess import (Identity, ImageScaler, KddEncoder, KddPreprocessor, Preprocessor,
                         preprocessor_from_arrays)
from .sources import IdxFiles, RemoteFile, cache_dir
from .tabular import TablePreprocessor
from .targets import TargetCode, infer_task
from .validate import check_xy

__all__ = [
    "CATEGORIES", "DATASETS", "FEATURES", "DataSource", "Dataset", "DatasetSpec", "Identity",
    "IdxFiles", "ImageScaler", "KddEncoder", "KddPreprocessor", "KddTable", "LoadRequest",
    "Located", "Preprocessor", "RemoteFile", "TablePreprocessor", "TargetCode",
    "attack_category", "cache_dir", "check_xy", "dataset_spec", "fetch", "fetch_dataset",
    "fetchable", "find_source", "hold_out", "image_dataset", "infer_task", "kdd_targets",
    "load_dataset", "load_features_file", "load_idx_pair", "preprocessor_from_arrays",
    "read_idx", "read_kdd", "register_dataset", "split_pool", "write_idx",
]
