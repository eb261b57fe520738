"""Checkpoints and resume: a stopped run continues to exactly the model of an unstopped one.

The strongest check kills a `pbp train` process with SIGKILL at a random
moment and resumes it; the final parameters must be bitwise those of a run
that was never stopped, for the serial and the threads executors.
PBP_KILL_REPEATS=N repeats each kill test N times (default 1).
"""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from parallel_backprop.checkpoint import (FREE_ON_RESUME, NOT_RECORDED, CheckpointWriter,
                                          check_resume_options, check_same_run, checkpoint_paths,
                                          data_fingerprint, latest_checkpoint, load_checkpoint,
                                          recorded_options, resume_defaults, start_checkpointing)
from parallel_backprop.cli import main
from parallel_backprop.data import Identity
from parallel_backprop.errors import ConfigError, ModelFileError
from parallel_backprop.executors import OptimizerState
from parallel_backprop.modelio import load_model
from parallel_backprop.network import Network
from parallel_backprop.trainer import TrainConfig, TrainingDiverged, train

RUN = ["--dataset", "synthetic", "--samples", "6000", "--features", "20", "--classes", "3",
       "--net", "20-32-3", "--batch-size", "8", "--epochs", "3", "--lr", "0.2", "--quiet",
       "--preset", "seed"]
# The update rules and stopping rules a killed run must resume exactly: their state
# (velocity, moments and step count; the plateau and early-stopping records) is in
# every checkpoint.
METHODS = {
    "sgd": [],
    "momentum": ["--optimizer", "momentum", "--lr", "0.05"],
    "adam": ["--optimizer", "adam", "--lr", "0.005", "--weight-decay", "0.001"],
    "stopping": ["--early-stopping", "--patience", "1", "--lr-schedule", "plateau",
                 "--plateau-patience", "1", "--plateau-factor", "0.5"],
}


KILL_REPEATS = int(os.environ.get("PBP_KILL_REPEATS", "1"))


def run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def small_problem(n=203, features=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((features, classes)), axis=1)
    return Network((features, 9, classes), ("tanh", "softmax"), "cross-entropy"), x, y


# ---- the trainer: resuming from any state reproduces the run --------------------------

@pytest.mark.parametrize("executor,threads", [("serial", 1), ("threads", 2), ("threads", 3)])
def test_resume_from_any_step_gives_the_same_model(executor, threads):
    network, x, y = small_problem()
    config = TrainConfig(batch_size=16, lr=0.3, epochs=3, seed=5, executor=executor,
                         threads=threads)
    states = []
    reference = train(network, config, x[:180], y[:180], x[180:], y[180:], progress=False,
                      checkpoint=states.append, checkpoint_every=1)
    steps = states[0].steps_per_epoch
    assert steps == 12 and len(states) == 3 * steps          # every step boundary, once
    assert [s.global_step for s in states] == list(range(1, 3 * steps + 1))
    # Mid-epoch states (loss so far, a shuffle to redraw) and epoch ends alike.
    for state in states[::5] + states[steps - 1:steps + 1]:
        resumed = train(network, config, x[:180], y[:180], x[180:], y[180:], progress=False,
                        resume=state)
        assert same_bits(resumed.params, reference.params), state.global_step
        assert [e.loss for e in resumed.epochs] == [e.loss for e in reference.epochs]
        assert [e.val_accuracy for e in resumed.epochs] == \
            [e.val_accuracy for e in reference.epochs]


def test_more_epochs_after_a_finished_run_continue_it():
    network, x, y = small_problem()
    three = train(network, TrainConfig(batch_size=32, epochs=3, seed=1), x, y, progress=False)
    two = train(network, TrainConfig(batch_size=32, epochs=2, seed=1), x, y, progress=False)
    more = train(network, TrainConfig(batch_size=32, epochs=3, seed=1), x, y, progress=False,
                 resume=two.state)
    assert same_bits(more.params, three.params) and len(more.epochs) == 3


def test_resume_state_that_does_not_fit_is_refused():
    network, x, y = small_problem()
    config = TrainConfig(batch_size=16, epochs=2)
    state = train(network, config, x, y, progress=False).state
    with pytest.raises(ConfigError, match="13 steps per epoch, this run has 7"):
        train(network, TrainConfig(batch_size=32, epochs=2), x, y, progress=False,
              resume=state)
    with pytest.raises(ConfigError, match="completed 2 epochs, more than the 1 asked for"):
        train(network, TrainConfig(batch_size=16, epochs=1), x, y, progress=False,
              resume=state)
    other = Network((7, 4, 3), ("tanh", "softmax"), "cross-entropy")
    with pytest.raises(ConfigError, match="expected 47 for net 7-4-3"):
        train(other, config, x, y, progress=False, resume=state)
    with pytest.raises(ConfigError, match="checkpoint every 0 steps"):
        train(network, config, x, y, progress=False, checkpoint=print, checkpoint_every=0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_divergence_never_reaches_a_checkpoint():
    network = Network((7, 9, 3), ("linear", "linear"), "mse")
    _, x, y = small_problem()
    states = []
    with pytest.raises(TrainingDiverged, match="smaller --lr"):
        train(network, TrainConfig(batch_size=16, lr=1e30, epochs=2), x, y, progress=False,
              checkpoint=states.append, checkpoint_every=1)
    assert all(np.all(np.isfinite(s.params)) and np.isfinite(s.loss_total) for s in states)


# ---- the file format --------------------------------------------------------------------

def writer_for(folder, network, x, y, keep=3, options=None):
    return CheckpointWriter(folder, network, Identity(x.shape[1], 3), ["a", "b", "c"],
                            "synthetic", options or {"lr": 0.3}, data_fingerprint(x, y),
                            keep=keep)


def test_checkpoint_round_trip_and_rotation(tmp_path):
    network, x, y = small_problem()
    writer = writer_for(tmp_path, network, x, y, keep=2)
    states = []
    train(network, TrainConfig(batch_size=16, lr=0.3, epochs=2), x, y, progress=False,
          checkpoint=lambda s: (states.append(s), writer(s)), checkpoint_every=5)
    paths = checkpoint_paths(tmp_path)
    assert [p.name for p in paths] == ["checkpoint-0000000025.npz", "checkpoint-0000000026.npz"]
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    back = latest_checkpoint(tmp_path)
    last = states[-1]
    assert same_bits(back.state.params, last.params)
    assert (back.state.epoch, back.state.step, back.state.steps_per_epoch) == (3, 0, 13)
    assert back.state.shuffle_state == last.shuffle_state
    assert repr(back.state.epochs) == repr(last.epochs)      # NaN val accuracy: no val set
    assert back.options == {"lr": 0.3}
    assert back.fingerprint == data_fingerprint(x, y)
    mid = load_checkpoint(paths[0])          # mid-epoch: loss so far kept exactly
    assert mid.state.loss_total == states[-2].loss_total and mid.state.step == 12
    # A checkpoint is not a model file, and a model file is not a checkpoint.
    with pytest.raises(ModelFileError, match="expected 'parallel-backprop-model'"):
        load_model(paths[0])


def test_checkpoint_of_another_run_is_refused(tmp_path):
    network, x, y = small_problem()
    writer = writer_for(tmp_path, network, x, y)
    train(network, TrainConfig(batch_size=64, epochs=1), x, y, progress=False,
          checkpoint=writer)
    checkpoint = latest_checkpoint(tmp_path)
    check_same_run(checkpoint, network, data_fingerprint(x, y))
    with pytest.raises(ConfigError, match="net 7-9-3 .* this run builds 7-9-3 .*relu"):
        check_same_run(checkpoint, Network((7, 9, 3), ("relu", "softmax"), "cross-entropy"),
                       data_fingerprint(x, y))
    x2 = x.copy()
    x2[0, 0] += 1
    with pytest.raises(ConfigError, match="training data differ"):
        check_same_run(checkpoint, network, data_fingerprint(x2, y))


# ---- the resume policy ------------------------------------------------------------------

def written_checkpoint(folder, options):
    network, x, y = small_problem()
    writer = CheckpointWriter(folder, network, Identity(7), ["a", "b", "c"], "synthetic",
                              options, data_fingerprint(x, y))
    train(network, TrainConfig(batch_size=64, epochs=1), x, y, progress=False,
          checkpoint=writer)
    return latest_checkpoint(folder)


def test_recorded_options_make_paths_text_and_outputs_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = {"net": "1h", "lr": 0.5, "data_dir": tmp_path, "save": Path("m.npz"),
               "metrics_json": None, "quiet": True, "ranks": 2, "resume": None}
    assert recorded_options(options) == {"net": "1h", "lr": 0.5, "data_dir": str(tmp_path),
                                         "save": str(tmp_path / "m.npz"), "metrics_json": None}
    assert not NOT_RECORDED & FREE_ON_RESUME


def test_resume_options_may_change_only_the_free_ones(tmp_path):
    checkpoint = written_checkpoint(tmp_path, {"lr": 0.5, "epochs": 2, "data_dir": None,
                                               "limit": None, "net": "7-9-3"})
    # A run recorded before presets existed trained with the seed's settings.
    assert resume_defaults(checkpoint) == {"preset": "seed", "lr": 0.5, "epochs": 2,
                                           "net": "7-9-3"}
    check_resume_options(checkpoint, {"lr": 0.5, "epochs": 9, "data_dir": tmp_path,
                                      "save": tmp_path / "x.npz"})
    with pytest.raises(ConfigError, match=r"--lr 0.1 \(the run used 0.5\); leave those options"):
        check_resume_options(checkpoint, {"lr": 0.1, "epochs": 2})


def test_start_checkpointing_fresh_and_resumed(tmp_path):
    network, x, y = small_problem()
    data = SimpleNamespace(x_train=x, y_train=y, x_val=x[:0], y_val=y[:0], name="synthetic",
                           preprocessor=Identity(7), class_names=["a", "b", "c"])
    state, writer = start_checkpointing(None, tmp_path / "new", network, data,
                                        {"lr": 0.5, "quiet": True}, keep=2)
    assert state is None and writer.options == {"lr": 0.5} and (tmp_path / "new").is_dir()
    train(network, TrainConfig(batch_size=64, epochs=1), x, y, progress=False, checkpoint=writer)
    writer.close()   # the folder's lock, which a second start would otherwise be refused
    checkpoint = latest_checkpoint(tmp_path / "new")
    with pytest.raises(ConfigError, match="already holds checkpoints"):
        start_checkpointing(None, tmp_path / "new", network, data, {})
    state, writer = start_checkpointing(checkpoint, tmp_path / "new", network, data, {})
    assert state.epoch == checkpoint.state.epoch and writer.enabled
    _, idle = start_checkpointing(checkpoint, tmp_path / "elsewhere", network, data, {},
                                  enabled=False)   # an MPI rank but the root: no folder
    assert not idle.enabled and not (tmp_path / "elsewhere").exists()


def test_a_checkpoint_file_carries_the_optimizer_and_stopping_state(tmp_path):
    network, x, y = small_problem()
    rng = np.random.default_rng(1)
    x_val, y_val = rng.standard_normal((40, 7)).astype(np.float32), rng.integers(0, 3, 40)
    config = TrainConfig(batch_size=16, lr=0.3, epochs=6, seed=5, early_stopping=True,
                         patience=2, lr_schedule="plateau", plateau_patience=1)
    states = []
    train(network, config, x, y, x_val, y_val, progress=False, checkpoint=states.append,
          checkpoint_every=7)
    state = states[-1]
    assert state.stopping.best_epoch >= 1 and state.best_params is not None
    state.optimizer_state = OptimizerState(rng.standard_normal((2, network.n_params)), 17)
    writer = CheckpointWriter(tmp_path, network, Identity(7), ["a", "b", "c"], "toy", {}, "f")
    back = load_checkpoint(writer(state)).state
    assert back.optimizer_state.step == 17
    assert same_bits(back.optimizer_state.buffers, state.optimizer_state.buffers)
    assert same_bits(back.best_params, state.best_params)
    assert (back.lr_scale, back.plateau, back.stopping) == (state.lr_scale, state.plateau,
                                                            state.stopping)
    state.optimizer_state, state.best_params = None, None
    back = load_checkpoint(writer(state)).state
    assert back.optimizer_state is None and back.best_params is None


# ---- the command line: kill, interrupt, resume --------------------------------------

@pytest.fixture(scope="module")
def references(tmp_path_factory):
    """Final parameters of unstopped runs, by (executor, method), computed in this process
    when first asked for."""
    folder = tmp_path_factory.mktemp("reference")
    params = {}

    def reference(executor, threads, method="sgd"):
        if (executor, method) not in params:
            path = folder / f"{executor}-{method}.npz"
            code = main(["train", *RUN, *METHODS[method], "--executor", executor,
                         "--threads", str(threads), "--save", str(path)])
            assert code == 0
            params[executor, method] = load_model(path).params
        return params[executor, method]
    return reference


def start_run(folder, executor, threads, *extra, method="sgd"):
    return subprocess.Popen(
        [sys.executable, "-m", "parallel_backprop.cli", "train", *RUN, *METHODS[method],
         "--executor", executor, "--threads", str(threads), "--checkpoint-dir", str(folder),
         "--checkpoint-every", "5", *extra],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def newest_step(folder):
    paths = checkpoint_paths(folder)
    return int(paths[-1].name[len("checkpoint-"):-len(".npz")]) if paths else -1


def wait_for(condition, timeout=60.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.002)


@pytest.mark.parametrize("repeat", range(KILL_REPEATS))
@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("executor,threads", [("serial", 1), ("threads", 2)])
def test_sigkill_at_a_random_moment_then_resume_gives_the_same_model(
        executor, threads, method, repeat, references, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    process = start_run(folder, executor, threads, "--save", tmp_path / "killed.npz",
                        method=method)
    # A random moment, whatever the machine's speed: once the run has passed a
    # random step (the folder appears just before step 0; a checkpoint every 5
    # steps; the last at step 1875 is followed by evaluation and saving), then
    # a little more, so that the kill also falls inside checkpoint writes.
    target = random.randint(0, 3 * 625 + 5)
    wait_for(lambda: process.poll() is not None or (folder.exists() and target == 0)
             or newest_step(folder) >= target)
    time.sleep(random.uniform(0.0, 0.004))
    process.send_signal(signal.SIGKILL)
    process.communicate()
    final = tmp_path / "final.npz"
    torn = folder.exists() and any(p.name.endswith(".tmp") for p in folder.iterdir())
    if checkpoint_paths(folder):
        state = latest_checkpoint(folder).state
        where = f"at epoch {state.epoch}, step {state.step} of {state.steps_per_epoch}"
        code, out, err = run(["train", "--resume", folder, "--save", final, "--quiet"], capsys)
    else:   # killed before the first checkpoint: start again (stale temporaries are fine)
        where = "before the first checkpoint"
        code, out, err = run(["train", *RUN, *METHODS[method], "--executor", executor,
                              "--threads", threads, "--checkpoint-dir", folder, "--save", final],
                             capsys)
    assert code == 0, err
    with capsys.disabled():    # shown with -s: where the kills landed
        print(f"\n{executor} {method}: exit {process.returncode}, resumed {where}"
              + (" (a checkpoint write was cut)" if torn else ""), end=" ")
    assert same_bits(load_model(final).params, references(executor, threads, method))
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_ctrl_c_writes_a_checkpoint_and_stops_cleanly(references, tmp_path, capsys):
    folder = tmp_path / "ckpt"
    process = start_run(folder, "serial", 1, "--save", tmp_path / "m.npz")
    wait_for(lambda: checkpoint_paths(folder) or process.poll() is not None)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the run ended before Ctrl-C reached it")
    assert process.returncode == 130, err
    line = err.strip()         # after the newline that ends the terminal's "^C"
    assert line.startswith("pbp: interrupted: stopped by Ctrl-C at epoch"), err
    assert f"continue with `pbp train --resume {folder}`" in line and "\n" not in line
    assert not (tmp_path / "m.npz").exists()
    # The interrupt's own checkpoint is the newest and names the stop position.
    stopped = latest_checkpoint(folder).state
    assert f"epoch {stopped.epoch}, step {stopped.step} of" in err
    code, _, err = run(["train", "--resume", folder, "--save", tmp_path / "m.npz"], capsys)
    assert code == 0, err
    assert same_bits(load_model(tmp_path / "m.npz").params, references("serial", 1))


SMALL = ["--dataset", "synthetic", "--samples", "300", "--features", "6", "--classes", "3",
         "--net", "6-8-3", "--batch-size", "16", "--epochs", "2", "--quiet", "--preset", "seed"]


@pytest.fixture
def checkpointed(tmp_path, capsys):
    folder = tmp_path / "ckpt"
    code, _, err = run(["train", *SMALL, "--checkpoint-dir", folder], capsys)
    assert code == 0, err
    return folder


def test_resume_reports_options_and_metrics_of_the_whole_run(checkpointed, tmp_path, capsys):
    metrics = tmp_path / "m.json"
    code, out, err = run(["train", "--resume", checkpointed, "--epochs", "4", "--metrics-json",
                          metrics], capsys)
    assert code == 0, err
    summary = json.loads(metrics.read_text())
    assert [e["epoch"] for e in summary["epochs"]] == [1, 2, 3, 4]
    assert summary["net"] == "6-8-3" and summary["batch_size"] == 16


BAD_CHECKPOINTING = {
    "resume folder missing": (["--resume", "{tmp}/nowhere"], "--resume {tmp}/nowhere: no such"),
    "resume folder empty": (["--resume", "{tmp}/empty"], "no checkpoint in this folder"),
    "resume with other options": (["--resume", "{ckpt}", "--lr", "0.5", "--net", "6-4-3"],
                                  "--net 6-4-3 (the run used 6-8-3); --lr 0.5 (the run used "),
    "resume with fewer epochs": (["--resume", "{ckpt}", "--epochs", "1"],
                                 "completed 2 epochs, more than the 1 asked for"),
    "resume truncated checkpoint": (["--resume", "{cut}"], "not a valid .npz archive"),
    "resume truncated newest checkpoint": (["--resume", "{cut2}"],
                                           "remove it to resume from the one before"),
    "resume into another run's folder": (["--resume", "{ckpt}", "--checkpoint-dir", "{other}"],
                                         "already holds checkpoints of a run"),
    "resume model file": (["--resume", "{model}"], "expected 'parallel-backprop-checkpoint'"),
    "fresh run into used folder": ([*SMALL, "--checkpoint-dir", "{ckpt}"],
                                   "already holds checkpoints of a run"),
    "checkpoint folder is a file": ([*SMALL, "--checkpoint-dir", "{tmp}/file"],
                                    "is a file, expected a folder"),
    "checkpoint every without folder": ([*SMALL, "--checkpoint-every", "3"],
                                        "needs --checkpoint-dir"),
    "checkpoint every 0": ([*SMALL, "--checkpoint-dir", "{tmp}/c", "--checkpoint-every", "0"],
                           "checkpoint-every"),
}


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTING))
def test_bad_checkpoint_use_gives_one_clear_line(case, checkpointed, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    newest = checkpoint_paths(checkpointed)[-1]
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / newest.name).write_bytes(newest.read_bytes()[:300])
    (tmp_path / "cut2").mkdir()
    (tmp_path / "other").mkdir()
    for path in checkpoint_paths(checkpointed):
        (tmp_path / "cut2" / path.name).write_bytes(path.read_bytes())
        (tmp_path / "other" / path.name).write_bytes(path.read_bytes())
    (tmp_path / "cut2" / newest.name).write_bytes(newest.read_bytes()[:-10])
    (tmp_path / "model").mkdir()
    assert run(["train", *SMALL, "--save", tmp_path / "model" / newest.name], capsys)[0] == 0
    before = {p: p.read_bytes() for p in checkpointed.iterdir()}
    argv, expected = BAD_CHECKPOINTING[case]
    fill = {"{tmp}": str(tmp_path), "{ckpt}": str(checkpointed),
            **{f"{{{name}}}": str(tmp_path / name) for name in ("cut", "cut2", "other", "model")}}
    for key, value in fill.items():
        argv = [str(a).replace(key, value) for a in argv]
        expected = expected.replace(key, value)
    code, _, err = run(["train", *argv], capsys)
    assert code != 0
    assert err.startswith("pbp: error:") and err.strip().count("\n") == 0, err
    assert expected in err, err
    assert {p: p.read_bytes() for p in checkpointed.iterdir()} == before


def test_kill_before_the_first_checkpoint_or_after_the_last(checkpointed, tmp_path, capsys):
    # Before: only a torn temporary in the folder; a fresh run takes the folder.
    folder = tmp_path / "fresh"
    folder.mkdir()
    (folder / ".checkpoint-0000000005.npz.x1y2z3.tmp").write_bytes(b"PK\x03\x04torn")
    code, _, err = run(["train", *SMALL, "--checkpoint-dir", folder, "--save",
                        tmp_path / "a.npz"], capsys)
    assert code == 0, err
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    # After: resuming a finished run trains nothing more and saves the same model.
    code, _, err = run(["train", "--resume", checkpointed, "--save", tmp_path / "b.npz"],
                       capsys)
    assert code == 0, err
    assert same_bits(load_model(tmp_path / "b.npz").params, load_model(tmp_path / "a.npz").params)
