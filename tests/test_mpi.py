"""The mpi executor on 2 to 4 local ranks (oversubscribed on small machines).

Every job runs in a subprocess under mpiexec with a timeout: an MPI job that
goes wrong tends to hang rather than fail. The pytest process itself never
starts MPI. Checked: a short training run on 2 and 4 ranks saves the serial
run's model (within float32 rounding), one step on uneven and empty shards
is exactly the gradient step (float64), a failing or killed rank ends the
whole job within seconds, and bad launch input gives one clear line.
"""

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from importlib.util import find_spec

import pytest

from helpers import assert_allclose_verbose
from parallel_backprop.cli import main
from parallel_backprop.errors import PbpError
from parallel_backprop.executors.mpi import find_mpiexec, without_ranks
from parallel_backprop.modelio import load_model


def _mpiexec_or_none():
    try:
        return find_mpiexec()
    except PbpError:
        return None


MPIEXEC = _mpiexec_or_none() if find_spec("mpi4py") else None
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None, reason="needs mpi4py and mpiexec: pip install -e '.[mpi]'")

JOB_TIMEOUT = 60     # seconds; the jobs here take 1-3 s
PBP = [sys.executable, "-m", "parallel_backprop.cli"]
# 500 training samples in batches of 71: 7 full batches and a last one of 3
# rows. On 4 ranks a full batch splits 18/18/18/17 and the last 1/1/1/0 (an
# empty shard); on 2 ranks 36/35 and 2/1.
TRAIN = ["train", "--preset", "seed", "--dataset", "synthetic", "--samples", "600",
         "--features", "12", "--classes", "3", "--net", "12-16-3", "--batch-size", "71", "--epochs", "3",
         "--lr", "0.5", "--seed", "4"]


def run_job(command, timeout=JOB_TIMEOUT, env=None, cwd=None):
    """Run an MPI job; (returncode, stdout, stderr, seconds). A timeout fails the test.

    The job runs in its own session. On a timeout it gets Ctrl-C twice, as
    from a terminal (the second makes mpiexec kill its ranks, which live in
    process groups of their own), then SIGKILL.
    """
    started = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, env=env, cwd=cwd, start_new_session=True)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        for sig in (signal.SIGINT, signal.SIGINT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, sig)
            time.sleep(1)
        out, err = process.communicate()
        pytest.fail(f"{' '.join(map(str, command))}: still running after {timeout} s "
                    f"(a hang)\n{out}\n{err}")
    return process.returncode, out, err, time.monotonic() - started


@pytest.fixture(scope="module")
def serial_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("serial") / "serial.npz"
    assert main([*TRAIN, "--quiet", "--save", str(path)]) == 0
    return load_model(path).params


@needs_mpi
@pytest.mark.parametrize("ranks,threads,launch", [(2, 2, "mpiexec"), (4, 1, "--ranks")])
def test_ranks_train_the_serial_model(ranks, threads, launch, serial_model, tmp_path):
    model, metrics = tmp_path / "model.npz", tmp_path / "metrics.json"
    args = [*TRAIN, "--executor", "mpi", "--threads", str(threads), "--save", str(model),
            "--metrics-json", str(metrics)]
    if launch == "mpiexec":
        command = [MPIEXEC, "-n", str(ranks), *PBP, *args]
    else:
        command = [*PBP, *args, "--ranks", str(ranks)]
    code, out, err, _ = run_job(command)
    assert code == 0, err
    # Only rank 0 prints: one header, one line per epoch, one result.
    assert out.count("test accuracy") == 1 and out.count("epoch   1") == 1, out
    assert f"executor mpi ({ranks} ranks x {threads} thread" in out
    summary = json.loads(metrics.read_text())
    assert summary["ranks"] == ranks and summary["executor"] == "mpi"
    assert_allclose_verbose(load_model(model).params, serial_model, rtol=1e-5, atol=1e-6,
                            what=f"{ranks} ranks x {threads} threads vs serial")


STEP_SCRIPT = """
    import numpy as np
    from parallel_backprop.backprop import gradient
    from parallel_backprop.executors import make_executor
    from parallel_backprop.network import Network

    network = Network((13, 67, 35, 3), ("tanh", "sigmoid", "sigmoid"), "mse")
    rng = np.random.default_rng(5)                    # the same draws on every rank
    params = network.init_params(rng, np.float64)
    expected = params.copy()
    with make_executor("mpi", network, params, batch_size=7, threads=2) as executor:
        # 7 rows on 3 ranks: 3/2/2; 2 rows: 1/1/0; 1 row: 1/0/0.
        for rows in (7, 2, 5, 1):
            x = rng.standard_normal((rows, 13))
            y = network.targets(rng.integers(0, 3, rows), np.float64)
            loss_sum, grad = gradient(network, expected, x, y)
            expected -= 0.3 / rows * grad
            loss = executor.step(x, y, 0.3)
            assert abs(loss - loss_sum) <= 1e-12 * loss_sum, (rows, loss, loss_sum)
            actual = executor.params()
            worst = np.max(np.abs(actual - expected) / (np.abs(expected) + 1e-3))
            assert worst < 1e-12, (rows, worst)
        x = rng.standard_normal((11, 13))
        with make_executor("serial", network, executor.params(), batch_size=4) as serial:
            assert np.allclose(executor.predict(x), serial.predict(x), rtol=1e-12, atol=0)
        assert executor.predict(x[:0]).shape == (0, 3)
        print(f"rank {executor.rank} of {executor.ranks}: ok")
"""


@needs_mpi
def test_one_step_on_uneven_and_empty_shards_is_the_gradient_step(tmp_path):
    script = tmp_path / "step.py"
    script.write_text(textwrap.dedent(STEP_SCRIPT))
    code, out, err, _ = run_job([MPIEXEC, "-n", "3", sys.executable, str(script)])
    assert code == 0, err
    # The ranks' lines may arrive interleaved: count them, not the line breaks.
    assert sorted(re.findall(r"rank (\d) of 3: ok", out)) == ["0", "1", "2"], out


FAIL_SCRIPT = """
    import os, signal, sys
    import numpy as np
    from mpi4py import MPI
    from parallel_backprop import register_activation
    from parallel_backprop.cli import main
    from parallel_backprop.errors import DataError

    calls = 0

    def failing_tanh(z):  # fails on rank 1 after a few steps
        global calls
        calls += 1
        if MPI.COMM_WORLD.Get_rank() == 1 and calls > 3:
            if sys.argv[1] == "raise":
                raise RuntimeError("injected failure")
            if sys.argv[1] == "error":
                raise DataError("injected data error")
            os.kill(os.getpid(), signal.SIGKILL)
        return np.tanh(z, out=z)

    register_activation("failing_tanh", failing_tanh, lambda a: 1 - a * a)
    sys.exit(main(sys.argv[2:]))
"""


@needs_mpi
@pytest.mark.parametrize("how,message", [
    ("raise", f"rank 1 of 2 (host {socket.gethostname()}) failed with RuntimeError: "
              "injected failure"),
    ("error", f"pbp: error on rank 1 of 2 (host {socket.gethostname()}): injected data error"),
    ("kill", ""),
])
def test_a_failing_rank_ends_the_job(how, message, tmp_path):
    script = tmp_path / "fail.py"
    script.write_text(textwrap.dedent(FAIL_SCRIPT))
    model = tmp_path / "model.npz"
    model.write_bytes(b"an earlier model")
    code, _, err, seconds = run_job(
        [MPIEXEC, "-n", "2", sys.executable, str(script), how, *TRAIN, "--executor", "mpi",
         "--activation", "failing_tanh", "--quiet", "--save", str(model)], timeout=30)
    assert code != 0
    assert seconds < 15, f"the job took {seconds:.1f} s to end"
    assert message in err, err
    assert model.read_bytes() == b"an earlier model"       # files already there stay intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fail.py", "model.npz"]


@needs_mpi
def test_more_ranks_than_the_batch_under_mpiexec(tmp_path):
    code, _, err, _ = run_job([MPIEXEC, "-n", "3", *PBP, *TRAIN, "--batch-size", "2",
                               "--executor", "mpi", "--quiet"])
    assert code != 0
    assert "3 MPI ranks for a batch size of 2" in err, err


BAD_LAUNCH = {
    "not the mpi executor": (["--executor", "threads", "--ranks", "2"],
                             "--ranks 2: only the mpi executor"),
    "more ranks than the batch": (["--executor", "mpi", "--ranks", "72"],
                                  "more ranks than the batch size 71"),
    "already under mpiexec": (["--executor", "mpi", "--ranks", "2"], "already runs under mpiexec"),
    "no mpi4py, --ranks": (["--executor", "mpi", "--ranks", "2"],
                           "pip install -e '.[mpi]'"),
    "no mpi4py, mpi executor": (["--executor", "mpi"], "pip install -e '.[mpi]'"),
    "no mpiexec": (["--executor", "mpi", "--ranks", "2"], "no mpiexec"),
    "a hostfile without ranks": (["--executor", "mpi", "--hostfile", "hosts"],
                                 "--hostfile hosts: needs --ranks N"),
    "restarts without ranks": (["--executor", "mpi", "--restarts", "2"],
                               "--restarts 2: needs --ranks N"),
    "restarts without checkpoints": (["--executor", "mpi", "--ranks", "2", "--restarts", "2"],
                                     "--restarts 2: needs --checkpoint-dir"),
    "a hostfile that is not there": (["--executor", "mpi", "--ranks", "2", "--hostfile",
                                      "/nonexistent/hosts"],
                                     "--hostfile /nonexistent/hosts: cannot be read"),
}


@pytest.mark.parametrize("case", sorted(BAD_LAUNCH))
def test_bad_launch_input_gives_one_clear_line(case, tmp_path, capsys, monkeypatch):
    for name in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "PMIX_RANK"):
        monkeypatch.delenv(name, raising=False)
    if case == "already under mpiexec":
        monkeypatch.setenv("PMI_SIZE", "2")
    if case.startswith("no mpi4py"):
        monkeypatch.setitem(sys.modules, "mpi4py", None)   # import fails, nothing starts MPI
    if case == "a hostfile that is not there" and MPIEXEC is None:
        pytest.skip("reported as missing mpi4py or mpiexec first")
    if case == "no mpiexec":
        if find_spec("mpi4py") is None:
            pytest.skip("reported as missing mpi4py first")
        monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
        monkeypatch.setenv("PATH", str(tmp_path))
    argv, expected = BAD_LAUNCH[case]
    code = main([*TRAIN, "--quiet", *argv])
    err = capsys.readouterr().err
    assert code != 0
    assert err.startswith("pbp: error:") and err.strip().count("\n") == 0, err
    assert expected in err, err
    assert "mpi4py.MPI" not in sys.modules      # nothing was started


def test_relaunch_drops_only_the_ranks_option():
    assert without_ranks(["train", "--ranks", "4", "--net", "1h", "--ranks=2", "--quiet",
                          "--hostfile", "hosts", "--hostfile=h"]) == ["train", "--net", "1h",
                                                                      "--quiet"]


def test_importing_the_package_does_not_start_mpi():
    code = ("import sys, parallel_backprop, parallel_backprop.cli; "
            "print('mpi4py.MPI' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


# ---- the scaling model (docs/scaling.md) ----------------------------------------


def test_scaling_model_tables_in_the_docs_are_current():
    from pathlib import Path

    from parallel_backprop.scaling import render

    doc = Path(__file__).parent.parent / "docs" / "scaling.md"
    assert render() in doc.read_text(), \
        "docs/scaling.md is out of date: paste in `python -m parallel_backprop.scaling`"


@pytest.mark.parametrize("name", ["Net-1h", "Net-2h", "KDD-1h"])
@pytest.mark.parametrize("gbit_s,latency_us", [(10, 20), (100, 2)])
def test_scaling_model_batch_for_efficiency_is_the_smallest(name, gbit_s, latency_us):
    from parallel_backprop.scaling import (NETWORKS, Link, allreduce_s,
                                           batch_for_efficiency, speedup)

    network, link, flops = NETWORKS[name], Link("", gbit_s, latency_us), 150e9
    assert speedup(network, 1024, 1, link, flops) == 1.0
    # Ring on 4 nodes: 6 message latencies, each node sends 1.5 x the buffer.
    expected = 6 * latency_us * 1e-6 + 1.5 * 4e6 * 8 / (gbit_s * 1e9)
    assert allreduce_s(4e6, 4, link) == pytest.approx(expected, rel=1e-12)
    for nodes in (2, 8, 64):
        batch = batch_for_efficiency(network, nodes, link, flops, 0.8)
        assert batch % nodes == 0
        assert speedup(network, batch, nodes, link, flops) >= 0.8 * nodes - 1e-9
        assert speedup(network, batch - nodes, nodes, link, flops) < 0.8 * nodes


def test_a_resumed_layout_is_said_in_one_line_only_when_it_changed(tmp_path):
    from parallel_backprop.checkpoint import Checkpoint, layout_change

    def checkpoint(layout):
        return Checkpoint(tmp_path, None, None, {}, "", layout)

    three = {"executor": "mpi", "ranks": 3, "threads": 2, "hosts": ["a", "b", "c"]}
    assert layout_change(checkpoint(three), dict(three)) is None
    assert layout_change(checkpoint(None), three) is None          # an older checkpoint
    line = layout_change(checkpoint(three), {**three, "ranks": 1, "threads": 1, "hosts": ["a"]})
    assert line == ("the checkpointed run trained on 3 ranks x 2 threads on a, b, c, this one "
                    "on 1 rank x 1 thread on a; the global batch is unchanged, so it takes the "
                    "same steps")


def test_comm_timeout_overrides_the_variable(monkeypatch):
    from parallel_backprop.executors.mpi import mpi_timeout, set_comm_timeout

    monkeypatch.setenv("PBP_MPI_TIMEOUT", "7")
    assert mpi_timeout() == 7
    set_comm_timeout(2.5)
    try:
        assert mpi_timeout() == 2.5
    finally:
        set_comm_timeout(None)
    assert mpi_timeout() == 7
