"""Checkpoint files: where a training run stands, so that it can continue after a kill.

A checkpoint is an ``.npz`` archive like a model file: the same keys (see
:mod:`.modelio`), read by the same loader that never unpickles anything,
plus the run's position (a :class:`~.trainer.TrainState`) and what is
needed to check that a resumed run is the same run::

    format           "parallel-backprop-checkpoint"   version  int
    params, sizes, activations, loss, class_names, dataset, metadata, prep.*
                     as in a model file
    epoch, step      int64: the epoch in progress (1-based), steps taken in it
    steps_per_epoch  int64
    shuffle_state    str: JSON of the shuffle generator's bit_generator.state
                     at the start of ``epoch``
    loss_total       float64: loss sum over the steps taken in ``epoch``
    train_s          float64: training time spent in ``epoch`` so far
    epochs           str: JSON list of the completed epochs' metrics
    options          str: JSON of the run's options (``pbp train``'s, for --resume)
    fingerprint      str: hash of the training and validation data
    optimizer_buffers  float (k, n_params): the optimizer's state; absent for plain SGD
    optimizer_step   int64: the optimizer's steps taken; absent for plain SGD
    watches          str: JSON {lr_scale, plateau, stopping}: the plateau schedule's and
                     early stopping's records of the validation metric
    best_params      float32 (n_params,): early stopping's best epoch's parameters; absent
                     until there is one
    layout           str: JSON {executor, ranks, threads, hosts}: where the run trained (the
                     hosts of its MPI ranks); informs a resumed run, which may use another

A checkpoint without the last four (an older run's) resumes as plain SGD
with fresh records.

A folder holds ``checkpoint-<global step, 10 digits>.npz`` files. Each is
written atomically (temporary file, fsync, rename, then an fsync of the
folder), so a kill at any moment leaves the previous checkpoints whole; the
newest ``keep`` are kept. A temporary file left by a kill is removed when a
run next opens the folder.

A run holds the folder for its lifetime: an advisory lock (``flock``) on
the file ``.lock`` in it, which also records the holder's process id, so
that a second run given the same folder is refused rather than rotating
away the first one's checkpoints. The kernel releases the lock when the
process ends, however it ends; the file stays (removing it would let two
runs lock two different files) and is never taken for a checkpoint.

The resume policy (``pbp train --resume``) is here too: which options a
checkpoint records (:func:`recorded_options`), which a resumed run takes as
defaults (:func:`resume_defaults`) and may change (``FREE_ON_RESUME``,
checked by :func:`check_resume_options`), and :func:`start_checkpointing`,
which checks a resumed run is the same run and makes the writer. The
outputs (``--save``, ``--metrics-json``) are recorded as absolute paths, so
that a resumed run, from any folder, writes them where the first run would
have; given again, they replace the recorded ones.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import re
import weakref
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import ConfigError, ModelFileError
from .fileio import OutputError, atomic_open, check_distinct, output_folder, same_file
from .modelio import VERSION, Model, model_arrays, model_from_arrays, read_npz
from .network import Network
from .executors import OptimizerState
from .trainer import EpochMetrics, TrainState
from .trainer.watch import Watch

FORMAT = "parallel-backprop-checkpoint"
NAME = re.compile(r"checkpoint-(\d{10})\.npz")
TEMPORARY = re.compile(r"\.checkpoint-\d{10}\.npz\..*\.tmp")
LOCK = ".lock"


@dataclass
class Checkpoint:
    """A checkpoint read back: the run's position and what it was trained on."""

    path: Path
    state: TrainState
    model: Model          # network, params (= state.params), preprocessing, class names
    options: dict         # the run's options as recorded
    fingerprint: str      # data_fingerprint of the run's training and validation data
    layout: dict | None = None   # executor, ranks, threads, hosts of the run that wrote it


def data_fingerprint(*arrays: np.ndarray) -> str:
    """A hash of the arrays' shapes, types and bytes (blake2b, ~1 GB/s: 0.2 s for MNIST)."""
    digest = hashlib.blake2b(digest_size=16)
    for array in arrays:
        array = np.ascontiguousarray(array)
        digest.update(f"{array.shape}{array.dtype.str};".encode())
        digest.update(array.data)
    return digest.hexdigest()


def checkpoint_paths(folder: str | os.PathLike) -> list[Path]:
    """The checkpoint files in ``folder``, oldest (fewest steps) first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if NAME.fullmatch(p.name) and p.is_file()]
    return sorted(found, key=lambda p: p.name)


def remove_temporaries(folder: str | os.PathLike) -> None:
    """Delete temporary files a killed run left half written in ``folder``."""
    for path in Path(folder).iterdir():
        if TEMPORARY.fullmatch(path.name):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()


def prepare_folder(folder: str | os.PathLike, resuming: bool,
                   outputs: dict | None = None) -> tuple[Path, int]:
    """Create ``folder`` if needed, lock it, and check it can take checkpoints now.

    Returns the folder and the descriptor holding its lock (see
    :func:`lock_folder`). A fresh run refuses a folder that already holds
    checkpoints: they belong to another run, which ``--resume`` would
    continue. ``outputs`` (option -> path or None) are refused if the
    checkpoints would replace them or are them.
    """
    folder = output_folder(folder, ("checkpoint-0000000000.npz",), "checkpoint folder")
    check_not_checkpoints(folder, outputs or {})
    lock = lock_folder(folder)
    try:
        existing = checkpoint_paths(folder)
        if existing and not resuming:
            raise ConfigError(
                f"checkpoint folder {folder}: already holds checkpoints of a run (newest "
                f"{existing[-1].name}); continue it with --resume {folder}, or choose another "
                "folder")
        remove_temporaries(folder)
    except BaseException:
        os.close(lock)
        raise
    return folder, lock


def check_not_checkpoints(folder: Path, outputs: dict) -> None:
    """Refuse an output that is a checkpoint or the lock of ``folder``, or will be one."""
    for option, path in outputs.items():
        target = Path(os.path.realpath(path)) if path is not None else None
        if target is None or not same_file(target.parent, folder):
            continue
        if NAME.fullmatch(target.name) or TEMPORARY.fullmatch(target.name) or target.name == LOCK:
            raise ConfigError(f"{option} {path}: a name the checkpoints use in the checkpoint "
                              f"folder {folder}; expected a file the checkpoints leave alone")
    # A hard link to a checkpoint, under any name:
    check_distinct(outputs, {f"checkpoint {p.name}": p for p in checkpoint_paths(folder)})


def lock_folder(folder: Path) -> int:
    """Take ``folder``'s lock for this process; a ConfigError if another run holds it.

    Returns the open descriptor: the lock lasts until it is closed or the
    process ends. The holder's pid is written into the file, for the message.
    """
    try:   # never through a link: the lock is this folder's
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as exc:
        raise ConfigError(f"checkpoint folder {folder}: cannot open its lock file {LOCK} "
                          f"({exc.strerror})") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(f"checkpoint folder {folder}: in use by another run (pid {holder}); "
                          "wait for it to end, or choose another folder") from None
    with contextlib.suppress(OSError):     # the pid only informs; a full disk may refuse it
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class CheckpointWriter:
    """The trainer's ``checkpoint`` callback: writes a state to ``folder`` and rotates.

    Parameters
    ----------
    folder : path
        An existing folder (see :func:`prepare_folder`).
    network, preprocessor, class_names, dataset
        What the checkpoint's model part records.
    options : dict
        The run's options, JSON-serialisable.
    fingerprint : str
        :func:`data_fingerprint` of the training (and validation) data.
    keep : int
        How many of the newest checkpoints to keep.
    enabled : bool
        False on processes that must not write (every MPI rank but the root):
        the call then does nothing, so every process runs the same loop.
    lock : int or None
        The descriptor holding the folder's lock (:func:`lock_folder`), closed
        by :meth:`close` or when the writer is collected.
    """

    def __init__(self, folder: str | os.PathLike, network: Network, preprocessor,
                 class_names: list[str], dataset: str, options: dict, fingerprint: str,
                 keep: int = 3, enabled: bool = True, lock: int | None = None,
                 layout: dict | None = None):
        if not (isinstance(keep, int) and keep >= 1):
            raise ConfigError(f"keep {keep!r} checkpoints: expected a positive integer")
        self.folder = Path(folder)
        self.network, self.preprocessor = network, preprocessor
        self.class_names, self.dataset = list(class_names), dataset
        self.options, self.fingerprint = dict(options), fingerprint
        self.keep, self.enabled = keep, enabled
        self.layout = layout
        self.last_path: Path | None = None
        self._release = weakref.finalize(self, os.close, lock) if lock is not None else None

    def close(self) -> None:
        """Release the folder's lock (once the run writes no more checkpoints)."""
        if self._release is not None:
            self._release()

    def __call__(self, state: TrainState) -> Path | None:
        if not self.enabled:
            return None
        path = self.folder / f"checkpoint-{state.global_step:010d}.npz"
        model = Model(self.network, state.params, self.preprocessor, self.class_names,
                      self.dataset, {})
        arrays = {
            "format": np.array(FORMAT), "version": np.array(VERSION), **model_arrays(model),
            "epoch": np.array(state.epoch, np.int64), "step": np.array(state.step, np.int64),
            "steps_per_epoch": np.array(state.steps_per_epoch, np.int64),
            "shuffle_state": np.array(json.dumps(state.shuffle_state)),
            "loss_total": np.array(state.loss_total, np.float64),
            "train_s": np.array(state.train_s, np.float64),
            "epochs": np.array(json.dumps([asdict(e) for e in state.epochs])),
            "options": np.array(json.dumps(self.options)),
            "fingerprint": np.array(self.fingerprint),
            **run_state_arrays(state),
            **({"layout": np.array(json.dumps(self.layout))} if self.layout else {}),
        }
        try:
            with atomic_open(path, "wb", "checkpoint") as handle:
                np.savez(handle, **arrays)
        except OutputError as exc:   # a full disk: what was checkpointed before still stands
            if not checkpoint_paths(self.folder):
                raise
            raise OutputError(exc.what, exc.path, f"{exc.reason}; the earlier checkpoints are "
                              f"kept: continue with --resume {self.folder}") from None
        _fsync_folder(self.folder)   # the rename itself survives a power cut
        self.last_path = path
        for old in checkpoint_paths(self.folder)[:-self.keep]:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
        return path


def run_state_arrays(state: TrainState) -> dict:
    """The arrays of the state beyond the position: optimizer, watches, best parameters."""
    arrays = {"watches": np.array(json.dumps({
        "lr_scale": state.lr_scale, "plateau": asdict(state.plateau),
        "stopping": asdict(state.stopping)}))}
    if state.optimizer_state is not None:
        arrays["optimizer_buffers"] = state.optimizer_state.buffers
        arrays["optimizer_step"] = np.array(state.optimizer_state.step, np.int64)
    if state.best_params is not None:
        arrays["best_params"] = state.best_params
    return arrays


def run_state_of(arrays: dict, n_params: int, where: str) -> dict:
    """The :class:`TrainState` keywords of :func:`run_state_arrays`'s arrays, checked."""
    state = {}
    if "optimizer_buffers" in arrays:
        buffers, step = arrays["optimizer_buffers"], arrays.get("optimizer_step")
        if (buffers.ndim != 2 or buffers.shape[1] != n_params or buffers.dtype.kind != "f"
                or step is None or step.shape != () or step.dtype.kind not in "iu"):
            raise ModelFileError(f"{where}: optimizer state malformed (buffers "
                                 f"{buffers.shape}, expected (k, {n_params}), and a step)")
        state["optimizer_state"] = OptimizerState(buffers, int(step))
    best = arrays.get("best_params")
    if best is not None:
        if best.shape != (n_params,) or best.dtype != np.float32:
            raise ModelFileError(f"{where}: best_params malformed {best.shape}")
        state["best_params"] = best
    if "watches" in arrays:
        try:
            record = json.loads(str(arrays["watches"][()]))
            state.update(lr_scale=float(record["lr_scale"]),
                         plateau=Watch.from_dict(record["plateau"]),
                         stopping=Watch.from_dict(record["stopping"]))
        except (ValueError, TypeError, KeyError, RecursionError) as exc:
            raise ModelFileError(f"{where}: 'watches' unreadable ({exc})") from None
    return state


def _fsync_folder(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return                       # not possible everywhere (Windows); the rename stands
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and validate one checkpoint file; any problem is a one-line ModelFileError."""
    path = Path(path)
    where = f"checkpoint {path}"
    arrays = read_npz(path, "checkpoint")
    model = model_from_arrays(arrays, where, formats=(FORMAT,))

    def scalar(key: str, kind: str) -> np.ndarray:
        value = arrays.get(key)
        if value is None or value.shape != () or value.dtype.kind not in kind:
            expected = {"iu": "integer", "f": "number", "U": "string"}[kind]
            raise ModelFileError(f"{where}: {key!r} missing or not a single {expected}")
        return value[()]

    def json_value(key: str, expected: type):
        try:
            value = json.loads(str(scalar(key, "U")))
        except (ValueError, RecursionError) as exc:
            raise ModelFileError(f"{where}: {key!r} is not valid JSON ({exc})") from None
        if not isinstance(value, expected):
            raise ModelFileError(f"{where}: {key!r} is not a JSON {expected.__name__}")
        return value

    epoch, step = int(scalar("epoch", "iu")), int(scalar("step", "iu"))
    steps_per_epoch = int(scalar("steps_per_epoch", "iu"))
    loss_total, train_s = float(scalar("loss_total", "f")), float(scalar("train_s", "f"))
    if epoch < 1 or steps_per_epoch < 1 or not 0 <= step < steps_per_epoch:
        raise ModelFileError(f"{where}: position epoch {epoch}, step {step} of "
                             f"{steps_per_epoch} is impossible")
    if not (math.isfinite(loss_total) and math.isfinite(train_s)):
        raise ModelFileError(f"{where}: loss or time so far is not finite")
    shuffle_state = json_value("shuffle_state", dict)
    try:
        np.random.default_rng(0).bit_generator.state = shuffle_state
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ModelFileError(f"{where}: shuffle generator state unusable ({exc})") from None
    try:
        epochs = [EpochMetrics(**record) for record in json_value("epochs", list)]
    except TypeError as exc:
        raise ModelFileError(f"{where}: epoch metrics unreadable ({exc})") from None
    options = json_value("options", dict)
    fingerprint = str(scalar("fingerprint", "U"))
    layout = json_value("layout", dict) if "layout" in arrays else None
    state = TrainState(model.params, epoch, step, shuffle_state, loss_total, train_s, epochs,
                       steps_per_epoch, **run_state_of(arrays, model.params.shape[0], where))
    return Checkpoint(path, state, model, options, fingerprint, layout)


def latest_checkpoint(folder: str | os.PathLike) -> Checkpoint:
    """The newest checkpoint in ``folder``; a ConfigError when there is none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(f"--resume {folder}: no such folder")
    paths = checkpoint_paths(folder)
    if not paths:
        raise ConfigError(f"--resume {folder}: no checkpoint in this folder (checkpoint-*.npz); "
                          "start the run again with --checkpoint-dir")
    try:
        return load_checkpoint(paths[-1])
    except ModelFileError as exc:
        if len(paths) == 1:
            raise
        raise ModelFileError(f"{exc}; remove it to resume from the one before, "
                             f"{paths[-2].name}") from None


def check_same_run(checkpoint: Checkpoint, network: Network, fingerprint: str) -> None:
    """Refuse to resume ``checkpoint`` with another network or other data."""
    saved = checkpoint.model.network
    if saved != network:
        raise ConfigError(
            f"checkpoint {checkpoint.path}: net {saved.spec} ({', '.join(saved.activations)}; "
            f"{saved.loss}), but this run builds {network.spec} "
            f"({', '.join(network.activations)}; {network.loss}); resume with the same network")
    if checkpoint.fingerprint != fingerprint:
        raise ConfigError(
            f"checkpoint {checkpoint.path}: the training data differ from the checkpointed "
            "run's (other files, --limit, --seed or preprocessing); resume with the same data")


# ---- the resume policy of ``pbp train --resume`` ------------------------------------

NOT_RECORDED = frozenset({"quiet", "checkpoint_dir", "checkpoint_every", "keep_checkpoints",
                          "resume", "ranks", "comm_timeout", "hostfile", "restarts"})
"""Options of ``pbp train`` that do not define the run: never recorded in a checkpoint."""

OUTPUTS = frozenset({"save", "metrics_json"})
"""Recorded options naming the run's outputs: absolute paths, which a resumed
run writes unless given others."""

FREE_ON_RESUME = frozenset({"data_dir", "kdd_file", "test_file", "train_file", "target_file",
                            "epochs", "blas"}) | OUTPUTS
"""Recorded options a resumed run may change: where the data are (the data
themselves are checked by fingerprint), how many epochs to train in all,
where the outputs go, and the BLAS (it changes rounding, not the method: a
run may continue on a machine with another library)."""


def recorded_options(options: dict) -> dict:
    """The options (parameter name -> value) that define a run, as plain JSON values.

    Paths are text; outputs are made absolute (a resumed run may start elsewhere).
    """
    def plain(name: str, value):
        if value is not None and name in OUTPUTS:
            return os.path.abspath(value)
        return str(value) if isinstance(value, Path) else value

    return {name: plain(name, value) for name, value in options.items()
            if name not in NOT_RECORDED}


def resume_defaults(checkpoint: Checkpoint) -> dict:
    """The checkpointed run's options that a resumed run takes as its defaults (the set ones).

    A run recorded before presets existed trained with the seed's settings.
    """
    return {"preset": "seed",
            **{name: value for name, value in checkpoint.options.items() if value is not None}}


def check_resume_options(checkpoint: Checkpoint, options: dict) -> None:
    """Refuse options given again with --resume that differ from the checkpointed run's.

    ``options``: the resumed run's, parameter name -> value; those in
    ``FREE_ON_RESUME`` may differ.
    """
    now = recorded_options(options)
    differ = [f"--{name.replace('_', '-')} {now.get(name)} (the run used {value})"
              for name, value in checkpoint.options.items()
              if name not in FREE_ON_RESUME and name in now and now[name] != value]
    if differ:
        raise ConfigError(f"--resume {checkpoint.path.parent}: {'; '.join(differ)}; leave "
                          "those options out to continue the checkpointed run as it was")


def start_checkpointing(checkpoint: Checkpoint | None, folder: str | os.PathLike,
                        network: Network, data, options: dict, *, keep: int = 3,
                        enabled: bool = True, layout: dict | None = None,
                        ) -> tuple[TrainState | None, CheckpointWriter]:
    """The state to resume from (None for a fresh run) and the writer of a run's checkpoints.

    ``checkpoint``: the one resumed (checked to be the same network and
    data), or None. ``data``: a :class:`~.data.Dataset`. ``options``: the
    run's, recorded in every checkpoint (see :func:`recorded_options`).
    Every process gets a writer, so that all run the same loop; only an
    ``enabled`` one (rank 0 under MPI) prepares and locks the folder and
    writes; close the writer at the end of the run to release the lock.
    ``layout``: where the run trains (see :func:`layout_change`), recorded.
    """
    fingerprint = data_fingerprint(data.x_train, data.y_train, data.x_val, data.y_val)
    if checkpoint is not None:
        check_same_run(checkpoint, network, fingerprint)
    lock = None
    if enabled:   # resuming into the checkpoint's own folder; any other must hold no run
        same = (checkpoint is not None
                and Path(folder).resolve() == checkpoint.path.parent.resolve())
        outputs = {f"--{name.replace('_', '-')}": options.get(name) for name in sorted(OUTPUTS)}
        folder, lock = prepare_folder(folder, resuming=same, outputs=outputs)
    writer = CheckpointWriter(folder, network, data.preprocessor, data.class_names, data.name,
                              recorded_options(options), fingerprint, keep=keep, enabled=enabled,
                              lock=lock, layout=layout)
    return (None if checkpoint is None else checkpoint.state), writer


def layout_change(checkpoint: Checkpoint, layout: dict) -> str | None:
    """One line saying how ``layout`` differs from the checkpointed run's; None if it does not.

    The batch is global, so a run resumed on other ranks or threads takes
    the same steps (up to the order of float additions).
    """
    before = checkpoint.layout
    if not before or all(before.get(key) == layout.get(key) for key in ("ranks", "threads")):
        return None

    def said(where: dict) -> str:
        hosts = sorted(set(where.get("hosts") or ()))
        return (f"{where.get('ranks')} rank{'s' * (where.get('ranks') != 1)} x "
                f"{where.get('threads')} thread{'s' * (where.get('threads') != 1)}"
                + (f" on {', '.join(hosts)}" if hosts else ""))

    return (f"the checkpointed run trained on {said(before)}, this one on {said(layout)}; "
            "the global batch is unchanged, so it takes the same steps")
