"""Reading data files: gzipped or plain, and one-line errors that name the file.

Every reader in this package (IDX, KDD CSV, a user's CSV) opens its file with
``open_data``: whether the file is gzipped is decided by its first two bytes
(0x1f 0x8b), never by its name, and a missing file, an unreadable one or a
corrupt gzip stream becomes a ``DataError`` of one line that names the file.
"""

from __future__ import annotations

import contextlib
import gzip
import zlib
from pathlib import Path

from ..errors import DataError
from ..fileio import one_line

GZIP_MAGIC = b"\x1f\x8b"
# What a corrupt or truncated gzip stream (or a failing disk) raises while being read.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error, OSError)


def read_error(path: Path, gzipped: bool, exc: BaseException) -> DataError:
    """The one-line error for a failed read of ``path``."""
    what = "corrupt or truncated gzip data" if gzipped else "cannot read"
    return DataError(f"{path}: {what} ({one_line(exc)})")


def check_file(path: Path) -> None:
    """Raise a one-line DataError unless ``path`` is an existing regular file."""
    if not path.exists():
        raise DataError(f"{path}: file not found")
    if not path.is_file():
        raise DataError(f"{path}: is not a file")


def is_gzip(stream) -> bool:
    """Whether a stream from ``open_data`` decompresses its file."""
    return isinstance(stream, gzip.GzipFile)


@contextlib.contextmanager
def open_data(path: Path):
    """Open ``path`` for binary reading, through gzip when its first bytes say so.

    Yields the stream to read. Opening fails with a one-line DataError (file
    missing, not a file, cannot be opened), and so does any read error inside
    the block (corrupt gzip data, an I/O error); the DataErrors the block
    raises itself pass unchanged.
    """
    check_file(path)
    try:
        raw = open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot open ({one_line(exc)})") from None
    stream = raw
    try:
        with raw:
            magic = raw.read(2)
            raw.seek(0)
            if magic == GZIP_MAGIC:
                stream = gzip.GzipFile(fileobj=raw, mode="rb")
            with stream:
                yield stream
    except GZIP_ERRORS as exc:
        raise read_error(path, stream is not raw, exc) from None
