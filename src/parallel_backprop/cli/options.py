"""Options shared by several ``pbp`` commands, each declared once, as decorators.

Choices come from the registries (data sets, executors, precisions), read
when the command line is parsed, so that what a ``--plugin`` registers is
accepted too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import click

from ..activations import LOSSES
from ..blas_choice import BLAS_CHOICES, BLAS_VARIABLE
from ..data import DATASETS
from ..executors import EXECUTORS, all_precisions


class RegistryChoice(click.Choice):
    """A choice among a registry's names as they are when the option is parsed."""

    def __init__(self, names: Callable[[], Iterable[str]]):
        # Not click.Choice.__init__: it would freeze the names it was given.
        self.names = names
        self.case_sensitive = True

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self.names())


def stack(*options) -> Callable:
    """One decorator applying ``options`` in order (the first shows first in --help)."""
    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func
    return decorate


def dataset_choice(required: bool = True, help: str | None = None) -> Callable:
    """``--dataset``, one of the data registry's names."""
    return click.option("--dataset", type=RegistryChoice(lambda: list(DATASETS)),
                        required=required, help=help)


dataset_options = stack(
    click.option("--data-dir", type=click.Path(path_type=Path),
                 help="Folder to look in first for data files (then $PBP_DATA_DIR, "
                      "the cache, system packages, and finally a download)."),
    click.option("--limit", type=click.IntRange(min=1),
                 help="Use at most N samples of the training pool (quick runs)."),
    click.option("--kdd-task", type=click.Choice(["binary", "category"]), default="binary",
                 show_default=True, help="KDD Cup 99: normal vs attack, or the 5 categories."),
    click.option("--kdd-encoding", type=click.Choice(["onehot", "ordinal"]),
                 default="onehot", show_default=True,
                 help="KDD Cup 99: encoding of protocol_type, service and flag."),
    click.option("--kdd-file", help="KDD Cup 99 training file, or 'full' for kddcup.data.gz "
                                    "(default: the 10% file)."),
    click.option("--test-file", type=click.Path(path_type=Path),
                 help="The test file (KDD Cup 99: e.g. corrected.gz; your own table: one "
                      "like --train-file) instead of a held-out split."),
    click.option("--samples", type=click.IntRange(min=1), default=60000, show_default=True,
                 help="Synthetic: number of samples."),
    click.option("--features", type=click.IntRange(min=1), default=784, show_default=True,
                 help="Synthetic: number of input features."),
    click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True,
                 help="Synthetic: number of classes."),
)
"""The options of every command that loads one data set (see :class:`.runs.DataOptions`)."""

IMPUTE = ("mean", "median", "most-frequent")

table_options = stack(
    click.option("--train-file", type=click.Path(path_type=Path),
                 help="Your own table to train on: CSV or TSV (gzipped or not, header or "
                      "not), Parquet, or .npz with x and y; implies --dataset file."),
    click.option("--target-file", type=click.Path(path_type=Path),
                 help="The targets of a features-only --train-file (a .npy or one-column "
                      "table), row for row."),
    click.option("--target", help="The target column, by name or 0-based index "
                                  "(default: the last column)."),
    click.option("--task", type=click.Choice(["classify", "regress"]),
                 help="Classify or regress the target (default: inferred from it, and said)."),
    click.option("--columns", help="Comma-separated feature columns to keep (names or indices; "
                                   "default: all but the target)."),
    click.option("--drop", help="Comma-separated columns to leave out."),
    click.option("--impute", type=click.Choice(IMPUTE),
                 help="Fill missing values with the training split's column mean, median or "
                      "most frequent value (default: a missing value is an error)."),
    click.option("--max-categories", type=click.IntRange(min=1),
                 help="One-hot at most N categories of a string column; the rarer are "
                      "grouped (default: the data set's)."),
    click.option("--log-scale", is_flag=True,
                 help="Scale heavy-tailed non-negative columns by log1p before standardising."),
    click.option("--schema", help="A registered table schema (e.g. kdd99): the column names of a "
                                  "file without a header, category lists, log-scaled columns."),
)
"""The options of ``--dataset file``, a user's own table (see :class:`.runs.DataOptions`)."""

network_options = stack(
    click.option("--net", default="1h", show_default=True,
                 help="Layer sizes such as 784-1024-10, or 1h / 2h for the seed's "
                      "one- and two-hidden-layer networks of 1024 units."),
    click.option("--activation",
                 help="Hidden activation (sigmoid, tanh, relu, linear, or a registered one, "
                      "see pbp --plugin); a comma-separated list gives one per hidden layer "
                      "(default: relu; seed preset: sigmoid)."),
    click.option("--output-activation",
                 help="Output activation (default: the hidden one for mse; softmax, or "
                      "sigmoid for two classes, for cross-entropy)."),
    click.option("--loss", type=click.Choice(LOSSES),
                 help="default: cross-entropy; seed preset: mse."),
)
"""The options that build the network (see :class:`.runs.NetOptions`)."""

blas_option = click.option(
    "--blas", type=click.Choice(BLAS_CHOICES), default="auto", envvar=BLAS_VARIABLE,
    show_default=True, show_envvar=True,
    help="The BLAS of the CPU executors' products, in every process the command starts: "
         "auto (the faster here, measured once per machine and cached; with --precision "
         "bf16, one with a bf16 GEMM), openblas (SciPy's) or mkl (the mkl extra).")
"""``--blas``, default ``$PBP_BLAS`` (see :mod:`..blas_choice`)."""

executor_options = stack(
    click.option("--executor", type=RegistryChoice(lambda: list(EXECUTORS)), default="serial",
                 show_default=True, help="The executor that trains."),
    click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
                 help="Workers (threads, hybrid) or BLAS threads (blas)."),
    click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
                 help="BLAS threads inside each hybrid worker."),
    click.option("--precision", type=RegistryChoice(all_precisions), default="fp32",
                 show_default=True,
                 help="Matrix products in fp32 (IEEE), bf16 (CPU executors: bfloat16 "
                      "products, fp32 sums and weights; needs AMX or AVX512-BF16 and MKL) or "
                      "tf32 (gpu: tensor cores)."),
    blas_option,
    click.option("--ranks", type=click.IntRange(min=1),
                 help="mpi: start N ranks on this machine with mpiexec (under mpiexec, leave "
                      "it out: mpiexec -n sets the ranks)."),
    click.option("--hostfile", type=click.Path(path_type=Path),
                 help="mpi, with --ranks: start the ranks on these hosts (mpiexec's hostfile, "
                      "`host:ranks` per line), after checking each answers and runs the same "
                      "Python environment."),
    click.option("--restarts", type=click.IntRange(min=0), default=0,
                 help="mpi, with --ranks and --checkpoint-dir: after the job fails (a lost "
                      "host, a killed rank), resume it from its last checkpoint up to N times, "
                      "without the hosts that no longer answer."),
    click.option("--comm-timeout", type=click.FloatRange(min=0, min_open=True),
                 help="mpi: seconds a rank waits for the others before it names the silent "
                      "ones and ends the job [default: PBP_MPI_TIMEOUT, else 120]."),
)
"""The options that choose and size the executor (see :class:`.runs.ExecutorOptions`)."""


def epochs_option(default: int) -> Callable:
    return click.option("--epochs", type=click.IntRange(min=1), default=default,
                        show_default=True)


def seed_option(help: str | None = None) -> Callable:
    return click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
                        help=help)


def quiet_option(help: str = "Print only errors.") -> Callable:
    return click.option("--quiet", is_flag=True, help=help)


def out_option(help: str, default: Path | None = None, required: bool = False) -> Callable:
    """``--out``: a JSON file (tune) or a folder of results (bench, study, report)."""
    return click.option("--out", type=click.Path(path_type=Path), default=default,
                        show_default=default is not None, required=required, help=help)


def parse_comma_lists(ctx: click.Context, params: dict, parsers: dict) -> dict:
    """Take the comma-separated options named in ``parsers`` out of ``params``, parsed.

    ``parsers``: parameter name -> ``parser(text, option)``; ``option`` is the
    flag as declared (``--threads`` for the parameter ``thread_counts``), for
    the parser's error messages.
    """
    flags = {param.name: param.opts[0] for param in ctx.command.params}
    return {name: parser(params.pop(name), flags[name]) for name, parser in parsers.items()}


# Options named as the command line spells them, as the harness configurations name them.
TIMING_FIELDS = {"warmup": "warmup_s", "min_time": "min_time_s", "repeats": "repeats",
                 "timeout": "timeout_s"}


def timing_options(defaults: dict[str, str], timeout_of: str):
    """--warmup, --min-time, --repeats and --timeout of the speed measurements.

    ``defaults``: option name -> the default said in its help (the harness
    presets decide them); ``timeout_of``: what the timeout stops.
    """
    def said(name: str) -> str:
        return f" (default {defaults[name]})" if name in defaults else ""

    options = [
        click.option("--warmup", type=click.FloatRange(min=0),
                     help="Seconds of untimed passes after the first" + said("warmup") + "."),
        click.option("--min-time", type=click.FloatRange(min=0),
                     help="Seconds each timed round lasts at least" + said("min_time") + "."),
        click.option("--repeats", type=click.IntRange(min=1),
                     help="Timed rounds per configuration: median and best are reported"
                          + said("repeats") + "."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
                     help=f"Seconds before {timeout_of} is stopped" + said("timeout") + "."),
    ]

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


def timing_settings(params: dict) -> dict:
    """Take --warmup, --min-time, --repeats and --timeout out of ``params``, by config field."""
    return {field: params.pop(name) for name, field in TIMING_FIELDS.items()}
