"""Property-based fuzzing of the file readers: whatever the bytes, only documented errors.

The IDX reader, the KDD Cup 99 reader and the model (and checkpoint) loader
get valid files damaged in every way hypothesis can think of (bits flipped,
bytes cut, inserted or replaced, headers rewritten, arrays swapped for
others of any type), and random bytes. Each must return a result or raise
its ``PbpError`` subclass, never anything else: no IndexError, no
MemoryError, no unpickling.

A short, reproducible run by default (CI). A longer one, with fresh random
examples each time::

    PBP_FUZZ_EXAMPLES=5000 python -m pytest tests/test_fuzz.py
"""

import gzip
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from parallel_backprop.checkpoint import (CheckpointWriter, data_fingerprint,  # noqa: E402
                                          load_checkpoint)
from parallel_backprop.data import Identity, KddEncoder, read_idx, read_kdd, write_idx  # noqa: E402
from parallel_backprop.errors import DataError, ModelFileError  # noqa: E402
from parallel_backprop.modelio import Model, load_model, save_model  # noqa: E402
from parallel_backprop.network import Network  # noqa: E402
from parallel_backprop.trainer import TrainConfig, train  # noqa: E402

EXAMPLES = int(os.environ.get("PBP_FUZZ_EXAMPLES", "0"))
FUZZ = settings(max_examples=EXAMPLES or 40, deadline=None, derandomize=not EXAMPLES,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# One folder for the whole module, removed at exit; each example overwrites its file.
SCRATCH = tempfile.TemporaryDirectory(prefix="pbp-fuzz-")


def scratch_file(content: bytes, name: str) -> Path:
    path = Path(SCRATCH.name) / name
    path.write_bytes(content)
    return path


@st.composite
def damaged(draw, original: bytes) -> bytes:
    """``original`` with a few random edits: flips, cuts, insertions, overwrites."""
    data = bytearray(original)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "cut", "insert", "overwrite", "chop"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "cut":
            del data[at:at + draw(st.integers(1, 64))]
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "overwrite":
            patch = draw(st.binary(min_size=1, max_size=16))
            data[at:at + len(patch)] = patch
        else:
            del data[at:]
    return bytes(data)


# ---- IDX ---------------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, compress: bool) -> bytes:
    path = Path(SCRATCH.name) / "valid.idx"
    write_idx(path, array, compress)
    return path.read_bytes()


VALID_IDX = [idx_bytes(np.arange(60, dtype=dtype).reshape(shape), compress)
             for dtype, shape in ((np.uint8, (3, 4, 5)), (np.float32, (6, 10)),
                                  (np.int16, (60,)))
             for compress in (False, True)]


@FUZZ
@given(st.one_of(st.sampled_from(VALID_IDX).flatmap(damaged),
                 st.binary(max_size=200),
                 st.binary(max_size=200).map(gzip.compress),
                 st.sampled_from(VALID_IDX).map(lambda b: gzip.compress(b)[:-5])),
       st.sampled_from([None, 1, 3]))
def test_idx_reader_raises_only_data_errors(content, ndim):
    path = scratch_file(content, "fuzz.idx")
    try:
        array = read_idx(path, ndim=ndim)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert isinstance(array, np.ndarray) and (ndim is None or array.ndim == ndim)


# ---- KDD Cup 99 ---------------------------------------------------------------------------

KDD_ROWS = [
    "0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,"
    "0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.",
    "0,icmp,ecr_i,SF,1032,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,316,316,0.00,0.00,0.00,0.00,1.00,"
    "0.00,0.00,148,3,0.02,0.02,0.02,0.00,0.00,0.00,0.00,0.00,smurf.",
    "0,udp,private,SF,105,146,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0.00,0.00,0.00,0.00,1.00,"
    "0.00,0.00,255,254,1.00,0.01,0.00,0.00,0.00,0.00,0.00,0.00,snmpgetattack.",
]
FIELD = st.one_of(st.text(max_size=8), st.sampled_from(["", "nan", "-inf", "1e309", "tcp",
                                                         "normal.", "0x10", " 1", "1,2", "\x00",
                                                         "\"3\"", "#", "1_0"]))


@st.composite
def kdd_line(draw) -> str:
    fields = draw(st.sampled_from(KDD_ROWS)).split(",")
    for _ in range(draw(st.integers(0, 3))):
        kind = draw(st.sampled_from(["replace", "drop", "add"]))
        at = draw(st.integers(0, len(fields) - 1))
        if kind == "replace":
            fields[at] = draw(FIELD)
        elif kind == "drop" and len(fields) > 1:
            del fields[at]
        else:
            fields.insert(at, draw(FIELD))
    return ",".join(fields)


@st.composite
def kdd_file(draw) -> bytes:
    lines = draw(st.lists(kdd_line(), max_size=6))
    end = draw(st.sampled_from(["\n", "\r\n", ""]))
    text = draw(st.sampled_from(["\n", "\r\n"])).join(lines) + end
    data = text.encode("utf-8", errors="surrogatepass")
    if draw(st.booleans()):
        data = draw(damaged(data)) if data else data
    return gzip.compress(data) if draw(st.booleans()) else data


@FUZZ
@given(st.one_of(kdd_file(), st.binary(max_size=300)), st.booleans())
def test_kdd_reader_raises_only_data_errors(content, require_labels):
    path = scratch_file(content, "fuzz.data")
    try:
        table = read_kdd(path, require_labels=require_labels)
    except DataError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
        return
    assert table.numeric.shape == (len(table), 38) and np.all(np.isfinite(table.numeric))
    # What parses also encodes: unknown categories are zeros, never an error.
    encoded = KddEncoder().fit(table).transform(table)
    assert encoded.shape[0] == len(table) and np.all(np.isfinite(encoded))


# ---- model files and checkpoints --------------------------------------------------------

NETWORK = Network((4, 3, 2), ("tanh", "softmax"), "cross-entropy")


def model_bytes() -> bytes:
    path = Path(SCRATCH.name) / "valid.npz"
    save_model(path, Model(NETWORK, NETWORK.init_params(0), Identity(4, 2), ["a", "b"],
                           "synthetic", {"lr": 0.1}))
    return path.read_bytes()


def checkpoint_bytes() -> bytes:
    x = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    y = np.arange(10) % 2
    writer = CheckpointWriter(SCRATCH.name, NETWORK, Identity(4, 2), ["a", "b"], "synthetic",
                              {"lr": 0.1}, data_fingerprint(x, y))
    states = []
    train(NETWORK, TrainConfig(batch_size=4, epochs=1), x, y, progress=False,
          checkpoint=states.append, checkpoint_every=1)
    return writer(states[1]).read_bytes()       # mid-epoch: every field in use


def arrays_of(content: bytes) -> dict:
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        return {key: archive[key] for key in archive.files}


VALID_MODEL = model_bytes()
VALID_CHECKPOINT = checkpoint_bytes()
MODEL_ARRAYS = arrays_of(VALID_MODEL)
CHECKPOINT_ARRAYS = arrays_of(VALID_CHECKPOINT)

ANY_ARRAY = st.one_of(
    st.sampled_from([np.array("x"), np.array(3), np.array(2.5), np.array([]),
                     np.array([1, 2, 3], np.int8), np.zeros((2, 3), np.float32),
                     np.array(["relu", "nope"]), np.array([4, -3, 2]), np.array([4, 10**12, 2]),
                     np.array("{not json"), np.array("[1, 2]"), np.array([True]),
                     np.array([np.nan], np.float32), np.array(1e300),
                     np.zeros(32, np.float32), np.array(["a", "b", "c"]),
                     np.array([{"a": 1}], dtype=object), np.array(-5), np.array(10**15),
                     np.array('{"bit_generator": "PCG64", "state": {}}'),
                     np.array('[{"epoch": 1}]'), np.array('{"a": [[[[1]]]]}')]),
    st.builds(lambda n: np.full(n, np.inf, np.float32), st.integers(0, 40)))


@st.composite
def forged(draw, original: dict) -> bytes:
    """An archive of ``original``'s arrays with some replaced, removed or added."""
    arrays = dict(original)
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(sorted(arrays) + ["extra", "prep.kind", "prep.n_features"]))
        if draw(st.integers(0, 4)) == 0:
            arrays.pop(key, None)
        else:
            arrays[key] = draw(ANY_ARRAY)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


@FUZZ
@given(st.one_of(damaged(VALID_MODEL), forged(MODEL_ARRAYS), st.binary(max_size=300),
                 st.binary(max_size=300).map(lambda b: b"PK\x03\x04" + b)))
def test_model_loader_raises_only_model_file_errors(content):
    path = scratch_file(content, "fuzz.npz")
    try:
        model = load_model(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert model.params.shape == (model.network.n_params,)
        assert np.all(np.isfinite(model.params))
    with pytest.raises(ModelFileError):
        load_checkpoint(path)      # the same bytes are never a valid checkpoint


@FUZZ
@given(st.one_of(damaged(VALID_CHECKPOINT), forged(CHECKPOINT_ARRAYS)))
def test_checkpoint_loader_raises_only_model_file_errors(content):
    path = scratch_file(content, "checkpoint-0000000002.npz")
    try:
        checkpoint = load_checkpoint(path)
    except ModelFileError as exc:
        assert "\n" not in str(exc) and str(path) in str(exc)
    else:
        assert checkpoint.state.params.shape == (NETWORK.n_params,)
