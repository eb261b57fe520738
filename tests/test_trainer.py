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
    with pytest.raises(ConfigError, match="learning-rate schedule 'cosine': expected one of"):
        TrainConfig(lr_schedule="cosine")


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
