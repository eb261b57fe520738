"""``pbp train --train-file`` and ``pbp predict --input`` on a user's own CSV tables."""

import csv
import json

import numpy as np
import pytest

from parallel_backprop.checkpoint import latest_checkpoint

from helpers import one_clear_line, run

COLORS = ("red", "green", "blue")


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_csv(path):
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    return rows[0], rows[1:]


def table_rows(n, seed, regress):
    """Rows (x1, x2, color, target): a label "yes"/"no", or a price in the thousands."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2))
    color = rng.integers(0, 3, n)
    score = 2 * x[:, 0] - x[:, 1] + (color - 1) * 1.5
    if regress:
        target = [f"{v:.3f}" for v in 5000 + 400 * score + 20 * rng.standard_normal(n)]
    else:
        target = np.where(score > 0, "yes", "no")
    return [[f"{a:.5f}", f"{b:.5f}", COLORS[c], t]
            for (a, b), c, t in zip(x, color, target)]


@pytest.fixture
def tables(tmp_path):
    """(train.csv, test.csv) for classification and for regression, with headers."""
    made = {}
    for task in ("classify", "regress"):
        regress = task == "regress"
        header = ["x1", "x2", "color", "price" if regress else "label"]
        made[task] = (write_csv(tmp_path / f"{task}-train.csv", header,
                                table_rows(300, 0, regress)),
                      write_csv(tmp_path / f"{task}-test.csv", header,
                                table_rows(80, 1, regress)))
    return made


TRAIN = ["--net", "5-16-{out}", "--activation", "tanh", "--batch-size", "16", "--epochs", "15",
         "--lr", "{lr}", "--quiet"]


def train_table(task, train_csv, test_csv, tmp_path, capsys, *extra):
    model, metrics = tmp_path / f"{task}.npz", tmp_path / f"{task}.json"
    fill = {"out": 1, "lr": 0.05 if task == "regress" else 0.5}
    options = [a.format(**fill) for a in TRAIN]
    code, out, err = run(["train", "--train-file", train_csv, "--test-file", test_csv,
                          *options, "--save", model, "--metrics-json", metrics, *extra], capsys)
    assert code == 0, err
    return model, json.loads(metrics.read_text())


def test_classify_a_table_with_a_string_column_and_predict_it(tables, tmp_path, capsys):
    train_csv, test_csv = tables["classify"]
    model, metrics = train_table("classify", train_csv, test_csv, tmp_path, capsys)
    assert metrics["task"] == "classify" and metrics["test_accuracy"] > 0.85
    assert "test_r2" not in metrics
    out = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", model, "--input", test_csv, "--output", out], capsys)
    assert code == 0, err
    assert f"accuracy {metrics['test_accuracy']:.4f} on 80 samples" in stdout
    header, rows = read_csv(out)
    assert header == ["index", "class", "name"] and len(rows) == 80
    assert {name for _, _, name in rows} <= {"yes", "no"}
    # --proba: one column per class, rows summing to 1, the most probable is the class.
    proba = tmp_path / "proba.csv"
    code, _, err = run(["predict", model, "--input", test_csv, "--proba", "--output", proba],
                       capsys)
    assert code == 0, err
    names, values = read_csv(proba)
    assert names[0] == "index" and sorted(names[1:]) == ["no", "yes"]
    p = np.array([row[1:] for row in values], dtype=float)
    assert np.allclose(p.sum(axis=1), 1.0)
    assert [names[1:][i] for i in p.argmax(axis=1)] == [name for _, _, name in rows]


def test_regress_a_table_and_predict_in_original_units(tables, tmp_path, capsys):
    train_csv, test_csv = tables["regress"]
    model, metrics = train_table("regress", train_csv, test_csv, tmp_path, capsys,
                                 "--task", "regress")
    assert metrics["task"] == "regress" and "test_accuracy" not in metrics
    for key in ("test_r2", "test_rmse", "test_mae", "val_r2", "val_rmse", "val_mae"):
        assert isinstance(metrics[key], float), key
    assert metrics["test_r2"] > 0.9
    assert 5 < metrics["test_rmse"] < 400       # in the price's units (spread ~1000)
    out = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", model, "--input", test_csv, "--output", out], capsys)
    assert code == 0, err
    assert f"R² {metrics['test_r2']:.4f}" in stdout and "on 80 samples" in stdout
    header, rows = read_csv(out)
    assert header == ["index", "price"] and len(rows) == 80
    predicted = np.array([float(value) for _, value in rows])
    truth = np.array([float(row[3]) for row in table_rows(80, 1, True)])
    assert np.sqrt(np.mean((predicted - truth) ** 2)) == pytest.approx(metrics["test_rmse"],
                                                                        rel=1e-3)
    code, _, err = run(["predict", model, "--input", test_csv, "--proba"], capsys)
    one_clear_line(code, err, "--proba")


def test_the_training_header_says_regression(tables, tmp_path, capsys):
    train_csv, test_csv = tables["regress"]
    code, out, err = run(["train", "--train-file", train_csv, "--epochs", "1", "--net", "1h"],
                         capsys)
    assert code == 0, err
    first = out.splitlines()[0]
    assert first.startswith("file: ") and "regression of price (linear output, mse)" in first
    assert "test R² " in out


def test_dataset_file_needs_a_train_file(capsys):
    code, _, err = run(["train", "--dataset", "file"], capsys)
    one_clear_line(code, err, "--dataset file", "--train-file")


def test_predictions_cannot_replace_the_input(tables, tmp_path, capsys):
    train_csv, test_csv = tables["classify"]
    model, _ = train_table("classify", train_csv, test_csv, tmp_path, capsys)
    before = test_csv.read_text()
    code, _, err = run(["predict", model, "--input", test_csv, "--output", test_csv], capsys)
    one_clear_line(code, err, "--output")
    assert test_csv.read_text() == before


def test_resume_records_the_table_options_and_lets_the_file_move(tables, tmp_path, capsys):
    train_csv, test_csv = tables["classify"]
    folder = tmp_path / "ckpt"
    args = ["--net", "5-8-1", "--epochs", "1", "--quiet", "--target", "label",
            "--max-categories", "5"]
    code, _, err = run(["train", "--train-file", train_csv, "--test-file", test_csv, *args,
                        "--checkpoint-dir", folder], capsys)
    assert code == 0, err
    options = latest_checkpoint(folder).options
    assert options["train_file"] == str(train_csv) and options["target"] == "label"
    assert options["max_categories"] == 5
    moved = train_csv.rename(tmp_path / "moved.csv")
    code, _, err = run(["train", "--resume", folder, "--train-file", moved, "--epochs", "2",
                        "--quiet"], capsys)
    assert code == 0, err
    code, _, err = run(["train", "--resume", folder, "--train-file", moved, "--epochs", "3",
                        "--target", "x1", "--quiet"], capsys)
    one_clear_line(code, err, "--target x1")
