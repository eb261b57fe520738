"""Model files: one ``.npz`` with parameters, architecture and preprocessing.

Everything in it is a plain numeric or unicode array, and it is always
loaded with ``allow_pickle=False``: a model file can never run code. The
file is written atomically, so a crash while saving keeps the previous one.

Keys::

    format        "parallel-backprop-model"     version  int
    params        float32 (n_params,)           sizes    int64 (n_layers + 1,)
    activations   str (n_layers,)               loss     str
    class_names   str (n_classes,)              dataset  str
    metadata      str: JSON (training options and metrics)
    prep.<key>    the preprocessor's arrays (see data.preprocessor_from_arrays)
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .activations import activation_names
from .errors import ModelFileError, PbpError
from .fileio import atomic_open
from .network import Network

FORMAT = "parallel-backprop-model"
VERSION = 1


@dataclass
class Model:
    """A trained network with what it needs to read raw inputs."""

    network: Network
    params: np.ndarray                 # float32 (n_params,)
    preprocessor: Any                  # data.Preprocessor
    class_names: list[str]
    dataset: str = ""
    metadata: dict = field(default_factory=dict)


def save_model(path: str | Path, model: Model) -> None:
    arrays = {
        "format": np.array(FORMAT),
        "version": np.array(VERSION),
        "params": np.asarray(model.params, dtype=np.float32),
        "sizes": np.array(model.network.sizes, dtype=np.int64),
        "activations": np.array(model.network.activations, dtype=str),
        "loss": np.array(model.network.loss),
        "class_names": np.array(model.class_names, dtype=str),
        "dataset": np.array(model.dataset),
        "metadata": np.array(json.dumps(model.metadata)),
    }
    for key, value in model.preprocessor.to_arrays().items():
        arrays[f"prep.{key}"] = value
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


def load_model(path: str | Path) -> Model:
    """Read and validate a model file; any problem is a one-line ModelFileError."""
    from .data import preprocessor_from_arrays

    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path}: not found")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise ModelFileError(
                f"model file {path}: contains pickled objects, which are never loaded "
                "(model files hold only numeric and text arrays)") from None
        raise ModelFileError(f"model file {path}: not a valid .npz archive ({exc})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise ModelFileError(
            f"model file {path}: not a valid .npz archive ({type(exc).__name__}: {exc})") from None

    def get(key: str) -> np.ndarray:
        if key not in arrays:
            raise ModelFileError(f"model file {path}: missing {key!r}; not a parallel-backprop model")
        return arrays[key]

    if str(get("format")) != FORMAT:
        raise ModelFileError(f"model file {path}: not a parallel-backprop model")
    if int(get("version")) != VERSION:
        raise ModelFileError(
            f"model file {path}: format version {int(get('version'))}, expected {VERSION}")
    activations = tuple(str(a) for a in get("activations"))
    unknown = [a for a in activations if a not in activation_names()]
    if unknown:
        raise ModelFileError(
            f"model file {path}: uses activation {unknown[0]!r}, which is not registered "
            "in this process (call parallel_backprop.register_activation first)")
    try:
        network = Network(tuple(int(n) for n in get("sizes")), activations, str(get("loss")))
        params = get("params")
        if params.dtype != np.float32 or params.shape != (network.n_params,):
            raise ModelFileError(
                f"model file {path}: parameters of shape {params.shape} and type {params.dtype}, "
                f"expected float32 ({network.n_params},) for net {network.spec}")
        if not np.all(np.isfinite(params)):
            raise ModelFileError(f"model file {path}: parameters contain NaN or infinity")
        prep = {key[len("prep."):]: value for key, value in arrays.items()
                if key.startswith("prep.")}
        preprocessor = preprocessor_from_arrays(prep)
        metadata = json.loads(str(get("metadata")))
    except ModelFileError:
        raise
    except (PbpError, ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"model file {path}: inconsistent contents ({exc})") from None
    return Model(network, params, preprocessor, [str(c) for c in get("class_names")],
                 str(get("dataset")), metadata)
