"""The target columns of a user's table: the task, class indices or standardised values.

``TargetCode`` is the target half of a ``TablePreprocessor`` (``tabular.py``):

- classify: one column; its classes are the distinct values of the whole
  training file, sorted (numbers numerically, text as text), and a row
  becomes the int64 index of its class. A class the training file never
  had is a DataError naming the row.
- regress: one or more numeric columns, standardised with the training
  split's mean and deviation into float32 (n, n_targets);
  ``inverse_targets`` maps network outputs back to the original units.

With a target map (``schema.TARGET_MAPS``, by name) a classification's
classes are the map's, in its order, and a row's class is the map of its
value: the 23 labels of KDD Cup 99 become "normal" / "attack".

``infer_task``: a target of strings or booleans, or of whole numbers with
at most ``MAX_INFERRED_CLASSES`` distinct values, is a classification;
any other numeric target a regression.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError
from .columns import as_strings, category_codes, column_kind, missing_mask, numeric_values
from .schema import target_map

TASKS = ("classify", "regress")
MAX_INFERRED_CLASSES = 50


def infer_task(table, names: list[str], what: str) -> tuple[str, str]:
    """The task for target columns ``names`` of ``table``, and the note that says why."""
    kinds = [column_kind(table.column(name), name, what) for name in names]
    shown = ", ".join(repr(name) for name in names)
    if len(names) > 1:
        if any(kind != "numeric" for kind in kinds):
            raise DataError(f"{what}: targets {shown}: several target columns are a regression "
                            "and must all be numeric")
        return "regress", f"targets {shown}: several numeric columns -> regress"
    if kinds[0] != "numeric":
        word = "text" if kinds[0] == "category" else "boolean"
        return "classify", f"target {shown}: {word} values -> classify"
    values = numeric_values(table.column(names[0]), names[0], what)
    values = values[~np.isnan(values)]
    distinct = np.unique(values)
    if np.all(distinct == np.round(distinct)) and len(distinct) <= MAX_INFERRED_CLASSES:
        return "classify", (f"target {shown}: {len(distinct)} distinct whole numbers -> "
                            "classify (give --task regress to predict it as a number)")
    return "regress", (f"target {shown}: numbers, {len(distinct)} distinct -> regress "
                       "(give --task classify to treat its values as classes)")


def class_name(value: float) -> str:
    """A numeric class as text: 3 rather than 3.0."""
    return str(int(value)) if value == np.round(value) and abs(value) < 2**53 else repr(value)


class TargetCode:
    """What the target columns become (see the module docstring).

    columns        the target columns' names
    task           "classify" or "regress"
    class_names    classify: str (k,), sorted as the classes are
    class_values   classify, numeric target: float64 (k,) sorted; None for text targets
    mean, std      regress: float64 (n_targets,)
    mapping        classify: the name of a target map, or None
    """

    def __init__(self, columns: list[str], task: str, mapping: str | None = None):
        if task not in TASKS:
            raise DataError(f"task {task!r}: expected one of {', '.join(TASKS)}")
        if task == "classify" and len(columns) != 1:
            raise DataError(f"targets {', '.join(map(repr, columns))}: a classification has "
                            "one target column")
        self.columns, self.task = list(columns), task
        self.class_names: list[str] = []
        self.class_values: np.ndarray | None = None
        self.mean = np.zeros(len(columns))
        self.std = np.ones(len(columns))
        self.mapping = mapping
        if mapping is not None:
            if task != "classify":
                raise DataError(f"target map {mapping!r}: maps to classes, not a regression")
            self.class_names = list(target_map(mapping).classes)

    def fit(self, table, rows: np.ndarray | None, what: str) -> "TargetCode":
        """Learn the classes (from every row) or the scaling (from ``rows``) of ``table``."""
        if self.task == "classify":
            self._fit_classes(table, what)
            return self
        values = self._values(table, what)
        fitted = values if rows is None else values[rows]
        self.mean, self.std = fitted.mean(axis=0), fitted.std(axis=0)
        constant = np.flatnonzero(~(self.std > 0))
        if len(constant):
            raise DataError(f"{what}: target {self.columns[constant[0]]!r} has one value "
                            f"({self.mean[constant[0]]:g}) in the training split: nothing to "
                            "predict")
        return self

    def _fit_classes(self, table, what: str) -> None:
        name = self.columns[0]
        column = table.column(name)
        self._check_present(column, name, what)
        if self.mapping is not None:
            self._mapped_codes(column, what)   # every value must map
            return
        if column_kind(column, name, what) == "numeric":
            self.class_values = np.unique(numeric_values(column, name, what))
            self.class_names = [class_name(v) for v in self.class_values]
        else:
            self.class_values = None
            self.class_names = sorted(set(as_strings(column).unique().to_pylist()))
        if len(self.class_names) < 2:
            raise DataError(f"{what}: target {name!r} has one class "
                            f"({self.class_names[0]!r}): a classifier needs at least two")

    def _check_present(self, column, name: str, what: str) -> None:
        missing = missing_mask(column)
        if missing.any():
            raise DataError(f"{what}: row {int(np.argmax(missing)) + 1}, target column "
                            f"{name!r}: missing value (targets are never imputed)")

    def _values(self, table, what: str) -> np.ndarray:
        """float64 (n, n_targets) of a regression's target columns."""
        out = np.empty((table.num_rows, len(self.columns)))
        for j, name in enumerate(self.columns):
            column = table.column(name)
            self._check_present(column, name, what)
            if column_kind(column, name, what) != "numeric":
                raise DataError(f"{what}: target {name!r} holds text (e.g. "
                                f"{as_strings(column)[0].as_py()!r}), expected numbers for "
                                "a regression; give --task classify")
            out[:, j] = numeric_values(column, name, what)
        return out

    def targets_of(self, table, what: str) -> np.ndarray | None:
        """int64 (n,) classes or float32 (n, n_targets) standardised values; None if absent."""
        if any(name not in table.column_names for name in self.columns):
            return None
        if self.task == "regress":
            return ((self._values(table, what) - self.mean) / self.std).astype(np.float32)
        name = self.columns[0]
        column = table.column(name)
        self._check_present(column, name, what)
        if self.mapping is not None:
            codes = self._mapped_codes(column, what)
        elif self.class_values is not None:
            values = numeric_values(column, name, what)
            codes = np.minimum(np.searchsorted(self.class_values, values),
                               len(self.class_values) - 1)
            codes[self.class_values[codes] != values] = -1
        else:
            codes = category_codes(as_strings(column), np.asarray(self.class_names))
        if (codes < 0).any():
            row = int(np.argmax(codes < 0))
            raise DataError(f"{what}: row {row + 1}, target {name!r}: class "
                            f"{as_strings(column)[row].as_py()!r} is not one of the training "
                            f"file's {len(self.class_names)} classes")
        return codes.astype(np.int64)

    def _mapped_codes(self, column, what: str) -> np.ndarray:
        """int64 (n,) classes of ``column`` through the target map (each distinct value once)."""
        strings = as_strings(column)
        distinct = np.asarray(strings.unique().to_pylist(), str)
        mapping = target_map(self.mapping)
        classes = []
        for value in distinct.tolist():
            try:
                classes.append(self.class_names.index(mapping.function(value)))
            except (DataError, ValueError) as exc:
                row = int(np.argmax(category_codes(strings, distinct) == len(classes)))
                raise DataError(f"{what}: row {row + 1}, target {self.columns[0]!r}: "
                                f"{value!r}: not mapped to a class by {self.mapping!r} "
                                f"({exc})") from None
        codes = category_codes(strings, distinct)
        return np.asarray(classes, np.int64)[codes]

    def inverse_targets(self, y: np.ndarray) -> np.ndarray:
        """Standardised regression outputs (n, n_targets) in the targets' own units, float32."""
        if self.task != "regress":
            raise DataError("inverse_targets: the targets are classes, not a regression's values")
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1 and len(self.columns) == 1:
            y = y[:, None]
        if y.ndim != 2 or y.shape[1] != len(self.columns):
            raise DataError(f"inverse_targets: outputs of shape {y.shape}, expected "
                            f"(n, {len(self.columns)})")
        return (y * self.std + self.mean).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"target_columns": np.array(self.columns, dtype=str),
                  "task": np.array(self.task), "class_names": np.array(self.class_names, str),
                  "target_mean": np.asarray(self.mean, np.float64),
                  "target_std": np.asarray(self.std, np.float64)}
        if self.mapping is not None:
            arrays["target_map"] = np.array(self.mapping)
        if self.class_values is not None:
            arrays["class_values"] = np.asarray(self.class_values, np.float64)
        return arrays

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "TargetCode":
        mapping = str(arrays["target_map"]) if "target_map" in arrays else None
        code = cls([str(c) for c in np.asarray(arrays["target_columns"]).reshape(-1)],
                   str(arrays["task"]), mapping)
        code.class_names = [str(c) for c in np.asarray(arrays["class_names"]).reshape(-1)]
        if "class_values" in arrays:
            code.class_values = np.asarray(arrays["class_values"], np.float64).reshape(-1)
        code.mean = np.asarray(arrays["target_mean"], np.float64).reshape(-1)
        code.std = np.asarray(arrays["target_std"], np.float64).reshape(-1)
        n = len(code.columns)
        if code.task == "regress" and not (len(code.mean) == len(code.std) == n
                                           and np.all(np.isfinite(code.mean))
                                           and np.all(code.std > 0)):
            raise DataError(f"table preprocessor: target scaling of {len(code.mean)}, "
                            f"{len(code.std)} values for {n} targets, or not finite and positive")
        if code.task == "classify" and (len(code.class_names) < 2 or (
                code.class_values is not None and len(code.class_values)
                != len(code.class_names))):
            raise DataError("table preprocessor: classes inconsistent (fewer than two, or "
                            "names and values of different lengths)")
        return code
