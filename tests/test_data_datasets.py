"""load_dataset: file lookup, splits, preprocessing, and user files for prediction."""

import gzip
import math
from pathlib import Path

import numpy as np
import pytest

from parallel_backprop.data import (DATASETS, Identity, ImageScaler, KddPreprocessor, check_xy,
                                    load_dataset, load_features_file, preprocessor_from_arrays,
                                    read_kdd, write_idx)
from parallel_backprop.data import sources
from parallel_backprop.errors import DataError

SHARED_KDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "kddcup.data_10_percent.gz"
DEBIAN_FASHION = Path("/usr/share/datasets/fashion-mnist")

KDD_ROWS = [
    "0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,1.00,0.00,"
    "0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,normal.",
    "0,icmp,ecr_i,SF,1032,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,316,316,0.00,0.00,0.00,0.00,1.00,"
    "0.00,0.00,148,3,0.02,0.02,0.02,0.00,0.00,0.00,0.00,0.00,smurf.",
    "0,tcp,telnet,S0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,6,5,0.83,1.00,0.00,0.00,0.83,0.33,0.00,"
    "5,6,1.00,0.00,0.20,0.33,1.00,0.83,0.00,0.00,neptune.",
    "0,udp,private,SF,105,146,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,0.00,0.00,0.00,0.00,1.00,0.00,"
    "0.00,255,254,1.00,0.01,0.00,0.00,0.00,0.00,0.00,0.00,satan.",
]


@pytest.fixture(autouse=True)
def isolated(tmp_path, monkeypatch):
    """No network, an empty cache of our own, no data folder from the environment."""
    monkeypatch.setenv("PBP_OFFLINE", "1")
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PBP_DATA_DIR", raising=False)


def make_image_set(folder, n_train=60, n_test=12, seed=0, compress=True, n_classes=10):
    """Four IDX files; pixel (0, 0) of each image is 20 * its label, to check pairing."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % n_classes).astype(np.uint8)
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        images[:, 0, 0] = labels * 20
        suffix = ".gz" if compress else ""
        write_idx(folder / f"{prefix}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress)
    return folder


def assert_well_formed(data, n_features, n_classes):
    for split in ("train", "val", "test"):
        x, y = getattr(data, f"x_{split}"), getattr(data, f"y_{split}")
        assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1] == n_features
        assert y.dtype == np.int64 and y.shape == (len(x),)
        assert y.min() >= 0 and y.max() < n_classes
    assert data.n_features == n_features and data.n_classes == n_classes
    assert len(data.class_names) == n_classes


# --- MNIST-format files -------------------------------------------------------------------

@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "raw"])
def test_mnist_from_data_dir(tmp_path, compress):
    make_image_set(tmp_path / "d", compress=compress)
    data = load_dataset("mnist", data_dir=tmp_path / "d", image_scaling="unit")
    assert_well_formed(data, 784, 10)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (50, 10, 12)
    assert data.class_names == [str(d) for d in range(10)] and data.name == "mnist"
    for x, y in ((data.x_train, data.y_train), (data.x_val, data.y_val),
                 (data.x_test, data.y_test)):
        assert 0 <= x.min() and x.max() <= 1
        np.testing.assert_array_equal(np.round(x[:, 0] * 255), y * 20)  # images kept with labels
    assert isinstance(data.preprocessor, ImageScaler)


def test_train_and_validation_partition_the_pool(tmp_path):
    make_image_set(tmp_path / "d")
    data = load_dataset("mnist", data_dir=tmp_path / "d")
    pool = np.concatenate([data.x_train, data.x_val])
    rows = {tuple(np.round(row * 255).astype(int)) for row in pool}
    assert len(rows) == 60  # every training image exactly once


def test_subfolder_named_after_the_data_set(tmp_path):
    make_image_set(tmp_path / "d" / "fashion-mnist", n_train=30)
    data = load_dataset("fashion-mnist", data_dir=tmp_path / "d")
    assert len(data.x_train) + len(data.x_val) == 30
    assert data.class_names[9] == "Ankle boot"


def pool_size(**kwargs):
    data = load_dataset("mnist", **kwargs)
    return len(data.x_train) + len(data.x_val)


def test_lookup_order(tmp_path, monkeypatch):
    make_image_set(tmp_path / "arg", n_train=24)
    make_image_set(tmp_path / "env" / "mnist", n_train=36)
    make_image_set(tmp_path / "cache" / "mnist", n_train=48)
    monkeypatch.setenv("PBP_DATA_DIR", str(tmp_path / "env"))
    assert pool_size(data_dir=tmp_path / "arg") == 24
    assert pool_size() == 36
    monkeypatch.delenv("PBP_DATA_DIR")
    assert pool_size() == 48
    # A folder missing one of the four files is skipped as a whole.
    (tmp_path / "arg" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert pool_size(data_dir=tmp_path / "arg") == 48


def test_debian_folder_comes_after_the_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(sources.FASHION_MNIST_FILES, "system_dirs",
                        (make_image_set(tmp_path / "deb", 18),))
    assert len(load_dataset("fashion-mnist").x_train) == 15
    make_image_set(tmp_path / "cache" / "fashion-mnist", n_train=30)
    assert len(load_dataset("fashion-mnist").x_train) == 25
    with pytest.raises(DataError, match="mnist"):
        load_dataset("mnist")  # the Debian folder is for Fashion-MNIST only


@pytest.mark.parametrize("how", ["env", "argument"])
def test_offline_and_not_found_is_one_clear_line(tmp_path, monkeypatch, how):
    monkeypatch.setattr(sources.FASHION_MNIST_FILES, "system_dirs", (tmp_path / "no-debian",))
    (tmp_path / "empty").mkdir()
    if how == "argument":
        monkeypatch.delenv("PBP_OFFLINE")
    for name in ("mnist", "fashion-mnist"):
        with pytest.raises(DataError) as info:
            load_dataset(name, data_dir=tmp_path / "empty", download=how == "env")
        message = str(info.value)
        assert "\n" not in message and message.startswith(f"{name}: the IDX files")
        assert str(tmp_path / "empty") in message and str(tmp_path / "cache" / name) in message
        assert "--data-dir" in message and "PBP_DATA_DIR" in message
        assert ("PBP_OFFLINE=1" if how == "env" else "download=False") in message
        assert ("apt-get install dataset-fashion-mnist" in message) == (name == "fashion-mnist")


def test_missing_data_dir_and_corrupt_file(tmp_path):
    with pytest.raises(DataError, match=r"data folder .*nowhere: does not exist"):
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    folder = make_image_set(tmp_path / "d")
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte\.gz: corrupt or truncated"):
        load_dataset("mnist", data_dir=folder)


def test_labels_out_of_range_and_wrong_image_size(tmp_path):
    folder = make_image_set(tmp_path / "d", n_classes=11)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz: label 10 outside 0\.\.9"):
        load_dataset("mnist", data_dir=folder)
    folder = make_image_set(tmp_path / "e")
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((12, 20, 20), np.uint8), True)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: images of 400 pixels, "
                                        r"expected 28x28"):
        load_dataset("mnist", data_dir=folder)


def test_limit_and_split_sizes(tmp_path):
    folder = make_image_set(tmp_path / "d", n_train=120)
    sizes = {limit: tuple(len(a) for a in (d.x_train, d.x_val, d.x_test))
             for limit in (None, 60, 7, 2)
             for d in [load_dataset("mnist", data_dir=folder, limit=limit)]}
    assert sizes == {None: (100, 20, 12), 60: (50, 10, 12), 7: (6, 1, 12), 2: (1, 1, 12)}
    with pytest.raises(DataError, match="need at least 2"):
        load_dataset("mnist", data_dir=folder, limit=1)
    data = load_dataset("mnist", data_dir=folder, val_fraction=0.25)
    assert (len(data.x_train), len(data.x_val)) == (90, 30)


def test_splits_are_seeded(tmp_path):
    folder = make_image_set(tmp_path / "d")
    a, b = (load_dataset("mnist", data_dir=folder, seed=3) for _ in range(2))
    c = load_dataset("mnist", data_dir=folder, seed=4)
    for split in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(a, split), getattr(b, split))
    assert not np.array_equal(a.x_train, c.x_train)
    # The test files are not shuffled; only the scaling fitted on the training split moves.
    np.testing.assert_allclose(a.x_test * a.preprocessor.std + a.preprocessor.mean,
                               c.x_test * c.preprocessor.std + c.preprocessor.mean, atol=1e-5)


def test_image_standardisation_is_fitted_on_the_training_split_only(tmp_path):
    folder = make_image_set(tmp_path / "d")
    unit = load_dataset("mnist", data_dir=folder, image_scaling="unit")
    data = load_dataset("mnist", data_dir=folder)
    scaler = data.preprocessor
    assert scaler.mean == pytest.approx(unit.x_train.mean(dtype=np.float64))
    assert scaler.std == pytest.approx(unit.x_train.std(dtype=np.float64))
    assert abs(data.x_train.mean()) < 1e-5 and data.x_train.std() == pytest.approx(1, rel=1e-4)
    for split in ("x_train", "x_val", "x_test"):
        np.testing.assert_allclose(getattr(data, split),
                                   (getattr(unit, split) - scaler.mean) / scaler.std, atol=1e-5)
    # A saved model's scaler is applied as it is, never refitted.
    again = load_dataset("mnist", data_dir=folder, limit=7, fitted=scaler)
    assert again.preprocessor is scaler
    np.testing.assert_array_equal(again.x_test, data.x_test)
    with pytest.raises(DataError, match="kind 'image' cannot be applied to kdd99"):
        load_dataset("kdd99", fitted=scaler)
    with pytest.raises(DataError, match="image scaling 'log'"):
        load_dataset("mnist", data_dir=folder, image_scaling="log")


def test_bad_arguments():
    bad = {
        "cifar": dict(name="cifar"),
        "limit 0": dict(limit=0),
        "limit 2.5": dict(limit=2.5),
        "seed -1": dict(seed=-1),
        "val_fraction 1": dict(val_fraction=1),
        "val_fraction 0": dict(val_fraction=0.0),
    }
    for expected, kwargs in bad.items():
        name = kwargs.pop("name", "synthetic")
        with pytest.raises(DataError, match=expected.split()[0]):
            load_dataset(name, **kwargs)
    assert list(DATASETS) == ["mnist", "fashion-mnist", "kdd99", "synthetic", "file"]


@pytest.mark.skipif(not DEBIAN_FASHION.is_dir(), reason=f"{DEBIAN_FASHION} not installed "
                    "(apt-get install dataset-fashion-mnist)")
def test_real_fashion_mnist_from_debian():
    data = load_dataset("fashion-mnist")
    assert_well_formed(data, 784, 10)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (50_000, 10_000, 10_000)
    assert np.bincount(data.y_test).tolist() == [1000] * 10
    assert np.bincount(np.concatenate([data.y_train, data.y_val])).tolist() == [6000] * 10
    # Standardised with the training split's pixel mean and deviation.
    assert abs(data.x_train.mean()) < 1e-3 and abs(data.x_train.std() - 1) < 1e-3
    assert 0.2 < data.preprocessor.mean < 0.4 and 0.3 < data.preprocessor.std < 0.4


# --- synthetic ----------------------------------------------------------------------------

def test_synthetic_shapes_and_learnability():
    data = load_dataset("synthetic", synthetic_samples=3000, synthetic_features=20,
                        synthetic_classes=4)
    assert_well_formed(data, 20, 4)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (2500, 500, 500)
    assert isinstance(data.preprocessor, Identity)
    assert abs(data.x_train.mean()) < 0.05 and abs(data.x_train.std() - 1) < 0.05
    assert np.bincount(data.y_train, minlength=4).min() > 0.1 * len(data.y_train)
    # The labels come from a linear teacher: least squares on one-hot targets,
    # fitted on train, already classifies most of the test set.
    w, *_ = np.linalg.lstsq(data.x_train, np.eye(4)[data.y_train], rcond=None)
    assert np.mean(np.argmax(data.x_test @ w, axis=1) == data.y_test) > 0.8


def test_synthetic_is_deterministic_and_limit_keeps_the_test_set():
    kwargs = dict(synthetic_samples=600, synthetic_features=12, synthetic_classes=3)
    a, b = load_dataset("synthetic", **kwargs), load_dataset("synthetic", **kwargs)
    np.testing.assert_array_equal(a.x_train, b.x_train)
    np.testing.assert_array_equal(a.y_test, b.y_test)
    limited = load_dataset("synthetic", limit=60, **kwargs)
    assert len(limited.x_train) + len(limited.x_val) == 60
    np.testing.assert_array_equal(limited.x_test, a.x_test)
    other_seed = load_dataset("synthetic", seed=1, **kwargs)
    np.testing.assert_array_equal(other_seed.x_test, a.x_test)
    assert not np.array_equal(other_seed.x_train, a.x_train)


@pytest.mark.parametrize("kwargs, message", [
    (dict(synthetic_samples=0), "synthetic samples 0"),
    (dict(synthetic_features=-3), "synthetic features -3"),
    (dict(synthetic_classes=1), "synthetic classes 1"),
    (dict(synthetic_samples="10"), "synthetic samples '10'"),
    (dict(synthetic_samples=10**9, synthetic_features=10**4), "over the 8 GiB limit"),
])
def test_synthetic_bad_sizes(kwargs, message):
    with pytest.raises(DataError, match=message):
        load_dataset("synthetic", **kwargs)


# --- KDD Cup 99 ---------------------------------------------------------------------------

def write_kdd(path, n_rows, seed=0, compress=True):
    rng = np.random.default_rng(seed)
    text = "\n".join(KDD_ROWS[i] for i in rng.integers(0, len(KDD_ROWS), n_rows)) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode()) if compress else text.encode())
    return path


def test_kdd_from_a_small_file(tmp_path):
    path = write_kdd(tmp_path / "k.gz", 100)
    data = load_dataset("kdd99", kdd_file=path)
    # Every category of the KDD files has its column, whatever the file holds: 3 + 70 + 11.
    assert_well_formed(data, 38 + 3 + 70 + 11, 2)
    assert (len(data.x_train), len(data.x_val), len(data.x_test)) == (67, 13, 20)
    assert data.class_names == ["normal", "attack"]
    category = load_dataset("kdd99", kdd_file=path, kdd_task="category", kdd_encoding="ordinal",
                            limit=30)
    assert_well_formed(category, 41, 5)
    assert (len(category.x_train), len(category.x_val), len(category.x_test)) == (25, 5, 20)
    assert category.class_names == ["normal", "dos", "probe", "r2l", "u2r"]
    # The task changes the targets only.
    np.testing.assert_array_equal(category.x_test, load_dataset(
        "kdd99", kdd_file=path, kdd_encoding="ordinal", limit=30).x_test)


def test_kdd_default_file_lookup_and_offline_error(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("kdd99")
    message = str(info.value)
    assert "\n" not in message and "kddcup.data_10_percent.gz" in message
    assert "PBP_OFFLINE=1" in message and "--data-dir" in message
    write_kdd(tmp_path / "d" / "kdd99" / "kddcup.data_10_percent", 50, compress=False)
    assert len(load_dataset("kdd99", data_dir=tmp_path / "d").x_test) == 10
    write_kdd(tmp_path / "cache" / "kdd99" / "kddcup.data.gz", 40)
    assert len(load_dataset("kdd99", kdd_file="full").x_test) == 8
    # A bare file name is also looked for in the data folders.
    write_kdd(tmp_path / "d" / "corrected.gz", 30)
    data = load_dataset("kdd99", data_dir=tmp_path / "d", kdd_test_file="corrected.gz")
    assert len(data.x_test) == 30 and len(data.x_train) + len(data.x_val) == 50


def test_kdd_test_file_with_unknown_categories(tmp_path):
    train = write_kdd(tmp_path / "train.gz", 60)
    test = tmp_path / "test.txt"
    test.write_text(KDD_ROWS[0].replace("tcp,http", "sctp,gopher") + "\n" + KDD_ROWS[1] + "\n")
    data = load_dataset("kdd99", kdd_file=train, kdd_test_file=test)
    assert len(data.x_test) == 2 and len(data.x_train) + len(data.x_val) == 60
    assert data.x_test[0, 38:45].sum() == 0 and data.y_test.tolist() == [0, 1]


def test_kdd_bad_input(tmp_path):
    with pytest.raises(DataError, match=r"KDD file .*nope\.csv: not found"):
        load_dataset("kdd99", kdd_file=tmp_path / "nope.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("0,tcp,http,SF,181,5450\n")
    with pytest.raises(DataError, match=r"bad\.csv: 6 columns, expected 42"):
        load_dataset("kdd99", kdd_file=bad)
    small = write_kdd(tmp_path / "k.gz", 20)
    with pytest.raises(DataError, match="KDD task 'multi'"):
        load_dataset("kdd99", kdd_file=small, kdd_task="multi")
    with pytest.raises(DataError, match="KDD encoding 'hash'"):
        load_dataset("kdd99", kdd_file=small, kdd_encoding="hash")
    with pytest.raises(DataError, match="test_fraction 1.5"):
        load_dataset("kdd99", kdd_file=small, kdd_test_fraction=1.5)


@pytest.mark.skipif(not SHARED_KDD.is_file(), reason=f"the real KDD file is not at {SHARED_KDD}")
def test_real_kdd_with_limit():
    data = load_dataset("kdd99", kdd_file=SHARED_KDD, limit=6000, seed=1)
    assert_well_formed(data, data.n_features, 2)
    assert (len(data.x_train), len(data.x_val)) == (5000, 1000)
    assert len(data.x_test) == round(494_021 * 0.2)
    assert 0.1 < data.y_test.mean() < 0.95 and 0.1 < data.y_train.mean() < 0.95
    # 38 numeric + one-hot of every protocol, service and flag of the KDD files, whatever
    # the 5,000 training rows hold.
    assert data.n_features == 38 + 3 + 70 + 11


# --- preprocessors and user files ---------------------------------------------------------

def kdd_preprocessor(tmp_path, task="binary"):
    table = read_kdd(write_kdd(tmp_path / "fit.gz", 40))
    return KddPreprocessor("onehot", task).fit(table)


def all_preprocessors(tmp_path):
    return [ImageScaler((28, 28), 10), Identity(12, 3), kdd_preprocessor(tmp_path, "category")]


def test_preprocessors_round_trip_without_objects(tmp_path):
    for prep in all_preprocessors(tmp_path):
        arrays = prep.to_arrays()
        assert str(arrays["kind"]) == prep.kind
        assert all(a.dtype.kind in "biufU" for a in arrays.values()), prep.kind
        np.savez(tmp_path / "p.npz", **arrays)
        with np.load(tmp_path / "p.npz", allow_pickle=False) as saved:
            back = preprocessor_from_arrays(dict(saved))
        assert type(back) is type(prep) and back.n_features == prep.n_features
        assert back.n_classes == prep.n_classes
    with pytest.raises(DataError, match="preprocessor kind 'fft'"):
        preprocessor_from_arrays({"kind": np.array("fft")})
    with pytest.raises(DataError, match="missing 'kind'"):
        preprocessor_from_arrays({})
    with pytest.raises(DataError, match="image preprocessor arrays: missing 'image_shape'"):
        preprocessor_from_arrays({"kind": np.array("image")})


def test_image_scaler_rules():
    scaler = ImageScaler()
    pixels = np.arange(2 * 784).reshape(2, 28, 28) % 256
    expected = (pixels.reshape(2, 784) / 255).astype(np.float32)
    np.testing.assert_array_equal(scaler.transform(pixels.astype(np.uint8)), expected)
    np.testing.assert_array_equal(scaler.transform(pixels.astype(np.int64)), expected)
    np.testing.assert_array_equal(scaler.transform(pixels.astype(np.float64)), expected)
    np.testing.assert_array_equal(scaler.transform(expected), expected)  # already scaled
    with pytest.raises(DataError, match="float pixel values outside"):
        scaler.transform(expected * 3.7)
    with pytest.raises(DataError, match=r"expected \(n, 28, 28\) or \(n, 784\)"):
        scaler.transform(np.zeros((2, 27, 28)))


def save_csv(path, rows):
    np.savetxt(path, rows, delimiter=",")
    return path


def test_features_file_npy_images(tmp_path):
    prep = ImageScaler()
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "i.npy", images)
    x, y = load_features_file(tmp_path / "i.npy", prep, 784)
    assert y is None and x.dtype == np.float32 and x.shape == (5, 784)
    np.testing.assert_array_equal(x, images.reshape(5, 784) / np.float32(255))
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match=r"obj\.npy: the array contains pickled objects"):
        load_features_file(tmp_path / "obj.npy", prep, 784)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"junk\.npy: not a valid \.npy file"):
        load_features_file(tmp_path / "junk.npy", prep, 784)
    np.save(tmp_path / "nan.npy", np.full((2, 784), np.nan, np.float32))
    with pytest.raises(DataError, match=r"nan\.npy: contains NaN"):
        load_features_file(tmp_path / "nan.npy", prep, 784)


def test_features_file_numeric_csv(tmp_path):
    prep = Identity(4, 3)
    rows = np.random.default_rng(0).standard_normal((6, 4))
    x, y = load_features_file(save_csv(tmp_path / "a.csv", rows), prep, 4)
    assert y is None
    np.testing.assert_allclose(x, rows.astype(np.float32))
    labelled = np.column_stack([rows, [0, 1, 2, 2, 1, 0]])
    x, y = load_features_file(save_csv(tmp_path / "b.csv", labelled), prep, 4)
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2, 2, 1, 0]
    cases = {
        "label.csv": (np.column_stack([rows, [0, 1, 2, 3, 0, 0]]), r"label 3 at sample index 3 "
                      r"outside \[0, 3\)"),
        "frac.csv": (np.column_stack([rows, [0, 1, 0.5, 1, 0, 0]]), r"row 3: label 0.5"),
        "width.csv": (rows[:, :3], r"rows of 3 values, expected 4 features \(or 5"),
        "nan.csv": (np.where(np.arange(24).reshape(6, 4) == 9, np.nan, rows),
                    "NaN or infinity in the inputs, first at sample index 2"),
    }
    for name, (content, message) in cases.items():
        with pytest.raises(DataError, match=name.replace(".", r"\.") + ": " + message):
            load_features_file(save_csv(tmp_path / name, content), prep, 4)
    (tmp_path / "text.csv").write_text("a,b,c,d\n")
    with pytest.raises(DataError, match=r"text\.csv: not numeric CSV"):
        load_features_file(tmp_path / "text.csv", prep, 4)
    with pytest.raises(DataError, match=r"gone\.csv: file not found"):
        load_features_file(tmp_path / "gone.csv", prep, 4)


def test_features_file_kdd(tmp_path):
    prep = kdd_preprocessor(tmp_path)
    labelled = tmp_path / "rows.csv"
    labelled.write_text("\n".join(KDD_ROWS) + "\n")
    x, y = load_features_file(labelled, prep, prep.n_features)
    assert x.shape == (4, prep.n_features) and y.tolist() == [0, 1, 1, 1]
    unlabelled = tmp_path / "rows41.csv"
    unlabelled.write_text("\n".join(r.rsplit(",", 1)[0] for r in KDD_ROWS) + "\n")
    x41, y41 = load_features_file(unlabelled, prep, prep.n_features)
    assert y41 is None
    np.testing.assert_array_equal(x41, x)
    np.save(tmp_path / "enc.npy", x)
    np.testing.assert_array_equal(load_features_file(tmp_path / "enc.npy", prep,
                                                     prep.n_features)[0], x)
    np.save(tmp_path / "raw.npy", np.zeros((4, 41)))
    with pytest.raises(DataError, match=r"raw\.npy: .* raw KDD Cup 99 rows as CSV"):
        load_features_file(tmp_path / "raw.npy", prep, prep.n_features)


def test_check_xy():
    x = np.zeros((3, 2), np.float32)
    check_xy(x, np.array([0, 1, 1]), 2, "ok")
    check_xy(x, None, None, "ok")
    cases = [
        (np.zeros(3), None, r"d: inputs of shape \(3,\), expected 2-D"),
        (np.array([[0, 1], [np.inf, 0]]), None, "NaN or infinity in the inputs, first at "
                                                "sample index 1"),
        (x, np.array([0, 1]), r"labels of shape \(2,\) for 3 samples"),
        (x, np.array([0.0, 1.0, 1.0]), "labels of type float64, expected integers"),
        (x, np.array([0, 2, 1]), r"label 2 at sample index 1 outside \[0, 2\)"),
        (x, np.array([0, -1, 1]), "label -1"),
    ]
    for xs, ys, message in cases:
        with pytest.raises(DataError, match=message):
            check_xy(xs, ys, 2, "d")


def test_public_sizes_are_consistent():
    # 60,000 MNIST training images split 5:1 give the paper's 50,000 / 10,000.
    from parallel_backprop.data import split_pool
    train, val = split_pool(60_000, None, 1 / 6, np.random.default_rng(0))
    assert (len(train), len(val)) == (50_000, 10_000)
    assert math.isclose(len(val) / len(train), 1 / 5)
    assert len(np.union1d(train, val)) == 60_000
