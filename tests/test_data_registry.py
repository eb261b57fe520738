"""The table of data sets: its consistency, register_dataset, fetch_dataset and find_source."""

from pathlib import Path

import numpy as np
import pytest

from parallel_backprop.data import (DATASETS, Dataset, DatasetSpec, Identity, ImageScaler,
                                    KddEncoder, KddPreprocessor, Located, fetch_dataset,
                                    fetchable, find_source, load_dataset, read_kdd,
                                    register_dataset, split_pool)
from parallel_backprop.data.base import COMMON_OPTIONS, LOAD_OPTIONS
from parallel_backprop.data.preprocess import PREPROCESSORS
from parallel_backprop.errors import DataError
from test_data_datasets import make_image_set, write_kdd

BUILTIN_NAMES = ["mnist", "fashion-mnist", "kdd99", "synthetic", "file"]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No network, an empty cache of our own, and the table as it was after each test."""
    monkeypatch.setenv("PBP_OFFLINE", "1")
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PBP_DATA_DIR", raising=False)
    before = dict(DATASETS)
    yield
    DATASETS.clear()
    DATASETS.update(before)


# --- the table ---------------------------------------------------------------------------

def test_the_table_names_the_builtin_data_sets_in_order():
    assert list(DATASETS) == BUILTIN_NAMES
    assert "mnist" in DATASETS and "cifar" not in DATASETS
    assert fetchable() == ["mnist", "fashion-mnist", "kdd99"]


@pytest.mark.parametrize("name", BUILTIN_NAMES)
def test_every_entry_is_consistent(name):
    spec = DATASETS[name]
    assert isinstance(spec, DatasetSpec) and spec.name == name
    assert spec.description and "\n" not in spec.description
    assert spec.preprocessing in PREPROCESSORS
    assert callable(spec.load) and callable(spec.locate)
    assert set(spec.options) <= set(LOAD_OPTIONS) and not set(spec.options) & set(COMMON_OPTIONS)


def test_options_of_each_data_set():
    assert DATASETS["mnist"].options == ("image_scaling",)
    assert "kdd_file" in DATASETS["kdd99"].options
    assert DATASETS["synthetic"].generated and "synthetic_samples" in DATASETS["synthetic"].options


# --- register_dataset --------------------------------------------------------------------

def toy_folder(tmp_path, n=30, n_classes=3):
    """A toy data set on disk: one .npz of inputs and labels."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "toy"
    folder.mkdir(exist_ok=True)
    np.savez(folder / "toy.npz", x=rng.standard_normal((n, 5)),
             y=np.arange(n) % n_classes)
    return folder


def locate_toy(request):
    path = Path(request.data_dir or ".") / "toy.npz"
    if not path.is_file():
        raise DataError(f"toy: {path} not found")
    return Located((path,), {"data_dir": path.parent}, str(path))


def load_toy(request, rng):
    with np.load(locate_toy(request).paths[0]) as arrays:
        x, y = arrays["x"].astype(np.float32), arrays["y"].astype(np.int64)
    n_classes = int(y.max()) + 1
    test = np.arange(len(x)) % 5 == 0
    pool_x, pool_y = x[~test], y[~test]
    train, val = split_pool(len(pool_x), request.limit, request.val_fraction, rng)
    return Dataset("toy", pool_x[train], pool_y[train], pool_x[val], pool_y[val], x[test],
                   y[test], n_classes, Identity(5, n_classes), list("abc")[:n_classes])


TOY = DatasetSpec("toy", "five features, three classes", load_toy, "identity", locate_toy)


def test_a_registered_data_set_loads_fetches_and_is_found(tmp_path):
    folder = toy_folder(tmp_path)
    assert register_dataset(TOY) is TOY
    assert list(DATASETS) == BUILTIN_NAMES + ["toy"] and "toy" in fetchable()
    data = load_dataset("toy", data_dir=folder, limit=12, seed=3)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (10, 2, 6)
    assert data.n_features == 5 and data.class_names == ["a", "b", "c"]
    again = load_dataset("toy", data_dir=folder, limit=12, seed=3)
    np.testing.assert_array_equal(again.x_train, data.x_train)  # seeded like the others
    assert fetch_dataset("toy", folder) == [folder / "toy.npz"]
    source = find_source("toy", folder)
    assert source.args == ("--dataset", "toy", "--data-dir", str(folder))
    assert source.load == {"data_dir": folder, "download": False}
    assert source.where == str(folder / "toy.npz")
    with pytest.raises(DataError, match="fitted preprocessing of kind 'image' cannot be "
                                        "applied to toy: expected 'identity'"):
        load_dataset("toy", data_dir=folder, fitted=ImageScaler())


def test_a_registered_loader_is_held_to_the_same_checks(tmp_path):
    def bad_labels(request, rng):
        data = load_toy(request, rng)
        data.y_test[0] = 7
        return data

    register_dataset(DatasetSpec("toy", "", bad_labels, "identity", locate_toy))
    with pytest.raises(DataError, match=r"toy test split: label 7 at sample index 0 outside"):
        load_dataset("toy", data_dir=toy_folder(tmp_path))


def test_register_refuses_bad_specs():
    register_dataset(TOY)
    with pytest.raises(DataError, match="'toy' is already registered; pass replace=True"):
        register_dataset(TOY)
    register_dataset(TOY, replace=True)
    cases = {
        "expected a non-empty name": DatasetSpec("my set", "", load_toy, "identity", locate_toy),
        "preprocessing 'fft', expected one of image, identity, kdd":
            DatasetSpec("fft", "", load_toy, "fft", locate_toy),
        "options colour are not load_dataset options":
            DatasetSpec("c", "", load_toy, "identity", locate_toy, options=("colour",)),
        "load and locate must be functions": DatasetSpec("f", "", None, "identity", locate_toy),
    }
    for message, spec in cases.items():
        with pytest.raises(DataError, match=message):
            register_dataset(spec)
    with pytest.raises(DataError, match="is not a DatasetSpec"):
        register_dataset("mnist")
    assert list(DATASETS) == BUILTIN_NAMES + ["toy"]


# --- fetch_dataset and find_source for the built-in data sets ----------------------------

def test_fetch_finds_the_files_and_refuses_generated_data(tmp_path):
    folder = make_image_set(tmp_path / "d")
    paths = fetch_dataset("mnist", folder, progress=False)
    assert [p.name for p in paths] == ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                       "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]
    kdd = write_kdd(tmp_path / "k" / "kddcup.data_10_percent.gz", 20)
    assert fetch_dataset("kdd99", kdd.parent) == [kdd]
    with pytest.raises(DataError, match=r"kdd99: kddcup\.data\.gz or kddcup\.data not in"):
        fetch_dataset("kdd99", kdd.parent, kdd_file="full")
    assert fetch_dataset("mnist", folder, kdd_file="full") == paths  # not an mnist option
    with pytest.raises(DataError, match="synthetic: generated in memory, there are no files "
                                        "to fetch; expected one of mnist, fashion-mnist, kdd99"):
        fetch_dataset("synthetic")
    with pytest.raises(DataError, match="colour: not load_dataset options"):
        fetch_dataset("mnist", folder, colour="red")
    with pytest.raises(DataError, match="unknown data set 'cifar', expected one of mnist"):
        fetch_dataset("cifar")


def test_find_source_for_each_kind(tmp_path):
    folder = make_image_set(tmp_path / "d" / "mnist")
    mnist = find_source("mnist", tmp_path / "d")
    assert mnist.args == ("--dataset", "mnist", "--data-dir", str(folder))
    assert mnist.load == {"data_dir": folder, "download": False} and mnist.where == str(folder)
    assert len(load_dataset("mnist", **mnist.load).x_test) == 12
    kdd = write_kdd(tmp_path / "k.gz", 30)
    source = find_source("kdd99", tmp_path / "d", kdd_file=kdd)
    assert source.args == ("--dataset", "kdd99", "--kdd-file", str(kdd))
    assert source.load == {"kdd_file": kdd, "download": False}
    synthetic = find_source("synthetic", synthetic_samples=600, synthetic_features=8,
                            synthetic_classes=3, kdd_file=kdd)
    assert synthetic.args == ("--dataset", "synthetic", "--samples", "600", "--features", "8",
                              "--classes", "3")
    assert synthetic.load == {"synthetic_samples": 600, "synthetic_features": 8,
                              "synthetic_classes": 3}
    assert synthetic.where == "synthetic, 600 samples x 8 features, 3 classes"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="mnist: the IDX files .* downloads are off"):
        find_source("mnist", tmp_path / "empty", download=None)
    with pytest.raises(DataError, match="data folder .*nowhere: does not exist"):
        find_source("mnist", tmp_path / "nowhere")


# --- the KDD preprocessor ----------------------------------------------------------------

def test_kdd_encoder_is_the_kdd_preprocessor_and_its_arrays_keep_their_keys(tmp_path):
    assert KddEncoder is KddPreprocessor
    table = read_kdd(write_kdd(tmp_path / "k.gz", 40))
    prep = KddPreprocessor("ordinal", "category").fit(table)
    # The keys saved model files hold: they must keep loading.
    assert list(prep.to_arrays()) == [
        "kind", "task", "encoding", "mean", "std", "log_mask", "vocab_protocol_type",
        "vocab_service", "vocab_flag"]
    back = KddPreprocessor.from_arrays(prep.to_arrays())
    assert (back.encoding, back.task, back.n_classes) == ("ordinal", "category", 5)
    np.testing.assert_array_equal(back.transform(table), prep.transform(table))
    assert prep.targets(table.labels).max() < 5
    with pytest.raises(DataError, match="KDD rows: expected KDD Cup 99 rows"):
        prep.transform(np.zeros((2, 41)))
