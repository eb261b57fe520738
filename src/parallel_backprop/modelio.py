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
import math
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib import format as npy_format

from .activations import activation_names
from .errors import ModelFileError, PbpError
from .fileio import atomic_open, one_line
from .network import Network
from .resources import check_allocation, prediction_bytes

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


def model_arrays(model: Model) -> dict[str, np.ndarray]:
    """The arrays of a model file (see the module docstring); checkpoints hold them too."""
    arrays = {
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
    return arrays


def save_model(path: str | Path, model: Model) -> None:
    arrays = {"format": np.array(FORMAT), "version": np.array(VERSION), **model_arrays(model)}
    with atomic_open(path, "wb") as handle:
        np.savez(handle, **arrays)


# What reading a damaged or forged zip archive can raise, besides ValueError.
_ARCHIVE_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error,
                   KeyError, NotImplementedError, RuntimeError, struct.error, OverflowError,
                   MemoryError, TypeError, IndexError)


def read_npz(path: str | Path, what: str = "model file",
             error: type[PbpError] = ModelFileError) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` archive, read safely; any problem is one-line ``error``.

    Never unpickles: an object array is refused from its header, before its
    data are read. Each member's header is checked against the member's
    actual size first, so a forged shape cannot make us allocate gigabytes.
    """
    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path}: not found")
    arrays = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                key = info.filename[:-len(".npy")]
                with archive.open(info) as member:
                    read_npy_header(member, info.file_size, f"{what} {path}: array {key!r}",
                                    error)
                with archive.open(info) as member:
                    arrays[key] = npy_format.read_array(member, allow_pickle=False)
    except PbpError:
        raise
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise error(f"{what} {path}: contains pickled objects, which are never loaded "
                        "(these files hold only numeric and text arrays)") from None
        raise error(f"{what} {path}: not a valid .npz archive ({one_line(exc)})") from None
    except _ARCHIVE_ERRORS as exc:
        raise error(f"{what} {path}: not a valid .npz archive ({one_line(exc)})") from None
    return arrays


def read_npy_header(stream, size: int, where: str,
                    error: type[PbpError]) -> tuple[tuple, np.dtype]:
    """Shape and dtype of the ``.npy`` array at the start of ``stream``, checked before reading.

    ``size``: the bytes of the file (or archive member) the stream reads;
    ``where``: what to call the array in a message ("x.npy: the array").
    Refused as one-line ``error``, before anything is allocated: format
    versions other than 1.0 and 2.0, object arrays (never unpickled), a shape
    needing more bytes than are stored after the header (a forged or
    truncated header), and one needing more than this machine's memory (an
    archive member's size is itself forgeable). A malformed header raises
    ValueError, the caller's to name. The stream is left at the data.
    """
    version = npy_format.read_magic(stream)
    if version == (1, 0):
        shape, _, dtype = npy_format.read_array_header_1_0(stream)
    elif version == (2, 0):
        shape, _, dtype = npy_format.read_array_header_2_0(stream)
    else:
        raise error(f"{where} in .npy format version {version}, expected 1.0 or 2.0")
    if dtype.hasobject:
        raise error(f"{where} contains pickled objects, which are never loaded "
                    "(these files hold only numeric and text arrays)")
    nbytes, stored = math.prod(shape) * dtype.itemsize, size - stream.tell()
    if nbytes > stored:
        raise error(f"{where} claims shape {shape} of {dtype} ({nbytes:,} bytes), more than "
                    f"the {stored:,} bytes stored; the file is corrupt or truncated")
    check_allocation(nbytes, f"{where} of shape {shape} and type {dtype}", error)
    return shape, dtype


def _check_network_fits(network: Network, where: str) -> None:
    """Refuse, before its parameters are used, a network this machine cannot hold.

    The parameters' member has passed its own size check; this bounds what
    using the model costs (parameters copied into an executor, one sample's
    buffers), so that layer sizes of 10**9 fail here in a line rather than
    in the first prediction.
    """
    check_allocation(prediction_bytes(network, batch=1),
                     f"{where}: net {network.spec} ({network.n_params:,} parameters)",
                     ModelFileError)


def load_model(path: str | Path) -> Model:
    """Read and validate a model file; any problem is a one-line ModelFileError."""
    path = Path(path)
    return model_from_arrays(read_npz(path, "model file"), f"model file {path}")


class _Fields:
    """The arrays of a file named ``where``, each read as the kind it must be.

    A key that is missing or of the wrong kind is a one-line ModelFileError.
    """

    def __init__(self, arrays: dict[str, np.ndarray], where: str):
        self.arrays, self.where = arrays, where

    def get(self, key: str) -> np.ndarray:
        if key not in self.arrays:
            raise ModelFileError(f"{self.where}: missing {key!r}; not a parallel-backprop file")
        return self.arrays[key]

    def text(self, key: str) -> str:
        value = self.get(key)
        if value.shape != () or value.dtype.kind != "U":
            raise ModelFileError(f"{self.where}: {key!r} of shape {value.shape} and type "
                                 f"{value.dtype}, expected one string")
        return str(value)

    def integer(self, key: str) -> int:
        value = self.get(key)
        if value.shape != () or value.dtype.kind not in "iu":
            raise ModelFileError(f"{self.where}: {key!r} of shape {value.shape} and type "
                                 f"{value.dtype}, expected one integer")
        return int(value)

    def names(self, key: str, what: str) -> list[str]:
        value = self.get(key)
        if value.ndim != 1 or value.dtype.kind != "U":
            raise ModelFileError(f"{self.where}: {what} of shape {value.shape} and type "
                                 f"{value.dtype}, expected a list of names")
        return [str(name) for name in value]

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        """The arrays whose keys start with ``prefix``, keyed without it."""
        return {key[len(prefix):]: value for key, value in self.arrays.items()
                if key.startswith(prefix)}


def _check_format(fields: _Fields, formats: tuple[str, ...]) -> None:
    if fields.text("format") not in formats:
        raise ModelFileError(f"{fields.where}: format {fields.text('format')[:60]!r}, "
                             f"expected {formats[0]!r}")
    if fields.integer("version") != VERSION:
        raise ModelFileError(
            f"{fields.where}: format version {fields.integer('version')}, expected {VERSION}")


def _architecture(fields: _Fields) -> tuple[tuple[int, ...], tuple[str, ...]]:
    """Layer sizes and activations, checked before any network is built from them."""
    activations = tuple(fields.names("activations", "activations"))
    sizes = fields.get("sizes")
    if sizes.ndim != 1 or sizes.dtype.kind not in "iu" or len(sizes) > 1000:
        raise ModelFileError(f"{fields.where}: layer sizes of shape {sizes.shape} and type "
                             f"{sizes.dtype}, expected a short list of integers")
    unknown = [a for a in activations if a not in activation_names()]
    if unknown:
        raise ModelFileError(
            f"{fields.where}: uses activation {unknown[0]!r}, which is not registered "
            "in this process (call parallel_backprop.register_activation first)")
    return tuple(int(n) for n in sizes), activations


def _params(fields: _Fields, network: Network) -> np.ndarray:
    params = fields.get("params")
    if params.dtype != np.float32 or params.shape != (network.n_params,):
        raise ModelFileError(
            f"{fields.where}: parameters of shape {params.shape} and type {params.dtype}, "
            f"expected float32 ({network.n_params},) for net {network.spec}")
    if not np.all(np.isfinite(params)):
        raise ModelFileError(f"{fields.where}: parameters contain NaN or infinity")
    return params


def model_from_arrays(arrays: dict[str, np.ndarray], where: str,
                      formats: tuple[str, ...] = (FORMAT,)) -> Model:
    """Validate the arrays of a model file (or checkpoint) named ``where`` and rebuild the model."""
    from .data import preprocessor_from_arrays

    fields = _Fields(arrays, where)
    _check_format(fields, formats)
    sizes, activations = _architecture(fields)
    try:
        network = Network(sizes, activations, fields.text("loss"))
        _check_network_fits(network, where)
        params = _params(fields, network)
        preprocessor = preprocessor_from_arrays(fields.prefixed("prep."))
        metadata = json.loads(fields.text("metadata"))
        class_names = fields.names("class_names", "class names")
        dataset = fields.text("dataset")
    except ModelFileError:
        raise
    except (PbpError, ValueError, TypeError, KeyError, OverflowError, RecursionError) as exc:
        raise ModelFileError(f"{where}: inconsistent contents ({one_line(exc)})") from None
    if not isinstance(metadata, dict):
        raise ModelFileError(f"{where}: metadata is not a JSON object")
    return Model(network, params, preprocessor, class_names, dataset, metadata)
