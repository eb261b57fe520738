"""Table schemas: KDD Cup 99 through the table pipeline, the same features as the earlier
``KddPreprocessor``; models of kind "kdd" still predict; tune and bench on --train-file."""

import json

import numpy as np
import pytest

from parallel_backprop.data import KddEncoder, load_dataset, read_kdd
from parallel_backprop.data.kdd import (CATEGORIES, FEATURES, FLAGS, NUMERIC,
                                        PROTOCOLS, SERVICES, attack_category, kdd_schema)
from parallel_backprop.data.schema import TableSchema
from parallel_backprop.data.tables import read_table
from parallel_backprop.data.tabular import TablePreprocessor
from parallel_backprop.data.targets import TargetCode
from parallel_backprop.errors import DataError
from parallel_backprop.modelio import Model, load_model, save_model
from parallel_backprop.network import Network

from helpers import run

LABELS = ("normal.", "smurf.", "neptune.", "satan.", "guess_passwd.", "buffer_overflow.")


def kdd_rows(n, seed):
    """``n`` KDD rows of random values: heavy-tailed counts, some categories, known labels."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        fields = [str(int(v)) for v in rng.pareto(1.0, len(FEATURES)) * 10]
        fields[FEATURES.index("num_outbound_cmds")] = "0"              # constant, as in KDD
        fields[FEATURES.index("serror_rate")] = f"{rng.random():.2f}"
        fields[1] = str(rng.choice(PROTOCOLS))
        fields[2] = str(rng.choice(("http", "smtp", "private", "ecr_i", "telnet")))
        fields[3] = str(rng.choice(("SF", "S0", "REJ")))
        rows.append(",".join(fields + [str(rng.choice(LABELS))]))
    return "\n".join(rows) + "\n"


@pytest.fixture(scope="module")
def kdd_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("kdd") / "kdd.csv"
    path.write_text(kdd_rows(300, 0))
    return path


def schema_prep(path, encoding):
    table = kdd_schema("binary", encoding).name_columns(read_table(path, header=False), "t")
    prep = TablePreprocessor(schema=kdd_schema("binary", encoding))
    prep.fit(table, list(FEATURES), TargetCode(["label"], "classify", "kdd99-binary"))
    return prep, prep.transform_table(table)


@pytest.mark.parametrize("encoding", ["onehot", "ordinal"])
def test_schema_gives_the_kdd_preprocessors_features(kdd_file, encoding):
    old = KddEncoder(encoding, "binary").fit(read_kdd(kdd_file))
    x_old = old.transform(read_kdd(kdd_file))
    prep, x_new = schema_prep(kdd_file, encoding)
    # Numeric columns first, in the file's order, log1p'd and standardised alike; the
    # constant num_outbound_cmds is kept (divided by 1) as before.
    scaled = [code.name for code in prep.codes if code.kind != "category"]
    numeric = [scaled.index(name) for name in NUMERIC]
    np.testing.assert_allclose(x_new[:, numeric], x_old[:, :38], atol=1e-5)
    if encoding == "ordinal":
        assert x_new.shape == (300, 41)
        return
    # One-hot: a column for every category of the KDD files; those the file holds are the
    # old preprocessor's columns, the others all zero.
    assert x_new.shape == (300, 38 + len(PROTOCOLS) + len(SERVICES) + len(FLAGS))
    offset_new, offset_old = 38, 38
    for j, full in enumerate((PROTOCOLS, SERVICES, FLAGS)):
        seen = list(old.vocabularies[j])
        block = x_new[:, offset_new:offset_new + len(full)]
        np.testing.assert_array_equal(block[:, [full.index(v) for v in seen]],
                                      x_old[:, offset_old:offset_old + len(seen)])
        unseen = [k for k, v in enumerate(full) if v not in seen]
        assert not block[:, unseen].any() and (unseen or j == 0)
        offset_new, offset_old = offset_new + len(full), offset_old + len(seen)


def test_kdd99_is_the_file_data_set_with_the_kdd_schema(kdd_file):
    kdd = load_dataset("kdd99", kdd_file=kdd_file, kdd_task="category", progress=False, seed=3)
    generic = load_dataset("file", train_file=kdd_file, schema="kdd99", target="41",
                           progress=False, seed=3)
    assert kdd.preprocessor.kind == "table" and kdd.name == "kdd99"
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(kdd, f"x_{split}"), getattr(generic, f"x_{split}"))
    # Only the targets differ: the labels themselves, or their five categories.
    assert kdd.class_names == list(CATEGORIES) and len(generic.class_names) == len(LABELS)
    mapped = [CATEGORIES.index(attack_category(generic.class_names[y])) for y in generic.y_test]
    np.testing.assert_array_equal(mapped, kdd.y_test)


@pytest.mark.parametrize("task", ["binary", "category"])
@pytest.mark.parametrize("target", [None, "41", "label"])
def test_a_copy_of_the_file_with_the_task_schema_is_kdd99(kdd_file, task, target):
    kdd = load_dataset("kdd99", kdd_file=kdd_file, kdd_task=task, progress=False, seed=5)
    generic = load_dataset("file", train_file=kdd_file, schema=f"kdd99-{task}", target=target,
                           progress=False, seed=5)
    assert generic.class_names == kdd.class_names
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(kdd, f"x_{split}"), getattr(generic, f"x_{split}"))
        np.testing.assert_array_equal(getattr(kdd, f"y_{split}"), getattr(generic, f"y_{split}"))


def test_category_width_does_not_move_with_the_training_rows(kdd_file):
    widths = {load_dataset("kdd99", kdd_file=kdd_file, limit=limit, progress=False).x_train.shape[1]
              for limit in (3, 50, 300)}
    assert widths == {122}


def test_table_model_round_trip_and_a_file_without_header_or_labels(kdd_file, tmp_path):
    prep, x = schema_prep(kdd_file, "onehot")
    restored = TablePreprocessor.from_arrays(prep.to_arrays())
    features_only = tmp_path / "features.csv"
    features_only.write_text("".join(line.rsplit(",", 1)[0] + "\n"
                                      for line in kdd_file.read_text().splitlines()))
    np.testing.assert_array_equal(restored.transform_table(read_table(features_only)), x)
    table = read_table(kdd_file)
    labels = [line.rsplit(",", 1)[1] for line in kdd_file.read_text().splitlines()]
    assert restored.targets_of(table).tolist() == [int(v != "normal.") for v in labels]
    assert restored.targets_of(read_table(features_only)) is None


def test_unknown_label_names_its_row(kdd_file, tmp_path):
    bad = tmp_path / "bad.csv"
    lines = kdd_file.read_text().splitlines()
    lines[4] = lines[4].rsplit(",", 1)[0] + ",nosuchattack."
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"row 5, target 'label': 'nosuchattack\.': not mapped"):
        load_dataset("kdd99", kdd_file=bad, progress=False)


def test_schema_checks_its_names():
    with pytest.raises(DataError, match="'nope' not among its names"):
        TableSchema(names=("a", "b"), log_scaled=("nope",))
    with pytest.raises(DataError, match="unknown"):
        TableSchema(target_map="no-such-map")


def test_old_kdd_model_still_predicts(kdd_file, tmp_path, capsys):
    data_old = KddEncoder("onehot", "category").fit(read_kdd(kdd_file))
    network = Network.from_spec("1h", data_old.n_features, 5)
    path = tmp_path / "old.npz"
    save_model(path, Model(network, network.init_params(0), data_old, list(CATEGORIES),
                           "kdd99"))
    model = load_model(path)
    assert model.preprocessor.kind == "kdd"
    data = load_dataset("kdd99", kdd_file=kdd_file, fitted=model.preprocessor, progress=False)
    assert data.x_test.shape[1] == data_old.n_features and data.class_names == list(CATEGORIES)
    code, stdout, err = run(["predict", path, "--kdd-file", kdd_file], capsys)
    assert code == 0, err
    assert f"on {len(data.x_test)} samples" in stdout


def test_new_kdd_model_predicts_its_test_split_and_a_file(kdd_file, tmp_path, capsys):
    model = tmp_path / "new.npz"
    code, _, err = run(["train", "--dataset", "kdd99", "--kdd-file", kdd_file, "--net", "1h",
                        "--epochs", "1", "--batch-size", "16", "--quiet", "--save", model],
                       capsys)
    assert code == 0, err
    assert load_model(model).preprocessor.kind == "table"
    code, stdout, err = run(["predict", model, "--kdd-file", kdd_file], capsys)
    assert code == 0 and "on 60 samples" in stdout, err
    code, stdout, err = run(["predict", model, "--input", kdd_file], capsys)
    assert code == 0 and "on 300 samples" in stdout, err


def test_tune_reads_a_table(kdd_file, tmp_path, capsys):
    out = tmp_path / "tune.json"
    code, stdout, err = run(["tune", "--train-file", kdd_file, "--schema", "kdd99", "--net",
                             "1h", "--lrs", "0.1,0.5", "--epochs", "1", "--jobs", "1",
                             "--quiet", "--out", out], capsys)
    assert code == 0, err
    doc = json.loads(out.read_text())
    assert doc["net"] == "122-1024-6" and len(doc["candidates"]) == 2


def test_bench_times_the_rows_of_a_table(kdd_file, tmp_path, capsys):
    out = tmp_path / "bench"
    code, stdout, err = run(["bench", "--train-file", kdd_file, "--schema", "kdd99", "--quick",
                             "--systems", "serial", "--nets", "1h", "--batch-sizes", "16",
                             "--threads", "1", "--no-plots", "--quiet", "--out", out], capsys)
    assert code == 0, err
    doc = json.loads((out / "bench.json").read_text())
    record = doc["records"][0]
    assert record["status"] == "ok" and record["net"] == "122-1024-6"
    assert record["epoch_samples"] == 200 and any("200 rows" in note for note in doc["notes"])
    # Steps read the table's training rows, not synthetic ones.
    x_train = load_dataset("file", train_file=kdd_file, schema="kdd99", progress=False).x_train
    with np.load(out / "pool.npz") as pool:
        np.testing.assert_array_equal(pool["x"], x_train)


def test_encoding_some_rows_equals_encoding_those_rows_taken(kdd_file):
    prep, _ = schema_prep(kdd_file, "onehot")
    table = kdd_schema().name_columns(read_table(kdd_file, header=False), "t")
    rows = np.random.default_rng(1).permutation(300)[:120]
    np.testing.assert_array_equal(prep.transform_table(table, rows=rows),
                                  prep.transform_table(table.take(rows)))
