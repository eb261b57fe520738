"""Reading a user's table (CSV, TSV, gzipped or not, Parquet) into a pyarrow Table.

A minimal reader: the delimiter from the extension (``.tsv`` tab, else a
comma), gzip by content, Parquet by extension or magic bytes. With
``header=None`` the first row is a header when all its fields are
non-numeric while some field of the second row is a number. Without a
header the columns are named "0", "1", ...
"""

from __future__ import annotations

import csv
import gzip
import io
import os
from pathlib import Path

from ..errors import DataError
from ..fileio import one_line
from .io import GZIP_MAGIC, check_file

PARQUET_MAGIC = b"PAR1"


def _pyarrow():
    """pyarrow, or a one-line DataError that says how to install it."""
    try:
        import pyarrow
        return pyarrow
    except ImportError:
        from ..errors import install_hint
        raise DataError(f"reading tables needs pyarrow: {install_hint('tables')}") from None


def read_table(path: str | os.PathLike, *, header: bool | None = None,
               what: str = "--train-file", progress: bool = False):
    """The table in ``path`` as a ``pyarrow.Table``; any problem is a one-line DataError."""
    _pyarrow()
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    path = Path(path)
    check_file(path)
    with open(path, "rb") as handle:
        magic = handle.read(4)
    try:
        if magic == PARQUET_MAGIC or path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        delimiter = "\t" if ".tsv" in path.suffixes else ","
        if header is None:
            header = _has_header(path, magic[:2] == GZIP_MAGIC, delimiter)
        read = pcsv.ReadOptions(autogenerate_column_names=not header)
        table = pcsv.read_csv(path, read_options=read,
                              parse_options=pcsv.ParseOptions(delimiter=delimiter),
                              convert_options=pcsv.ConvertOptions(strings_can_be_null=True))
    except (pa.ArrowException, OSError, EOFError) as exc:
        raise DataError(f"{what} {path}: cannot read the table ({one_line(exc)})") from None
    if not header:
        table = table.rename_columns([str(i) for i in range(table.num_columns)])
    return table


def _has_header(path: Path, gzipped: bool, delimiter: str) -> bool:
    opener = gzip.open if gzipped else open
    with opener(path, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8-sig", errors="replace")
    rows = list(csv.reader(io.StringIO(head), delimiter=delimiter))[:2]
    if len(rows) < 2:
        return False
    return (not any(_number(field) for field in rows[0])
            and any(_number(field) for field in rows[1]))


def _number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
