"""A user's table files read by ``read_table``: the formats it reads, and every bad file as
one line naming it.

- good: CSV with and without a header (detected or forced), TSV, a delimiter
  sniffed from the rows, gzip and bz2 recognised by content whatever the name,
  quoted fields holding commas and newlines, a byte-order mark, missing-value
  marks, Parquet, .npz with x and y, .npy features with their targets from a
  second file; files beyond the sampled head (types fixed from the head,
  relaxed when a later row needs it);
- bad: missing, a folder, empty, header only, uneven rows (numbered, also far
  into the file), corrupt or truncated gzip, corrupt Parquet, an .npz without
  x, wrong dimensions, bytes that are not UTF-8, duplicate column names, a
  binary file, a spreadsheet, and pyarrow not installed.
"""

import bz2
import gzip
import io
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow", reason="the tables extra (pyarrow) is not installed")
import pyarrow.parquet as pq  # noqa: E402

from parallel_backprop.data import tables  # noqa: E402
from parallel_backprop.data.tables import read_table, read_xy_pair, table_columns  # noqa: E402
from parallel_backprop.errors import DataError  # noqa: E402

SMALL = b"a,b,c,d\n1,2.5,x,0\n3,4.5,y,1\n5,6.5,x,0\n"


def write(path, data: bytes):
    path.write_bytes(data)
    return path


def long_csv(rows: int, extra: bytes = b"") -> bytes:
    """A header and ``rows`` rows, more than the head read to decide types, then ``extra``."""
    body = "".join(f"{i},{i * 0.5},c{i % 3},{i % 2}\n" for i in range(rows))
    return b"id,value,kind,label\n" + body.encode() + extra


LONG_ROWS = 70_000      # about 1.4 MB: beyond tables.HEAD_BYTES


def refused(path, *expected, **options) -> str:
    """read_table's one-line DataError for ``path``, naming the option and the file."""
    with pytest.raises(DataError) as caught:
        read_table(path, **options)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--train-file {path}: "), message
    for text in expected:
        assert text in message, message
    return message


# -- good files --------------------------------------------------------------------------


def test_csv_with_a_header_gives_named_typed_columns(tmp_path):
    table = read_table(write(tmp_path / "d.csv", SMALL))
    assert table.column_names == ["a", "b", "c", "d"]
    assert table.column("a").to_pylist() == [1, 3, 5]
    assert table.column("c").to_pylist() == ["x", "y", "x"]
    assert [str(t) for t in table.schema.types] == ["int64", "double", "string", "int64"]


def test_without_a_header_columns_are_numbered(tmp_path):
    table = read_table(write(tmp_path / "d.csv", b"1,2.5,x\n3,4.5,y\n"))
    assert table.column_names == ["0", "1", "2"]
    assert table.num_rows == 2


def test_header_option_overrides_detection(tmp_path):
    path = write(tmp_path / "d.csv", b"a,b\nc,d\ne,f\n")
    assert read_table(path, header=False).column("0").to_pylist() == ["a", "c", "e"]
    assert read_table(path, header=True).column_names == ["a", "b"]
    numbers = write(tmp_path / "n.csv", b"1,2\n3,4\n")
    assert read_table(numbers, header=True).column_names == ["1", "2"]


@pytest.mark.parametrize("data, header", [
    (b"name,colour\nalice,red\nbob,blue\n", True),      # text only: names not repeated below
    (b"red,alice\nblue,bob\nred,carol\n", False),        # text only: "red" repeats
    (b"x,1\ny,2\n", False),                              # a number in the first row
])
def test_header_detection_on_text(tmp_path, data, header):
    table = read_table(write(tmp_path / "d.csv", data))
    assert (table.column_names[0] != "0") == header


@pytest.mark.parametrize("name, compress", [
    ("d.csv", gzip.compress), ("d.csv.gz", gzip.compress), ("d", gzip.compress),
    ("d.csv", bz2.compress), ("d.csv.bz2", bz2.compress),
])
def test_compressed_text_is_recognised_by_content(tmp_path, name, compress):
    table = read_table(write(tmp_path / name, compress(SMALL)))
    assert table.column_names == ["a", "b", "c", "d"] and table.num_rows == 3


@pytest.mark.parametrize("name, data", [
    ("d.tsv", b"a\tb\n1\t2,5\n"),           # TSV by extension (a comma inside a field)
    ("d.tsv.gz", gzip.compress(b"a\tb\n1\t2,5\n")),
    ("d.txt", b"a;b\n1;2,5\n"),             # semicolons sniffed
    ("d.csv", b"a|b\n1|2,5\n"),             # the extension's comma does not split evenly
])
def test_delimiter_from_extension_or_sniffed(tmp_path, name, data):
    table = read_table(write(tmp_path / name, data))
    assert table.column_names == ["a", "b"]
    assert table.column("b").to_pylist() == ["2,5"]


def test_quoted_fields_hold_commas_quotes_and_newlines(tmp_path):
    data = b'"first\nname",note,n\n"Smith, J","said ""hi""\nthen left",1\nLee,"",2\n'
    table = read_table(write(tmp_path / "d.csv", data))
    assert table.column_names == ["first\nname", "note", "n"]
    assert table.column("first\nname").to_pylist() == ["Smith, J", "Lee"]
    assert table.column("note").to_pylist() == ['said "hi"\nthen left', None]
    assert table.column("n").to_pylist() == [1, 2]


def test_byte_order_mark_is_skipped(tmp_path):
    table = read_table(write(tmp_path / "d.csv", b"\xef\xbb\xbf" + SMALL))
    assert table.column_names[0] == "a"
    assert read_table(write(tmp_path / "n.csv", b"\xef\xbb\xbf1,2\n")).num_rows == 1


def test_missing_value_marks_are_nulls(tmp_path):
    table = read_table(write(tmp_path / "d.csv", b"a,b,s\n1,,x\nNA,2.5,?\n?,3.5,\n"))
    assert table.column("a").to_pylist() == [1, None, None]
    assert table.column("b").to_pylist() == [None, 2.5, 3.5]
    assert table.column("s").to_pylist() == ["x", None, None]


def test_an_empty_header_field_is_named_by_its_position(tmp_path):
    table = read_table(write(tmp_path / "d.csv", b",a,b\n0,1,2\n1,3,4\n"))
    assert table.column_names == ["0", "a", "b"]


def test_parquet(tmp_path):
    path = tmp_path / "d.data"          # by its magic bytes, whatever the name
    pq.write_table(pa.table({"x": [1.0, 2.0], "label": ["a", "b"]}), path)
    table = read_table(path)
    assert table.column_names == ["x", "label"] and table.num_rows == 2
    assert table_columns(path) == ["x", "label"]


@pytest.mark.parametrize("y, names", [
    (None, ["0", "1"]),
    (np.array([0, 1, 0]), ["0", "1", "y"]),
    (np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0]]), ["0", "1", "y0", "y1"]),
    (np.array(["cat", "dog", "cat"]), ["0", "1", "y"]),
])
def test_npz_with_x_and_y(tmp_path, y, names):
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, **({} if y is None else {"y": y}))
    table = read_table(path)
    assert table.column_names == names
    assert table.column("1").to_pylist() == [1.0, 3.0, 5.0]
    if y is not None:
        assert table.column(names[2]).to_pylist() == (y if y.ndim == 1 else y[:, 0]).tolist()


def test_npy_features_with_targets_from_a_second_file(tmp_path):
    x = np.arange(8, dtype=np.float64).reshape(4, 2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.array([1, 0, 1, 1]))
    write(tmp_path / "y.csv", b"price\n1.5\n2.5\n3.5\n4.5\n")
    table = read_xy_pair(tmp_path / "x.npy", tmp_path / "y.npy")
    assert table.column_names == ["0", "1", "y"]
    assert table.column("y").to_pylist() == [1, 0, 1, 1]
    table = read_xy_pair(tmp_path / "x.npy", tmp_path / "y.csv")
    assert table.column("y").to_pylist() == [1.5, 2.5, 3.5, 4.5]


def test_a_pair_must_agree(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((4, 2)))
    np.save(tmp_path / "y.npy", np.zeros(3))
    with pytest.raises(DataError, match=r"--target-file .*y.npy: 3 rows of targets for the 4"):
        read_xy_pair(tmp_path / "x.npy", tmp_path / "y.npy")
    write(tmp_path / "x.csv", b"a,y\n1,2\n3,4\n5,6\n")
    with pytest.raises(DataError, match="has a column named 'y'"):
        read_xy_pair(tmp_path / "x.csv", tmp_path / "y.npy")


def test_table_columns_reads_only_the_names(tmp_path):
    assert table_columns(write(tmp_path / "d.csv", SMALL)) == ["a", "b", "c", "d"]
    assert table_columns(write(tmp_path / "n.csv", b"1,2\n")) == ["0", "1"]


# -- files beyond the head ---------------------------------------------------------------


def test_a_long_file_has_its_types_from_the_head(tmp_path):
    path = write(tmp_path / "d.csv", long_csv(LONG_ROWS))
    assert path.stat().st_size > tables.HEAD_BYTES
    table = read_table(path)
    assert table.num_rows == LONG_ROWS
    assert [str(t) for t in table.schema.types] == ["int64", "float", "string", "int64"]
    assert table.column("value")[LONG_ROWS - 1].as_py() == (LONG_ROWS - 1) * 0.5


@pytest.mark.parametrize("late_row, types", [
    (b"1,2,c1,0.5\n", ["int64", "float", "string", "float"]),   # an integer column's decimal
    (b"1,oops,c1,0\n", ["int64", "string", "string", "int64"]),  # text in a number column
])
def test_a_late_row_that_does_not_fit_relaxes_its_column(tmp_path, late_row, types):
    table = read_table(write(tmp_path / "d.csv", long_csv(LONG_ROWS, late_row)))
    assert table.num_rows == LONG_ROWS + 1
    assert [str(t) for t in table.schema.types] == types


def test_progress_bar_only_on_a_terminal(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    path = write(tmp_path / "d.csv", long_csv(LONG_ROWS))
    for terminal, shown in ((io.StringIO(), False), (Terminal(), True)):
        monkeypatch.setattr(sys, "stderr", terminal)
        assert read_table(path, progress=True).num_rows == LONG_ROWS
        assert ("d.csv" in terminal.getvalue()) == shown
    monkeypatch.setattr(sys, "stderr", Terminal())
    read_table(path)
    assert sys.stderr.getvalue() == ""


# -- bad files ---------------------------------------------------------------------------


def test_missing_file_and_folder(tmp_path):
    refused(tmp_path / "nope.csv", "file not found")
    refused(tmp_path, "is a directory")


@pytest.mark.parametrize("data", [b"", b"\n\n\n", b"\xef\xbb\xbf", gzip.compress(b"")])
def test_empty_file(tmp_path, data):
    refused(write(tmp_path / "d.csv", data), "empty file")


def test_header_only(tmp_path):
    refused(write(tmp_path / "d.csv", b"a,b,c\n"), "no data rows (only the header: a, b, c)")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"a": pa.array([], pa.int64())}), path)
    assert refused(path).endswith(": no data rows")


def test_uneven_rows_are_numbered(tmp_path):
    refused(write(tmp_path / "d.csv", b"a,b,c,d\n1,2,3,4\n5,6,7,8,9\n"),
            "row 3 has 5 fields, expected 4")
    refused(write(tmp_path / "n.csv", b"1,2,3,4\n1,2,3,4\n1,2,3\n"),
            "row 3 has 3 fields, expected 4")


def test_an_uneven_row_far_into_the_file_is_numbered(tmp_path):
    path = write(tmp_path / "d.csv", long_csv(LONG_ROWS, b"1,2,3,4,5\n"))
    refused(path, f"row {LONG_ROWS + 2} has 5 fields, expected 4")
    gzipped = write(tmp_path / "d.csv.gz", gzip.compress(path.read_bytes()))
    with pytest.raises(DataError, match=f"row {LONG_ROWS + 2} has 5 fields"):
        read_table(gzipped)


@pytest.mark.parametrize("data", [
    gzip.compress(SMALL)[:20],                      # truncated
    b"\x1f\x8b" + bytes(range(256)) * 4,            # gzip magic, then garbage
])
def test_corrupt_gzip(tmp_path, data):
    refused(write(tmp_path / "d.csv", data), "corrupt or truncated gzip data")


def test_corrupt_parquet(tmp_path):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"x": list(range(100))}), path)
    refused(write(path, path.read_bytes()[:-30]), "not a readable Parquet file")
    refused(write(tmp_path / "e.parquet", SMALL), "not a Parquet file")


def test_npz_without_x(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((2, 2)))
    refused(path, "without an array named 'x' (it holds: features)")


@pytest.mark.parametrize("arrays, expected", [
    ({"x": np.zeros((4, 2, 2))}, "x of shape (4, 2, 2), expected (n, d)"),
    ({"x": np.zeros((4, 0))}, "x of shape (4, 0)"),
    ({"x": np.zeros((4, 2)), "y": np.zeros(3)}, "y has 3 rows for the 4 rows of x"),
    ({"x": np.zeros((4, 2)), "y": np.zeros((4, 2, 2))}, "y of shape (4, 2, 2)"),
    ({"x": np.zeros((4, 2), dtype=complex)}, "x of type complex128, expected numbers"),
    ({"x": np.zeros((0, 2))}, "no data rows"),
])
def test_npz_of_wrong_dimensions(tmp_path, arrays, expected):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    refused(path, expected)


def test_npy_bad(tmp_path):
    np.save(tmp_path / "d.npy", np.zeros((2, 3, 4)))
    refused(tmp_path / "d.npy", "the array of shape (2, 3, 4)")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    refused(tmp_path / "o.npy", "pickled objects")
    refused(write(tmp_path / "t.npy", b"1,2\n"), "not a valid .npy file")


def test_bytes_that_are_not_utf8(tmp_path):
    refused(write(tmp_path / "d.csv", b"a,b\n1,x\n2,caf\xe9\n"), "line 3", "not UTF-8")
    late = long_csv(LONG_ROWS, b"1,2,caf\xe9,0\n")
    refused(write(tmp_path / "late.csv", late), f"row {LONG_ROWS + 2}, column 'kind'",
            "not UTF-8")


def test_duplicate_column_names(tmp_path):
    refused(write(tmp_path / "d.csv", b"a,b,a\n1,2,3\n"),
            "the column name 'a' appears twice (columns 1 and 3)")
    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"]), path)
    refused(path, "appears twice")


def test_binary_files(tmp_path):
    refused(write(tmp_path / "d.csv", bytes(range(256))), "a binary file")
    refused(write(tmp_path / "d.csv", "a,b\n1,2\n".encode("utf-16")), "a binary file")
    refused(write(tmp_path / "d.xlsx", b"PK\x03\x04" + bytes(100)), "a spreadsheet")


def test_without_pyarrow_one_line_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(DataError, match=r"pyarrow: pip install -e '\.\[tables\]'"):
        read_table(write(tmp_path / "d.csv", SMALL))
