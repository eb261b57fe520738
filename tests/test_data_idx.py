"""IDX reader and writer: round trips, a hand-built reference file, every corruption."""

import gzip
import struct

import numpy as np
import pytest

from parallel_backprop.data import load_idx_pair, read_idx, write_idx
from parallel_backprop.errors import DataError

DTYPES = ["uint8", "int8", "int16", "int32", "float32", "float64"]


def sample(dtype, shape, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    info = np.iinfo(dtype)
    return rng.integers(info.min, info.max, size=shape, endpoint=True).astype(dtype)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_round_trip(tmp_path, dtype, compress):
    array = sample(dtype, (5, 3, 7))
    path = tmp_path / "a.idx"
    write_idx(path, array, compress=compress)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == compress
    back = read_idx(path)
    assert back.dtype == np.dtype(dtype) and back.dtype.isnative
    assert back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    assert back.flags.writeable
    assert [p.name for p in tmp_path.iterdir()] == ["a.idx"]  # no temporary left behind


def test_reads_a_hand_built_file_big_endian(tmp_path):
    # Independent of write_idx: the header and payload laid out by hand.
    values = [1.5, -2.0, 3.25, 1e10, 0.0, -1e-3]
    data = struct.pack(">BBBB", 0, 0, 0x0D, 2) + struct.pack(">II", 2, 3)
    data += struct.pack(">6f", *values)
    path = tmp_path / "hand.idx"
    path.write_bytes(data)
    np.testing.assert_array_equal(read_idx(path), np.array(values, np.float32).reshape(2, 3))
    # And write_idx produces exactly those bytes.
    write_idx(tmp_path / "w.idx", np.array(values, np.float32).reshape(2, 3), compress=False)
    assert (tmp_path / "w.idx").read_bytes() == data


def test_gzip_is_detected_by_content_not_name(tmp_path):
    array = sample("uint8", (4, 2, 2))
    write_idx(tmp_path / "looks-raw.idx", array, compress=True)
    write_idx(tmp_path / "looks-gzipped.gz", array, compress=False)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-raw.idx"), array)
    np.testing.assert_array_equal(read_idx(tmp_path / "looks-gzipped.gz"), array)


def test_write_replaces_existing_file_and_is_deterministic(tmp_path):
    path = tmp_path / "x.gz"
    write_idx(path, sample("uint8", (3, 2, 2), seed=1), compress=True)
    write_idx(path, sample("uint8", (3, 2, 2), seed=2), compress=True)
    first = path.read_bytes()
    write_idx(path, sample("uint8", (3, 2, 2), seed=2), compress=True)
    assert path.read_bytes() == first
    np.testing.assert_array_equal(read_idx(path), sample("uint8", (3, 2, 2), seed=2))


def test_write_refuses_unsupported_dtype(tmp_path):
    with pytest.raises(DataError, match="cannot write dtype complex128"):
        write_idx(tmp_path / "c.idx", np.zeros(3, complex), compress=False)
    assert not (tmp_path / "c.idx").exists()


def raw_idx(array):
    """The raw IDX bytes of a uint8 array (via write_idx's tested layout)."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


IMAGES = sample("uint8", (6, 4, 5))


def write(path, data, compress=False):
    path.write_bytes(gzip.compress(data, mtime=0) if compress else data)
    return path


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_truncated_payload(tmp_path, compress):
    path = write(tmp_path / "t.idx", raw_idx(IMAGES)[:-7], compress)
    with pytest.raises(DataError, match=r"t\.idx: truncated IDX data, 113 bytes of payload, "
                                        r"expected 120 for shape \(6, 4, 5\)"):
        read_idx(path)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gzip"])
def test_trailing_bytes(tmp_path, compress):
    path = write(tmp_path / "t.idx", raw_idx(IMAGES) + b"\0\0", compress)
    with pytest.raises(DataError, match=r"t\.idx: trailing bytes after the 120-byte IDX payload"):
        read_idx(path)


def test_bad_magic(tmp_path):
    path = write(tmp_path / "m.idx", b"\x12\x34\x56\x78" + raw_idx(IMAGES)[4:])
    with pytest.raises(DataError, match=r"m\.idx: bad IDX magic number 0x12345678, "
                                        r"expected 0x00000803"):
        read_idx(path, ndim=3)
    with pytest.raises(DataError, match="bad IDX magic number"):
        read_idx(write(tmp_path / "type.idx", b"\0\0\x07\x01" + b"\0\0\0\0"))
    with pytest.raises(DataError, match="bad IDX magic number"):
        read_idx(write(tmp_path / "ndim0.idx", b"\0\0\x08\0"))


def test_truncated_header_and_empty_file(tmp_path):
    with pytest.raises(DataError, match=r"h\.idx: truncated IDX header, 12 bytes, expected 16"):
        read_idx(write(tmp_path / "h.idx", raw_idx(IMAGES)[:12]))
    with pytest.raises(DataError, match=r"short\.idx: 3-byte file, too short"):
        read_idx(write(tmp_path / "short.idx", b"\0\0\x08"))
    with pytest.raises(DataError, match=r"empty\.idx: empty file"):
        read_idx(write(tmp_path / "empty.idx", b""))
    with pytest.raises(DataError, match=r"empty\.gz: empty file"):
        read_idx(write(tmp_path / "empty.gz", b"", compress=True))


def test_absurd_dimensions_refused_before_allocating(tmp_path):
    header = bytes([0, 0, 0x0E, 3]) + struct.pack(">3I", 2**31, 2**31, 4)
    with pytest.raises(DataError, match=r"huge\.idx: IDX header asks for shape .* over the "
                                        r"16 GiB limit"):
        read_idx(write(tmp_path / "huge.idx", header))


def test_large_claim_in_a_small_file_is_truncation_not_a_huge_allocation(tmp_path):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**16, 2**16, 2)  # 8 GiB, under the limit
    for compress in (False, True):
        path = write(tmp_path / "claim.idx", header + b"\1" * 100, compress)
        with pytest.raises(DataError, match=r"truncated IDX data, 100 bytes of payload, "
                                            r"expected 8589934592"):
            read_idx(path)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match=r"nope\.idx: file not found"):
        read_idx(tmp_path / "nope.idx")
    with pytest.raises(DataError, match="is not a file"):
        read_idx(tmp_path)


def gzipped_images():
    # Incompressible content, so that the deflate stream is long.
    return gzip.compress(raw_idx(sample("uint8", (50, 28, 28))), mtime=0)


@pytest.mark.parametrize("position", [30, 5000, -9, -2],
                         ids=["early", "middle", "crc", "length"])
def test_bit_flip_in_gzip(tmp_path, position):
    data = bytearray(gzipped_images())
    data[position] ^= 0x10
    path = write(tmp_path / "flip.gz", bytes(data))
    with pytest.raises(DataError, match=r"flip\.gz: corrupt or truncated gzip data"):
        read_idx(path)


def test_truncated_gzip(tmp_path):
    data = gzipped_images()
    path = write(tmp_path / "cut.gz", data[:len(data) // 2])
    with pytest.raises(DataError, match=r"cut\.gz: corrupt or truncated gzip data \(EOFError"):
        read_idx(path)


def test_errors_are_one_line(tmp_path):
    data = bytearray(gzipped_images())
    data[5000] ^= 0xFF
    with pytest.raises(DataError) as info:
        read_idx(write(tmp_path / "flip.gz", bytes(data)))
    assert "\n" not in str(info.value)


# --- image and label pairs ---------------------------------------------------------------

def write_pair(tmp_path, images, labels, compress=True):
    write_idx(tmp_path / "img.gz", images, compress=compress)
    write_idx(tmp_path / "lab.gz", labels, compress=compress)
    return tmp_path / "img.gz", tmp_path / "lab.gz"


def test_load_pair_flattens_and_widens(tmp_path):
    labels = np.arange(6, dtype=np.uint8)
    x, y = load_idx_pair(*write_pair(tmp_path, IMAGES, labels))
    assert x.dtype == np.uint8 and x.shape == (6, 20)
    assert y.dtype == np.int64 and y.tolist() == list(range(6))
    np.testing.assert_array_equal(x[3], IMAGES[3].ravel())


def test_pair_count_mismatch(tmp_path):
    images, labels = write_pair(tmp_path, IMAGES, np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"img\.gz holds 6 images but .*lab\.gz holds 5 labels"):
        load_idx_pair(images, labels)


def test_pair_wrong_dimensions(tmp_path):
    images, labels = write_pair(tmp_path, IMAGES, np.zeros(6, np.uint8))
    with pytest.raises(DataError, match=r"lab\.gz: IDX array of 1 dimensions .* expected 3"):
        load_idx_pair(labels, labels)
    with pytest.raises(DataError, match=r"img\.gz: IDX array of 3 dimensions .* expected 1"):
        load_idx_pair(images, images)


def test_pair_wrong_types_and_empty(tmp_path):
    images, labels = write_pair(tmp_path, IMAGES.astype(np.float32), np.zeros(6, np.uint8))
    with pytest.raises(DataError, match=r"img\.gz: images of type float32, expected uint8"):
        load_idx_pair(images, labels)
    images, labels = write_pair(tmp_path, IMAGES, np.zeros(6, np.float64))
    with pytest.raises(DataError, match=r"lab\.gz: labels of type float64, expected integers"):
        load_idx_pair(images, labels)
    images, labels = write_pair(tmp_path, IMAGES[:0], np.zeros(0, np.uint8))
    with pytest.raises(DataError, match=r"img\.gz: holds no images"):
        load_idx_pair(images, labels)
