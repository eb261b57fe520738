"""The records the harness writes: one measured configuration, one training run.

Both are dataclasses while a run produces them and plain dicts in
``bench.json`` and ``study.json`` (:meth:`to_dict`, with the keys those
files have always had). Readers of the files, which hold dicts, ask
:func:`is_ok` instead of comparing status strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Mapping


class Status:
    """The values of a record's ``status``."""

    OK = "ok"                    # measured, or trained
    SKIPPED = "skipped"          # cannot run on this machine; the last note says why
    FAILED = "failed"            # started and did not finish; the last note says why
    DIVERGED = "diverged"        # a tuning candidate whose loss or weights became NaN
    RUNNING = "running"          # a study part under way
    INTERRUPTED = "interrupted"  # a study part stopped by Ctrl-C


def is_ok(record: Mapping[str, Any]) -> bool:
    """Whether a record read from a file (a dict) was measured or trained."""
    return record.get("status") == Status.OK


class _Outcome:
    """What both records share: a status, notes, and how to end otherwise than ok."""

    status: str | None
    notes: list[str]
    # The field naming the system or executor the record is of.
    name_field = ""

    @property
    def name(self) -> str:
        return getattr(self, self.name_field)

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def skip(self, reason: str) -> None:
        self.status = Status.SKIPPED
        self.notes.append(reason)

    def fail(self, reason: str) -> None:
        self.status = Status.FAILED
        self.notes.append(reason)

    def to_dict(self) -> dict:
        """The record as ``bench.json`` / ``study.json`` hold it: its fields, then the
        open-ended ones of ``extra``."""
        doc = {f.name: _copy(getattr(self, f.name)) for f in fields(self) if f.name != "extra"}
        doc.update(self.extra)
        return doc

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]):
        """The record of a dict written by :meth:`to_dict`."""
        names = {f.name for f in fields(cls)} - {"extra"}
        return cls(**{k: v for k, v in doc.items() if k in names},
                   extra={k: v for k, v in doc.items() if k not in names})


def _copy(value):
    return list(value) if isinstance(value, (list, tuple)) else value


@dataclass
class Measurement(_Outcome):
    """One benchmark configuration (system x network x batch x threads) and what it measured.

    ``blas_threads`` is the value of the thread variables of its process;
    ``extra`` holds the worker's timing details (``first_step_s``,
    ``step_s_rounds``, ``threadpools``, ...) and ``epoch_samples``.
    """

    name_field = "system"

    system: str
    kind: str                               # "executor", "peer" or "ceiling"
    net: str | None = None                  # sizes joined by "-"; None for a ceiling
    net_name: str | None = None
    batch_size: int | None = None
    optimizer: str | None = None            # the update rule of a trainer (optim.OPTIMIZERS)
    precision: str | None = None            # of the matrix products: fp32, bf16, ...
    threads: int = 1
    workers: int | None = None
    ranks: int | None = None
    blas_threads: int = 1
    cpus: list[int] | None = None
    status: str | None = None
    notes: list[str] = field(default_factory=list)
    samples_per_s: float | None = None      # median round
    samples_per_s_best: float | None = None
    epoch_s: float | None = None
    gflops: float | None = None
    gflops_best: float | None = None
    speedup_vs_serial: float | None = None  # over the baseline executor (executors.BASELINE)
    efficiency: float | None = None         # GFLOP/s over the GEMM ceiling's
    step_s_median: float | None = None
    step_s_min: float | None = None
    cores_busy: float | None = None
    wall_s: float | None = None
    extra: dict = field(default_factory=dict)

    def take(self, result: Mapping[str, Any]) -> None:
        """Fill in a worker's result: its status, notes, metrics and details."""
        names = {f.name for f in fields(self)} - {"extra", "notes"}
        self.notes += result.get("notes", [])
        for key, value in result.items():
            if key in names:
                setattr(self, key, value)
            elif key != "notes":
                self.extra[key] = value


@dataclass
class TrainingRun(_Outcome):
    """One ``pbp train`` run of a study; ``extra`` holds what its part adds
    (``part``, ``size``, ``accuracy_vs_serial``, ``matches_serial``, ``speedup_vs_serial``)."""

    name_field = "executor"

    dataset: str
    executor: str
    threads: int = 1
    blas_threads: int = 1
    ranks: int | None = None
    net: str = ""
    batch_size: int = 0
    lr: float = 0.0
    epochs: int = 1
    limit: int | None = None
    seed: int = 0
    n_train: int | None = None
    test_accuracy: float | None = None
    val_accuracy: float | None = None
    status: str = Status.OK
    notes: list[str] = field(default_factory=list)
    epoch_s: float | None = None
    samples_per_s: float | None = None
    final_loss: float | None = None
    wall_s: float | None = None
    extra: dict = field(default_factory=dict)


def series(record: Mapping[str, Any]) -> str:
    """What a record is drawn and tabled as: its system, with the precision of an executor's
    products where that is not fp32 (``threads bf16``). A peer's name already says its own
    (``torch-bf16``)."""
    name = record.get("system") or record.get("executor") or ""
    precision = record.get("precision") or "fp32"
    if precision == "fp32" or record.get("kind", "executor") != "executor":
        return name
    return f"{name} {precision}"


__all__ = ["Measurement", "Status", "TrainingRun", "is_ok", "series"]
