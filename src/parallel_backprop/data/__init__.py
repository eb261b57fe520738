"""Data: MNIST, Fashion-MNIST, KDD Cup 1999 and synthetic data, ready to train on.

- :mod:`.datasets`    ``load_dataset(name)`` -> ``Dataset``: the entry point
- :mod:`.sources`     where files are looked for, cached and downloaded from
- :mod:`.download`    checksum-verified downloads over several mirrors
- :mod:`.idx`         the IDX format (MNIST, Fashion-MNIST)
- :mod:`.kdd`         the KDD Cup 99 CSV format, labels and feature encoding
- :mod:`.preprocess`  raw samples -> float32 inputs, saved with a model
- :mod:`.features`    samples from a user's file (``pbp predict``), ``check_xy``
"""

from .datasets import DATASETS, Dataset, load_dataset, split_pool
from .download import fetch
from .features import check_xy, load_features_file
from .idx import load_idx_pair, read_idx, write_idx
from .kdd import (CATEGORIES, FEATURES, KddEncoder, KddTable, attack_category, kdd_targets,
                  read_kdd)
from .preprocess import (Identity, ImageScaler, KddPreprocessor, Preprocessor,
                         preprocessor_from_arrays)
from .sources import cache_dir

__all__ = [
    "CATEGORIES", "DATASETS", "FEATURES", "Dataset", "Identity", "ImageScaler", "KddEncoder",
    "KddPreprocessor", "KddTable", "Preprocessor", "attack_category", "cache_dir", "check_xy",
    "fetch", "kdd_targets", "load_dataset", "load_features_file", "load_idx_pair",
    "preprocessor_from_arrays", "read_idx", "read_kdd", "split_pool", "write_idx",
]
