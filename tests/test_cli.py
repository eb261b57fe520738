"""`pbp` end to end on synthetic data, and bad input through the command line."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from parallel_backprop.cli import main
from parallel_backprop.modelio import load_model
from parallel_backprop.trainer import predict_outputs

SMALL = ["--preset", "seed", "--dataset", "synthetic", "--samples", "600", "--features", "12",
         "--classes", "3", "--net", "12-16-3", "--batch-size", "32", "--epochs", "3", "--lr", "0.5",
         "--quiet"]


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def trained(tmp_path, capsys):
    model = tmp_path / "model.npz"
    metrics = tmp_path / "metrics.json"
    code, _, err = run(["train", *SMALL, "--save", model, "--metrics-json", metrics], capsys)
    assert code == 0, err
    return model, json.loads(metrics.read_text())


def test_train_writes_model_and_metrics(trained):
    model_path, metrics = trained
    for key in ("test_accuracy", "val_accuracy", "samples_per_s", "epoch_s", "executor",
                "net", "batch_size", "threads", "epochs"):
        assert key in metrics
    assert metrics["net"] == "12-16-3" and metrics["executor"] == "serial"
    assert len(metrics["epochs"]) == 3 and metrics["samples_per_s"] > 0
    # Learnable synthetic labels: well above chance (1/3) after 3 epochs.
    assert metrics["test_accuracy"] > 0.6
    assert metrics["epochs"][-1]["loss"] < metrics["epochs"][0]["loss"]
    assert load_model(model_path).network.sizes == (12, 16, 3)


def test_training_is_reproducible_for_a_seed(tmp_path, capsys):
    outputs = []
    for name in ("a.npz", "b.npz"):
        assert run(["train", *SMALL, "--save", tmp_path / name], capsys)[0] == 0
        outputs.append(load_model(tmp_path / name).params)
    assert np.array_equal(*outputs)


def test_predict_matches_training_accuracy_and_writes_predictions(trained, tmp_path, capsys):
    model_path, metrics = trained
    out = tmp_path / "pred.npy"
    code, stdout, err = run(["predict", model_path, "--samples", "600", "--features", "12",
                             "--classes", "3", "--output", out], capsys)
    assert code == 0, err
    assert f"accuracy {metrics['test_accuracy']:.4f}" in stdout
    from parallel_backprop.data import load_dataset
    data = load_dataset("synthetic", synthetic_samples=600, synthetic_features=12,
                        synthetic_classes=3)
    model = load_model(model_path)
    expected = model.network.classify(predict_outputs(model.network, model.params, data.x_test))
    assert np.array_equal(np.load(out), expected)


def test_predict_csv_input_with_labels(trained, tmp_path, capsys):
    model_path, _ = trained
    rng = np.random.default_rng(1)
    rows = np.column_stack([rng.standard_normal((5, 12)), [0, 1, 2, 1, 0]])
    csv = tmp_path / "rows.csv"
    np.savetxt(csv, rows, delimiter=",")
    out = tmp_path / "pred.csv"
    code, stdout, err = run(["predict", model_path, "--input", csv, "--output", out], capsys)
    assert code == 0, err
    assert "on 5 samples" in stdout
    lines = out.read_text().splitlines()
    assert lines[0] == "index,class,name" and len(lines) == 6


def test_console_script_runs_as_a_process(tmp_path):
    result = subprocess.run([sys.executable, "-m", "parallel_backprop.cli", "train", *SMALL,
                             "--epochs", "1"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    bad = subprocess.run([sys.executable, "-m", "parallel_backprop.cli", "train",
                          "--dataset", "synthetic", "--batch-size", "0"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode != 0
    assert bad.stderr.strip().count("\n") == 0 and "Traceback" not in bad.stderr


def pickled_model(path):
    np.savez(path, format=np.array("parallel-backprop-model"),
             params=np.array([{"evil": 1}], dtype=object))


BAD_TRAIN = {
    "unknown dataset": (["--dataset", "cifar"], "cifar"),
    "net does not parse": ([*SMALL, "--net", "12-x-3"], "net '12-x-3'"),
    "net input mismatch": ([*SMALL, "--net", "784-16-3"], "does not match the data's 12"),
    "net output mismatch": ([*SMALL, "--net", "12-16-7"], "output size 7"),
    "batch size 0": ([*SMALL, "--batch-size", "0"], "batch-size"),
    "negative lr": ([*SMALL, "--lr", "-0.1"], "learning rate"),
    "nan lr": ([*SMALL, "--lr", "nan"], "learning rate"),
    "epochs 0": ([*SMALL, "--epochs", "0"], "epochs"),
    "threads 0": ([*SMALL, "--threads", "0"], "threads"),
    "unknown executor": ([*SMALL, "--executor", "quantum"], "quantum"),
    "unknown activation": ([*SMALL, "--activation", "swish"], "swish"),
    "activation count": ([*SMALL, "--net", "12-8-8-3", "--activation", "relu,tanh,relu"],
                         "3 names for 2 hidden layers"),
    "softmax hidden": ([*SMALL, "--activation", "softmax"], "only valid on the output"),
    "cross-entropy tanh": ([*SMALL, "--loss", "cross-entropy", "--output-activation", "tanh"],
                           "needs a softmax or sigmoid output"),
    "save folder missing": ([*SMALL, "--save", "/nonexistent/dir/m.npz"], "does not exist"),
    "save is a directory": ([*SMALL, "--save", "/tmp"], "is a directory"),
    "metrics folder missing": ([*SMALL, "--metrics-json", "/nonexistent/m.json"],
                               "does not exist"),
    "samples 0": (["--dataset", "synthetic", "--samples", "0"], "samples"),
    "mnist offline": (["--dataset", "mnist", "--data-dir", "{tmp}/empty"], "mnist"),
    "kdd file missing": (["--dataset", "kdd99", "--kdd-file", "{tmp}/nope.csv"], "nope.csv"),
    "kdd file corrupt": (["--dataset", "kdd99", "--kdd-file", "{tmp}/bad.csv"], "bad.csv"),
}


@pytest.mark.parametrize("case", sorted(BAD_TRAIN))
def test_bad_train_input_gives_one_clear_line(case, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PBP_OFFLINE", "1")
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "cache"))
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad.csv").write_text("0,tcp,http,SF,181,5450\n")
    argv, expected = BAD_TRAIN[case]
    argv = [str(a).replace("{tmp}", str(tmp_path)) for a in argv]
    code, _, err = run(["train", "--preset", "seed", *argv], capsys)   # bad input, any method
    assert code != 0
    assert err.startswith("pbp: error:") and err.strip().count("\n") == 0, err
    assert expected.lower() in err.lower(), err


def test_bad_predict_input_gives_one_clear_line(trained, tmp_path, capsys):
    model_path, _ = trained
    rng = np.random.default_rng(0)
    files = {
        "missing.npz": None,
        "garbage.npz": lambda p: p.write_bytes(b"not a zip file at all"),
        "truncated.npz": lambda p: p.write_bytes(model_path.read_bytes()[:200]),
        "pickle.npz": pickled_model,
    }
    for name, make in files.items():
        path = tmp_path / name
        if make:
            make(path)
        code, _, err = run(["predict", path], capsys)
        assert code != 0 and err.startswith("pbp: error:") and name in err, err
        assert err.strip().count("\n") == 0, err

    def csv(name, rows):
        path = tmp_path / name
        np.savetxt(path, rows, delimiter=",")
        return path

    nan_rows = rng.standard_normal((3, 12))
    nan_rows[1, 4] = np.nan
    inputs = {
        "nan.csv": csv("nan.csv", nan_rows),
        "label.csv": csv("label.csv", np.column_stack([rng.standard_normal((2, 12)), [0, 9]])),
        "width.csv": csv("width.csv", rng.standard_normal((2, 5))),
        "absent.csv": tmp_path / "absent.csv",
    }
    for name, path in inputs.items():
        code, _, err = run(["predict", model_path, "--input", path], capsys)
        assert code != 0 and err.startswith("pbp: error:") and name in err, (name, err)
        assert err.strip().count("\n") == 0, err
    code, _, err = run(["predict", model_path, "--output", tmp_path / "p.txt"], capsys)
    assert code != 0 and ".csv or .npy" in err


def test_failed_run_keeps_the_model_already_saved(trained, capsys):
    model_path, _ = trained
    before = model_path.read_bytes()
    # A learning rate this large on linear units overflows: the run must diverge.
    code, _, err = run(["train", *SMALL, "--activation", "linear", "--output-activation",
                        "linear", "--lr", "1e30", "--save", model_path], capsys)
    assert code != 0 and "diverged" in err and "--lr" in err
    assert model_path.read_bytes() == before
    assert [p.name for p in model_path.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_kdd_predict_by_name_uses_the_models_encoding(tmp_path, capsys):
    from test_data_kdd import ROWS

    rows = ROWS.splitlines()
    # 70 rows: the sample rows with varied byte counts, so the encoding has spread.
    lines = []
    for i in range(70):
        fields = rows[i % len(rows)].split(",")
        fields[4] = str(int(fields[4]) + 13 * i)
        lines.append(",".join(fields))
    kdd_file = tmp_path / "kdd.csv"
    kdd_file.write_text("\n".join(lines) + "\n")
    model, metrics = tmp_path / "kdd.npz", tmp_path / "kdd.json"
    code, _, err = run(["train", "--preset", "seed", "--dataset", "kdd99", "--kdd-file",
                        kdd_file, "--net", "1h", "--batch-size", "8", "--epochs", "2", "--quiet",
                        "--save", model,
                        "--metrics-json", metrics], capsys)
    assert code == 0, err
    test_accuracy = json.loads(metrics.read_text())["test_accuracy"]
    code, stdout, err = run(["predict", model, "--kdd-file", kdd_file], capsys)
    assert code == 0, err
    assert f"accuracy {test_accuracy:.4f}" in stdout
    # The fitted encoding is applied as is, even where a refit would differ (--limit).
    from parallel_backprop.data import load_dataset

    fitted = load_model(model).preprocessor
    full = load_dataset("kdd99", kdd_file=kdd_file, progress=False)
    limited = load_dataset("kdd99", kdd_file=kdd_file, limit=5, progress=False, fitted=fitted)
    assert limited.preprocessor is fitted
    assert np.array_equal(limited.x_test, full.x_test)


def test_linear_lr_schedule_is_recorded_and_changes_training(tmp_path, capsys):
    runs = {}
    for schedule in ("constant", "linear"):
        metrics = tmp_path / f"{schedule}.json"
        code, _, err = run(["train", *SMALL, "--lr-schedule", schedule,
                            "--metrics-json", metrics], capsys)
        assert code == 0, err
        runs[schedule] = json.loads(metrics.read_text())
    assert runs["linear"]["lr_schedule"] == "linear"
    # Epoch 1 runs at the full rate either way; later epochs differ.
    assert runs["linear"]["epochs"][0]["loss"] == runs["constant"]["epochs"][0]["loss"]
    assert runs["linear"]["epochs"][2]["loss"] != runs["constant"]["epochs"][2]["loss"]


def test_written_files_get_the_usual_permissions(trained):
    import os

    model_path, _ = trained
    mask = os.umask(0)
    os.umask(mask)
    assert model_path.stat().st_mode & 0o777 == 0o666 & ~mask


@pytest.mark.parametrize("scaling", ["standard", "unit"])
def test_image_scaling_is_saved_with_the_model(tmp_path, capsys, scaling):
    from test_data_datasets import make_image_set

    folder = make_image_set(tmp_path / "d")
    model = tmp_path / "m.npz"
    code, _, err = run(["train", "--preset", "seed", "--dataset", "mnist", "--data-dir",
                        folder, "--net", "784-8-10", "--epochs", "1", "--batch-size", "16",
                        "--quiet",
                        "--image-scaling", scaling, "--save", model], capsys)
    assert code == 0, err
    scaler = load_model(model).preprocessor
    if scaling == "unit":
        assert (scaler.mean, scaler.std) == (0.0, 1.0)
    else:
        assert 0 < scaler.mean < 1 and 0 < scaler.std < 1


def test_fetch_prints_the_files_found_and_fails_clearly_offline(tmp_path, capsys, monkeypatch):
    from test_data_datasets import make_image_set

    monkeypatch.setenv("PBP_OFFLINE", "1")
    monkeypatch.setenv("PBP_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("PBP_DATA_DIR", raising=False)
    folder = make_image_set(tmp_path / "d")
    code, out, err = run(["fetch", "mnist", "--data-dir", folder], capsys)
    assert code == 0, err
    assert sorted(out.split()) == sorted(str(p) for p in folder.iterdir())
    (tmp_path / "empty").mkdir()
    code, out, err = run(["fetch", "mnist", "--data-dir", tmp_path / "empty"], capsys)
    assert code != 0 and out == ""
    assert err.startswith("pbp: error: ") and err.count("\n") == 1 and "mnist" in err


# ---- pbp --plugin: a user's activation from the command line -----------------------

PBP = [sys.executable, "-m", "parallel_backprop.cli"]
PLUGIN = """\
import numpy as np
from parallel_backprop.activations import register_activation

register_activation("{name}", lambda z: z / (1 + np.abs(z)), lambda a: (1 - np.abs(a)) ** 2)
"""
PLUGIN_RUN = ["--preset", "seed", "--dataset", "synthetic", "--samples", "600", "--features",
              "12", "--classes", "3", "--net", "12-16-3", "--batch-size", "32", "--epochs", "2",
              "--lr", "0.5"]


@pytest.fixture
def plugin_file(tmp_path):
    """A .py file registering the activation 'plugsign' (run in subprocesses: registries
    are per process)."""
    path = tmp_path / "plugsign_activation.py"
    path.write_text(PLUGIN.format(name="plugsign"))
    return path


def pbp(*argv, timeout=120, **kwargs):
    return subprocess.run([*PBP, *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PBP_OFFLINE": "1"}, **kwargs)


def test_plugin_activation_trains_from_the_command_line(plugin_file, tmp_path):
    metrics = tmp_path / "m.json"
    result = pbp("--plugin", plugin_file, "train", *PLUGIN_RUN, "--activation", "plugsign",
                 "--metrics-json", metrics)
    assert result.returncode == 0, result.stderr
    assert "(plugsign, plugsign; mse)" in result.stdout
    assert json.loads(metrics.read_text())["activations"] == ["plugsign", "plugsign"]
    without = pbp("train", *PLUGIN_RUN, "--activation", "plugsign")
    assert without.returncode == 1 and "activation 'plugsign'" in without.stderr


def test_plugin_by_module_name_and_in_tune_worker_processes(plugin_file, tmp_path):
    # Candidates trained in processes of their own must see the plugin too.
    result = pbp("--plugin", "plugsign_activation", "tune", *PLUGIN_RUN[:-6],
                 "--activation", "plugsign", "--epochs", "1", "--lrs", "0.1,0.5", "--jobs", "2",
                 cwd=plugin_file.parent)
    assert result.returncode == 0, result.stderr
    assert "best: lr" in result.stdout


@pytest.mark.parametrize("plugin,content,expected", [
    ("no_such_plugin_module", None, "--plugin no_such_plugin_module: cannot import it "
                                    "(ModuleNotFoundError: No module named"),
    ("missing.py", None, "--plugin missing.py: no such file"),
    ("broken.py", "raise RuntimeError('bad\\nplugin')", "--plugin broken.py: cannot import it "
                                                       "(RuntimeError: bad plugin)"),
    ("bad-name.py", "", "is not a Python module name"),
])
def test_plugin_that_cannot_be_imported_is_one_line(plugin, content, expected, tmp_path,
                                                    monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", list(sys.path))
    if content is not None:
        (tmp_path / plugin).write_text(content)
    code, out, err = run(["--plugin", plugin, "train", *SMALL], capsys)
    assert code == 1 and out == ""
    assert err.startswith("pbp: error: ") and expected in err and err.count("\n") == 1, err


def test_plugin_reaches_the_mpi_ranks(plugin_file):
    from test_mpi import MPIEXEC

    if MPIEXEC is None:
        pytest.skip("needs mpi4py and mpiexec")
    result = pbp("--plugin", plugin_file, "train", *PLUGIN_RUN, "--activation", "plugsign",
                 "--executor", "mpi", "--ranks", "2")
    assert result.returncode == 0, result.stderr
    assert "(plugsign, plugsign; mse); executor mpi (2 ranks" in result.stdout


def test_plugin_executor_is_a_choice_of_executor(tmp_path):
    plugin = tmp_path / "plug_executor.py"
    plugin.write_text("from parallel_backprop.executors import SerialExecutor, register_executor\n"
                      "\n"
                      "@register_executor\n"
                      "class PlugSerial(SerialExecutor):\n"
                      "    name = 'plugserial'\n")
    result = pbp("--plugin", plugin, "train", *PLUGIN_RUN, "--executor", "plugserial")
    assert result.returncode == 0, result.stderr
    assert "executor plugserial" in result.stdout
    without = pbp("train", *PLUGIN_RUN, "--executor", "plugserial")
    assert without.returncode == 2 and "'plugserial' is not one of" in without.stderr


# ---- presets, update rules, schedules and early stopping on the command line ------------

def header_of(argv, capsys):
    """The header line of a one-epoch run of ``argv`` (its network and loss)."""
    small = [a for a in SMALL if a != "--quiet"][2:]      # SMALL without its preset
    code, out, err = run(["train", *small, "--epochs", "1", *argv], capsys)
    assert code == 0, err
    return out.splitlines()[0]


def test_the_seed_preset_is_the_seeds_method_and_options_override_it(capsys, tmp_path):
    assert "(sigmoid, sigmoid; mse)" in header_of(["--preset", "seed"], capsys)
    assert "(tanh, softmax; cross-entropy)" in header_of(
        ["--preset", "seed", "--activation", "tanh", "--loss", "cross-entropy"], capsys)
    metrics = tmp_path / "m.json"
    header_of(["--preset", "seed", "--metrics-json", metrics], capsys)
    record = json.loads(metrics.read_text())
    assert (record["optimizer"]["name"], record["lr"], record["batch_size"],
            record["lr_schedule"], record["early_stopping"]) == ("sgd", 0.5, 32, "constant",
                                                                   False)


def test_the_default_preset_trains_relu_cross_entropy_with_adam(capsys, tmp_path):
    metrics = tmp_path / "m.json"
    small = [a for a in SMALL if a not in ("--lr", "0.5")][2:]
    code, _, err = run(["train", *small, "--metrics-json", metrics], capsys)
    assert code == 0, err
    record = json.loads(metrics.read_text())
    assert (record["activations"], record["loss"], record["optimizer"]["name"], record["lr"],
            record["lr_schedule"], record["early_stopping"]) == (
        ["relu", "softmax"], "cross-entropy", "adam", 0.001, "cosine", True)
    assert record["best_epoch"] in (1, 2, 3) and record["stopped_early"] is None


def test_early_stopping_is_said_and_recorded(capsys, tmp_path):
    metrics = tmp_path / "m.json"
    code, out, err = run(["train", *[a for a in SMALL if a != "--quiet"], "--epochs", "30",
                        "--lr", "3", "--early-stopping", "--patience", "2", "--metrics-json",
                        metrics], capsys)
    assert code == 0, err
    record = json.loads(metrics.read_text())
    said = [line for line in out.splitlines() if line.startswith("stopped early after")]
    assert said == [record["stopped_early"]] and len(record["epochs"]) < 30
    assert f"the model of epoch {record['best_epoch']} (val acc" in said[0]


@pytest.mark.parametrize("argv, message", [
    (["--preset", "seed", "--patience", "5"], "--patience 5: needs --early-stopping"),
    (["--early-stopping", "--min-delta", "-1"], "--min-delta -1: expected >= 0"),
    (["--warmup-epochs", "20", "--epochs", "10"],
     "--warmup-epochs 20: expected fewer than --epochs 10"),
    (["--step-gamma", "0.5"], "--step-gamma 0.5: needs --lr-schedule step"),
    (["--optimizer", "adam", "--beta2", "1"], "--beta2 1.0: expected a number in [0, 1)"),
    (["--optimizer", "nadam"], "'nadam' is not one of"),
])
def test_bad_method_options_give_one_line(argv, message, capsys):
    code, _, err = run(["train", *SMALL, *argv], capsys)
    assert code != 0 and err.startswith("pbp: error:") and err.count("\n") == 1, err
    assert message in err


def test_tune_searches_update_rules_with_the_same_seed(tmp_path, capsys):
    written = tmp_path / "tune.json"
    code, out, err = run(["tune", *SMALL[:12], "--epochs", "1", "--lrs", "0.1",
                          "--optimizers", "sgd,momentum", "--momentums", "0.5,0.9",
                          "--weight-decays", "0,0.001", "--jobs", "1", "--out", written], capsys)
    assert code == 0, err
    doc = json.loads(written.read_text())
    methods = [(c["optimizer"], c["momentum"], c["weight_decay"]) for c in doc["candidates"]]
    assert methods == [("sgd", 0.9, 0.0), ("sgd", 0.9, 0.001), ("momentum", 0.5, 0.0),
                       ("momentum", 0.5, 0.001), ("momentum", 0.9, 0.0),
                       ("momentum", 0.9, 0.001)]
    assert "momentum 0.5 wd 0.001" in out and "<- best" in out
