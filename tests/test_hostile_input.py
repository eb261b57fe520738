"""Hostile input end to end: each case is one clear line, a non-zero exit, and nothing
saved is lost. The other cases live next to their code (see docs/robustness.md)."""

import gzip
import io
import pickle
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pooch
from numpy.lib import format as npy_format
import pytest

from parallel_backprop.data import Identity
from parallel_backprop.errors import ConfigError, ModelFileError
from parallel_backprop.modelio import Model, load_model, save_model
from parallel_backprop.network import Network
from parallel_backprop.trainer import TrainConfig, train

from helpers import mnist_folder, one_clear_line, run

SMALL = ["--dataset", "synthetic", "--samples", "300", "--features", "6", "--classes", "3",
         "--net", "6-8-3", "--batch-size", "16", "--epochs", "1", "--quiet"]
KDD_ROW = ("0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,"
           "1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.")


@pytest.fixture
def saved(tmp_path, capsys):
    """A model already saved, which a failed run must leave as it was."""
    path = tmp_path / "keep.npz"
    assert run(["train", *SMALL, "--save", path], capsys)[0] == 0
    return path, path.read_bytes()


def damage_truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-40])


def damage_flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x10
    path.write_bytes(bytes(data))


def damage_raw_truncate(path: Path) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.unlink()
    path.with_suffix("").write_bytes(raw[:-100])      # the raw IDX, 100 bytes short


@pytest.mark.parametrize("damage,expected", [
    (damage_truncate, "corrupt or truncated gzip data"),
    (damage_flip, "corrupt or truncated gzip data"),
    (damage_raw_truncate, "truncated IDX data"),
])
def test_damaged_idx_file_through_the_cli(damage, expected, saved, tmp_path, capsys,
                                          monkeypatch):
    monkeypatch.setenv("PBP_OFFLINE", "1")
    folder = mnist_folder(tmp_path / "mnist")
    damage(folder / "train-images-idx3-ubyte.gz")
    model, before = saved
    code, _, err = run(["train", "--dataset", "mnist", "--data-dir", folder, "--net", "784-8-10",
                        "--save", model], capsys)
    one_clear_line(code, err, "train-images-idx3-ubyte", expected)
    assert model.read_bytes() == before


@pytest.mark.parametrize("content,expected", [
    ("\n".join([KDD_ROW.replace(",181,", ",1o1,")] + [KDD_ROW] * 3) + "\n",
     "row 1, column 'src_bytes': '1o1' is not a number"),
    ("\n".join([KDD_ROW.replace(",SF,", ",")] * 3) + "\n", "41 columns, expected 42"),
    ("", "empty file"),
    ("\n".join([KDD_ROW] * 5 + [KDD_ROW.replace("normal.", "teleport.")]) + "\n",
     "row 6, target 'label': 'teleport.': not mapped"),
])
def test_bad_kdd_file_through_the_cli(content, expected, saved, tmp_path, capsys):
    path = tmp_path / "kdd.csv"
    path.write_text(content)
    model, before = saved
    code, _, err = run(["train", "--dataset", "kdd99", "--kdd-file", path, "--save", model],
                       capsys)
    one_clear_line(code, err, "kdd.csv", expected)
    assert model.read_bytes() == before


def test_absurd_sizes_are_refused_before_allocating(saved, capsys):
    model, before = saved
    code, _, err = run(["train", *SMALL, "--net", "6-1000000000000-3", "--save", model], capsys)
    one_clear_line(code, err, "net 6-1000000000000-3", "more than this machine's",
                   "use smaller layers")
    code, _, err = run(["train", *SMALL, "--samples", "1000000000000", "--save", model], capsys)
    one_clear_line(code, err, "synthetic data of", "over the 8 GiB limit")
    code, _, err = run(["train", *SMALL, "--executor", "threads", "--threads", "100000",
                        "--save", model], capsys)
    one_clear_line(code, err, "threads 100000: expected at most 1024")
    assert model.read_bytes() == before
    # From Python too, and without touching memory first.
    network = Network((784, 10**10, 10), ("sigmoid", "sigmoid"))
    x, y = np.zeros((4, 784), np.float32), np.zeros(4, np.int64)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(ConfigError, match=r"net 784-10000000000-10 \(7,950,000,000,010 para"):
        train(network, TrainConfig(batch_size=4, epochs=1), x, y, progress=False)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 10 << 20 and time.perf_counter() - started < 1.0


def test_download_with_a_wrong_checksum_leaves_no_file(saved, tmp_path, capsys, monkeypatch):
    """The downloader is replaced by one that serves an HTML error page (no network)."""
    monkeypatch.delenv("PBP_OFFLINE", raising=False)
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "cache"))
    served = []

    def fake_downloader(url, output_file, pooch_instance, check_only=False):
        served.append(url)
        Path(output_file).write_bytes(b"<html>domain expired</html>")

    monkeypatch.setattr(pooch.core, "choose_downloader", lambda url, progressbar=False:
                        fake_downloader)
    model, before = saved
    code, _, err = run(["train", "--dataset", "mnist", "--data-dir", tmp_path, "--save", model,
                        "--quiet"], capsys)
    one_clear_line(code, err, "train-images-idx3-ubyte.gz: download failed from 3 mirror(s)",
                   "checksum mismatch, expected md5:f68b3c2dcbeaaa9fbdd348bbdeb94873")
    assert len(served) == 3                              # every mirror tried
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []
    assert model.read_bytes() == before


# ---- model files ------------------------------------------------------------------------

def write_model(path, **replace):
    network = Network((6, 8, 3), ("sigmoid", "sigmoid"))
    save_model(path, Model(network, network.init_params(0), Identity(6, 3), ["a", "b", "c"],
                           "synthetic"))
    if replace:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
        arrays.update(replace)
        with open(path, "wb") as handle:
            np.savez(handle, **arrays)
    return path


class Trap:
    """Unpickling this creates a file: proof that nothing is ever unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def pickled(path, marker):
    write_model(path)
    with np.load(path, allow_pickle=False) as archive:
        arrays = {key: archive[key] for key in archive.files}
    arrays["params"] = np.array([Trap(marker)], dtype=object)
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def forged_shape(path):
    """The params member's .npy header claims 10^12 floats; a few bytes follow."""
    write_model(path)
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    header = io.BytesIO()
    npy_format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    members["params.npy"] = header.getvalue() + b"\0" * 64
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


MODEL_CASES = {
    "another architecture": (lambda p, m: write_model(p, sizes=np.array([6, 16, 3])),
                             "parameters of shape (83,) and type float32, expected float32 "
                             "(163,) for net 6-16-3"),
    "unknown activation": (lambda p, m: write_model(p, activations=np.array(["swish", "sigmoid"])),
                           "uses activation 'swish', which is not registered"),
    "NaN parameters": (lambda p, m: write_model(p, params=np.full(83, np.nan, np.float32)),
                       "parameters contain NaN or infinity"),
    "pickle inside": (pickled, "contains pickled objects, which are never loaded"),
    "bit flipped": (lambda p, m: (write_model(p), damage_flip(p)), "not a valid .npz archive"),
    "truncated": (lambda p, m: (write_model(p), damage_truncate(p)),
                  "not a valid .npz archive"),
    "empty": (lambda p, m: p.write_bytes(b""), "not a valid .npz archive"),
    "huge shape in a header": (lambda p, m: forged_shape(p),
                               "array 'params' claims shape (1000000000000,)"),
    "not a model": (lambda p, m: np.savez(p, weights=np.zeros(3)), "missing 'format'"),
}


@pytest.mark.parametrize("case", sorted(MODEL_CASES))
def test_bad_model_files(case, tmp_path, capsys):
    path, marker = tmp_path / "bad.npz", tmp_path / "unpickled"
    make, expected = MODEL_CASES[case]
    make(path, marker)
    with pytest.raises(ModelFileError) as info:
        load_model(path)
    assert expected in str(info.value) and "\n" not in str(info.value), str(info.value)
    out = tmp_path / "pred.csv"
    out.write_text("earlier predictions\n")
    code, _, err = run(["predict", path, "--output", out], capsys)
    one_clear_line(code, err, "bad.npz", expected)
    assert out.read_text() == "earlier predictions\n" and not marker.exists()


def test_predict_input_with_infinity(saved, tmp_path, capsys):
    model, _ = saved
    rows = np.random.default_rng(0).standard_normal((3, 6))
    rows[2, 1] = np.inf
    path = tmp_path / "rows.csv"
    np.savetxt(path, rows, delimiter=",")
    code, _, err = run(["predict", model, "--input", path], capsys)
    one_clear_line(code, err, "rows.csv", "NaN or infinity", "sample index 2")


def test_never_unpickled_even_by_the_loader_of_a_raw_pickle(tmp_path):
    """A file that is a plain pickle, not a zip: refused, the trap not sprung."""
    marker = tmp_path / "unpickled"
    path = tmp_path / "m.npz"
    path.write_bytes(pickle.dumps(Trap(marker)))
    with pytest.raises(ModelFileError, match="not a valid .npz archive"):
        load_model(path)
    assert not marker.exists()
