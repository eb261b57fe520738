"""Writing outputs: atomically, only onto regular files, never onto an input.

The content goes to a temporary file in the destination's folder, is
flushed and fsynced, then renamed over the destination, which POSIX makes
atomic. A failure leaves the previous file untouched and no temporary
behind, and becomes an :class:`OutputError` naming the path and the
reason (a full disk, a read-only file system).

A destination that is a symbolic link is written through: the link's
target is replaced (its temporary file made in the target's folder) and
the link stays a link; messages name the path as given. A destination that
is a directory, a device, a FIFO or a socket is refused, since renaming
over it would replace it, not write into it.

:func:`check_outputs` is the one check a command makes of its outputs
before any work: each can be written, none is named twice, none is one of
the command's inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from .errors import PbpError


class OutputError(PbpError):
    """An output that could not be written: ``what`` (an option) ``path``: ``reason``."""

    def __init__(self, what: str, path: str | os.PathLike, reason: str):
        super().__init__(f"{what} {path}: {reason}")
        self.what, self.path, self.reason = what, Path(path), reason


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb",
                what: str = "output file") -> Iterator[IO]:
    """Open a temporary file that replaces ``path`` (or a link's target) when the block
    ends without error; an OSError while writing becomes an :class:`OutputError`."""
    path = Path(path)
    target = check_writable(path, what)
    existed = target.exists()
    tmp_name = None
    try:
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.",
                                        suffix=".tmp")
        # mkstemp makes the file private (0600); give it the permissions any
        # newly created file gets here, so a model can be shared as usual.
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException as exc:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        # Only errors of this file: one the block raised about another file is its own.
        if isinstance(exc, OSError) and exc.filename in (None, tmp_name, str(target)):
            kept = "the previous file is unchanged" if existed else "nothing was written"
            raise OutputError(what, path, f"{os_reason(exc)} ({kept})") from None
        raise


def os_reason(exc: OSError) -> str:
    """An OSError's reason in words, lower case: 'no space left on device'."""
    text = exc.strerror or (os.strerror(exc.errno) if exc.errno else "") or str(exc)
    return text[:1].lower() + text[1:]


@contextlib.contextmanager
def labelled(what: str) -> Iterator[None]:
    """Name the output written inside the block as ``what`` (an option) in an OutputError."""
    try:
        yield
    except OutputError as exc:
        raise OutputError(what, exc.path, exc.reason) from None


def _umask() -> int:
    mask = os.umask(0)   # the only way to read it is to set it, so set it back at once
    os.umask(mask)
    return mask


# What a path that is not a regular file is, for the message refusing it.
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"),
          (stat.S_ISSOCK, "a socket"))


def check_writable(path: str | os.PathLike, what: str = "output file") -> Path:
    """Raise a one-line error now if ``path`` cannot be written later; the file written.

    That is ``path``, or the target of the symbolic link ``path`` (which
    need not exist yet). Called before long work (training) so that a bad
    ``--save`` path fails in a second rather than after an hour.
    """
    path = Path(path)
    try:
        target = Path(os.path.realpath(path, strict=True))
    except FileNotFoundError:
        target = Path(os.path.realpath(path))     # a new file, or a link to one
    except OSError as exc:                         # a loop of links
        raise PbpError(f"{what} {path}: {os_reason(exc)}, expected a file path") from None
    shown = f"{path} (a link to {target})" if path.is_symlink() else path
    if target.exists():
        mode = target.stat().st_mode
        for test, kind in _KINDS:
            if test(mode):
                raise PbpError(f"{what} {shown}: is {kind}, expected a regular file path")
        if not os.access(target, os.W_OK):
            raise PbpError(f"{what} {shown}: exists and is not writable")
    parent = target.parent if path.is_symlink() else path.parent
    if not parent.is_dir():
        raise PbpError(f"{what} {shown}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PbpError(f"{what} {shown}: folder {parent} is not writable")
    return target


def same_file(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Whether paths ``a`` and ``b`` name one file: links followed, hard links too."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:                  # one of them does not exist (yet)
        return False


def check_distinct(outputs: dict, inputs: dict | None = None) -> None:
    """Refuse an output named twice, or one that is also an input.

    ``outputs`` and ``inputs``: label (an option such as ``--save``) -> path,
    or None where not given. Writing one output would destroy the other, or
    the data the command reads.
    """
    given = [(label, path) for label, path in outputs.items() if path is not None]
    sources = [(label, path) for label, path in (inputs or {}).items() if path is not None]
    for i, (label, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                raise PbpError(f"{label} {path}: also given as {other}; "
                               "expected different files")
        for source, source_path in sources:
            if same_file(path, source_path):
                raise PbpError(f"{label} {path}: also an input ({source}); expected an "
                               "output that is not an input")


def check_outputs(outputs: dict, inputs: dict | None = None) -> None:
    """The check of a command's output files before any work: distinct, not inputs, writable.

    ``outputs``: option -> path or None; ``inputs``: label -> path or None.
    """
    check_distinct(outputs, inputs)
    for option, path in outputs.items():
        if path is not None:
            check_writable(path, option)


def write_json(path: str | os.PathLike, doc, *, indent: int | None = 1,
               what: str = "output file") -> None:
    """Write ``doc`` as JSON to ``path`` atomically (values JSON cannot hold as strings)."""
    with atomic_open(path, "w", what) as handle:
        json.dump(doc, handle, indent=indent, default=str)
        handle.write("\n")


def output_folder(path: str | os.PathLike, outputs: tuple[str, ...] = (),
                  what: str = "--out", inputs: dict | None = None) -> Path:
    """Create the output folder ``path`` and check that each of ``outputs`` can be written in it.

    Called before long work, so that a bad ``--out`` fails at once.
    ``inputs`` (label -> path or None): files the command reads, which
    none of ``outputs`` may be.
    """
    path = Path(path)
    for name in outputs:
        check_distinct({what: path / name}, inputs)
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
