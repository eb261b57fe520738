"""The data set "file": a user's own table (``pbp train --train-file FILE``).

Read with ``tables.read_table`` (CSV, TSV, gzipped or not, Parquet, ``.npz``,
``.npy`` with its targets in ``target_file``), then:

1. the target: ``target`` names its column(s) by name or 0-based index,
   comma-separated (default: the last column; for ``.npz`` / ``.npy``
   data the "y" column(s)); the inputs are the other columns, narrowed by
   ``columns`` and ``drop`` (names or indices too).
2. the task: ``task``, or inferred (``targets.infer_task``), said in a note.
3. the splits, seeded by ``seed``: the test split is ``test_file`` or a
   held-out ``test_fraction`` (0.2) of the rows; ``limit`` then keeps a
   subset of the rest, split into training and validation (``val_fraction``).
4. with ``schema`` (a ``TableSchema`` or a registered schema's name), the
   columns of a file without a header are named by it, and the target is
   its target column unless ``target`` says otherwise (``load_table``).
5. a ``TablePreprocessor`` fitted on the training split (or the saved
   model's, ``fitted``), applied to every split.

Rows in messages are counted from 1 over a file's data rows.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from .base import Dataset, DatasetSpec, LoadRequest, Located, hold_out, split_pool
from .columns import name_list
from .io import check_file
from .schema import TableSchema, schema_named
from .tabular import TablePreprocessor
from .targets import TASKS, TargetCode, infer_task
from .validate import check_choice, check_fraction

OPTIONS = ("train_file", "target_file", "test_file", "test_fraction", "target", "task",
           "columns", "drop", "impute", "max_categories", "log_scale", "schema")
ARRAY_SUFFIXES = (".npz", ".npy")


def _located(request: LoadRequest) -> Located:
    if request.train_file is None:
        raise DataError("data set 'file' reads the table given with --train-file (train_file=)")
    load = {key: getattr(request, key) for key in ("train_file", "target_file", "test_file")
            if getattr(request, key) is not None}
    for key, path in load.items():
        try:
            check_file(Path(path))
        except DataError as exc:
            raise DataError(f"--{key.replace('_', '-')} {exc}") from None
    paths = tuple(Path(p) for p in load.values())
    return Located(paths, load, str(paths[0]))


def request_schema(request: LoadRequest) -> TableSchema | None:
    """The request's schema: None, one given, or a registered one's name."""
    schema = request.schema
    return schema_named(schema) if isinstance(schema, str) else schema


def _read(path, what: str, schema: TableSchema | None, progress: bool):
    """A table file read (without a header when the schema names its columns)."""
    from .tables import read_table   # pyarrow, imported only when used

    header = False if schema is not None and schema.names else None
    table = read_table(path, header=header, what=what, progress=progress)
    return table if schema is None else schema.name_columns(table, f"{what} {path}", True)


def _train_table(request: LoadRequest, schema: TableSchema | None, option: str):
    """The training file's table, the targets of ``target_file`` appended as columns."""
    from .tables import read_xy_pair

    _located(request)   # a train file is given
    if request.target_file is None:
        table = _read(request.train_file, option, schema, request.progress)
    else:
        table = read_xy_pair(request.train_file, request.target_file, progress=request.progress)
    return table, f"{option} {request.train_file}"


def _resolve(names: list[str], item: str, option: str, what: str) -> str:
    """The column that ``item`` (a name, else a 0-based index) designates."""
    if item in names:
        return item
    if item.lstrip("-").isdigit() and 0 <= int(item) < len(names):
        return names[int(item)]
    raise DataError(f"{what}: {option} {item!r}: no such column; expected one of "
                    f"{name_list(names)} (or an index 0..{len(names) - 1})")


def _default_target(names: list[str], path) -> list[str]:
    """The last column; for array files, the "y" column(s) that ``read_table`` names."""
    if Path(path).suffix.lower() in ARRAY_SUFFIXES:
        ys = [name for name in names if name == "y" or (name[:1] == "y" and name[1:].isdigit())]
        if ys:
            return ys
    return [names[-1]]


def select_columns(table, request: LoadRequest, what: str) -> tuple[list[str], list[str]]:
    """(inputs, targets): the column names the request's target, columns and drop name."""
    names = table.column_names
    if request.target is None:
        targets = _default_target(names, request.train_file)
    else:
        targets = [_resolve(names, item.strip(), "--target", what)
                   for item in str(request.target).split(",")]
    inputs = names if request.columns is None else [
        _resolve(names, item, "--columns", what) for item in request.columns]
    dropped = [_resolve(names, item, "--drop", what) for item in request.drop or ()]
    for name in dropped:
        if name in targets:
            raise DataError(f"{what}: --drop {name!r} is the target column; choose the target "
                            "with --target")
    inputs = [name for name in dict.fromkeys(inputs) if name not in targets + dropped]
    if not inputs:
        raise DataError(f"{what}: no input columns left (target {name_list(targets)}, "
                        f"{len(dropped)} dropped); expected at least one")
    return inputs, targets


def _test_table(request: LoadRequest, table, used: list[str], schema: TableSchema | None):
    """The test file's table, checked to have the training file's columns."""
    test = _read(request.test_file, "--test-file", schema, request.progress)
    what = f"--test-file {request.test_file}"
    names = table.column_names
    headerless = names == [str(i) for i in range(len(names))]
    if headerless and test.num_columns != table.num_columns:
        raise DataError(f"{what}: {test.num_columns} columns, expected {table.num_columns} as "
                        "in --train-file (neither has a header)")
    missing = [name for name in used if name not in test.column_names]
    if missing:
        raise DataError(f"{what}: missing column(s) {name_list(missing)} of --train-file")
    return test, what


def _check_options(request: LoadRequest) -> None:
    if request.task is not None:
        check_choice("task", request.task, TASKS)
    check_fraction("test_fraction", request.test_fraction)
    # The preprocessor checks impute and max_categories: made before any reading.
    TablePreprocessor(request.impute, request.max_categories, request.log_scale)


def _fit(request: LoadRequest, table, rows: np.ndarray, what: str,
         schema: TableSchema | None):
    """The preprocessor for ``table`` (fitted on ``rows``, or the saved one) and the notes."""
    if request.fitted is not None:
        return request.fitted, []
    if schema is not None and request.target is None and schema.target is not None:
        request = replace(request, target=schema.target)
    inputs, targets = select_columns(table, request, what)
    # The schema's mapping belongs to its target column, however the column was named
    # (by name, by index, or left to the schema).
    mapping = (schema.target_map if schema is not None and list(targets) == [schema.target]
               else None)
    task, note = ("classify", None) if mapping else (
        (request.task, None) if request.task else infer_task(table, targets, what))
    prep = TablePreprocessor(request.impute, request.max_categories, request.log_scale, schema)
    prep.fit(table, inputs, TargetCode(targets, task, mapping), rows, what)
    return prep, ([note] if note else []) + prep.notes


def _encode(request: LoadRequest, prep, table, parts: list[np.ndarray], what: str):
    """(x, y) of the rows ``parts`` of ``table`` (each an index array), one split each."""
    rows = np.concatenate(parts)
    if request.fitted is None:
        # Fitting read every row of the file and named the first bad one: only the rows
        # used are encoded (a --limit of a large file encodes little), a column at a time.
        x, y = prep.transform_table(table, what, rows), prep.targets_of(table, what)
        y = None if y is None else y[rows]
    else:
        # A saved model's preprocessor: the whole file, so that a message names its row.
        x, y = prep.transform_table(table, what), prep.targets_of(table, what)
        x, y = (x[rows], None if y is None else y[rows])
    if y is None:
        raise DataError(f"{what}: no target column {name_list(prep.target.columns)} (the "
                        "model's)")
    cuts = np.cumsum([len(part) for part in parts])[:-1]
    return np.split(x, cuts), np.split(y, cuts)


def load_table(request: LoadRequest, rng: np.random.Generator, name: str = "file",
               option: str = "--train-file") -> Dataset:
    """The data set ``name`` of the table ``request.train_file`` (the module docstring);
    ``option`` is what messages call that file."""
    _check_options(request)
    schema = request_schema(request)
    if schema is None and request.fitted is not None:
        schema = request.fitted.schema   # a saved model's: names a file without a header
    table, what = _train_table(request, schema, option)
    test_rows, pool = (None, np.arange(table.num_rows)) if request.test_file is not None \
        else hold_out(table.num_rows, request.test_fraction, rng, what)
    train, val = split_pool(len(pool), request.limit, request.val_fraction, rng)
    train, val = pool[train], pool[val]
    prep, notes = _fit(request, table, train, what, schema)
    parts = [train, val] if test_rows is None else [train, val, test_rows]
    xs, ys = _encode(request, prep, table, parts, what)
    if test_rows is None:
        test, test_what = _test_table(request, table,
                                      prep.feature_columns + prep.target.columns, prep.schema)
        xs.append(prep.transform_table(test, test_what))
        ys.append(prep.targets_of(test, test_what))
    return Dataset(name, xs[0], ys[0], xs[1], ys[1], xs[2], ys[2], prep.n_outputs,
                   prep, prep.class_names, task=prep.task, notes=notes)


FILE_DATASET = DatasetSpec(
    "file", "a table of your own: CSV, TSV, Parquet, .npz or .npy (--train-file)",
    load_table, TablePreprocessor.kind, _located, options=OPTIONS, user_files=True)
