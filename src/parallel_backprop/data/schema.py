"""``TableSchema``: what a user knows about a table that its values alone do not say.

A table read without a schema has its column kinds, category lists and
scaling decided from the training split (``tabular.py``). A schema fixes them:

names        the columns of a file without a header, in order (a file with
             one column fewer, the target left out, is accepted when predicting)
categories   column -> every category it can take: the one-hot width is the
             list's length whatever the training split holds; a value outside
             it gives all zeros. Such a column is never dropped.
ordinal      category columns encoded as their index in the sorted list
             (-1 outside it), then standardised like a number
log_scaled   numeric columns always log1p-scaled before standardising
keep         numeric columns kept even when constant in the training split
             (divided by 1): the input width does not move with the split
target       the target column; ``target_map`` a name in ``TARGET_MAPS``:
             the function mapping a raw target value to one of its classes

A target map is registered by name (``register_target_map``) so that a saved
model, which stores the name, maps the targets of a later file the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..errors import DataError


@dataclass(frozen=True)
class TargetMap:
    """A raw target value (text) -> the name of its class, one of ``classes`` (in order)."""

    function: Callable[[str], str]
    classes: tuple[str, ...]


TARGET_MAPS: dict[str, TargetMap] = {}


def register_target_map(name: str, function: Callable[[str], str],
                        classes: tuple[str, ...]) -> str:
    """Make ``function`` (value -> one of ``classes``) known as ``name``; returns ``name``."""
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise DataError(f"target map {name!r}: expected at least two distinct classes")
    TARGET_MAPS[name] = TargetMap(function, tuple(classes))
    return name


def named(registry: dict, name: str, what: str):
    """``registry[name]``; an unknown name is a DataError listing the known ones."""
    if name not in registry:
        raise DataError(f"{what} {name!r}: unknown, expected one of "
                        f"{', '.join(registry) or 'none registered'}")
    return registry[name]


def target_map(name: str) -> TargetMap:
    return named(TARGET_MAPS, name, "target map")


@dataclass(frozen=True)
class TableSchema:
    """What is fixed about a table's columns (module docstring)."""

    names: tuple[str, ...] = ()
    categories: dict[str, tuple[str, ...]] = field(default_factory=dict)
    ordinal: tuple[str, ...] = ()
    log_scaled: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()
    target: str | None = None
    target_map: str | None = None

    def __post_init__(self):
        named = set(self.names)
        listed = [*self.categories, *self.ordinal, *self.log_scaled, *self.keep,
                  *([self.target] if self.target else [])]
        unknown = [name for name in listed if named and name not in named]
        if unknown:
            raise DataError(f"table schema: column(s) {', '.join(map(repr, unknown))} not among "
                            "its names")
        if any(name not in self.categories for name in self.ordinal):
            raise DataError("table schema: an ordinal column needs its category list")
        if self.target_map is not None:
            target_map(self.target_map)

    def name_columns(self, table, what: str, targets: bool = False):
        """``table`` with the schema's column names when it was read without a header.

        A table of ``len(names)`` columns takes them all; unless ``targets``,
        one column fewer takes them without the target (a file to predict).
        """
        if not self.names or table.column_names != [str(i) for i in range(table.num_columns)]:
            return table
        names = list(self.names)
        if not targets and table.num_columns == len(names) - 1 and self.target in names:
            names.remove(self.target)
        if table.num_columns != len(names):
            raise DataError(f"{what}: {table.num_columns} columns, expected {len(self.names)} "
                            f"as the table schema names them")
        return table.rename_columns(names)


SCHEMAS: dict[str, TableSchema] = {}


def register_schema(name: str, schema: TableSchema) -> TableSchema:
    """Make ``schema`` known by ``name`` (``pbp train --schema NAME``)."""
    SCHEMAS[name] = schema
    return schema


def schema_named(name: str) -> TableSchema:
    return named(SCHEMAS, name, "--schema")
