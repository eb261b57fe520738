"""Checked downloads: one file, several mirrors, a published checksum.

``fetch`` asks pooch for the file from each mirror in turn. Pooch streams
into a temporary file next to the destination and renames it only when the
checksum matches, so a failed or forged download never takes the file's
name; a mirror that is down, answers with an error, or serves a file with
the wrong checksum is skipped. When every mirror fails the error says which
file, where it was tried, why the last try failed and what to do.
"""

from __future__ import annotations

import contextlib
import logging
import re
from pathlib import Path

import pooch

from ..errors import DataError
from ..fileio import one_line

HASH_ALGORITHMS = ("md5", "sha256")


def fetch(filename: str, urls: list[str], known_hash: str, dest_dir: str | Path,
          progress: bool = True) -> Path:
    """Download ``filename`` into ``dest_dir`` from the first mirror that serves it intact.

    Parameters
    ----------
    filename : str
        Name of the file in ``dest_dir``.
    urls : list of str
        Full URLs of the file, tried in order.
    known_hash : str
        ``"md5:<hex>"`` or ``"sha256:<hex>"`` of the file.
    dest_dir : str or Path
        Folder to download into (created if missing).
    progress : bool
        Show a progress bar and pooch's "Downloading ..." line.

    Returns
    -------
    Path of the verified file. A file already there with the right checksum
    is returned without a download.
    """
    algorithm, _, digest = known_hash.partition(":")
    if algorithm not in HASH_ALGORITHMS or not re.fullmatch(r"[0-9a-fA-F]+", digest):
        raise DataError(f"{filename}: checksum {known_hash!r} is not of the form "
                        "'md5:<hex>' or 'sha256:<hex>'")
    if not urls:
        raise DataError(f"{filename}: no download address given")
    dest_dir = Path(dest_dir)
    target = dest_dir / filename
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"{filename}: cannot create the download folder {dest_dir} "
                        f"({one_line(exc)})") from None
    # A file there with the wrong checksum (an interrupted copy, an old
    # version) would be replaced by the download anyway; removing it first
    # guarantees that no bad file is left behind if every mirror fails.
    if target.is_file() and not pooch.file_hash(str(target), algorithm) == digest.lower():
        target.unlink()

    last_error = ""
    with _quiet_pooch(not progress):
        for url in urls:
            try:
                return Path(pooch.retrieve(url, known_hash, fname=filename, path=dest_dir,
                                           progressbar=progress))
            except ValueError as exc:
                # Mostly pooch's checksum mismatch; it has already deleted the download.
                reason = (f"checksum mismatch, expected {known_hash}"
                          if "hash" in str(exc).lower() else one_line(exc))
                last_error = f"{url}: {reason}"
            except OSError as exc:  # requests' errors (connection, HTTP status) included
                last_error = f"{url}: {_summarise(exc)}"
    with contextlib.suppress(FileNotFoundError):
        target.unlink()  # belt and braces: never leave a file that did not verify
    raise DataError(
        f"{filename}: download failed from {len(urls)} mirror(s) ({', '.join(urls)}); "
        f"last error: {last_error}; download it yourself into {dest_dir} "
        "or pass --data-dir")


def _summarise(exc: OSError) -> str:
    """A short reason for a failed request: HTTP status or socket error, not a traceback."""
    response = getattr(exc, "response", None)
    if response is not None and getattr(response, "status_code", None):
        return f"HTTP {response.status_code} {response.reason or ''}".rstrip()
    # requests nests the socket error deep in its message: "[Errno 111] Connection refused".
    errno = re.search(r"\[Errno -?\d+\] [^'\")]+", str(exc))
    if errno:
        return f"{type(exc).__name__} ({errno.group(0).strip()})"
    text = one_line(exc)
    return text if len(text) <= 200 else text[:197] + "..."


@contextlib.contextmanager
def _quiet_pooch(quiet: bool):
    """Silence pooch's log lines for the duration of the block when ``quiet``."""
    logger = pooch.get_logger()
    level = logger.level
    if quiet:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)
