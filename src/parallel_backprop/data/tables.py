"""A user's tables as Apache Arrow tables: CSV and TSV, Parquet, ``.npz`` and ``.npy``.

``read_table`` is the one reader behind ``--train-file``, ``--test-file``,
``--target-file`` and ``pbp predict --input``. What a file holds is decided
by its first bytes, never by its name alone:

- compressed text (gzip, bz2, zstd) is decompressed whatever the name: a
  gzipped ``data.csv`` reads;
- Parquet: the magic ``PAR1`` (or the extension .parquet / .pq);
- ``.npz``: an array ``x`` (n, d) -> columns "0".."d-1", and an optional
  ``y`` (n,) -> column "y", or (n, k) -> "y0".."y{k-1}";
- ``.npy``: a matrix (n, d) -> columns "0".."d-1", a vector (n,) -> "0".
  Features in one file and targets in another: ``read_xy_pair``;
- anything else is delimited UTF-8 text (a byte-order mark is skipped). The
  delimiter: the extension's (.csv comma, .tsv / .tab tab) when the first
  rows agree with it, else the first of comma, tab, semicolon, bar and space
  that splits them into equal rows. Quoted fields may hold the delimiter and
  newlines. Empty fields, pyarrow's markers (NA, NaN, null, ...) and "?" (the
  UCI archive's mark) are missing values (nulls), in text columns too.

``header=None`` detects a header: the first row is one when none of its
fields is a number while some later row holds one (for a table of text only:
when no first-row value appears again in its column). Without a header the
columns are "0", "1", ...; an empty header field is named by its position.

Text is parsed on pyarrow's thread pool, one thread per core. The column
types are inferred from the first MiB and then given to the reader for the
whole file: so it keeps no parsed text for a possible later change of type,
which halves its peak memory; decimals are read as float32 (the network's
precision). Should a later row not fit its column's type (an integer column
holding a decimal further down), the file is read again with that column
inferred over the whole file.

Every problem is one ``DataError`` line naming the file ("--train-file F:
row 7 has 5 fields, expected 4"). Without pyarrow, the line says how to
install it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError, install_hint
from ..fileio import one_line
from ..modelio import read_npy_header, read_npz

HEAD_BYTES = 1 << 20        # what the delimiter, header and column types are decided from
SNIFF_ROWS = 50             # rows of the head the delimiter and header are decided from
RETRIES = 3                 # full reads with a relaxed column type before inferring them all
DELIMITERS = (",", "\t", ";", "|", " ")
EXTENSION_DELIMITERS = {".csv": ",", ".tsv": "\t", ".tab": "\t"}
MISSING_MARKS = ("?",)      # besides pyarrow's own null markers
# First bytes -> what the file is. Text compressed by a codec pyarrow decompresses.
MAGIC = ((b"PAR1", "parquet"), (b"PK", "zip"), (b"\x93NUMPY", "npy"),
         (b"\x1f\x8b", "gzip"), (b"BZh", "bz2"), (b"\x28\xb5\x2f\xfd", "zstd"))
SPREADSHEETS = (".xlsx", ".xls", ".ods")
TEXT_HINT = "expected CSV or TSV text, Parquet, .npz or .npy"


def read_table(path, *, header: bool | None = None, what: str = "--train-file",
               progress: bool = False):
    """The table in ``path`` as a ``pyarrow.Table`` (see the module docstring).

    Parameters
    ----------
    path : str or PathLike
    header : bool or None
        Whether a text file's first row names the columns; None detects it.
        Ignored for Parquet, .npz and .npy.
    what : str
        How the user gave the file (the option's name), first in every message.
    progress : bool
        A progress bar over the bytes read, on standard error when it is a
        terminal (text beyond the first MiB; the rest reads in a moment).

    Returns
    -------
    pyarrow.Table with at least one row and one column, unique column names.
    """
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    kind = _kind(path, where)
    if kind == "parquet":
        table = _read_parquet(path, where)
    elif kind == "zip":
        table = _read_npz(path, where, what)
    elif kind == "npy":
        table = _table_of(_read_npy(path, where), None, where, "the array")
    else:
        table = _read_text(path, where, None if kind == "text" else kind, header, progress)
        if table.num_rows == 0:
            names = ", ".join(table.column_names[:5]) + (", ..." if table.num_columns > 5 else "")
            raise DataError(f"{where}: no data rows (only the header: {names})")
    if table.num_rows == 0:
        raise DataError(f"{where}: no data rows")
    return table


def read_xy_pair(x_path, y_path, *, header: bool | None = None, what: str = "--train-file",
                 target_what: str = "--target-file", progress: bool = False):
    """Features from one file and targets from another, as one table (targets last).

    Both are read with ``read_table`` (any of its formats; ``header`` applies
    to the features, the target file's header is detected). The target
    columns are named "y" (one column) or "y0".."y{k-1}" (k columns), as an
    .npz's ``y``. The two must have the same number of rows.
    """
    features = read_table(x_path, header=header, what=what, progress=progress)
    targets = read_table(y_path, what=target_what, progress=progress)
    where = f"{target_what} {y_path}"
    if targets.num_rows != features.num_rows:
        raise DataError(f"{where}: {targets.num_rows:,} rows of targets for the "
                        f"{features.num_rows:,} rows of {what} {x_path}")
    names = _target_names(targets.num_columns)
    taken = sorted(set(names) & set(features.column_names))
    if taken:
        raise DataError(f"{what} {x_path}: has a column named {taken[0]!r}, the name the "
                        f"targets from {where} take; rename it")
    for name, column in zip(names, targets.columns):
        features = features.append_column(name, column)
    return features


def table_columns(path, header: bool | None = None, what: str = "--input") -> list[str]:
    """The column names ``read_table`` gives ``path``: a text file's start, Parquet's schema."""
    path = Path(path)
    where = f"{what} {path}" if what else str(path)
    kind = _kind(path, where)
    if kind == "parquet":
        return _read_parquet(path, where, names_only=True)
    if kind in ("zip", "npy"):
        return read_table(path, what=what).column_names
    head, whole = _head(path, None if kind == "text" else kind, where)
    return list(_layout(head, whole, path, header, where).names)


# -- what a file is -------------------------------------------------------------------------


def _pyarrow():
    """pyarrow with its csv and parquet modules, or the one line saying how to install it."""
    try:
        import pyarrow
        import pyarrow.csv
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"reading a table needs pyarrow: {install_hint('tables')}") from None
    return pyarrow


def _kind(path: Path, where: str) -> str:
    """"parquet", "zip", "npy", a codec name ("gzip", ...) or "text", after checking the file."""
    if not path.exists():
        raise DataError(f"{where}: file not found")
    if not path.is_file():
        raise DataError(f"{where}: is a directory, expected a file" if path.is_dir()
                        else f"{where}: is not a regular file")
    try:
        with open(path, "rb") as handle:
            magic = handle.read(8)
    except OSError as exc:
        raise DataError(f"{where}: cannot open ({one_line(exc)})") from None
    if not magic:
        raise DataError(f"{where}: empty file, {TEXT_HINT}")
    suffix = path.suffix.lower()
    kind = next((name for start, name in MAGIC if magic.startswith(start)), "text")
    if kind == "zip" and suffix in SPREADSHEETS:
        raise DataError(f"{where}: a spreadsheet; save it as CSV")
    if kind == "text" and suffix in (".parquet", ".pq"):
        raise DataError(f"{where}: not a Parquet file (it does not start with PAR1)")
    if kind == "text" and suffix in (".npy", ".npz"):
        raise DataError(f"{where}: not a valid {suffix} file (no {suffix} header)")
    return kind


# -- Parquet, .npz, .npy ---------------------------------------------------------------------


def _read_parquet(path: Path, where: str, names_only: bool = False):
    """The Parquet file's table (or only its column names, from the schema)."""
    pa = _pyarrow()
    try:
        with pa.parquet.ParquetFile(path) as parquet:
            names = parquet.schema_arrow.names
            _check_names(names, where)
            return list(names) if names_only else parquet.read()
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(f"{where}: not a readable Parquet file ({one_line(exc)})") from None


def _read_npz(path: Path, where: str, what: str):
    arrays = read_npz(path, what=what, error=DataError)
    if "x" not in arrays:
        held = ", ".join(sorted(arrays)) or "no arrays"
        raise DataError(f"{where}: an .npz archive without an array named 'x' (it holds: "
                        f"{held}); expected x (n, d) and optionally y (n,)")
    return _table_of(arrays["x"], arrays.get("y"), where, "x")


def _read_npy(path: Path, where: str) -> np.ndarray:
    try:
        with open(path, "rb") as handle:
            # Refuses, before allocating, object arrays and shapes the file cannot hold.
            read_npy_header(handle, os.fstat(handle.fileno()).st_size, f"{where}: the array",
                            DataError)
            handle.seek(0)
            return np.lib.format.read_array(handle, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{where}: not a valid .npy file ({one_line(exc)})") from None


def _table_of(x: np.ndarray, y: np.ndarray | None, where: str, name: str):
    """Arrays as a table: x's columns "0".."d-1", then y's "y" or "y0".."y{k-1}"."""
    pa = _pyarrow()
    _check_array(x, where, name, "(n, d)")
    if x.ndim == 1:
        x = x[:, None]
    columns = {str(j): x[:, j] for j in range(x.shape[1])}
    if y is not None:
        _check_array(y, where, "y", f"({len(x)},) or ({len(x)}, k)")
        if len(y) != len(x):
            raise DataError(f"{where}: y has {len(y):,} rows for the {len(x):,} rows of x")
        y = y[:, None] if y.ndim == 1 else y
        columns.update(zip(_target_names(y.shape[1]), y.T))
    return pa.table({key: pa.array(np.ascontiguousarray(value))
                     for key, value in columns.items()})


def _check_array(array: np.ndarray, where: str, name: str, expected: str) -> None:
    if array.ndim not in (1, 2) or array.shape[-1] == 0:
        raise DataError(f"{where}: {name} of shape {array.shape}, expected {expected}")
    if array.dtype.kind not in "biufU":
        raise DataError(f"{where}: {name} of type {array.dtype}, expected numbers or text")


def _target_names(count: int) -> list[str]:
    return ["y"] if count == 1 else [f"y{k}" for k in range(count)]


def _check_names(names: list[str], where: str) -> None:
    seen = {}
    for position, name in enumerate(names):
        if name in seen:
            raise DataError(f"{where}: the column name {name!r} appears twice (columns "
                            f"{seen[name] + 1} and {position + 1}); names must be unique")
        seen[name] = position


# -- delimited text --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """How a text file is split: its delimiter, column names and the lines before the data."""

    delimiter: str
    header: bool
    names: tuple[str, ...]
    skip_rows: int          # physical lines before the first data row (the header's)


def _read_text(path: Path, where: str, codec: str | None, header: bool | None, progress: bool):
    pa = _pyarrow()
    head, whole = _head(path, codec, where)
    layout = _layout(head, whole, path, header, where)
    if whole:   # small: parsed from memory, types inferred from all of it
        table = _parse(lambda: _closing(pa.BufferReader(head)), layout, {}, where, codec)
    else:
        table = _parse(lambda: _source(path, codec, progress), layout,
                       _head_types(head, layout), where, codec)
    _check_text(table, layout, where)
    return table


def _head(path: Path, codec: str | None, where: str) -> tuple[bytes, bool]:
    """The first HEAD_BYTES of the (decompressed) text, and whether that is all of it."""
    pa = _pyarrow()
    try:
        with _source(path, codec, progress=False) as stream:
            head = stream.read(HEAD_BYTES + 1)
    except (OSError, pa.ArrowException) as exc:
        raise _read_failed(where, codec, exc) from None
    return head[:HEAD_BYTES], len(head) <= HEAD_BYTES


def _layout(head: bytes, whole: bool, path: Path, header: bool | None, where: str) -> _Layout:
    text = _decode(head, whole, where)
    if not text.strip():
        raise DataError(f"{where}: empty file (no rows), {TEXT_HINT}")
    delimiter, rows, blank = _sniff(text, whole, _text_suffix(path))
    if header is None:
        header = _detect_header(rows)
    first = rows[0]
    if not header:
        return _Layout(delimiter, False, tuple(str(j) for j in range(len(first))), 0)
    names = tuple(name or str(j) for j, name in enumerate(first))
    _check_names(list(names), where)
    # pyarrow skips physical lines, not rows: a quoted name may span several.
    return _Layout(delimiter, True, names, blank + 1 + sum(name.count("\n") for name in first))


def _decode(head: bytes, whole: bool, where: str) -> str:
    """The head as text, refused when it is binary or not UTF-8."""
    if b"\0" in head:
        raise DataError(f"{where}: a binary file (it holds NUL bytes; UTF-16 text does too), "
                        f"{TEXT_HINT} in UTF-8")
    try:
        return head.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if not whole and exc.reason == "unexpected end of data":    # a character cut in two
            return head[:exc.start].decode("utf-8-sig")
        line = head[:exc.start].count(b"\n") + 1
        raise DataError(f"{where}: line {line} holds bytes that are not UTF-8 text "
                        f"({head[exc.start:exc.end]!r}); save the file as UTF-8") from None


def _text_suffix(path: Path) -> str:
    """The extension that says the delimiter: ``data.tsv.gz`` -> ".tsv"."""
    suffixes = [suffix.lower() for suffix in path.suffixes]
    while suffixes and suffixes[-1] in (".gz", ".gzip", ".bz2", ".zst"):
        suffixes.pop()
    return suffixes[-1] if suffixes else ""


def _sniff(text: str, whole: bool, suffix: str) -> tuple[str, list[list[str]], int]:
    """The delimiter, the first rows it splits the head into, and the blank lines before them.

    The extension's delimiter when it splits the rows into equal rows of two
    fields or more, else the first of DELIMITERS that does, else the
    extension's (or a comma), whose reading then names the uneven row.
    """
    preferred = EXTENSION_DELIMITERS.get(suffix)
    candidates = [preferred] * bool(preferred) + [d for d in DELIMITERS if d != preferred]
    for delimiter in candidates:
        rows, blank = _rows(text, delimiter, whole)
        if len({len(row) for row in rows}) == 1 and len(rows[0]) > 1:
            return delimiter, rows, blank
    return (preferred or ",",) + _rows(text, preferred or ",", whole)


def _rows(text: str, delimiter: str, whole: bool) -> tuple[list[list[str]], int]:
    """Up to SNIFF_ROWS complete rows of the head split by ``delimiter``; leading blank lines."""
    rows, blank = [], 0
    try:
        for row in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            if row:
                rows.append(row)
            elif not rows:
                blank += 1
            if len(rows) > SNIFF_ROWS:
                break
    except csv.Error:
        pass    # a field beyond csv's limits: the rows before it decide
    if len(rows) > SNIFF_ROWS:
        rows = rows[:SNIFF_ROWS]
    elif not whole and len(rows) > 1:
        rows = rows[:-1]    # the head may end inside the last row
    return rows or [[text.strip()]], blank


def _detect_header(rows: list[list[str]]) -> bool:
    """No number in the first row while a later row has one; for text only, no repeats."""
    first, rest = rows[0], rows[1:]
    if any(_is_number(field) for field in first):
        return False
    if any(_is_number(field) for row in rest for field in row):
        return True
    return all(name not in {row[j] for row in rest if j < len(row)}
               for j, name in enumerate(first))


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


def _options(layout: _Layout, types: dict, threads: bool = True, handler=None) -> dict:
    """pyarrow's read, parse and convert options for this layout and these column types."""
    pacsv = _pyarrow().csv
    return {
        "read_options": pacsv.ReadOptions(use_threads=threads, column_names=list(layout.names),
                                          skip_rows=layout.skip_rows),
        "parse_options": pacsv.ParseOptions(delimiter=layout.delimiter, newlines_in_values=True,
                                            invalid_row_handler=handler),
        "convert_options": pacsv.ConvertOptions(
            column_types=types, strings_can_be_null=True,
            null_values=[*pacsv.ConvertOptions().null_values, *MISSING_MARKS]),
    }


def _head_types(head: bytes, layout: _Layout) -> dict:
    """Column name -> type, as pyarrow infers them from the head; decimals as float32.

    Columns empty throughout the head are left out (inferred over the file);
    so is everything when the head does not parse (it may end inside a
    quoted field): the whole file then decides.
    """
    pa = _pyarrow()
    try:
        sample = pa.csv.read_csv(pa.BufferReader(head[:head.rfind(b"\n") + 1]),
                                 **_options(layout, {}))
    except (ValueError, pa.ArrowException):
        return {}
    return {name: pa.float32() if pa.types.is_floating(kind) else kind
            for name, kind in zip(sample.column_names, sample.schema.types)
            if not pa.types.is_null(kind)}


def _parse(open_source, layout: _Layout, types: dict, where: str, codec: str | None):
    """read_csv over ``open_source()``; a later row that does not fit a type relaxes it."""
    pa = _pyarrow()
    retries = 0
    while True:
        try:
            with open_source() as source:
                return pa.csv.read_csv(source, **_options(layout, types))
        except pa.ArrowInvalid as exc:
            if not types or "conversion error" not in str(exc):
                raise _parse_error(exc, open_source, layout, where) from None
            retries += 1
            types = _relax(types, str(exc), layout.names) if retries < RETRIES else {}
        except (OSError, pa.ArrowException) as exc:
            raise _read_failed(where, codec, exc) from None


def _relax(types: dict, message: str, names: tuple[str, ...]) -> dict:
    """The types without the one a value did not fit: integers become float32, else inferred."""
    pa = _pyarrow()
    found = re.search(r"column #(\d+)", message)
    if not found or int(found.group(1)) >= len(names):
        return {}
    name = names[int(found.group(1))]
    relaxed = {key: kind for key, kind in types.items() if key != name}
    if name in types and pa.types.is_integer(types[name]):
        relaxed[name] = pa.float32()
    return relaxed


def _parse_error(exc: Exception, open_source, layout: _Layout, where: str) -> DataError:
    message = str(exc)
    if "Empty CSV file" in message:
        return DataError(f"{where}: empty file (no rows), {TEXT_HINT}")
    if re.search(r"Expected \d+ columns, got \d+", message):
        row = _first_uneven_row(open_source, layout)
        if row is not None:
            return DataError(f"{where}: row {row.number} has {row.actual_columns} fields, "
                             f"expected {row.expected_columns} (delimiter "
                             f"{layout.delimiter!r})")
    return DataError(f"{where}: not readable as delimited text ({one_line(exc)})")


def _first_uneven_row(open_source, layout: _Layout):
    """The first row with a wrong number of fields, with its number: one thread, streamed.

    The threaded reader's error does not number the row; a second pass on one
    thread does, reading every field as text (no conversion can fail first)
    and holding one block at a time.
    """
    pa = _pyarrow()
    found = []

    def keep(row):
        found.append(row)
        return "error"

    options = _options(layout, {name: pa.string() for name in layout.names}, threads=False,
                       handler=keep)
    try:
        with open_source() as source:
            for _ in pa.csv.open_csv(source, **options):
                pass
    except (OSError, ValueError, pa.ArrowException):
        pass
    return found[0] if found and found[0].number is not None else None


def _check_text(table, layout: _Layout, where: str) -> None:
    """Refuse a column pyarrow left as bytes: text that is not UTF-8, named by its row."""
    pa = _pyarrow()
    for name, kind in zip(table.column_names, table.schema.types):
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            row = _first_not_utf8(table.column(name)) + 1 + layout.header
            raise DataError(f"{where}: row {row}, column {name!r}: bytes that are not UTF-8 "
                            "text; save the file as UTF-8")


def _first_not_utf8(column) -> int:
    """The index of the first value of a binary column that does not decode as UTF-8."""
    start = 0
    for chunk in column.chunks:
        for offset, value in enumerate(chunk.to_pylist()):
            try:
                value is None or value.decode("utf-8")
            except UnicodeDecodeError:
                return start + offset
        start += len(chunk)
    return 0


def _read_failed(where: str, codec: str | None, exc: BaseException) -> DataError:
    what = f"corrupt or truncated {codec} data" if codec else "cannot read"
    return DataError(f"{where}: {what} ({one_line(exc)})")


# -- streams and the progress bar ------------------------------------------------------------


@contextlib.contextmanager
def _closing(stream):
    try:
        yield stream
    finally:
        stream.close()


@contextlib.contextmanager
def _source(path: Path, codec: str | None, progress: bool):
    """``path`` as a pyarrow input stream, decompressed by ``codec``, counted by a bar."""
    pa = _pyarrow()
    bar = _bar(path, progress)
    if bar is None:
        raw = pa.OSFile(str(path))
    else:
        raw = pa.PythonFile(_Counted(open(path, "rb", buffering=0), bar), mode="r")
    stream = pa.CompressedInputStream(raw, codec) if codec else raw
    try:
        yield stream
    finally:
        stream.close()
        raw.close()
        if bar is not None:
            bar.close()


def _bar(path: Path, progress: bool):
    """A bar over the file's bytes, only when asked for and standard error is a terminal."""
    if not progress or not sys.stderr.isatty():
        return None
    from tqdm.auto import tqdm
    return tqdm(total=path.stat().st_size, unit="B", unit_scale=True, desc=path.name,
                leave=False, file=sys.stderr)


class _Counted(io.RawIOBase):
    """A binary file whose reads advance a progress bar (pyarrow reads it block by block)."""

    def __init__(self, raw, bar):
        super().__init__()
        self.raw, self.bar = raw, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        count = self.raw.readinto(buffer)
        self.bar.update(count or 0)
        return count

    def close(self) -> None:
        self.raw.close()
        super().close()
