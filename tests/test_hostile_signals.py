"""Stop signals, a launcher that goes away, a stalled rank, ranks that disagree.

Every test starts ``pbp`` in a session of its own with a unique marker in
its environment, which every process it starts (mpiexec, its proxies, the
ranks) inherits; the processes are found by that marker, and whatever is
left is killed (and continued, if stopped) in a ``finally``.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

DATA = Path("/usr/share/datasets/fashion-mnist")
MARKER = "PBP_TEST_MARKER"
SMALL = ["--dataset", "fashion-mnist", "--net", "784-16-10", "--limit", "600", "--quiet",
         "--batch-size", "4"]
MPIEXEC = Path(sys.executable).parent / "mpiexec"

pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"Fashion-MNIST not in {DATA}")


def has_mpi() -> str | None:
    """Why the MPI tests cannot run here, or None."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return "mpi4py is not installed"
    if not MPIEXEC.is_file():
        return f"no mpiexec beside {sys.executable}"
    return None


needs_mpi = pytest.mark.skipif(has_mpi() is not None, reason=str(has_mpi()))


class Job:
    """A ``pbp`` command in its own session, marked so that all it starts can be found."""

    def __init__(self, args: list[str], cwd: Path, env: dict | None = None,
                 command: list[str] | None = None):
        self.marker = uuid.uuid4().hex
        environment = {**os.environ, "PBP_OFFLINE": "1", MARKER: self.marker, **(env or {})}
        self.process = subprocess.Popen(
            command or [sys.executable, "-m", "parallel_backprop.cli", *args], cwd=cwd,
            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            start_new_session=True)

    def pids(self, **variables: str) -> list[int]:
        """The live (not zombie) processes carrying the marker (and these variables)."""
        wanted = [f"{MARKER}={self.marker}".encode()] + [
            f"{k}={v}".encode() for k, v in variables.items()]
        found = []
        for entry in Path("/proc").glob("[0-9]*"):
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if state != "Z" and all(w in environ for w in wanted):
                found.append(int(entry.name))
        return found

    def wait_until(self, condition, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if self.process.poll() is not None:
                out, err = self.process.communicate()
                pytest.fail(f"pbp ended (status {self.process.returncode}) before {what}: {err}")
            if time.monotonic() > deadline:
                pytest.fail(f"no {what} after {timeout} s")
            time.sleep(0.1)

    def finish(self, timeout: float) -> tuple[int, str]:
        """Its exit status and stderr; fails when it runs past ``timeout``."""
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"pbp still running {timeout} s later")
        return self.process.returncode, err

    def none_left(self, within: float) -> bool:
        deadline = time.monotonic() + within
        while self.pids() and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.pids()

    def kill_all(self) -> None:
        for pid in [self.process.pid, *self.pids()]:
            for sig in (signal.SIGKILL, signal.SIGCONT):
                try:
                    os.kill(pid, sig)
                except (ProcessLookupError, PermissionError):
                    pass
        self.process.communicate()


def messages(stderr: str) -> list[str]:
    """stderr's lines but blank ones (click writes one after an interrupt)."""
    return [line for line in stderr.splitlines() if line.strip()]


def checkpoints(folder: Path) -> list[Path]:
    return sorted(folder.glob("checkpoint-*.npz")) if folder.is_dir() else []


def resume(folder: Path, cwd: Path, extra: list[str] = ()) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "parallel_backprop.cli", "train", "--resume", str(folder),
         *extra], cwd=cwd, env={**os.environ, "PBP_OFFLINE": "1"}, capture_output=True,
        text=True, timeout=120)


# ---- one process: SIGTERM as Ctrl-C -------------------------------------------------


def test_sigterm_writes_a_checkpoint_and_says_how_to_resume(tmp_path):
    job = Job(["train", *SMALL, "--epochs", "40", "--checkpoint-dir", "ck"], tmp_path)
    try:
        job.wait_until(lambda: checkpoints(tmp_path / "ck"), 60, "first checkpoint")
        job.process.send_signal(signal.SIGTERM)
        status, err = job.finish(30)
    finally:
        job.kill_all()
    assert status == 143, err
    assert "Traceback" not in err
    [line] = messages(err)
    assert line.startswith("pbp: interrupted: stopped by SIGTERM at epoch "), line
    assert "checkpoint saved in ck; continue with `pbp train --resume ck`" in line
    done = resume(tmp_path / "ck", tmp_path)
    assert done.returncode == 0, done.stderr


def test_a_second_stop_signal_is_not_deferred():
    from parallel_backprop.interrupts import Stopped, stop_on_signals
    from parallel_backprop.trainer.checkpointing import DeferredInterrupt

    before = signal.getsignal(signal.SIGTERM)
    with stop_on_signals(), DeferredInterrupt(True) as deferred:
        signal.raise_signal(signal.SIGTERM)          # the first: noted, the step goes on
        assert deferred.requested == signal.SIGTERM
        with pytest.raises(Stopped, match="stopped by SIGTERM"):
            signal.raise_signal(signal.SIGTERM)      # the second: at once
    assert signal.getsignal(signal.SIGTERM) is before


def test_sigterm_without_checkpoints_is_one_line(tmp_path):
    job = Job(["train", *SMALL, "--epochs", "5000", "--no-early-stopping"],
              tmp_path)   # minutes: never done
    try:
        time.sleep(4)            # loading done, training under way
        job.process.send_signal(signal.SIGTERM)
        status, err = job.finish(30)
    finally:
        job.kill_all()
    assert status == 143, err
    assert messages(err) == ["pbp: interrupted: stopped by SIGTERM"]


# ---- the --ranks launcher -------------------------------------------------------------


def start_ranks(tmp_path: Path, epochs: int = 300, env: dict | None = None) -> Job:
    job = Job(["train", *SMALL, "--epochs", str(epochs), "--executor", "mpi", "--ranks", "2",
               "--checkpoint-dir", "ck"], tmp_path, env)
    job.wait_until(lambda: checkpoints(tmp_path / "ck"), 90, "first checkpoint")
    return job


@needs_mpi
@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_stopped_launcher_stops_every_rank(tmp_path, signum, status):
    job = start_ranks(tmp_path, epochs=20)      # resumed below: a short run
    try:
        job.process.send_signal(signum)
        code, err = job.finish(40)
        assert job.none_left(10), f"left running: {job.pids()}"
    finally:
        job.kill_all()
    assert code == status, err
    assert "Traceback" not in err
    [line] = messages(err)
    assert "stopped by " in line and "continue with `pbp train --resume ck`" in line, line
    before = checkpoints(tmp_path / "ck")[-1].name
    done = resume(tmp_path / "ck", tmp_path, ["--ranks", "2"])
    assert done.returncode == 0, done.stderr
    assert checkpoints(tmp_path / "ck")[-1].name > before


@needs_mpi
def test_a_killed_launcher_leaves_no_rank(tmp_path):
    job = start_ranks(tmp_path)
    try:
        job.process.send_signal(signal.SIGKILL)
        job.process.wait(timeout=10)
        assert job.none_left(45), f"left running: {job.pids()}"
    finally:
        job.kill_all()


# ---- a stalled rank -------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@needs_mpi
def test_a_stalled_rank_ends_the_job_with_one_line(tmp_path):
    job = start_ranks(tmp_path, epochs=2000, env={"PBP_MPI_TIMEOUT": "3"})
    try:
        [rank0], [rank1] = job.pids(PMI_RANK="0"), job.pids(PMI_RANK="1")
        os.kill(rank1, signal.SIGSTOP)
        stopped = time.monotonic()
        time.sleep(0.5)
        used, started = cpu_seconds(rank0), time.monotonic()
        time.sleep(1.5)
        busy = (cpu_seconds(rank0) - used) / (time.monotonic() - started)
        code, err = job.finish(3 + 10)
        assert time.monotonic() - stopped < 3 + 10
    finally:
        job.kill_all()
    assert busy < 0.5, f"rank 0 waits at {busy:.0%} CPU"
    assert code != 0
    assert "Traceback" not in err
    [line] = messages(err)
    assert line == (f"pbp: error on rank 0 of 2 (host {socket.gethostname()}): no gradient "
                    f"from rank 1 (host {socket.gethostname()}) for 3 s: it is stalled or the "
                    "host is unreachable (the limit is --comm-timeout, default PBP_MPI_TIMEOUT, "
                    "3 s)"), line


# ---- ranks that disagree ----------------------------------------------------------------


def relabelled_copy(folder: Path) -> Path:
    """Fashion-MNIST with every training label moved to the next class."""
    folder.mkdir()
    for source in DATA.iterdir():
        shutil.copy(source, folder / source.name)
    labels = folder / "train-labels-idx1-ubyte.gz"
    raw = bytearray(gzip.decompress(labels.read_bytes()))
    raw[8:] = bytes((b + 1) % 10 for b in raw[8:])
    labels.write_bytes(gzip.compress(bytes(raw)))
    return folder


@needs_mpi
@pytest.mark.parametrize("differs", ["data", "options"])
def test_ranks_that_disagree_stop_before_the_first_step(tmp_path, differs):
    pbp = [sys.executable, "-m", "parallel_backprop.cli", "train", *SMALL, "--epochs", "1",
           "--executor", "mpi", "--data-dir"]
    first = [*pbp, str(DATA)]
    second = ([*pbp, str(relabelled_copy(tmp_path / "other"))] if differs == "data"
              else [*pbp, str(DATA), "--lr", "0.2"])
    job = Job([], tmp_path, command=[str(MPIEXEC), "-n", "1", *first, ":", "-n", "1", *second])
    try:
        code, err = job.finish(60)
        assert job.none_left(10)
    finally:
        job.kill_all()
    assert code != 0
    assert "Traceback" not in err
    [line] = messages(err)
    assert line.startswith(f"pbp: error on rank 0 of 2 (host {socket.gethostname()}): rank 1 "
                           f"of 2 (host {socket.gethostname()}) has other {differs} "
                           "than rank 0"), line
    assert "epoch" not in err


def test_sigterm_stops_bench_writes_what_it_measured_and_kills_its_worker(tmp_path):
    job = Job(["bench", "--systems", "serial", "--nets", "784-64-10", "--batch-sizes",
               "8,16,32,64", "--threads", "1", "--warmup", "3", "--min-time", "2",
               "--repeats", "3", "--no-plots", "--quiet", "--out", "out"], tmp_path)
    try:
        job.wait_until(lambda: len(job.pids()) >= 2, 60, "bench worker")
        time.sleep(1)
        job.process.send_signal(signal.SIGTERM)
        code, err = job.finish(30)
        assert job.none_left(10), f"left running: {job.pids()}"
    finally:
        job.kill_all()
    assert code == 143, err
    assert messages(err) == ["pbp: interrupted: what was measured is in out"]
    assert '"interrupted": true' in (tmp_path / "out" / "bench.json").read_text()


# ---- the launcher's last resort, without MPI: an mpiexec that ignores every signal ----


STUBBORN = """#!/bin/sh
trap '' INT TERM
setsid sh -c 'trap "" INT TERM; echo $$ > {pidfile}; while :; do sleep 1; done' &
while :; do sleep 1; done
"""


@pytest.mark.parametrize("signals, message", [
    (1, "stopped by SIGTERM; the ranks had not stopped 1 s later and were killed"),
    (2, "stopped by SIGTERM twice; the ranks were killed")])
def test_launcher_kills_ranks_that_do_not_stop(tmp_path, monkeypatch, signals, message):
    import threading

    from parallel_backprop.executors import mpi
    from parallel_backprop.interrupts import Stopped, stop_on_signals

    pidfile = tmp_path / "rank.pid"
    mpiexec = tmp_path / "mpiexec"
    mpiexec.write_text(STUBBORN.format(pidfile=pidfile))
    mpiexec.chmod(0o755)
    monkeypatch.setattr(mpi, "GRACE_S", 1.0)

    def send():
        deadline = time.monotonic() + 10
        while not pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(signals):
            time.sleep(0.2)
            os.kill(os.getpid(), signal.SIGTERM)

    sender = threading.Thread(target=send)
    rank = None
    try:
        with stop_on_signals():
            sender.start()
            started = time.monotonic()
            with pytest.raises(Stopped, match=message):
                mpi.launch(str(mpiexec), 2, ["train"])
        assert time.monotonic() - started < 8
        rank = int(pidfile.read_text())
        time.sleep(0.2)
        assert not Path(f"/proc/{rank}").exists() or "Z" in Path(
            f"/proc/{rank}/stat").read_text().rsplit(")", 1)[1].split()[0], "rank left running"
    finally:
        sender.join()
        if rank is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(rank, signal.SIGKILL)


@pytest.mark.parametrize("value", ["abc", "0", "-5", "nan", "inf"])
def test_a_bad_mpi_timeout_is_one_line(monkeypatch, value):
    from parallel_backprop.errors import ConfigError
    from parallel_backprop.executors.mpi import mpi_timeout

    monkeypatch.setenv("PBP_MPI_TIMEOUT", value)
    with pytest.raises(ConfigError, match=f"PBP_MPI_TIMEOUT='{value}': expected a number"):
        mpi_timeout()
