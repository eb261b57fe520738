"""Atomic file writes: a reader (or a crash) never sees half a file.

The content goes to a temporary file in the destination's folder, is
flushed and fsynced, then renamed over the destination, which POSIX makes
atomic. A failure leaves the previous file untouched and no temporary
behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import PbpError


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` when the block ends without error."""
    path = Path(path)
    check_writable(path)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file private (0600); give it the permissions any
        # newly created file gets here, so a model can be shared as usual.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def _umask() -> int:
    mask = os.umask(0)   # the only way to read it is to set it, so set it back at once
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike, what: str = "output file") -> None:
    """Raise a one-line error now if ``path`` cannot be written later.

    Called before long work (training) so that a bad ``--save`` path fails
    in a second rather than after an hour.
    """
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise PbpError(f"{what} {path}: is a directory, expected a file path")
    if not parent.is_dir():
        raise PbpError(f"{what} {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PbpError(f"{what} {path}: folder {parent} is not writable")
    if path.exists() and not os.access(path, os.W_OK):
        raise PbpError(f"{what} {path}: exists and is not writable")


def write_json(path: str | os.PathLike, doc, *, indent: int | None = 1) -> None:
    """Write ``doc`` as JSON to ``path`` atomically (values JSON cannot hold as strings)."""
    with atomic_open(path, "w") as handle:
        json.dump(doc, handle, indent=indent, default=str)
        handle.write("\n")


def output_folder(path: str | os.PathLike, outputs: tuple[str, ...] = (),
                  what: str = "--out") -> Path:
    """Create the output folder ``path`` and check that each of ``outputs`` can be written in it.

    Called before long work, so that a bad ``--out`` fails at once.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise PbpError(f"{what} {path}: is a file, expected a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise PbpError(f"{what} {path}: cannot create the folder ({one_line(exc)})") from None
    for name in outputs:
        check_writable(path / name, what)
    return path


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message with the whitespace folded."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
