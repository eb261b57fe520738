"""``pbp bench``: time our executors and their peers on the same work (glue to :mod:`..bench`)."""

from __future__ import annotations

from pathlib import Path

import click

from ..blas_choice import select_blas
from .data import DataOptions
from .options import (blas_option, out_option, parse_comma_lists, quiet_option, seed_option,
                      table_options, timing_options, timing_settings)
from .runs import command_argv, command_plugins

TABLE_OPTIONS = ("train_file", "target_file", "target", "task", "columns", "drop", "impute",
                 "max_categories", "log_scale", "schema")
# What DataOptions holds for a built-in data set, none of which bench reads.
NO_DATASET = {"dataset": None, "data_dir": None, "limit": None, "kdd_task": "binary",
              "kdd_encoding": "onehot", "kdd_file": None, "test_file": None, "samples": 0,
              "features": 0, "classes": 0}


@click.command("bench")
@click.option("--quick", is_flag=True,
              help="A small grid with short timing (minutes on 2 cores): Net-1h and Net-2h, "
                   "batches 128 and 1024, 1 thread and every usable core, every system but "
                   "torch-compile.")
@click.option("--systems",
              help="Comma-separated systems, or the groups all, executors, peers, ceilings "
                   "(default: all; see --list-systems).")
@click.option("--nets", help="Comma-separated networks: 1h, 2h (the seed's, with --features "
                             "inputs and --classes outputs) or sizes such as 784-512-10 "
                             "(default: 1h,2h).")
@click.option("--batch-sizes", help="Comma-separated batch sizes (default: 32 to 2048 in "
                                    "powers of two; --quick: 128,1024).")
@click.option("--optimizers",
              help="Comma-separated update rules, each timed on every configuration: sgd, "
                   "momentum, nesterov, adam, adamw, with their default settings (default: "
                   "sgd). A peer without the rule is skipped with a note.")
@click.option("--precisions",
              help="Comma-separated precisions of the products: fp32, bf16 (default: fp32). "
                   "Each system is timed at those it computes in; torch-bf16 and jax-bf16 "
                   "are the peers in bf16.")
@click.option("--threads", "thread_counts",
              help="Comma-separated thread counts (default: 1, 2, 4, ... and the usable cores).")
@click.option("--blas-threads", type=click.IntRange(min=1),
              help="hybrid: BLAS threads per worker (default: the smallest split into at least "
                   "two workers of at least two).")
@click.option("--features", type=click.IntRange(min=1), default=784, show_default=True,
              help="Inputs of the 1h and 2h networks (synthetic data).")
@click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True,
              help="Outputs of the 1h and 2h networks.")
@click.option("--epoch-samples", type=click.IntRange(min=1), default=60000, show_default=True,
              help="Samples in the epoch whose time (epoch_s) is reported.")
@timing_options({"warmup": "1; --quick 0.2", "min_time": "0.5; --quick 0.1",
                 "repeats": "5; --quick 3", "timeout": "600; --quick 180"}, "a configuration")
@click.option("--passes", type=click.IntRange(min=1),
              help="Run the whole grid this many times, every other time in reverse order, "
                   "and report each configuration's median pass: load that comes and goes "
                   "then falls on every system alike (default 1).")
@click.option("--gemm-size", type=click.IntRange(min=1), default=2048, show_default=True,
              help="n of the n x n x n float32 GEMM that measures the ceiling.")
@blas_option
@seed_option()
@out_option("Folder for bench.json, bench.csv and the plots.", default=Path("bench-results"))
@click.option("--no-plots", is_flag=True, help="Write no PNG plots.")
@click.option("--list-systems", is_flag=True,
              help="List the systems and whether each can run here, then exit.")
@click.option("--replot", type=click.Path(path_type=Path),
              help="Redraw the plots of an earlier bench.json into --out; measure nothing.")
@table_options
@quiet_option("No progress bar and no summary.")
@click.pass_context
def bench_command(ctx: click.Context, quick: bool, out: Path, no_plots: bool, list_systems: bool,
                  replot: Path | None, quiet: bool, **grid):
    """Time our executors and their peers on the same work, side by side."""
    from ..bench import run_bench   # the harness is imported only by the commands using it

    echo = (lambda line: None) if quiet else click.echo
    blas = grid.pop("blas")
    if list_systems:
        list_bench_systems()
        return
    if replot is not None:
        _replot(replot, out, echo)
        return
    table = DataOptions(**NO_DATASET, **{name: grid.pop(name) for name in TABLE_OPTIONS})
    config = bench_config(ctx, quick, grid)
    select_blas(blas)       # the executors' and the gemm ceiling's, in every worker
    if table.train_file is not None:
        config = table_pool(config, table, out, echo)
    try:
        run_bench(config, out, plots=not no_plots, progress=not quiet, log=echo,
                  command=["pbp", *command_argv()], plugins=command_plugins())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was measured is in {out}") from None
    echo(f"results in {out}")


def bench_config(ctx: click.Context, quick: bool, grid: dict):
    """The BenchConfig of the --quick (or full) preset and the grid options given."""
    from ..bench import BenchConfig
    from ..bench.config import parse_ints, parse_list, parse_systems

    grid = dict(grid)
    lists = parse_comma_lists(ctx, grid, {
        "systems": lambda text, option: parse_systems(text), "nets": parse_list,
        "batch_sizes": parse_ints, "thread_counts": parse_ints, "optimizers": parse_list,
        "precisions": parse_list})
    return BenchConfig.preset(
        quick, systems=lists["systems"], nets=lists["nets"], batch_sizes=lists["batch_sizes"],
        optimizers=lists["optimizers"], precisions=lists["precisions"],
        threads=lists["thread_counts"], hybrid_blas_threads=grid.pop("blas_threads"),
        **timing_settings(grid), **grid)


def table_pool(config, table: DataOptions, out: Path, echo):
    """``config`` timed on the rows of ``--train-file``: its input width, classes and rows."""
    from dataclasses import replace

    from ..bench.systems import write_pool
    from ..errors import ConfigError

    data = table.load(config.seed, quiet=True)
    if data.task == "regress":
        raise ConfigError(f"--train-file {table.train_file}: a regression; pbp bench times "
                          "classifiers (give --task classify)")
    out.mkdir(parents=True, exist_ok=True)
    pool_file = out / "pool.npz"
    write_pool(pool_file, data.x_train, data.y_train, 64 * max(config.batch_sizes))
    shape = f"{len(data.x_train)} rows x {data.x_train.shape[1]} inputs, {data.n_classes} classes"
    echo(f"--train-file {table.train_file}: {shape}")
    return replace(config, features=data.x_train.shape[1], classes=data.n_classes,
                   epoch_samples=len(data.x_train), pool_file=str(pool_file),
                   notes=(*config.notes, f"inputs: the training rows of {table.train_file} "
                                         f"({shape})"))


def list_bench_systems() -> None:
    """Print each system, its kind, whether it can run here and what it is."""
    from ..bench.systems import describe_systems

    for line in describe_systems():
        click.echo(line)


def _replot(source: Path, out: Path, echo) -> None:
    from ..bench import replot

    doc = replot(source, out, log=echo)
    echo(f"plots {', '.join(doc['plots'])} in {out}")
