"""The trainer through its public API: seeds, resume, divergence, checkpoints, schedules,
the memory check, the resident-data path and the progress line."""

import re
import signal

import numpy as np
import pytest

from parallel_backprop.errors import ConfigError
from parallel_backprop.executors import EXECUTORS, SerialExecutor, register_executor
from parallel_backprop.network import Network
from parallel_backprop.resources import check_fits_in_memory, training_bytes
from parallel_backprop.trainer import (EpochMetrics, TrainConfig, TrainingDiverged,
                                       TrainingInterrupted, TrainState, steady_throughput, train)

def problem(n=203, features=7, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((features, classes)), axis=1)
    return Network((features, 9, classes), ("tanh", "softmax"), "cross-entropy"), x, y


def same_bits(a, b):
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def quiet_train(*args, **kwargs):
    return train(*args, progress=False, **kwargs)


def test_the_same_seed_gives_the_same_run_and_another_seed_another():
    network, x, y = problem()
    runs = [quiet_train(network, TrainConfig(batch_size=16, epochs=2, seed=seed), x, y)
            for seed in (3, 3, 4)]
    assert same_bits(runs[0].params, runs[1].params)
    assert [e.loss for e in runs[0].epochs] == [e.loss for e in runs[1].epochs]
    assert not np.array_equal(runs[0].params, runs[2].params)


def test_resume_from_a_mid_epoch_state_is_bitwise_the_uninterrupted_run():
    network, x, y = problem()
    config = TrainConfig(batch_size=16, lr=0.3, epochs=2, seed=5)
    states = []
    reference = quiet_train(network, config, x, y, x[:50], y[:50], checkpoint=states.append,
                            checkpoint_every=5)
    middle = next(s for s in states if s.epoch == 2 and s.step > 0)
    assert middle.loss_total > 0 and middle.step == 2     # global step 15 of 13 per epoch
    resumed = quiet_train(network, config, x, y, x[:50], y[:50], resume=middle)
    assert same_bits(resumed.params, reference.params)
    assert [e.loss for e in resumed.epochs] == [e.loss for e in reference.epochs]
    assert same_bits(resumed.state.params, resumed.params) and resumed.state.epoch == 3


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("checkpoint_every,epoch", [(1, 1), (None, 2)])
def test_divergence_stops_with_one_message_before_any_bad_checkpoint(checkpoint_every, epoch):
    network = Network((7, 9, 3), ("linear", "linear"), "mse")
    _, x, y = problem()
    states = []
    settled = quiet_train(network, TrainConfig(batch_size=16, lr=0.1, epochs=1), x, y,
                          checkpoint=states.append)
    with pytest.raises(TrainingDiverged) as caught:   # inside epoch 1, or at epoch 2's end
        quiet_train(network, TrainConfig(batch_size=16, lr=2.0, epochs=3), x, y,
                    checkpoint=states.append, checkpoint_every=checkpoint_every,
                    resume=settled.state if epoch == 2 else None)
    assert str(caught.value) == (
        f"training diverged: the loss or the weights became NaN or infinite in epoch {epoch} "
        "with learning rate 2.0; try a smaller --lr (the last checkpoint written, if any, is "
        "kept)")
    assert len(states) > (1 if checkpoint_every else 0)
    assert all(np.all(np.isfinite(s.params)) and np.isfinite(s.loss_total) for s in states)


def test_checkpoints_come_every_n_steps_and_at_each_epoch_end():
    network, x, y = problem()            # 203 rows at batch 16: 13 steps per epoch
    states = []
    quiet_train(network, TrainConfig(batch_size=16, epochs=2), x, y, checkpoint=states.append,
                checkpoint_every=5)
    assert [s.global_step for s in states] == [5, 10, 13, 15, 20, 25, 26]
    assert [(s.epoch, s.step) for s in states if s.step == 0] == [(2, 0), (3, 0)]
    assert [len(s.epochs) for s in states] == [0, 0, 1, 1, 1, 1, 2]
    with pytest.raises(ConfigError, match="checkpoint every 0 steps: expected a positive"):
        quiet_train(network, TrainConfig(), x, y, checkpoint=states.append, checkpoint_every=0)


@pytest.fixture
def ctrl_c_interrupts():
    """SIGINT raising KeyboardInterrupt, as in a terminal (a background job ignores it)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_after_a_checkpoint_and_the_run_resumes_exactly(ctrl_c_interrupts):
    network, x, y = problem()
    config = TrainConfig(batch_size=16, epochs=2, seed=2)

    def press_ctrl_c(state):
        if state.global_step == 4:
            signal.raise_signal(signal.SIGINT)

    with pytest.raises(TrainingInterrupted, match="stopped by Ctrl-C at epoch 1, step 4 of 13") \
            as caught:
        quiet_train(network, config, x, y, checkpoint=press_ctrl_c, checkpoint_every=4)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler   # handler restored
    resumed = quiet_train(network, config, x, y, resume=caught.value.state)
    assert same_bits(resumed.params, quiet_train(network, config, x, y).params)


def test_linear_schedule_is_one_constant_rate_per_epoch():
    assert [TrainConfig(lr=0.3, epochs=3, lr_schedule="linear").epoch_lr(e)
            for e in (1, 2, 3)] == pytest.approx([0.3, 0.2, 0.1])
    assert TrainConfig(lr=0.3, epochs=3).epoch_lr(3) == 0.3
    network, x, y = problem()
    linear = quiet_train(network, TrainConfig(batch_size=16, lr=0.4, epochs=2, seed=1,
                                              lr_schedule="linear"), x, y)
    first = quiet_train(network, TrainConfig(batch_size=16, lr=0.4, epochs=1, seed=1), x, y)
    second = quiet_train(network, TrainConfig(batch_size=16, lr=0.2, epochs=2, seed=1), x, y,
                         resume=first.state)
    assert same_bits(linear.params, second.params)
    with pytest.raises(ConfigError, match="learning-rate schedule .exponential.: expected one of"):
        TrainConfig(lr_schedule="exponential")


def test_a_network_too_large_for_this_machine_is_refused_before_allocating():
    huge = Network((784, 10**9, 10), ("sigmoid", "sigmoid"))
    assert training_bytes(huge, 128) > 10**12
    with pytest.raises(ConfigError, match=r"net 784-1000000000-10 .* needs about .* GiB, more "
                                          r"than this machine's"):
        check_fits_in_memory(huge, 128)
    x = np.zeros((4, 784), np.float32)
    with pytest.raises(ConfigError, match="needs about"):
        quiet_train(huge, TrainConfig(batch_size=4, epochs=1), x, np.zeros(4, int))


def test_the_epoch_line_goes_to_stderr_by_default_and_can_be_silenced(capsys):
    network, x, y = problem(n=40)
    config = TrainConfig(batch_size=8, epochs=2)
    train(network, config, x, y)
    out, err = capsys.readouterr()
    assert out == ""
    assert re.search(r"^epoch   2  loss \d\.\d{5}  val acc nan  .* samples/s$", err, re.M), err
    for quiet in ({"progress": False}, {"log": False}):
        train(network, config, x, y, **quiet)
        assert capsys.readouterr().err == ""
    lines = []
    train(network, config, x, y, progress=False, log=lines.append)
    assert [line.split()[:2] for line in lines] == [["epoch", "1"], ["epoch", "2"]]
    assert capsys.readouterr().err == ""


def test_steady_throughput_leaves_out_the_warm_up_epoch():
    epochs = [EpochMetrics(e, 0.5, 0.9, epoch_s, 100 / epoch_s, 0.0)
              for e, epoch_s in ((1, 10.0), (2, 1.0), (3, 3.0))]
    assert steady_throughput(epochs) == (pytest.approx(200 / 3), 2.0)
    assert steady_throughput(epochs[:1]) == (10.0, 10.0)
    network, x, y = problem()
    result = quiet_train(network, TrainConfig(epochs=3), x, y)
    result.epochs = epochs
    summary = result.summary(network, TrainConfig())
    assert (summary["samples_per_s"], summary["epoch_s"]) == steady_throughput(epochs)


class ResidentSerial(SerialExecutor):
    """The serial executor behind the resident-data protocol: each epoch in one call."""

    name = "resident-serial-test"
    resident_data = True

    def load_data(self, x, targets):
        self.rows, self.row_targets = x, targets
        return True

    def train_epoch(self, order, lr, on_step=None):
        loss = 0.0
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            loss += self.step(self.rows[rows], self.row_targets[rows], lr)
            on_step()
        return loss


@pytest.fixture
def resident_executor():
    register_executor(ResidentSerial)
    yield ResidentSerial.name
    del EXECUTORS[ResidentSerial.name]


def test_the_resident_data_path_trains_the_same_model(resident_executor):
    network, x, y = problem()
    host = quiet_train(network, TrainConfig(batch_size=16, epochs=2, seed=7), x, y)
    resident = quiet_train(network, TrainConfig(batch_size=16, epochs=2, seed=7,
                                                executor=resident_executor), x, y)
    assert same_bits(resident.params, host.params)
    assert [e.loss for e in resident.epochs] == [e.loss for e in host.epochs]
    # A state taken at an epoch's end resumes on the resident path as well.
    states = []
    quiet_train(network, TrainConfig(batch_size=16, epochs=1, seed=7,
                                     executor=resident_executor), x, y, checkpoint=states.append)
    assert [(s.epoch, s.step) for s in states] == [(2, 0)]
    again = quiet_train(network, TrainConfig(batch_size=16, epochs=2, seed=7,
                                             executor=resident_executor), x, y,
                        resume=TrainState(**vars(states[0])))
    assert same_bits(again.params, host.params)


# ---- schedules, early stopping, sample weights ------------------------------------------

def test_each_schedule_gives_its_formula_after_the_warm_up():
    cosine = TrainConfig(lr=0.4, epochs=5, lr_schedule="cosine", warmup_epochs=1)
    assert [cosine.epoch_lr(e) for e in range(1, 6)] == pytest.approx(
        [0.4, 0.4, 0.2 * (1 + np.cos(np.pi / 4)), 0.2, 0.2 * (1 + np.cos(3 * np.pi / 4))])
    step = TrainConfig(lr=1.0, epochs=9, lr_schedule="step", step_size=3, step_gamma=0.5)
    assert [step.epoch_lr(e) for e in range(1, 10)] == [1, 1, 1, .5, .5, .5, .25, .25, .25]
    warm = TrainConfig(lr=0.3, epochs=6, warmup_epochs=3)
    assert [warm.epoch_lr(e) for e in range(1, 7)] == pytest.approx([.1, .2, .3, .3, .3, .3])
    plateau = TrainConfig(lr=0.5, lr_schedule="plateau")
    assert plateau.epoch_lr(4, plateau_scale=0.01) == pytest.approx(0.005)


@pytest.mark.parametrize("settings, message", [
    ({"patience": 5}, "--patience 5: needs --early-stopping"),
    ({"early_stopping": True, "min_delta": -1}, "--min-delta -1: expected >= 0"),
    ({"warmup_epochs": 20, "epochs": 10}, "--warmup-epochs 20: expected fewer than --epochs 10"),
    ({"step_size": 3}, "--step-size 3: needs --lr-schedule step"),
    ({"lr_schedule": "plateau", "plateau_factor": 1.5},
     r"--plateau-factor 1.5: expected a number in \(0, 1\)"),
    ({"early_stopping": True, "patience": 0}, "--patience 0: expected a positive integer"),
])
def test_schedule_and_stopping_settings_are_checked_in_one_line(settings, message):
    with pytest.raises(ConfigError, match=f"^{message}"):
        TrainConfig(**settings)


def noisy_validation(n=60, seed=5):
    """Validation rows whose labels are noise: accuracy wanders, so improvement stops."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 7)).astype(np.float32), rng.integers(0, 3, n)


def test_early_stopping_keeps_the_best_epochs_model_and_says_why():
    network, x, y = problem()
    x_val, y_val = noisy_validation()
    config = TrainConfig(batch_size=16, lr=0.3, epochs=40, seed=1, early_stopping=True,
                         patience=3)
    lines = []
    result = train(network, config, x, y, x_val, y_val, progress=False, log=lines.append)
    assert result.stopped_early is not None and len(result.epochs) < 40
    best = result.best_epoch
    accuracies = [e.val_accuracy for e in result.epochs]
    assert best == 1 + int(np.argmax(accuracies))        # the first epoch of the best score
    assert len(result.epochs) == best + 3                  # patience epochs without a gain
    assert re.fullmatch(rf"stopped early after epoch {best + 3}: no validation improvement > 0 "
                        rf"for 3 epochs; the model of epoch {best} \(val acc "
                        rf"{max(accuracies):.4f}\) is kept", lines[-1])
    plain = quiet_train(network, TrainConfig(batch_size=16, lr=0.3, epochs=best, seed=1),
                        x, y, x_val, y_val)
    assert same_bits(result.params, plain.params)          # the best epoch's weights
    summary = result.summary(network, config)
    assert summary["stopped_early"] == result.stopped_early and summary["best_epoch"] == best


def test_early_stopping_resumes_bit_for_bit_from_any_checkpoint():
    network, x, y = problem()
    x_val, y_val = noisy_validation()
    config = TrainConfig(batch_size=16, lr=0.3, epochs=40, seed=1, early_stopping=True,
                         patience=3, lr_schedule="plateau", plateau_patience=1)
    states = []
    whole = quiet_train(network, config, x, y, x_val, y_val, checkpoint=states.append,
                        checkpoint_every=5)
    assert whole.state.lr_scale < 1                        # the plateau schedule cut the rate
    for state in (states[len(states) // 2], states[-2], states[-1]):
        resumed = quiet_train(network, config, x, y, x_val, y_val, resume=state)
        assert same_bits(resumed.params, whole.params)
        assert (resumed.stopped_early, resumed.best_epoch) == (whole.stopped_early,
                                                               whole.best_epoch)


class RecordingSerial(SerialExecutor):
    """Serial, recording each step's rate and weights (the interface's ``weights=``)."""

    name = "recording-serial"
    calls: list = []

    def step(self, x, y, lr, weights=None):
        RecordingSerial.calls.append((lr, None if weights is None else weights.copy()))
        return super().step(x, y, lr)


@pytest.fixture
def recording_executor():
    register_executor(RecordingSerial)
    RecordingSerial.calls = []
    yield RecordingSerial
    del EXECUTORS[RecordingSerial.name]


def test_the_plateau_schedule_cuts_the_rate_after_epochs_without_improvement(
        recording_executor):
    network, x, y = problem()
    x_val, y_val = noisy_validation()
    config = TrainConfig(batch_size=64, lr=0.3, epochs=12, seed=1, lr_schedule="plateau",
                         plateau_patience=2, plateau_factor=0.5, executor=RecordingSerial.name)
    result = quiet_train(network, config, x, y, x_val, y_val)
    rates = [lr for lr, _ in RecordingSerial.calls][::4]   # 4 steps per epoch
    scale, stale, best = 1.0, 0, -1.0
    for epoch, metrics in enumerate(result.epochs, 1):
        assert rates[epoch - 1] == pytest.approx(0.3 * scale)
        if metrics.val_accuracy > best:
            best, stale = metrics.val_accuracy, 0
        else:
            stale += 1
            if stale >= 2:
                scale, stale = scale * 0.5, 0
    assert min(rates) < 0.3


def test_sample_weights_reach_each_step_scaled_to_average_one(recording_executor):
    network, x, y = problem()
    weights = np.arange(1, len(x) + 1, dtype=np.float64)
    config = TrainConfig(batch_size=50, epochs=1, seed=3, executor=RecordingSerial.name)
    quiet_train(network, config, x, y, sample_weight=weights)
    given = np.concatenate([w for _, w in RecordingSerial.calls])
    assert given.dtype == np.float32 and np.sort(given) == pytest.approx(
        weights * len(x) / weights.sum())
    RecordingSerial.calls = []
    quiet_train(network, config, x, y)
    assert all(w is None for _, w in RecordingSerial.calls)
    for bad, message in ((weights[:5], "expected \\(203,\\)"), (-weights, "finite weights >= 0")):
        with pytest.raises(ConfigError, match=message):
            quiet_train(network, config, x, y, sample_weight=bad)


def test_early_stopping_needs_a_validation_split():
    network, x, y = problem()
    with pytest.raises(ConfigError, match="--early-stopping: needs a validation split"):
        quiet_train(network, TrainConfig(early_stopping=True), x, y)
