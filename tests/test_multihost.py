"""The mpi executor across hosts: network namespaces on one machine (tests/netns_rig.py).

Each host is a network namespace on a bridge; mpiexec reaches them through
Hydra's launcher hook, and the ranks talk over TCP across the rig's links
(no shared memory). Checked: the docs' multi-host recipe (a hostfile, one
rank per host with threads inside) trains the serial model on 2 and 3
hosts; a host whose rank is killed, or stopped, ends the job with a line
naming it, the checkpoints whole; a run resumes on fewer hosts to the
uninterrupted run's model; bad launches give one line; the rig leaves
nothing behind. Skipped where namespaces are not allowed (not root, no ip).
"""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import netns_rig
from helpers import assert_allclose_verbose
from parallel_backprop.cli import main
from parallel_backprop.modelio import load_model
from test_mpi import MPIEXEC, PBP, TRAIN, run_job

REASON = "needs mpi4py and mpiexec" if MPIEXEC is None else netns_rig.unavailable()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"multi-host rig: {REASON}")


@pytest.fixture(scope="module")
def rig():
    netns_rig.remove_stale()
    rig = netns_rig.Rig(3).up()
    try:
        yield rig
    finally:
        rig.down()


@pytest.fixture(scope="module")
def serial(tmp_path_factory):
    path = tmp_path_factory.mktemp("serial") / "serial.npz"
    assert main([*TRAIN, "--quiet", "--save", str(path)]) == 0
    return load_model(path).params


def rig_job(rig, hosts, args, timeout=60, ranks_per_host=1, hostfile=None):
    hostfile = hostfile or rig.hostfile(hosts, ranks_per_host)
    command = rig.mpiexec(MPIEXEC, len(hosts) * ranks_per_host, hostfile, [*PBP, *args])
    return run_job(command, timeout=timeout, env=rig.env())


def links_outside() -> list[str]:
    out = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    return sorted(line.split(":")[1].strip() for line in out.splitlines())


def test_the_rig_leaves_no_namespace_link_or_process():
    before = links_outside()
    rig = netns_rig.Rig(2, tag=str(os.getpid() + 1)).up()     # apart from the module's rig
    try:
        assert set(rig.namespaces()) <= set(netns_rig.rig_namespaces())
        sleeper = subprocess.Popen(rig.on_host(2, ["sleep", "60"]))
        time.sleep(0.2)
        assert list(rig.pids()) == [rig.namespace(2)]
        assert links_outside() == before            # the machine's own links are untouched
    finally:
        rig.down()
    assert sleeper.wait(timeout=5) == -signal.SIGKILL
    assert not set(rig.namespaces()) & set(netns_rig.rig_namespaces())
    assert links_outside() == before
    assert not rig.dir.exists()


@pytest.mark.parametrize("hosts", [[1, 2], [1, 2, 3]])
def test_the_multi_host_recipe_trains_the_serial_model(rig, serial, hosts, tmp_path):
    model, metrics = tmp_path / "model.npz", tmp_path / "metrics.json"
    code, out, err, _ = rig_job(rig, hosts, [*TRAIN, "--executor", "mpi", "--threads", "2",
                                             "--save", str(model), "--metrics-json", str(metrics)])
    assert code == 0, err
    assert f"executor mpi ({len(hosts)} ranks x 2 threads" in out, out
    assert json.loads(metrics.read_text())["ranks"] == len(hosts)
    assert_allclose_verbose(load_model(model).params, serial, rtol=1e-5, atol=1e-6,
                            what=f"{len(hosts)} hosts x 2 threads vs serial")


def rank_pid(rig, host: int) -> int:
    """The pid of the pbp rank running on ``host``."""
    for pid in rig.pids().get(rig.namespace(host), []):
        try:
            if b"parallel_backprop" in open(f"/proc/{pid}/cmdline", "rb").read():
                return pid
        except FileNotFoundError:
            continue
    raise AssertionError(f"no rank on host {host}")


def start_long_job(rig, hosts, folder, extra=()):
    command = rig.mpiexec(MPIEXEC, len(hosts), rig.hostfile(hosts),
                          [*PBP, *TRAIN, "--epochs", "100000", "--executor", "mpi",
                           "--checkpoint-dir", str(folder), "--checkpoint-every", "5",
                           "--quiet", *extra])
    process = subprocess.Popen(command, env=rig.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while len(list(folder.glob("checkpoint-*.npz"))) < 2:
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    return process


def finish(process, timeout):
    """The job's (stdout, stderr) once it ends; a test failure if it runs past ``timeout``."""
    try:
        return process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the job was still running {timeout} s later")


def checkpoints_whole(folder):
    from parallel_backprop.checkpoint import checkpoint_paths, load_checkpoint

    paths = checkpoint_paths(folder)
    assert paths and all(load_checkpoint(p).state.params.size for p in paths)


@pytest.mark.parametrize("how", ["rank", "host"])
def test_a_killed_host_ends_the_job_within_seconds(rig, how, tmp_path):
    folder = tmp_path / "ck"
    process = start_long_job(rig, [1, 2, 3], folder)
    victims = [rank_pid(rig, 2)] if how == "rank" else rig.pids()[rig.namespace(2)]
    killed = time.monotonic()
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    out, err = finish(process, 30)
    assert time.monotonic() - killed < 10
    assert process.returncode != 0
    if how == "rank":     # MPICH names the host and the process it lost
        assert f"PID {victims[0]} RUNNING AT {rig.address(2)}" in out, out + err
    checkpoints_whole(folder)


def assert_named_stalled(err, rank, host):
    """One line from rank 0 naming the silent rank and its host; what it waited for is
    the gradient, or the outputs when the stall fell in an evaluation."""
    lines = [line for line in err.splitlines() if line.startswith("pbp:")]
    expected = (rf"pbp: error on rank 0 of 3 \(host h1\): no (gradient|outputs) from rank {rank} "
                rf"\(host {host}\) for 2 s: it is stalled or the host is unreachable \(the limit "
                r"is --comm-timeout, default PBP_MPI_TIMEOUT, 2 s\)")
    assert len(lines) == 1 and re.fullmatch(expected, lines[0]), err


def test_a_host_cut_off_the_network_is_named_within_the_comm_timeout(rig, tmp_path):
    folder = tmp_path / "ck"
    process = start_long_job(rig, [1, 2, 3], folder, ["--comm-timeout", "2"])
    subprocess.run(["ip", "-n", rig.namespace(2), "link", "set", "eth0", "down"], check=True)
    try:
        cut = time.monotonic()
        _, err = finish(process, 30)
        assert time.monotonic() - cut < 2 + 10
    finally:
        subprocess.run(["ip", "-n", rig.namespace(2), "link", "set", "eth0", "up"], check=True)
    assert process.returncode != 0
    assert_named_stalled(err, rank=1, host="h2")
    checkpoints_whole(folder)


def test_a_stalled_host_is_named_within_the_comm_timeout(rig, tmp_path):
    folder = tmp_path / "ck"
    process = start_long_job(rig, [1, 2, 3], folder, ["--comm-timeout", "2"])
    pid = rank_pid(rig, 3)
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    _, err = finish(process, 30)
    assert time.monotonic() - stopped < 2 + 10
    assert process.returncode != 0
    assert_named_stalled(err, rank=2, host="h3")
    checkpoints_whole(folder)


def test_a_run_resumes_on_fewer_hosts_to_the_uninterrupted_model(rig, serial, tmp_path):
    folder, model = tmp_path / "ck", tmp_path / "model.npz"
    first = [arg if arg != "3" or i != TRAIN.index("--epochs") + 1 else "2"
             for i, arg in enumerate(TRAIN)]
    code, _, err, _ = rig_job(rig, [1, 2, 3], [*first, "--executor", "mpi", "--threads", "2",
                                               "--checkpoint-dir", str(folder), "--quiet"])
    assert code == 0, err
    code, out, err, _ = rig_job(rig, [1, 3], ["train", "--resume", str(folder), "--epochs", "3",
                                              "--save", str(model)])
    assert code == 0, err
    assert ("the checkpointed run trained on 3 ranks x 2 threads on h1, h2, h3, this one on "
            "2 ranks x 2 threads on h1, h3; the global batch is unchanged") in out, out
    assert_allclose_verbose(load_model(model).params, serial, rtol=1e-5, atol=1e-6,
                            what="3 hosts, then resumed on 2, vs serial")


def test_a_host_that_does_not_answer_is_named_first(rig):
    hostfile = rig.hostfile([1, 2], extra=[f"{rig.subnet}.99:1"])
    code, _, err, seconds = rig_job(rig, [1, 2, 3], [*TRAIN, "--executor", "mpi", "--quiet"],
                                    hostfile=hostfile)
    assert code != 0 and seconds < 10
    assert err.splitlines()[0] == (f"ssh: connect to host {rig.subnet}.99 port 22: "
                                   "Connection timed out"), err


def test_a_host_with_another_python_environment_is_one_line(rig, tmp_path):
    # Another numpy version as importlib.metadata sees it, on host 2 only.
    fake = tmp_path / "numpy-1.0.0.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 1.0.0\n")
    args = [*PBP, *TRAIN, "--executor", "mpi", "--quiet"]
    path = f"{tmp_path}:{rig.env().get('PYTHONPATH', '')}"
    command = rig.mpiexec(MPIEXEC, 1, rig.hostfile([1, 2]),
                          [*args, ":", "-n", "1", "-env", "PYTHONPATH", path, *args])
    code, _, err, _ = run_job(command, env=rig.env())
    assert code != 0
    [line] = [line for line in err.splitlines() if line.strip()]
    assert re.match(r"pbp: error on rank 0 of 2 \(host h1\): rank 1 of 2 \(host h2\) has other "
                    r"environment than rank 0 \(python \S+ numpy 1\.0\.0 .* there, ", line), line


def test_more_ranks_than_the_batch_is_one_line(rig):
    code, _, err, _ = rig_job(rig, [1, 2, 3], [*TRAIN, "--batch-size", "2", "--executor", "mpi",
                                               "--quiet"])
    assert code != 0
    assert [line for line in err.splitlines() if line.strip()] == [
        "pbp: error on rank 0 of 3 (host h1): 3 MPI ranks for a batch size of 2: expected at "
        "most 2 ranks, so that each has a sample of every full batch; use fewer ranks or a "
        "larger --batch-size"], err


def test_ranks_and_a_hostfile_check_the_hosts_then_train_on_them(rig, serial, tmp_path):
    model = tmp_path / "model.npz"
    command = rig.on_host(1, [*PBP, *TRAIN, "--executor", "mpi", "--ranks", "3", "--hostfile",
                              str(rig.hostfile()), "--save", str(model)])
    code, out, err, _ = run_job(command, env=rig.env())
    assert code == 0, err
    assert "executor mpi (3 ranks x 1 thread" in out, out
    assert_allclose_verbose(load_model(model).params, serial, rtol=1e-5, atol=1e-6,
                            what="pbp train --ranks 3 --hostfile vs serial")


def test_ranks_and_a_hostfile_naming_a_host_that_does_not_answer_is_one_line(rig):
    hostfile = rig.hostfile([1], extra=[f"{rig.subnet}.99:1"])
    code, _, err, _ = run_job(rig.on_host(1, [*PBP, *TRAIN, "--executor", "mpi", "--ranks", "2",
                                              "--hostfile", str(hostfile)]), env=rig.env())
    assert code != 0
    assert err.splitlines() == [
        f"pbp: error: --hostfile {hostfile}: host {rig.subnet}.99 does not answer (ssh: connect "
        f"to host {rig.subnet}.99 port 22: Connection timed out); start it, or remove it from "
        "the hostfile"], err


def test_ranks_and_a_hostfile_with_another_environment_on_a_host_is_one_line(rig, tmp_path):
    fake = tmp_path / "numpy-1.0.0.dist-info"
    fake.mkdir()
    (fake / "METADATA").write_text("Metadata-Version: 2.1\nName: numpy\nVersion: 1.0.0\n")
    launcher = tmp_path / "launch"       # host 2 sees numpy 1.0.0
    launcher.write_text(f'#!/bin/sh\ncase "$*" in *"{rig.address(2)} "*) '
                        f'export PYTHONPATH={tmp_path}:$PYTHONPATH;; esac\n'
                        f'exec {rig.launcher} "$@"\n')
    launcher.chmod(0o755)
    env = {**rig.env(), "HYDRA_LAUNCHER_EXEC": str(launcher)}
    code, _, err, _ = run_job(rig.on_host(1, [*PBP, *TRAIN, "--executor", "mpi", "--ranks", "2",
                                              "--hostfile", str(rig.hostfile([1, 2]))]), env=env)
    assert code != 0
    [line] = err.splitlines()
    assert re.match(rf"pbp: error: --hostfile \S+: host {rig.address(2)} has another Python "
                    r"environment \(python \S+ numpy 1\.0\.0 .* there, python \S+ numpy ", line), line


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.is_dir(), reason=f"needs Fashion-MNIST in {FASHION}")
def test_a_host_that_cannot_find_the_data_is_named(rig, tmp_path):
    args = ["train", "--dataset", "fashion-mnist", "--net", "784-16-10", "--limit", "300",
            "--epochs", "1", "--executor", "mpi", "--quiet", "--data-dir"]
    missing = tmp_path / "nowhere"         # host 2's copy of the data is not there
    command = rig.mpiexec(MPIEXEC, 1, rig.hostfile([1, 2]),
                          [*PBP, *args, str(FASHION), ":", "-n", "1", *PBP, *args, str(missing)])
    code, _, err, _ = run_job(command, env={**rig.env(), "PBP_OFFLINE": "1"})
    assert code != 0
    lines = [line for line in err.splitlines() if line.startswith("pbp:")]
    assert lines and lines[0].startswith("pbp: error on rank 1 of 2 (host h2): "), err
    assert str(missing) in lines[0], err


def test_restarts_resume_without_a_lost_host_to_the_uninterrupted_model(rig, tmp_path):
    folder, model, serial = tmp_path / "ck", tmp_path / "model.npz", tmp_path / "serial.npz"
    args = [*TRAIN, "--epochs", "8", "--save"]
    assert main([*args, str(serial), "--quiet"]) == 0
    command = rig.on_host(1, [*PBP, *args, str(model), "--executor", "mpi", "--ranks", "3",
                              "--hostfile", str(rig.hostfile()), "--checkpoint-dir", str(folder),
                              "--checkpoint-every", "1", "--comm-timeout", "2", "--restarts", "1",
                              "--quiet"])
    process = subprocess.Popen(command, env=rig.env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not list(folder.glob("checkpoint-*.npz")):     # the first step is done: cut
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
            time.sleep(0.02)
        subprocess.run(["ip", "-n", rig.namespace(2), "link", "set", "eth0", "down"], check=True)
        _, err = finish(process, 60)
    finally:
        subprocess.run(["ip", "-n", rig.namespace(2), "link", "set", "eth0", "up"], check=True)
    assert process.returncode == 0, err
    assert (f"restart 1 of 1 from the last checkpoint in {folder}, 2 ranks on "
            f"{rig.address(1)}, {rig.address(3)}") in err, err
    assert_allclose_verbose(load_model(model).params, load_model(serial).params, rtol=1e-5,
                            atol=1e-6, what="3 hosts, one lost, restarted on 2, vs serial")
