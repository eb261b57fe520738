"""``TablePreprocessor``: the columns of a user's table -> float32 network inputs.

Fitted on the training split only, saved with the model (kind "table").
The output holds first the numeric and bool columns, then the one-hot
blocks of the string columns, each group in the table's order:

- numeric: one column, ``(v - mean) / std``. With ``log_scale``, a column
  whose training values are all >= 0 and whose skewness exceeds
  ``LOG_SKEW`` (a heavy right tail: byte counts, durations) is first
  mapped by log1p (sign-preserving, so a later negative value cannot make
  a NaN). A column with one value in the training split is dropped (a note).
- bool: one column, 0 or 1.
- category (strings): one-hot. At most ``max_categories`` columns: with
  more distinct values, the ``max_categories - 1`` most frequent in the
  training split (ties by value) get a column each and one "other" column
  takes every remaining value, unseen ones included. Without an "other"
  column a value the training split never had gives all zeros.

A ``TableSchema`` (``schema.py``) fixes what the values alone would decide:
a column's category list (its one-hot width; "ordinal": its index in the
list, standardised), log scaling, keeping a constant column (divided by 1),
the column names of a file without a header, and a target map.

Missing values (``columns.py``) are a DataError naming the row and column
unless ``impute``: "mean" or "median" fill numeric and bool columns,
"most-frequent" every column, with the training split's statistic.

The output is written column by column into one preallocated float32
(n, d) matrix; every column is read with pyarrow.compute, never row by row.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import DataError
from ..resources import check_allocation
from .schema import TableSchema
from .columns import (as_strings, category_codes, category_counts, column_kind, first_missing,
                      missing_mask, name_list, numeric_values)
from .targets import TargetCode
from .validate import check_choice, check_int

IMPUTE = ("mean", "median", "most-frequent")
LOG_SKEW = 2.0
SCRATCH_BYTES = 256 << 20   # the scaled columns' staging area in transform_table
IMPUTE_HINT = "give --impute mean, median or most-frequent to fill missing values"


@dataclass
class ColumnCode:
    """How one input column is encoded: "numeric", "log", "bool", "category" or "ordinal"."""

    name: str
    kind: str
    mean: float = 0.0
    std: float = 1.0
    fill: float = np.nan                 # numeric imputed value; NaN: none
    vocabulary: np.ndarray = field(default_factory=lambda: np.zeros(0, str))  # sorted
    other: bool = False                  # an "other" column after the vocabulary's
    fill_category: str = ""              # category imputed value; "": none

    @property
    def width(self) -> int:
        if self.kind == "category":
            return len(self.vocabulary) + self.other
        return 1


def _skew(values: np.ndarray) -> float:
    """The sample skewness m3 / m2^1.5 (products, not ``**``: pow is ten times slower)."""
    centred = values - values.mean()
    squared = centred * centred
    m2 = squared.mean()
    return float(np.dot(squared, centred) / len(values) / m2 ** 1.5) if m2 > 0 else 0.0


def _log1p(values: np.ndarray) -> np.ndarray:
    return np.copysign(np.log1p(np.abs(values)), values)


def _numeric_fill(values: np.ndarray, impute: str) -> float:
    """The value that fills a numeric column's gaps: of the present training values."""
    if impute == "mean":
        return float(values.mean())
    if impute == "median":
        return float(np.median(values))
    distinct, counts = np.unique(values, return_counts=True)
    return float(distinct[np.argmax(counts)])


def fit_numeric(column, name: str, kind: str, rows, options: dict, what: str,
                schema: TableSchema | None = None):
    """The ``ColumnCode`` of a numeric or bool column, or None when it is constant
    (unless the schema keeps it)."""
    values = numeric_values(column, name, what)
    missing = np.isnan(values)
    if options["impute"] is None:
        first_missing(missing, name, what, IMPUTE_HINT)
    train = values if rows is None else values[rows]
    present = train[~np.isnan(train)] if missing.any() else train
    if len(present) == 0:
        raise DataError(f"{what}: column {name!r}: every value of the training split is missing")
    code = ColumnCode(name, kind)
    if options["impute"] is not None:
        code.fill = _numeric_fill(present, options["impute"])
        train = np.where(np.isnan(train), code.fill, train)
    if schema is not None and name in schema.log_scaled:
        code.kind, train = "log", _log1p(train)
    elif kind == "numeric" and options["log_scale"] and present.min() >= 0 \
            and _skew(present) > LOG_SKEW:
        code.kind, train = "log", np.log1p(train)
    if train.min() == train.max():
        if schema is None or name not in schema.keep:
            return None
        code.kind = "numeric" if kind == "bool" else code.kind
        code.mean = float(train[0])
        return code
    if kind != "bool":
        code.mean, code.std = float(train.mean()), float(train.std())
    return code


def fit_listed(column, name: str, rows, schema: TableSchema, what: str) -> ColumnCode:
    """The ``ColumnCode`` of a column whose categories the schema lists (never dropped)."""
    code = ColumnCode(name, "ordinal" if name in schema.ordinal else "category",
                      vocabulary=np.sort(np.asarray(schema.categories[name], str)))
    if code.kind == "ordinal":
        values = ordinal_codes(code, column if rows is None else column.take(rows))
        code.mean, code.std = float(values.mean()), float(values.std())
        code.std = code.std if code.std > 0 else 1.0
    return code


def ordinal_codes(code: ColumnCode, column) -> np.ndarray:
    """float64 (n,): each value's index in the vocabulary, -1 outside it (or missing)."""
    return category_codes(as_strings(column), code.vocabulary).astype(np.float64)


def fit_category(column, name: str, rows, options: dict, what: str):
    """The ``ColumnCode`` of a string column, or None when it has one value."""
    strings = as_strings(column)
    missing = missing_mask(column)
    if options["impute"] != "most-frequent":
        hint = (IMPUTE_HINT if options["impute"] is None else
                f"--impute {options['impute']} fills numeric columns only; give "
                "--impute most-frequent to fill text columns too")
        first_missing(missing, name, what, hint)
    train = strings if rows is None else strings.take(rows)
    values, counts = category_counts(train)
    if len(values) == 0:
        raise DataError(f"{what}: column {name!r}: every value of the training split is missing")
    if len(values) == 1:
        return None
    # Most frequent first, ties by value: a deterministic cap.
    order = np.lexsort((values, -counts))
    code = ColumnCode(name, "category")
    if options["impute"] == "most-frequent":
        code.fill_category = str(values[order[0]])
    cap = options["max_categories"]
    if len(values) > cap:
        code.vocabulary, code.other = np.sort(values[order[:cap - 1]]), True
    else:
        code.vocabulary = np.sort(values)
    return code


def scaled_values(code: ColumnCode, column, out: np.ndarray, what: str) -> None:
    """Write a numeric, bool or ordinal ``column`` encoded by ``code`` into ``out`` float32 (n,)."""
    if code.kind == "ordinal":
        np.divide(ordinal_codes(code, column) - code.mean, code.std, out=out, casting="unsafe")
        return
    values = numeric_values(column, code.name, what)
    missing = np.isnan(values)
    if np.isnan(code.fill):
        first_missing(missing, code.name, what, "the model was trained without --impute")
    if missing.any():
        values = np.where(missing, code.fill, values)
    if code.kind == "log":
        values = _log1p(values)
    np.divide(values - code.mean, code.std, out=out, casting="unsafe")


def one_hot(code: ColumnCode, column, out: np.ndarray, what: str) -> None:
    """Write a string ``column`` one-hot encoded by ``code`` into ``out`` (n, width), zeros."""
    import pyarrow.compute as pc

    strings = as_strings(column)
    missing = missing_mask(column)
    if missing.any():
        if not code.fill_category:
            first_missing(missing, code.name, what, "the model was trained without "
                          "--impute most-frequent")
        strings = pc.if_else(missing, code.fill_category, strings)
    codes = category_codes(strings, code.vocabulary)
    if code.other:
        codes[codes < 0] = len(code.vocabulary)
    rows = np.flatnonzero(codes >= 0)
    out[rows, codes[rows]] = 1.0


def copy_columns(out: np.ndarray, scratch: np.ndarray, block: int = 4096) -> None:
    """out (n, k) := scratch (k, n).T, a block of rows at a time.

    Writing a column of a wide C-ordered matrix touches one cache line per
    row; a block of rows of k columns at once is several times faster
    (2,000,000 x 80 float32: 3.6 s one column at a time, 0.6 s in blocks of 16).
    """
    for start in range(0, out.shape[0], block):
        out[start:start + block] = scratch[:, start:start + block].T


@dataclass(frozen=True)
class _Rows:
    """Some rows of a column, taken only when the column is encoded."""

    column: object
    rows: np.ndarray


def _taken(column):
    return column.column.take(column.rows) if isinstance(column, _Rows) else column


class TablePreprocessor:
    """A user's table (a ``pyarrow.Table``) -> float32 inputs and targets (module docstring).

    Parameters
    ----------
    impute : {"mean", "median", "most-frequent"} or None
    max_categories : int >= 2
        One-hot columns per string column at most (the last one "other").
    log_scale : bool
        log1p heavy-tailed non-negative numeric columns before standardising.
    schema : TableSchema or None
        What is fixed about the columns (the module docstring).

    After ``fit``: ``feature_columns`` (the input columns a table must have),
    ``task``, ``class_names``, ``n_features``, ``notes`` (what fitting decided,
    one line each; not saved).
    """

    kind = "table"

    def __init__(self, impute: str | None = None, max_categories: int = 50,
                 log_scale: bool = False, schema: TableSchema | None = None):
        if impute is not None:
            check_choice("impute", impute, IMPUTE)
        check_int("max_categories", max_categories, 2)
        self.options = {"impute": impute, "max_categories": int(max_categories),
                        "log_scale": bool(log_scale)}
        self.schema = schema
        self.codes: list[ColumnCode] = []
        self.target: TargetCode | None = None
        self.positional = False   # the training table had no header: columns "0", "1", ...
        self.notes: list[str] = []

    # ---- what it is ----------------------------------------------------------------------

    @property
    def feature_columns(self) -> list[str]:
        return [code.name for code in self.codes]

    @property
    def task(self) -> str:
        return self._target().task

    @property
    def class_names(self) -> list[str]:
        target = self._target()
        return list(target.class_names if target.task == "classify" else target.columns)

    @property
    def n_classes(self) -> int | None:
        """The number of classes; None for a regression (its targets are not classes)."""
        target = self._target()
        return len(target.class_names) if target.task == "classify" else None

    @property
    def n_outputs(self) -> int:
        """The network's outputs: classes, or regression targets."""
        target = self._target()
        return len(target.class_names) if target.task == "classify" else len(target.columns)

    @property
    def n_features(self) -> int:
        self._target()
        return sum(code.width for code in self.codes)

    def _target(self) -> TargetCode:
        if self.target is None:
            raise DataError("table preprocessor used before fit (or from_arrays)")
        return self.target

    # ---- fitting -------------------------------------------------------------------------

    def fit(self, table, features: list[str], target: TargetCode, rows=None,
            what: str = "table") -> "TablePreprocessor":
        """Learn the encoding of ``features`` from the rows ``rows`` of ``table`` (all: None).

        ``target`` is fitted here too. Every row of ``table`` is checked (a
        bad value anywhere is named by its row in ``table``).
        """
        self.codes, dropped = [], []
        names = table.column_names
        self.positional = names == [str(i) for i in range(len(names))]
        schema = self.schema
        for name in features:
            column = table.column(name)
            if schema is not None and name in schema.categories:
                self.codes.append(fit_listed(column, name, rows, schema, what))
                continue
            kind = column_kind(column, name, what)
            if kind == "category" and schema is not None and name in schema.keep:
                kind = "numeric"   # a kept column is a number column: a word in it is named
            if kind == "category":
                code = fit_category(column, name, rows, self.options, what)
            else:
                code = fit_numeric(column, name, kind, rows, self.options, what, schema)
            if code is None:
                dropped.append(name)
            else:
                self.codes.append(code)
        self._note(dropped)
        if not self.codes:
            raise DataError(f"{what}: every input column has one value in the training split: "
                            "nothing to learn from")
        self.target = target.fit(table, rows, what)
        return self

    def _note(self, dropped: list[str]) -> None:
        """What fitting decided, one line for each kind of decision."""
        logged = [code.name for code in self.codes if code.kind == "log"]
        capped = [code.name for code in self.codes if code.other]
        cap = self.options["max_categories"]
        self.notes = []
        for names, what in ((dropped, "one value in the training split, dropped"),
                            (logged, "heavy-tailed, log1p-scaled"),
                            (capped, f"more than {cap} categories, the {cap - 1} most frequent "
                                     "kept, the rest one 'other' column")):
            if names:
                word = "column" if len(names) == 1 else "columns"
                self.notes.append(f"{word} {name_list(names)}: {what}")

    # ---- applying ------------------------------------------------------------------------

    def transform_table(self, table, what: str = "table", rows=None) -> np.ndarray:
        """float32 (n, n_features) inputs for ``table`` (its rows ``rows``: None, all), its
        columns matched by name.

        A table without a header whose columns are exactly as many as the
        inputs is matched by position instead (a training table without a
        header had its target somewhere among them). The rows of one column
        at a time are taken: never a second copy of the whole table.
        """
        columns = self._columns(self.named(table, what), what)
        if rows is not None:
            columns = [_Rows(column, rows) for column in columns]
        shape = (table.num_rows if rows is None else len(rows), self.n_features)
        check_allocation(4 * shape[0] * shape[1], f"{what}: float32 inputs of shape {shape}",
                         DataError, "give a smaller --max-categories or fewer rows")
        out = np.zeros(shape, dtype=np.float32)
        scaled = [(code, column) for code, column in zip(self.codes, columns)
                  if code.kind != "category"]
        # Scaled columns first, in groups through a scratch of at most SCRATCH_BYTES.
        group = max(1, min(16, len(scaled), SCRATCH_BYTES // max(1, 4 * shape[0])))
        scratch = np.empty((group, shape[0]), dtype=np.float32)
        for start in range(0, len(scaled), group):
            chunk = scaled[start:start + group]
            for k, (code, column) in enumerate(chunk):
                scaled_values(code, _taken(column), scratch[k], what)
            copy_columns(out[:, start:start + len(chunk)], scratch[:len(chunk)])
        offset = len(scaled)
        for code, column in zip(self.codes, columns):
            if code.kind == "category":
                one_hot(code, _taken(column), out[:, offset:offset + code.width], what)
                offset += code.width
        return out

    def named(self, table, what: str):
        """``table`` with the schema's column names when it has no header (``TableSchema``)."""
        return table if self.schema is None else self.schema.name_columns(table, what)

    def transform(self, raw, what: str = "table") -> np.ndarray:
        """``transform_table`` for a ``pyarrow.Table``; anything else is a DataError."""
        if not hasattr(raw, "column_names"):
            raise DataError(f"{what}: expected a table (pyarrow.Table), got {type(raw).__name__}")
        return self.transform_table(raw, what)

    def _columns(self, table, what: str) -> list:
        names = table.column_names
        missing = [name for name in self.feature_columns if name not in names]
        if not missing:
            return [table.column(name) for name in self.feature_columns]
        headerless = names == [str(i) for i in range(len(names))]
        if self.positional and headerless and len(names) == len(self.codes):
            return [table.column(i) for i in range(len(names))]
        shown = ", ".join(repr(name) for name in missing[:5])
        more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        raise DataError(f"{what}: missing input column(s) {shown}{more}; the model reads "
                        f"{len(self.codes)} columns: {name_list(self.feature_columns)}")

    def targets_of(self, table, what: str = "table") -> np.ndarray | None:
        """int64 (n,) classes or float32 (n, n_targets) standardised targets; None if absent."""
        return self._target().targets_of(self.named(table, what), what)

    def inverse_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardised regression outputs back in the targets' units, float32 (n, n_targets)."""
        return self._target().inverse_targets(y)

    # ---- saving --------------------------------------------------------------------------

    def to_arrays(self) -> dict[str, np.ndarray]:
        """The fitted state as plain arrays (numbers and fixed-width unicode, no objects)."""
        target = self._target()
        codes = self.codes
        arrays = {
            "kind": np.array(self.kind), "columns": np.array(self.feature_columns, str),
            "column_kinds": np.array([c.kind for c in codes], str),
            "mean": np.array([c.mean for c in codes]), "std": np.array([c.std for c in codes]),
            "fill": np.array([c.fill for c in codes]),
            "fill_category": np.array([c.fill_category for c in codes], str),
            "other": np.array([c.other for c in codes]),
            "positional": np.array(self.positional),
            "impute": np.array(self.options["impute"] or ""),
            "max_categories": np.array(self.options["max_categories"], np.int64),
            "log_scale": np.array(self.options["log_scale"]),
            "schema_names": np.array(self.schema.names if self.schema else (), str),
            **target.to_arrays()}
        for j, code in enumerate(codes):
            if code.kind in ("category", "ordinal"):
                arrays[f"vocab_{j}"] = code.vocabulary.astype(str)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TablePreprocessor":
        """Rebuild a preprocessor saved with ``to_arrays``; inconsistent arrays are a DataError."""
        prep = cls(str(arrays["impute"]) or None, int(arrays["max_categories"]),
                   bool(arrays["log_scale"]))
        per_column = [np.asarray(arrays[key]).reshape(-1) for key in
                      ("columns", "column_kinds", "mean", "std", "fill", "fill_category",
                       "other")]
        if len({len(values) for values in per_column}) != 1:
            raise DataError("table preprocessor arrays: per-column arrays of different lengths")
        for j, (name, kind, mean, std, fill, fill_category, other) in enumerate(
                zip(*per_column)):
            code = ColumnCode(str(name), str(kind), float(mean), float(std), float(fill),
                              other=bool(other), fill_category=str(fill_category))
            if code.kind in ("category", "ordinal"):
                code.vocabulary = np.asarray(arrays[f"vocab_{j}"]).astype(str).reshape(-1)
            prep.codes.append(code)
        prep.positional = bool(arrays["positional"])
        prep.target = TargetCode.from_arrays(arrays)
        # Models saved before schemas have no names: their files were read as they are.
        names = tuple(str(n) for n in np.asarray(arrays.get("schema_names", ())).reshape(-1))
        if names:
            prep.schema = TableSchema(names=names, target=prep.target.columns[0])
        prep.check_state()
        return prep

    def check_state(self) -> None:
        """Raise a DataError unless the fitted state is consistent (after ``from_arrays``)."""
        for code in self.codes:
            if code.kind not in ("numeric", "log", "bool", "category", "ordinal"):
                raise DataError(f"table preprocessor arrays: column {code.name!r} of kind "
                                f"{code.kind!r}, expected numeric, log, bool, category or "
                                "ordinal")
            if not (np.isfinite(code.mean) and np.isfinite(code.std) and code.std > 0):
                raise DataError(f"table preprocessor arrays: column {code.name!r}: mean must be "
                                "finite and std positive")
            vocabulary = code.vocabulary
            if code.kind in ("category", "ordinal") and (len(vocabulary) < 1 or np.any(vocabulary[1:]
                                                                      <= vocabulary[:-1])):
                raise DataError(f"table preprocessor arrays: column {code.name!r}: vocabulary "
                                "must be sorted, distinct and not empty")
        if not self.codes or len(set(self.feature_columns)) != len(self.codes):
            raise DataError("table preprocessor arrays: no input columns, or one named twice")

