"""Regression in the trainer: R², RMSE and MAE, the task, the epoch line, the metrics record.

And through ``pbp train`` on a registered regression data set (so that
these run before any table reader exists): the network it builds, the
header, the notes and the test metrics in the targets' original units.
"""

import json
import math
import warnings

import numpy as np
import pytest
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score as sk_r2

from parallel_backprop.cli.runs import NetOptions
from parallel_backprop.data import DATASETS, Dataset, DatasetSpec, Identity, register_dataset
from parallel_backprop.data.base import Located, split_pool
from parallel_backprop.errors import ConfigError
from parallel_backprop.network import Network
from parallel_backprop.trainer import (TrainConfig, evaluate_regression, mae, r2_score,
                                       regression_metrics, rmse, task_of, train)
from parallel_backprop.trainer.loop import epoch_line
from parallel_backprop.trainer.results import EpochMetrics

from helpers import one_clear_line, run


def linear_problem(n=600, d=5, k=1, noise=0.05, seed=0):
    """x (n, d) float32, y = x @ w + a little noise (n, k) float32, standardised targets."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, d)).astype(np.float32)
    w = rng.standard_normal((d, k))
    y = x @ w + noise * rng.standard_normal((n, k))
    y = (y - y.mean(axis=0)) / y.std(axis=0)
    return x, y.astype(np.float32)


def regression_net(d=5, k=1):
    return Network((d, 16, k), ("tanh", "linear"), "mse")


# ---- the metrics, against scikit-learn's --------------------------------------------------

@pytest.mark.parametrize("k", [1, 3])
def test_metrics_match_scikit_learn(k):
    rng = np.random.default_rng(k)
    targets = rng.standard_normal((50, k)) * [10.0, 1.0, 0.1][:k] + 3.0
    predicted = targets + rng.standard_normal((50, k)) * 0.5
    assert r2_score(predicted, targets) == pytest.approx(sk_r2(targets, predicted), rel=1e-9)
    assert rmse(predicted, targets) == pytest.approx(
        math.sqrt(mean_squared_error(targets, predicted)), rel=1e-9)
    assert mae(predicted, targets) == pytest.approx(mean_absolute_error(targets, predicted),
                                                    rel=1e-9)
    # A 1-D pair is one column.
    assert r2_score(predicted[:, 0], targets[:, 0]) == pytest.approx(
        sk_r2(targets[:, 0], predicted[:, 0]), rel=1e-9)


def test_r2_is_1_for_perfect_predictions_and_0_for_the_mean():
    targets = np.arange(10.0).reshape(-1, 1)
    assert r2_score(targets, targets) == 1.0
    assert r2_score(np.full_like(targets, targets.mean()), targets) == pytest.approx(0.0)


def test_metrics_of_no_rows_or_one_row_are_nan_without_warnings():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        empty = regression_metrics(np.zeros((0, 2)), np.zeros((0, 2)))
        assert all(math.isnan(v) for v in empty.values())
        one = regression_metrics(np.array([[1.0]]), np.array([[2.0]]))
    assert math.isnan(one["r2"])   # one sample has no variance to explain
    assert one["rmse"] == 1.0 and one["mae"] == 1.0


def test_a_constant_target_column_is_left_out_of_r2():
    targets = np.column_stack([np.arange(6.0), np.full(6, 4.0)])
    predicted = targets.copy()
    predicted[:, 1] += 1.0        # wrong on the constant column: not counted in R²
    assert r2_score(predicted, targets) == 1.0


def test_evaluate_regression_maps_back_to_original_units():
    x, y = linear_problem(n=40)
    net = regression_net()
    params = net.init_params(0)
    standardised = evaluate_regression(net, params, x, y)
    scaled = evaluate_regression(net, params, x, y, inverse=lambda v: v * 100.0 + 7.0)
    assert scaled["r2"] == pytest.approx(standardised["r2"], rel=1e-5)
    assert scaled["rmse"] == pytest.approx(100 * standardised["rmse"], rel=1e-5)
    assert scaled["mae"] == pytest.approx(100 * standardised["mae"], rel=1e-5)


# ---- the task ------------------------------------------------------------------------------

def test_task_is_inferred_from_the_scored_targets():
    labels, floats = np.zeros(4, np.int64), np.zeros((4, 1), np.float32)
    assert task_of(None, floats) == "regress"
    assert task_of(None, labels) == "classify"
    assert task_of(None, floats, labels) == "classify"   # float training targets, labels scored
    assert task_of("regress", labels) == "regress"
    with pytest.raises(ConfigError, match="task 'guess'"):
        task_of("guess", labels)


# ---- training ------------------------------------------------------------------------------

def test_regression_reaches_a_high_r2_and_reports_it():
    x, y = linear_problem()
    lines = []
    result = train(regression_net(), TrainConfig(batch_size=16, lr=0.05, epochs=15), x[:500],
                   y[:500], x[500:], y[500:], progress=False, log=lines.append)
    assert result.task == "regress"
    last = result.epochs[-1]
    assert last.val_r2 > 0.9, last
    assert last.val_rmse < 0.3 and last.val_mae < 0.25
    assert math.isnan(last.val_accuracy)
    assert "val R² " in lines[-1] and "val acc" not in lines[-1]
    assert f"{last.val_r2:.4f}" in lines[-1]


def test_classification_epochs_keep_the_accuracy_line():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((60, 4)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(np.int64)
    lines = []
    result = train(Network((4, 8, 1), ("tanh", "sigmoid")), TrainConfig(epochs=1), x[:50],
                   labels[:50], x[50:], labels[50:], progress=False, log=lines.append)
    assert result.task == "classify" and "val acc" in lines[0]
    assert math.isnan(result.epochs[0].val_r2)


def test_a_tiny_validation_split_does_not_break_early_epochs():
    x, y = linear_problem(n=20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        one = train(regression_net(), TrainConfig(batch_size=4, epochs=2), x[:19], y[:19],
                    x[19:], y[19:], progress=False, log=False)
        none = train(regression_net(), TrainConfig(batch_size=4, epochs=1), x[:19], y[:19],
                     x[:0], y[:0], progress=False, log=False)
    assert math.isnan(one.epochs[-1].val_r2) and one.epochs[-1].val_rmse >= 0
    assert math.isnan(none.epochs[-1].val_rmse)


def test_epoch_line_text():
    metrics = EpochMetrics(3, 0.12345, math.nan, 1.5, 2000.0, 0.01, val_r2=0.81234,
                           val_rmse=0.4, val_mae=0.3)
    assert epoch_line(metrics, "regress") == \
        "epoch   3  loss 0.12345  val R² 0.8123  1.50 s  2,000 samples/s"
    assert "val acc nan" in epoch_line(metrics)


def test_summary_carries_the_metrics_of_the_task():
    x, y = linear_problem(n=60)
    net, config = regression_net(), TrainConfig(epochs=1)
    result = train(net, config, x[:50], y[:50], x[50:], y[50:], progress=False, log=False)
    result.test_metrics = {"r2": 0.5, "rmse": 54.2, "mae": 43.1}
    summary = result.summary(net, config)
    assert summary["task"] == "regress"
    assert (summary["test_r2"], summary["test_rmse"], summary["test_mae"]) == (0.5, 54.2, 43.1)
    assert summary["val_r2"] == result.epochs[-1].val_r2
    assert "test_accuracy" not in summary and "val_accuracy" not in summary
    json.dumps(summary)


# ---- pbp train on a regression data set ---------------------------------------------------

class FakeTablePreprocessor(Identity):
    """What the table preprocessor offers that training uses: the task and the inverse."""

    task = "regress"

    def __init__(self, n_features, mean, scale):
        super().__init__(n_features)
        self.mean, self.scale = mean, scale

    def inverse_targets(self, y):
        return (np.asarray(y) * self.scale + self.mean).astype(np.float32)


def load_fake_regression(request, rng):
    """A regression data set as the "file" loader makes one: standardised targets (n, 1)."""
    x, y = linear_problem(n=300, noise=0.1, seed=request.seed)
    train_idx, val_idx = split_pool(240, request.limit, request.val_fraction, rng)
    data = Dataset("fake-regress", x[train_idx], y[train_idx], x[val_idx], y[val_idx],
                   x[240:], y[240:], 1, FakeTablePreprocessor(5, 1000.0, 50.0), ["price"])
    data.task = "regress"
    data.notes = ["target 'price': 300 numeric values, so a regression (--task to choose)"]
    return data


@pytest.fixture
def fake_regression(monkeypatch):
    spec = DatasetSpec("fake-regress", "a regression data set", load_fake_regression,
                       "identity", lambda request: Located((), where="memory"), generated=True)
    register_dataset(spec)
    yield spec.name
    DATASETS.pop(spec.name)


def test_pbp_train_regression_end_to_end(fake_regression, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    code, out, err = run(["train", "--dataset", fake_regression, "--net", "5-16-1",
                          "--activation", "tanh", "--epochs", "8", "--batch-size", "16",
                          "--lr", "0.05", "--metrics-json", metrics], capsys)
    assert code == 0, err
    lines = out.splitlines()
    assert "regression of price (linear output, mse)" in lines[0]
    assert "(tanh, linear; mse)" in lines[0]
    assert lines[1].startswith("target 'price'")
    assert "val R² " in lines[2]
    doc = json.loads(metrics.read_text())
    assert doc["task"] == "regress" and "test_accuracy" not in doc
    # Original units: a standardised target's RMSE of ~0.1 is ~5 in units of 50.
    assert doc["test_r2"] > 0.9 and 1.0 < doc["test_rmse"] < 25.0
    assert doc["test_mae"] <= doc["test_rmse"]
    assert (f"test R² {doc['test_r2']:.4f}  RMSE {doc['test_rmse']:.4g}  "
            f"MAE {doc['test_mae']:.4g}") in out


def test_regression_network_has_one_linear_output_per_target():
    data = Dataset("r", *[np.zeros((2, 3), np.float32), np.zeros((2, 2), np.float32)] * 3, 2,
                   Identity(3), ["a", "b"])
    data.task = "regress"
    options = dict(net="1h", activation="sigmoid", output_activation=None, loss="mse")
    net = NetOptions(**options).build(data)
    assert net.sizes == (3, 1024, 2) and net.activations == ("sigmoid", "linear")
    assert NetOptions(**{**options, "net": "3-4-2"}).build(data).sizes == (3, 4, 2)
    for bad in ({"loss": "cross-entropy"}, {"output_activation": "sigmoid"}):
        with pytest.raises(ConfigError, match="a regression trains a linear output with mse"):
            NetOptions(**{**options, **bad}).build(data)


BAD_DATA_CHOICE = {
    "no data set": ([], "--dataset: missing"),
    "train file with another data set": (["--dataset", "synthetic", "--train-file", "t.csv"],
                                         "--train-file"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA_CHOICE))
def test_data_set_choice_errors_are_one_line(case, capsys):
    argv, expected = BAD_DATA_CHOICE[case]
    code, _, err = run(["train", *argv], capsys)
    one_clear_line(code, err, expected)


def test_the_training_table_cannot_be_an_output(tmp_path, capsys):
    table = tmp_path / "t.csv"
    table.write_text("a,b\n1,2\n3,4\n")
    code, _, err = run(["train", "--train-file", table, "--save", table], capsys)
    one_clear_line(code, err, "--train-file")
    assert table.read_text() == "a,b\n1,2\n3,4\n"
