"""One column of a user's table (a pyarrow array) as numbers or categories, checked.

Each function reads one column at a time with ``pyarrow.compute`` and hands
back NumPy arrays: no per-row Python. Every problem is a one-line DataError
that names the table (``what``), the column and the first bad row, counted
from 1 over the table's data rows (a header is not a row).

What a column is (``column_kind``):

- "bool"      arrow booleans: 0 / 1
- "numeric"   integers, floats, decimals; also a string column in which at
              least half of the values present are numbers (a number column
              with a stray word: the word is then named as the error)
- "category"  any other string column (and dictionary-encoded strings)

Missing: null, NaN, and the empty string in a string column.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

# A number as text: what float() reads, including inf and nan (named as errors later).
NUMBER = r"^[+-]?(\d+\.?\d*([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?|inf|infinity|nan)$"


def column_kind(column, name: str, what: str) -> str:
    """"numeric", "bool" or "category" for an arrow column (see the module docstring)."""
    import pyarrow as pa

    kind = column.type
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    if pa.types.is_null(kind) or column.null_count == len(column):
        raise DataError(f"{what}: column {name!r}: every value is missing")
    if pa.types.is_boolean(kind):
        return "bool"
    if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind):
        return "numeric"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        numbers, present = _numbers_among(as_strings(column))
        if present == 0:
            raise DataError(f"{what}: column {name!r}: every value is missing")
        return "numeric" if numbers * 2 >= present else "category"
    raise DataError(f"{what}: column {name!r} of type {column.type}: expected numbers, "
                    "strings or booleans")


def as_strings(column):
    """The column as trimmed strings (a ChunkedArray), whatever its arrow type."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if pa.types.is_dictionary(column.type):
        column = column.cast(column.type.value_type)
    if pa.types.is_floating(column.type):
        # 1.0 and 1 are one category: whole floats are written without ".0"
        whole = pc.equal(column, pc.floor(column))
        column = pc.if_else(whole, pc.cast(pc.cast(column, pa.int64(), safe=False),
                                           pa.string()), pc.cast(column, pa.string()))
    elif not pa.types.is_string(column.type):
        column = pc.cast(column, pa.string())
    return pc.utf8_trim_whitespace(column)


def _numbers_among(strings) -> tuple[int, int]:
    """How many of the present (non-missing) strings are numbers, and how many are present."""
    import pyarrow.compute as pc

    present = pc.sum(pc.invert(_string_missing(strings))).as_py() or 0
    numbers = pc.sum(pc.match_substring_regex(strings, NUMBER, ignore_case=True)).as_py() or 0
    return int(numbers), int(present)


def _string_missing(strings):
    import pyarrow.compute as pc

    return pc.fill_null(pc.equal(strings, ""), True)


def missing_mask(column) -> np.ndarray:
    """bool (n,): where a value is missing (null, NaN, or an empty string)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        mask = _string_missing(as_strings(column))
    elif pa.types.is_floating(kind):
        mask = pc.fill_null(pc.is_nan(column), True)
    else:
        mask = pc.is_null(column)
    return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)


def numeric_values(column, name: str, what: str) -> np.ndarray:
    """float64 (n,) of a numeric, bool or number-text column; NaN where missing.

    A value that is not a number, or an infinity, is a DataError naming its row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    kind = column.type.value_type if pa.types.is_dictionary(column.type) else column.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(
            column.type):
        strings = as_strings(column)
        bad = pc.and_(pc.invert(_string_missing(strings)),
                      pc.invert(pc.match_substring_regex(strings, NUMBER, ignore_case=True)))
        bad = np.asarray(bad.to_numpy(zero_copy_only=False), dtype=bool)
        if bad.any():
            row = int(np.argmax(bad))
            raise DataError(f"{what}: row {row + 1}, column {name!r}: {strings[row].as_py()!r} "
                            "is not a number (the column's other values are)")
        column = pc.if_else(_string_missing(strings), None, strings)
    elif pa.types.is_null(kind):
        return np.full(len(column), np.nan)
    values = np.asarray(pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False),
                        dtype=np.float64)
    infinite = np.isinf(values)
    if infinite.any():
        row = int(np.argmax(infinite))
        raise DataError(f"{what}: row {row + 1}, column {name!r}: {values[row]} is not a "
                        "finite number")
    return values


def first_missing(mask: np.ndarray, name: str, what: str, hint: str) -> None:
    """Raise a DataError naming the first missing value's row, if ``mask`` has one."""
    if mask.any():
        row = int(np.argmax(mask))
        raise DataError(f"{what}: row {row + 1}, column {name!r}: missing value ({hint})")


def category_counts(strings) -> tuple[np.ndarray, np.ndarray]:
    """The distinct present values (str array) of a string column and their counts."""
    import pyarrow.compute as pc

    counts = pc.value_counts(pc.drop_null(pc.if_else(_string_missing(strings), None, strings)))
    values = counts.field("values").to_numpy(zero_copy_only=False).astype(str)
    return values, np.asarray(counts.field("counts").to_numpy(), dtype=np.int64)


def category_codes(strings, vocabulary: np.ndarray) -> np.ndarray:
    """int64 (n,): the index of each value in ``vocabulary``, -1 where it is not in it."""
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = pc.index_in(strings, value_set=pa.array(vocabulary.tolist(), pa.string()))
    return np.asarray(pc.fill_null(codes, -1).to_numpy(zero_copy_only=False), dtype=np.int64)


def name_list(names: list[str], most: int = 10) -> str:
    """Column names for a message: the first ``most`` of them, and how many more."""
    shown = ", ".join(repr(name) for name in names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")
