"""A user's table: the data set "file" and its TablePreprocessor (kind "table")."""

import gzip

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
import pyarrow.parquet as pq  # noqa: E402

from parallel_backprop.data import load_dataset, preprocessor_from_arrays  # noqa: E402
from parallel_backprop.data.tables import read_table  # noqa: E402
from parallel_backprop.data.tabular import TablePreprocessor  # noqa: E402
from parallel_backprop.data.targets import TargetCode  # noqa: E402
from parallel_backprop.errors import DataError  # noqa: E402


def write(path, text: str, gz: bool = False):
    data = text.encode("utf-8")
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def csv_text(n=40, header=True, sep=",", seed=0):
    """Rows of a numeric input, a text input and a two-class label."""
    rng = np.random.default_rng(seed)
    lines = [sep.join(["size", "colour", "label"])] if header else []
    for i in range(n):
        lines.append(sep.join([f"{rng.normal():.4f}", ["red", "green", "blue"][i % 3],
                               ["yes", "no"][i % 2]]))
    return "\n".join(lines) + "\n"


def fitted(table, features, target, task="classify", **options):
    return TablePreprocessor(**options).fit(table, features, TargetCode(target, task))


# ---- reading and loading ----------------------------------------------------------------

@pytest.mark.parametrize("header", [True, False])
def test_csv_with_and_without_header(tmp_path, header):
    path = write(tmp_path / "t.csv", csv_text(header=header))
    data = load_dataset("file", train_file=path)
    assert data.task == "classify" and data.class_names == ["no", "yes"]
    assert data.n_features == 1 + 3 and data.n_classes == 2
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 40
    assert data.y_train.dtype == np.int64 and data.x_train.dtype == np.float32
    assert data.preprocessor.feature_columns == (["size", "colour"] if header else ["0", "1"])


def test_gzip_tsv_and_parquet_give_the_same_data(tmp_path):
    text = csv_text()
    plain = load_dataset("file", train_file=write(tmp_path / "t.csv", text))
    gz = load_dataset("file", train_file=write(tmp_path / "t.tsv.gz",
                                               text.replace(",", "\t"), gz=True))
    pq.write_table(read_table(tmp_path / "t.csv"), tmp_path / "t.parquet")
    parquet = load_dataset("file", train_file=tmp_path / "t.parquet")
    for other in (gz, parquet):
        np.testing.assert_array_equal(other.x_train, plain.x_train)
        np.testing.assert_array_equal(other.y_test, plain.y_test)


def test_quoted_fields_with_commas_and_a_byte_order_mark(tmp_path):
    text = '\ufeffname,score,label\n' + "".join(
        f'"Smith, {"AB"[i % 2]}",{i},{i % 2}\n' for i in range(30))
    data = load_dataset("file", train_file=write(tmp_path / "q.csv", text))
    prep = data.preprocessor
    assert prep.feature_columns == ["name", "score"]
    assert list(prep.codes[0].vocabulary) == ["Smith, A", "Smith, B"]


def test_test_file_and_held_out_fraction(tmp_path):
    train = write(tmp_path / "a.csv", csv_text(60))
    test = write(tmp_path / "b.csv", csv_text(10, seed=1))
    data = load_dataset("file", train_file=train, test_file=test)
    assert len(data.x_test) == 10 and len(data.x_train) + len(data.x_val) == 60
    held = load_dataset("file", train_file=train, test_fraction=0.5, limit=12)
    assert len(held.x_test) == 30 and len(held.x_train) + len(held.x_val) == 12
    again = load_dataset("file", train_file=train, test_fraction=0.5, limit=12)
    np.testing.assert_array_equal(held.x_train, again.x_train)
    # The earlier keyword of KDD is the same option.
    old = load_dataset("file", train_file=train, kdd_test_file=test)
    np.testing.assert_array_equal(old.x_test, data.x_test)
    with pytest.raises(DataError, match="kdd_test_fraction 0.3 and test_fraction 0.4: one"):
        load_dataset("file", train_file=train, kdd_test_fraction=0.3, test_fraction=0.4)


def test_target_columns_and_drop_by_name_or_index(tmp_path):
    path = write(tmp_path / "t.csv", csv_text())
    data = load_dataset("file", train_file=path, target="0", drop=["label"], task="regress")
    assert data.task == "regress" and data.class_names == ["size"]
    assert data.preprocessor.feature_columns == ["colour"]
    data = load_dataset("file", train_file=path, target="label", columns="size")
    assert data.preprocessor.feature_columns == ["size"] and data.n_features == 1


# ---- the encoding -----------------------------------------------------------------------

def test_numeric_columns_standardised_on_the_training_rows():
    table = pa.table({"a": [1.0, 2.0, 3.0, 100.0], "y": ["p", "q", "p", "q"]})
    prep = TablePreprocessor().fit(table, ["a"], TargetCode(["y"], "classify"),
                                   rows=np.array([0, 1, 2]))
    x = prep.transform_table(table)
    np.testing.assert_allclose(x[:3, 0], [-1.2247449, 0, 1.2247449], rtol=1e-6)
    assert x[3, 0] == pytest.approx((100 - 2) / np.std([1, 2, 3]))


def test_categories_one_hot_capped_and_unseen_values():
    values = ["a"] * 5 + ["b"] * 4 + ["c"] * 3 + ["d"] * 2 + ["e"]
    table = pa.table({"c": values, "y": [0, 1] * 7 + [0]})
    prep = fitted(table, ["c"], ["y"], max_categories=3)
    assert list(prep.codes[0].vocabulary) == ["a", "b"] and prep.codes[0].other
    x = prep.transform_table(pa.table({"c": ["a", "b", "e", "zzz"]}))
    np.testing.assert_array_equal(x, [[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 1]])
    uncapped = fitted(table, ["c"], ["y"])
    x = uncapped.transform_table(pa.table({"c": ["d", "unseen"]}))
    np.testing.assert_array_equal(x, [[0, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    assert any("categories" in note for note in prep.notes)


def test_booleans_are_zero_or_one_and_constant_columns_dropped():
    table = pa.table({"b": [True, False, True, True], "k": [7, 7, 7, 7],
                      "s": ["x"] * 4, "y": ["u", "v", "u", "v"]})
    prep = fitted(table, ["b", "k", "s"], ["y"])
    assert prep.feature_columns == ["b"]
    np.testing.assert_array_equal(prep.transform_table(table)[:, 0], [1, 0, 1, 1])
    assert prep.notes == ["columns 'k', 's': one value in the training split, dropped"]


def test_log_scale_only_for_heavy_tailed_non_negative_columns():
    rng = np.random.default_rng(0)
    heavy = rng.lognormal(0, 2, 200)
    table = pa.table({"heavy": heavy, "normal": rng.normal(size=200),
                      "negative": -heavy, "y": [0, 1] * 100})
    prep = fitted(table, ["heavy", "normal", "negative"], ["y"], log_scale=True)
    assert [c.kind for c in prep.codes] == ["log", "numeric", "numeric"]
    x = prep.transform_table(table)
    np.testing.assert_allclose(x[:, 0], (np.log1p(heavy) - np.log1p(heavy).mean())
                               / np.log1p(heavy).std(), rtol=1e-5, atol=1e-6)
    assert [c.kind for c in fitted(table, ["heavy"], ["y"]).codes] == ["numeric"]


@pytest.mark.parametrize("impute, expected", [("mean", 2.0), ("median", 1.5),
                                              ("most-frequent", 1.0)])
def test_impute_fills_with_the_training_statistic(impute, expected):
    table = pa.table({"a": [1.0, 1.0, None, 2.0, 4.0], "c": ["p", None, "q", "p", "q"],
                      "y": [0, 1, 0, 1, 0]})
    features = ["a", "c"] if impute == "most-frequent" else ["a"]
    prep = fitted(table, features, ["y"], impute=impute)
    assert prep.codes[0].fill == expected
    x = prep.transform_table(table)
    assert x[2, 0] == pytest.approx((expected - prep.codes[0].mean) / prep.codes[0].std)
    if impute == "most-frequent":
        np.testing.assert_array_equal(x[1, 1:], [1, 0])   # "p": the first of the tie


def test_impute_mean_leaves_text_columns_to_most_frequent():
    table = pa.table({"c": ["p", "", "q"], "y": [0, 1, 0]})
    with pytest.raises(DataError, match=r"row 2, column 'c': missing value.*most-frequent"):
        fitted(table, ["c"], ["y"], impute="mean")


def test_task_inferred_both_ways(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=100)
    ints = (np.arange(100) % 4).astype(int)
    lines = ["x,k,r"] + [f"{a},{b},{a * 3 + 0.5}" for a, b in zip(x, ints)]
    path = write(tmp_path / "t.csv", "\n".join(lines) + "\n")
    classes = load_dataset("file", train_file=path, target="k")
    assert classes.task == "classify" and classes.class_names == ["0", "1", "2", "3"]
    assert "classify" in classes.notes[0]
    values = load_dataset("file", train_file=path)
    assert values.task == "regress" and "regress" in values.notes[0]
    assert values.y_train.dtype == np.float32 and values.y_train.shape[1] == 1
    forced = load_dataset("file", train_file=path, target="k", task="regress")
    assert forced.task == "regress" and forced.notes == []


def test_numeric_classes_sorted_numerically():
    table = pa.table({"a": [1.0, 2, 3, 4, 5], "y": [10, 9, 100, 9, 10]})
    prep = fitted(table, ["a"], ["y"])
    assert prep.class_names == ["9", "10", "100"]
    np.testing.assert_array_equal(prep.targets_of(table), [1, 0, 2, 0, 1])


def test_regression_targets_standardised_and_inverted_exactly():
    y = np.array([3.5, -1.25, 1000.0, 7.0, 0.0])
    table = pa.table({"a": [1.0, 2, 3, 4, 5], "y": y})
    prep = fitted(table, ["a"], ["y"], task="regress")
    t = prep.targets_of(table)
    assert t.dtype == np.float32 and t.shape == (5, 1)
    np.testing.assert_allclose(t[:, 0], (y - y.mean()) / y.std(), rtol=1e-6)
    np.testing.assert_allclose(prep.inverse_targets(t)[:, 0], y, rtol=1e-6, atol=1e-4)
    assert prep.inverse_targets(prep.targets_of(table)).dtype == np.float32


def test_saved_preprocessor_transforms_the_same(tmp_path):
    rng = np.random.default_rng(0)
    table = pa.table({"a": rng.lognormal(0, 2, 50), "b": [True, False] * 25,
                      "c": [f"v{i % 7}" for i in range(50)], "y": rng.normal(size=50)})
    prep = fitted(table, ["a", "b", "c"], ["y"], task="regress", max_categories=4,
                  log_scale=True, impute="most-frequent")
    arrays = prep.to_arrays()
    assert all(v.dtype != object for v in arrays.values())
    np.savez(tmp_path / "p.npz", **arrays)
    with np.load(tmp_path / "p.npz", allow_pickle=False) as saved:
        loaded = preprocessor_from_arrays(dict(saved))
    np.testing.assert_array_equal(loaded.transform_table(table), prep.transform_table(table))
    np.testing.assert_array_equal(loaded.targets_of(table), prep.targets_of(table))
    assert loaded.feature_columns == prep.feature_columns and loaded.task == "regress"
    assert loaded.class_names == ["y"]
    assert loaded.targets_of(table.drop(["y"])) is None


def test_headerless_model_reads_a_table_without_its_target_column(tmp_path):
    path = write(tmp_path / "t.csv", csv_text(header=False))
    prep = load_dataset("file", train_file=path, target="0").preprocessor
    x = prep.transform_table(pa.table({"0": ["red", "blue"], "1": ["yes", "no"]}))
    assert x.shape == (2, prep.n_features)


# ---- bad tables: one line naming the file, the column and the row ------------------------

# case | the file, "/" between lines | load_dataset options | the message (a regex)
BAD_TABLES = r"""
missing target | a,b/1,2/3,4/5,6 | target=zz | --target 'zz': no such column; .* 'a', 'b'
target index out of range | a,b/1,2/3,4/5,6 | target=7 | --target '7': no such .*index 0..1
one class | a,b/1,x/2,x/3,x/4,x | - | target 'b' has one class \('x'\)
all-missing column | a,b,c/,1,x/,2,y/,3,x/,4,y | - | column 'a': every value is missing
word in a numeric column | a,b/1,x/2,y/3,x/oops,y/5,x | - | row 4, column 'a': 'oops' is not a
infinity | a,b/1,x/2,y/inf,x/4,y | - | row 3, column 'a': inf is not a finite
missing value without impute | a,b/1,x/2,y/,x/4,y | - | row 3, column 'a': missing .*--impute
missing target value | a,b/1,x/2,/3,x/4,y | - | row 2, target column 'b': missing value
duplicate column names | a,a,b/1,2,x/3,4,y/5,6,x | - | the column name 'a' appears twice
--columns names a missing column | a,b/1,x/2,y/3,x | columns=a,q | --columns 'q': no such
dropping every column | a,b/1,x/2,y/3,x | drop=a | no input columns left
dropping the target | a,b/1,x/2,y/3,x | drop=b | --drop 'b' is the target column
regress target not numeric | a,b/1,x/2,y/3,x/4,y | task=regress | 'b' holds text .* regression
constant regress target | a,b/1,5/2,5/3,5/4,5/5,5 | task=regress | 'b' has one value \(5\)
every input constant | a,b/1,x/1,y/1,x/1,y | - | every input column has one value
several targets to classify | a,b,c/1,2,x/2,3,y/3,4,x | target=a,c | several target columns
unknown task | a,b/1,x/2,y/3,x | task=cluster | task 'cluster': expected one of classify
unknown impute | a,b/1,x/2,y/3,x | impute=zero | impute 'zero': expected one of mean, median
max_categories of one | a,b/1,x/2,y/3,x | max_categories=1 | max_categories 1: expected an
too few rows | a,b/1,x/2,y | - | 2 rows, too few to hold out a test split
date column | d,a,b/2020-01-01,1,x/2020-01-02,2,y/2020-01-03,3,x | - | 'd' of type date32
"""
CASES = {case: (text, options, message) for case, text, options, message in
         (line.split(" | ") for line in BAD_TABLES.strip().splitlines())}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_tables_are_one_line_errors(tmp_path, case):
    text, options, message = CASES[case]
    path = write(tmp_path / "bad.csv", text.replace("/", "\n") + "\n")
    options = dict(option.split("=") for option in options.split() if option != "-")
    if "max_categories" in options:
        options["max_categories"] = int(options["max_categories"])
    with pytest.raises(DataError, match=message) as caught:
        load_dataset("file", train_file=path, **options)
    text = str(caught.value)
    assert "\n" not in text
    if "task" not in case and "impute" not in case and "max_categories" not in case:
        assert str(path) in text


def test_test_file_with_other_columns(tmp_path):
    train = write(tmp_path / "a.csv", csv_text())
    test = write(tmp_path / "b.csv", "size,label\n1,yes\n")
    with pytest.raises(DataError, match=r"--test-file .*b.csv: missing column\(s\) 'colour'"):
        load_dataset("file", train_file=train, test_file=test)
    headerless = write(tmp_path / "c.csv", csv_text(header=False))
    narrow = write(tmp_path / "d.csv", "1,yes\n2,no\n")
    with pytest.raises(DataError, match=r"d.csv: 2 columns, expected 3 as in --train-file"):
        load_dataset("file", train_file=headerless, test_file=narrow)


def test_test_file_with_a_class_training_never_had(tmp_path):
    train = write(tmp_path / "a.csv", csv_text())
    test = write(tmp_path / "b.csv", "size,colour,label\n1,red,yes\n2,red,maybe\n")
    with pytest.raises(DataError, match=r"b.csv: row 2, target 'label': class 'maybe' is not"):
        load_dataset("file", train_file=train, test_file=test)


def test_test_file_with_a_word_where_training_had_numbers(tmp_path):
    train = write(tmp_path / "a.csv", csv_text())
    test = write(tmp_path / "b.csv", "size,colour,label\n1,red,yes\nbig,red,no\n")
    with pytest.raises(DataError, match=r"b.csv: row 2, column 'size': 'big' is not a number"):
        load_dataset("file", train_file=train, test_file=test)


def test_no_train_file():
    with pytest.raises(DataError, match="--train-file"):
        load_dataset("file")


def test_a_million_distinct_categories_are_capped(tmp_path):
    n = 1_000_000
    table = pa.table({"id": pa.array([f"id{i}" for i in range(n)]),
                      "y": pa.array(np.arange(n) % 2)})
    prep = fitted(table, ["id"], ["y"], max_categories=50)
    assert prep.n_features == 50
    x = prep.transform_table(table.slice(0, 1000))
    assert x.shape == (1000, 50) and np.all(x.sum(axis=1) == 1)


def test_a_model_file_keeps_the_table_preprocessor(tmp_path):
    from parallel_backprop.modelio import Model, load_model, save_model
    from parallel_backprop.network import Network

    data = load_dataset("file", train_file=write(tmp_path / "t.csv", csv_text()),
                        max_categories=2)
    network = Network.from_spec("1h", data.n_features, data.n_classes)
    params = np.zeros(network.n_params, np.float32)
    save_model(tmp_path / "m.npz", Model(network, params, data.preprocessor, data.class_names,
                                         "file"))
    model = load_model(tmp_path / "m.npz")
    table = read_table(tmp_path / "t.csv")
    np.testing.assert_array_equal(model.preprocessor.transform_table(table),
                                  data.preprocessor.transform_table(table))
    assert model.preprocessor.kind == "table" and model.class_names == ["no", "yes"]


def test_parquet_types_dictionary_nulls_and_nan(tmp_path):
    table = pa.table({
        "d": pa.array(["u", "v", "u", "w", "v", "u"]).dictionary_encode(),
        "i": pa.array([1, None, 3, 4, 5, 6], pa.int32()),
        "f": pa.array([0.5, 1.5, float("nan"), 2.0, 3.0, 1.0]),
        "y": pa.array([1.5, 2.5, 3.5, 4.5, 5.5, 6.5])})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"row 2, column 'i': missing value"):
        load_dataset("file", train_file=tmp_path / "t.parquet")
    data = load_dataset("file", train_file=tmp_path / "t.parquet", impute="median",
                        test_fraction=0.2)
    prep = data.preprocessor
    assert [c.kind for c in prep.codes] == ["category", "numeric", "numeric"]
    assert data.task == "regress" and np.isfinite(data.x_train).all()
    from parallel_backprop.data.validate import check_regression_targets
    with pytest.raises(DataError, match="sample index 1, target index 0"):
        check_regression_targets(np.zeros((2, 1)), np.array([[0.0], [np.inf]]), 1, "t")


def test_inputs_too_large_for_this_machine_are_refused(monkeypatch):
    import parallel_backprop.resources as resources

    monkeypatch.setattr(resources, "physical_memory", lambda: 1000)
    table = pa.table({"a": np.arange(300.0), "y": [0, 1, 2] * 100})
    prep = fitted(table, ["a"], ["y"])
    with pytest.raises(DataError, match=r"inputs of shape \(300, 1\) needs about"):
        prep.transform_table(table, "t.csv")


def test_a_saved_preprocessor_reloads_the_same_splits(tmp_path):
    path = write(tmp_path / "t.csv", csv_text(50))
    first = load_dataset("file", train_file=path, max_categories=2, seed=3)
    again = load_dataset("file", train_file=path, fitted=first.preprocessor, seed=3)
    for split in ("train", "val", "test"):
        np.testing.assert_array_equal(getattr(again, f"x_{split}"), getattr(first, f"x_{split}"))
        np.testing.assert_array_equal(getattr(again, f"y_{split}"), getattr(first, f"y_{split}"))
        assert getattr(first, f"x_{split}").flags.c_contiguous
    bad = write(tmp_path / "u.csv", csv_text(50).replace("\n-", "\nsmall", 1))
    with pytest.raises(DataError, match=r"u.csv: row \d+, column 'size': 'small0"):
        load_dataset("file", train_file=bad, fitted=first.preprocessor)


def test_targets_from_a_second_file(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 2))
    write(tmp_path / "x.csv", "".join(f"{a},{b}\n" for a, b in x))
    write(tmp_path / "y.csv", "".join(f"{a + b}\n" for a, b in x))
    data = load_dataset("file", train_file=tmp_path / "x.csv", target_file=tmp_path / "y.csv")
    assert data.task == "regress" and data.class_names == ["y"] and data.n_features == 2
    write(tmp_path / "short.csv", "1\n2\n")
    with pytest.raises(DataError, match=r"--target-file .*short.csv: 2 rows of targets for the 30 rows"):
        load_dataset("file", train_file=tmp_path / "x.csv", target_file=tmp_path / "short.csv")


def test_where_a_table_is_and_that_there_is_nothing_to_fetch(tmp_path):
    from parallel_backprop.data import fetch_dataset, fetchable, find_source

    path = write(tmp_path / "t.csv", csv_text())
    source = find_source("file", train_file=path, test_file=path)
    assert source.args == ("--dataset", "file", "--train-file", str(path), "--test-file",
                           str(path))
    assert "file" not in fetchable()
    with pytest.raises(DataError, match="nothing to fetch"):
        fetch_dataset("file", train_file=path)
