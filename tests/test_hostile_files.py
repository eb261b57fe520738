"""Hostile files around the outputs: each refusal is one clear line, a non-zero exit, and
nothing on disk changes; what is written goes where it should and nowhere else.

- outputs onto a device, a FIFO or a socket are refused; through a symbolic link
  the link's target is written and the link stays;
- an output named twice, or onto an input (data files, --input, a checkpoint), is refused;
- a full disk (a 200 KB tmpfs) is one line naming the output, and leaves the files as they were;
- two runs given one checkpoint folder: the second is refused while the first holds it;
- a resumed run writes the outputs the first run was given.
"""

import errno
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from parallel_backprop.checkpoint import checkpoint_paths, latest_checkpoint
from parallel_backprop.cli import main
from parallel_backprop.modelio import load_model
from helpers import mnist_folder, one_clear_line, run

SMALL = ["--dataset", "synthetic", "--samples", "300", "--features", "6", "--classes", "3",
         "--net", "6-8-3", "--batch-size", "16", "--epochs", "1", "--quiet"]
KDD = ["--dataset", "kdd99", "--kdd-encoding", "ordinal", "--net", "41-8-1", "--epochs", "1",
       "--quiet"]
TIMEOUT = 120   # seconds any process a test starts may take


def snapshot(folder: Path, skip=()) -> dict:
    """Every path under ``folder``: its kind and content (never opening special files)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        info = os.lstat(path)
        rel = str(path.relative_to(folder))
        if stat.S_ISLNK(info.st_mode):
            found[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            found[rel] = ("folder",)
        elif stat.S_ISREG(info.st_mode):
            found[rel] = ("file", None if path.name in skip else path.read_bytes())
        else:
            found[rel] = ("special", stat.S_IFMT(info.st_mode), info.st_rdev)
    return found


def refused_and_unchanged(argv, folder, capsys, *expected, skip=()):
    """Run ``argv``; expect one clear line holding ``expected`` and ``folder`` unchanged."""
    before = snapshot(folder, skip)
    code, _, err = run(argv, capsys)
    one_clear_line(code, err, *expected)
    assert snapshot(folder, skip) == before
    return err


def kdd_file(path: Path, rows=60) -> Path:
    row = ("0,tcp,http,SF,181,5450,0,0,0,0,0,1,0,0,0,0,0,0,0,0,0,0,8,8,0.00,0.00,0.00,0.00,"
           "1.00,0.00,0.00,9,9,1.00,0.00,0.11,0.00,0.00,0.00,0.00,0.00,")
    path.write_text("".join(f"{row.replace('181', str(100 + i))}{'normal' if i % 2 else 'smurf'}."
                            "\n" for i in range(rows)))
    return path


# ---- case 1: a device, a FIFO, a socket, a symbolic link ---------------------------------

def special_file(path: Path, kind: str):
    """Make a special file at ``path``; what keeps a socket bound, or None."""
    if kind == "character device":     # /dev/full's numbers, made here: never a real /dev node
        try:
            os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 7))
        except PermissionError:
            pytest.skip("mknod is not permitted here (no CAP_MKNOD)")
    elif kind == "FIFO":
        os.mkfifo(path)
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        return sock
    return None


@pytest.mark.parametrize("option", ["--save", "--metrics-json"])
@pytest.mark.parametrize("kind", ["character device", "FIFO", "socket"])
def test_output_onto_a_device_fifo_or_socket_is_refused(kind, option, tmp_path, capsys,
                                                        monkeypatch):
    monkeypatch.chdir(tmp_path)    # short socket paths
    keep = special_file(Path("node"), kind)
    try:
        refused_and_unchanged(["train", *SMALL, option, "node"], tmp_path, capsys,
                              f"{option} node: is a {kind}, expected a regular file path")
    finally:
        if keep is not None:
            keep.close()


def test_output_through_a_symlink_writes_its_target(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "models").mkdir()
    target = tmp_path / "models" / "real.npz"
    target.write_bytes(b"the previous model")
    link = tmp_path / "out" / "link.npz"
    link.symlink_to(target)
    dangling = tmp_path / "out" / "new.json"
    dangling.symlink_to(tmp_path / "models" / "metrics.json")
    code, _, err = run(["train", *SMALL, "--save", link, "--metrics-json", dangling], capsys)
    assert code == 0 and err == ""
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert dangling.is_symlink() and json.loads(dangling.read_text())["net"] == "6-8-3"
    assert load_model(target).network.spec == "6-8-3"
    assert sorted(p.name for p in tmp_path.rglob("*")) == [
        "link.npz", "metrics.json", "models", "new.json", "out", "real.npz"]   # no temporary


# ---- case 2: an output named twice, or onto an input -------------------------------------

def same_outputs(tmp):
    return ["train", *SMALL, "--save", tmp / "same.npz", "--metrics-json", tmp / "same.npz"]


def linked_outputs(tmp):
    (tmp / "m.npz").write_bytes(b"old")
    (tmp / "alias.json").symlink_to(tmp / "m.npz")
    return ["train", *SMALL, "--save", tmp / "m.npz", "--metrics-json", tmp / "alias.json"]


def hard_linked_outputs(tmp):
    (tmp / "m.npz").write_bytes(b"old")
    os.link(tmp / "m.npz", tmp / "hard.json")
    return ["train", *SMALL, "--save", tmp / "m.npz", "--metrics-json", tmp / "hard.json"]


def save_onto_kdd_file(tmp):
    return ["train", *KDD, "--kdd-file", kdd_file(tmp / "k.csv"), "--save", tmp / "k.csv"]


def save_onto_test_file(tmp):
    return ["train", *KDD, "--kdd-file", kdd_file(tmp / "k.csv"), "--test-file",
            kdd_file(tmp / "t.csv"), "--metrics-json", tmp / "t.csv"]


def save_into_the_data_folder(tmp):
    folder = mnist_folder(tmp / "mnist")
    return ["train", "--dataset", "mnist", "--data-dir", folder, "--net", "784-8-10",
            "--batch-size", "4", "--epochs", "1", "--quiet", "--save", folder / "t10k-labels-idx1-ubyte.gz"]


def save_onto_a_checkpoint_name(tmp):
    (tmp / "ck").mkdir()
    return ["train", *SMALL, "--checkpoint-dir", tmp / "ck", "--save",
            tmp / "ck" / "checkpoint-0000000019.npz"]


def predict_onto_its_input(tmp):
    assert main(["train", *SMALL, "--save", str(tmp / "m.npz")]) == 0
    rows = np.random.default_rng(0).standard_normal((5, 6))
    np.savetxt(tmp / "c.csv", rows, delimiter=",")
    return ["predict", tmp / "m.npz", "--input", tmp / "c.csv", "--output", tmp / "c.csv"]


def tune_onto_the_data(tmp):
    return ["tune", *KDD, "--kdd-file", kdd_file(tmp / "k.csv"), "--lrs", "0.1", "--jobs", "1",
            "--out", tmp / "k.csv"]


def report_onto_its_study(tmp):
    (tmp / "r").mkdir()
    (tmp / "r" / "report.md").write_text(json.dumps({"schema": "parallel-backprop/study/1"}))
    return ["report", tmp / "r" / "report.md", "--out", tmp / "r"]


CLASHES = {
    "save and metrics-json the same file": (same_outputs, "also given as --metrics-json; "
                                                          "expected different files"),
    "metrics-json a link to save": (linked_outputs, "also given as --metrics-json"),
    "metrics-json a hard link to save": (hard_linked_outputs, "also given as --metrics-json"),
    "save onto the kdd file": (save_onto_kdd_file, "also an input (--kdd-file); expected an "
                                                   "output that is not an input"),
    "metrics-json onto the test file": (save_onto_test_file, "also an input (--test-file)"),
    "save onto a file of --data-dir": (save_into_the_data_folder,
                                       "also an input (mnist data file t10k-labels-idx1"),
    "save onto a checkpoint's name": (save_onto_a_checkpoint_name,
                                      "a name the checkpoints use in the checkpoint folder"),
    "predict output onto its input": (predict_onto_its_input, "--output", "also an input "
                                                                          "(--input)"),
    "tune out onto the data": (tune_onto_the_data, "--out", "also an input (--kdd-file)"),
    "report onto its study": (report_onto_its_study, "also an input (STUDY.json)"),
}


@pytest.mark.parametrize("case", sorted(CLASHES))
def test_output_named_twice_or_onto_an_input_is_refused(case, tmp_path, capsys):
    make, *expected = CLASHES[case]
    argv = make(tmp_path)
    capsys.readouterr()
    refused_and_unchanged(argv, tmp_path, capsys, *expected)


# ---- case 4: a full disk, and OSErrors nobody named ---------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 200 KB tmpfs, unmounted afterwards."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(disk)],
                             capture_output=True, text=True, timeout=TIMEOUT)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], timeout=TIMEOUT, check=True)


def fill(disk: Path) -> None:
    """Fill ``disk`` to the last byte (unbuffered writes, ever smaller)."""
    fd = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    try:
        for size in (65536, 4096, 1):
            while True:
                try:
                    os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
                    break
    finally:
        os.close(fd)


@pytest.mark.parametrize("option", ["--save", "--metrics-json"])
def test_full_disk_is_one_line_and_the_previous_file_stays(option, tiny_disk, capsys):
    previous = tiny_disk / "out"
    previous.write_bytes(b"what an earlier run wrote")
    fill(tiny_disk)
    refused_and_unchanged(["train", *SMALL, option, previous], tiny_disk, capsys,
                          f"{option} {previous}: no space left on device (the previous file "
                          "is unchanged)")


def test_full_disk_while_checkpointing_keeps_the_earlier_checkpoints(tiny_disk, capsys):
    folder = tiny_disk / "ck"
    assert run(["train", *SMALL, "--checkpoint-dir", folder], capsys)[0] == 0
    fill(tiny_disk)
    # The lock file's content is the holder's pid, rewritten by every run.
    refused_and_unchanged(["train", "--resume", folder, "--epochs", "2", "--quiet"], tiny_disk,
                          capsys, "checkpoint", "no space left on device (nothing was written)",
                          skip=(".lock",))
    assert latest_checkpoint(folder).state.epoch == 2


def test_full_disk_for_predictions(tiny_disk, tmp_path, capsys):
    assert run(["train", *SMALL, "--save", tmp_path / "m.npz"], capsys)[0] == 0
    fill(tiny_disk)
    refused_and_unchanged(["predict", tmp_path / "m.npz", "--dataset", "synthetic",
                           "--samples", "300", "--features", "6", "--classes", "3",
                           "--output", tiny_disk / "p.csv"], tiny_disk, capsys,
                          f"--output {tiny_disk / 'p.csv'}: no space left on device "
                          "(nothing was written)")


def test_an_oserror_nobody_named_is_one_line(monkeypatch, tmp_path, capsys):
    def failing(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO), "/somewhere/file")

    monkeypatch.setattr("parallel_backprop.cli.train.train", failing)
    refused_and_unchanged(["train", *SMALL], tmp_path, capsys,
                          "pbp: error: /somewhere/file: input/output error")


# ---- case 5: two runs, one checkpoint folder -----------------------------------------------

LONG = ["--dataset", "synthetic", "--samples", "50000", "--features", "20", "--classes", "3",
        "--net", "20-32-3", "--batch-size", "1", "--epochs", "4", "--quiet"]


def pbp(*argv):
    return subprocess.Popen([sys.executable, "-m", "parallel_backprop.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_runs_started_together_on_one_folder(tmp_path):
    folder = tmp_path / "runs"
    argv = ["train", *LONG, "--checkpoint-dir", folder, "--checkpoint-every", "500"]
    processes = [pbp(*argv), pbp(*argv)]
    try:
        # The loser is refused when it reaches the folder, long before the winner ends.
        deadline = time.monotonic() + TIMEOUT
        while all(p.poll() is None for p in processes) and time.monotonic() < deadline:
            time.sleep(0.02)
        loser = next(p for p in processes if p.poll() is not None)
        winner = next(p for p in processes if p is not loser)
        _, err = loser.communicate(timeout=TIMEOUT)
        one_clear_line(loser.returncode, err,
                       f"checkpoint folder {folder}: in use by another run (pid {winner.pid})")
        while not checkpoint_paths(folder) and time.monotonic() < deadline:
            time.sleep(0.02)     # the winner is training: its Ctrl-C writes a checkpoint
        winner.send_signal(signal.SIGINT)
        _, err = winner.communicate(timeout=TIMEOUT)
        assert winner.returncode == 130, err
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert latest_checkpoint(folder).state.global_step > 0
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_a_held_folder_is_refused_and_free_once_its_holder_dies(tmp_path, capsys):
    folder = tmp_path / "runs"
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time\n"
         "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)\n"
         "fcntl.flock(fd, fcntl.LOCK_EX)\nos.write(fd, b'%d\\n' % os.getpid())\n"
         "print('held', flush=True)\ntime.sleep(120)\n", str(folder / ".lock")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        refused_and_unchanged(["train", *SMALL, "--checkpoint-dir", folder], tmp_path, capsys,
                              f"in use by another run (pid {holder.pid}); wait for it to end")
    finally:
        holder.kill()
        holder.communicate(timeout=TIMEOUT)
    code, _, err = run(["train", *SMALL, "--checkpoint-dir", folder], capsys)
    assert code == 0, err
    assert len(checkpoint_paths(folder)) == 1 and latest_checkpoint(folder).state.epoch == 2


# ---- case 7: a resumed run writes the first run's outputs -----------------------------------

def test_resumed_run_writes_the_outputs_the_first_run_was_given(tmp_path, monkeypatch, capsys):
    first, elsewhere = tmp_path / "first", tmp_path / "elsewhere"
    first.mkdir()
    elsewhere.mkdir()
    monkeypatch.chdir(first)
    code, _, err = run(["train", *SMALL, "--save", "int.npz", "--metrics-json", "int.json",
                        "--checkpoint-dir", "runs"], capsys)
    assert code == 0, err
    (first / "int.npz").unlink()      # as if the run had stopped before writing them
    (first / "int.json").unlink()
    monkeypatch.chdir(elsewhere)      # recorded absolute: the cwd of the resume is irrelevant
    code, out, err = run(["train", "--resume", first / "runs", "--epochs", "2"], capsys)
    assert code == 0, err
    assert f"the model will be saved to {first / 'int.npz'}" in out
    assert len(json.loads((first / "int.json").read_text())["epochs"]) == 2
    assert load_model(first / "int.npz").network.spec == "6-8-3"
    assert list(elsewhere.iterdir()) == []
    # Given again, an output goes where it is now told to.
    code, out, err = run(["train", "--resume", first / "runs", "--epochs", "3", "--save",
                          elsewhere / "other.npz"], capsys)
    assert code == 0, err
    assert f"the model will be saved to {elsewhere / 'other.npz'}" in out
    assert (elsewhere / "other.npz").is_file()
