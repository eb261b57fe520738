"""IDX files: the array format of MNIST and Fashion-MNIST, gzipped or raw.

An IDX file is a 4-byte magic number, one big-endian uint32 per dimension,
then the array in C order, big-endian::

    magic   0x00 0x00 TYPE NDIM      TYPE: 0x08 uint8, 0x09 int8, 0x0B int16,
    dims    NDIM x uint32 (>u4)            0x0C int32, 0x0D float32, 0x0E float64
    data    prod(dims) x TYPE

This module reads and writes that format and nothing else: every problem
with a file (bad magic, truncation, trailing bytes, corrupt gzip) is a
one-line ``DataError`` naming the file. Files are opened by ``io.open_data``:
gzipped or not is decided by their first bytes, never by their name.
"""

from __future__ import annotations

import gzip
import math
import os
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..fileio import atomic_open
from ..resources import check_allocation
from .io import is_gzip, open_data

# Type code -> big-endian dtype of the payload.
IDX_TYPES = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_TYPE_NAMES = ", ".join(f"0x{code:02X} {dtype.newbyteorder('=').name}"
                        for code, dtype in IDX_TYPES.items())

# No IDX file we read is near this (MNIST's largest is 47 MB); a header that
# asks for more is corrupt, and we say so before allocating anything.
MAX_PAYLOAD_BYTES = 2**34

def read_idx(path: str | os.PathLike, *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (gzipped or raw) into an array in native byte order.

    Parameters
    ----------
    path : str or PathLike
        The file.
    ndim : int, optional
        The number of dimensions the caller expects (3 for images, 1 for
        labels); a file with another number is refused.

    Returns
    -------
    ndarray, shape (d0, d1, ...) as in the header, dtype from the type code.

    Raises
    ------
    DataError
        Missing file, bad magic, truncated or over-long payload, absurd
        dimensions, or corrupt gzip data. The message names the file.
    """
    path = Path(path)
    with open_data(path) as stream:
        magic = stream.read(4)
        if len(magic) == 0:
            raise DataError(f"{path}: empty file, expected an IDX file")
        dtype, dims = _read_header(path, stream, magic, ndim)
        nbytes = math.prod(dims) * dtype.itemsize
        if not is_gzip(stream):    # a raw file's size is known: no need to read to find out
            _check_stored(path, dims, nbytes, path.stat().st_size - stream.tell())
        payload = _payload_buffer(path, dims, dtype)
        stored = _read_into(stream, payload)
        if stored == nbytes and stream.read(1):
            if is_gzip(stream):
                # A bit flip in the header shows up as "trailing bytes"; reading
                # on to the gzip checksum names the real problem.
                while stream.read(1 << 20):
                    pass
            raise DataError(f"{path}: trailing bytes after the {nbytes}-byte IDX payload "
                            f"of shape {tuple(dims)}")
    _check_stored(path, dims, nbytes, stored)
    array = payload.view(dtype).reshape(dims)
    if not dtype.isnative:           # in place: the payload is the only copy in memory
        array = array.byteswap(inplace=True).view(dtype.newbyteorder("="))
    return array


def _check_stored(path: Path, dims: list[int], nbytes: int, stored: int) -> None:
    if stored < nbytes:
        raise DataError(f"{path}: truncated IDX data, {max(stored, 0)} bytes of payload, "
                        f"expected {nbytes} for shape {tuple(dims)}")


def _payload_buffer(path: Path, dims: list[int], dtype: np.dtype) -> np.ndarray:
    """An uninitialised uint8 buffer for the payload, once this machine can hold it.

    Uninitialised, so that the OS commits its pages only as data arrive: a
    gzipped file whose header claims more than it holds costs no more
    memory than it holds.
    """
    what = f"{path}: IDX data of shape {tuple(dims)} and type {dtype.newbyteorder('=').name}"
    nbytes = math.prod(dims) * dtype.itemsize
    check_allocation(nbytes, what, DataError)
    try:
        return np.empty(nbytes, np.uint8)
    except MemoryError:
        raise DataError(f"{what}: not enough free memory for its {nbytes:,} bytes") from None


def _read_into(stream, buffer: np.ndarray) -> int:
    """Fill ``buffer`` from ``stream``, in 64 MiB pieces; the count of bytes read.

    Into the one buffer the array will use: reading pieces and joining them
    would hold the payload twice.
    """
    view, filled = memoryview(buffer), 0
    while filled < len(buffer):
        count = stream.readinto(view[filled:filled + (1 << 26)])
        if not count:
            break
        filled += count
    return filled


def _read_header(path: Path, stream, magic: bytes, ndim: int | None):
    """Validate the magic number and dimensions; return (dtype, dims)."""
    if len(magic) < 4:
        raise DataError(f"{path}: {len(magic)}-byte file, too short for an IDX header")
    value = int.from_bytes(magic, "big")
    code, file_ndim = magic[2], magic[3]
    if magic[:2] != b"\0\0" or code not in IDX_TYPES or file_ndim == 0:
        expected = f"0x000008{ndim:02X}" if ndim else "0x0000TTNN"
        raise DataError(
            f"{path}: bad IDX magic number 0x{value:08X}, expected {expected} "
            f"(two zero bytes, a type code among {_TYPE_NAMES}, the number of dimensions)")
    if ndim is not None and file_ndim != ndim:
        raise DataError(f"{path}: IDX array of {file_ndim} dimensions (magic 0x{value:08X}), "
                        f"expected {ndim}")
    header = stream.read(4 * file_ndim)
    if len(header) < 4 * file_ndim:
        raise DataError(f"{path}: truncated IDX header, {4 + len(header)} bytes, expected "
                        f"{4 + 4 * file_ndim} for {file_ndim} dimensions")
    dims = [int(d) for d in np.frombuffer(header, dtype=">u4")]
    dtype = IDX_TYPES[code]
    if math.prod(dims) * dtype.itemsize > MAX_PAYLOAD_BYTES:
        raise DataError(f"{path}: IDX header asks for shape {tuple(dims)} of "
                        f"{dtype.newbyteorder('=').name}, over the {MAX_PAYLOAD_BYTES >> 30} GiB "
                        "limit; the header is corrupt")
    return dtype, dims


def write_idx(path: str | os.PathLike, array: np.ndarray, compress: bool) -> None:
    """Write ``array`` as an IDX file, atomically (temporary file, then rename).

    Parameters
    ----------
    path : str or PathLike
        Destination; replaced only once the whole file is written.
    array : ndarray, shape (d0, ...), 1 to 255 dimensions
        uint8, int8, int16, int32, float32 or float64.
    compress : bool
        Gzip the file (what the published MNIST files are).
    """
    path = Path(path)
    array = np.asarray(array)
    native = {dtype.newbyteorder("="): (code, dtype) for code, dtype in IDX_TYPES.items()}
    if array.dtype.newbyteorder("=") not in native:
        raise DataError(f"{path}: cannot write dtype {array.dtype} as IDX, expected one of "
                        "uint8, int8, int16, int32, float32, float64")
    if not 1 <= array.ndim <= 255 or max(array.shape) >= 2**32:
        raise DataError(f"{path}: cannot write shape {array.shape} as IDX, expected 1 to 255 "
                        "dimensions each below 2**32")
    code, dtype = native[array.dtype.newbyteorder("=")]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = np.ascontiguousarray(array, dtype=dtype).tobytes()
    with atomic_open(path, "wb") as handle:
        if compress:
            # mtime=0: the same array always gives the same bytes.
            with gzip.GzipFile(fileobj=handle, mode="wb", compresslevel=6, mtime=0) as gz:
                gz.write(header + payload)
        else:
            handle.write(header + payload)


def load_idx_pair(images_path: str | os.PathLike,
                  labels_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read an images file and its labels file, checking that they belong together.

    Returns
    -------
    x : ndarray, uint8, shape (n, rows * cols)
        One flattened image per row.
    y : ndarray, int64, shape (n,)
        The labels as read (range checks are the caller's: it knows the classes).
    """
    images = read_idx(images_path, ndim=3)
    labels = read_idx(labels_path, ndim=1)
    if images.dtype != np.uint8:
        raise DataError(f"{images_path}: images of type {images.dtype}, expected uint8 (0x08)")
    if labels.dtype.kind not in "iu":
        raise DataError(f"{labels_path}: labels of type {labels.dtype}, expected integers")
    if len(images) == 0:
        raise DataError(f"{images_path}: holds no images")
    if len(images) != len(labels):
        raise DataError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                        f"{len(labels)} labels; expected the same count")
    n, rows, cols = images.shape
    return images.reshape(n, rows * cols), labels.astype(np.int64)
