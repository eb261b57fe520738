"""``pbp study`` and ``pbp report``: the seed's study on this machine, and its report.

Glue only: the options become a :class:`..study.config.StudyConfig`, run
by :func:`..study.run.run_study`; :func:`..study.report.write_report` writes
the report.
"""

from __future__ import annotations

from pathlib import Path

import click

from .options import (blas_option, out_option, parse_comma_lists, quiet_option, seed_option,
                      timing_options, timing_settings)
from .runs import command_argv, command_plugins


@click.command("study")
@click.option("--preset", type=click.Choice(["quick", "paper"]), default="quick",
              show_default=True,
              help="quick: under 3 minutes on 2 cores; paper: the seed's whole grid (about "
                   "25 minutes on 2 cores).")
@click.option("--parts", help="Comma-separated parts to run (default: all): tune, accuracy, "
                              "kdd-size, batch, threads, width.")
@click.option("--systems", help="Systems of the speed grids: names or the groups executors, "
                                "peers, ceilings (see pbp bench --list-systems).")
@click.option("--shapes", help="Shapes of work of the speed grids: fashion (784 inputs, 10 "
                               "classes), kdd (117 inputs, 1 output) (default: both).")
@click.option("--nets", help="Networks of the speed grids (default: 1h,2h).")
@click.option("--precisions", help="Precisions of the batch grids' products: fp32, bf16 "
                                   "(default: fp32); see pbp bench --precisions.")
@click.option("--batch-sizes", help="Batch sizes of the speed grids (quick: 128,1024; paper: "
                                    "128 to 4096).")
@click.option("--threads", "thread_counts",
              help="Thread counts of the threads part (default: 1, 2, 4, ... the usable cores).")
@click.option("--widths", help="Hidden widths of the width part (quick: 256,1024,4096; "
                               "paper: 256 to 4096).")
@click.option("--datasets", help="Data sets of the training parts: fashion-mnist, mnist, "
                                 "kdd99, synthetic (default: fashion-mnist,kdd99; a data set "
                                 "not found here is skipped, never downloaded).")
@click.option("--executors", help="Executors of the training parts (default: all).")
@click.option("--train-net", help="Network of the training parts (default: 1h).")
@click.option("--epochs", type=click.IntRange(min=1),
              help="Epochs of the accuracy runs (quick: 3; paper: 5).")
@click.option("--limit", type=click.IntRange(min=0),
              help="Training pool of the accuracy runs, 5/6 of it for training; 0: all of it "
                   "(quick: 12000; paper: 0).")
@click.option("--lr", type=float, help="Learning rate of the training runs (default: tuned).")
@click.option("--lrs", help="Learning rates the tune part tries (default: the seed's grid).")
@click.option("--tune-epochs", type=click.IntRange(min=1),
              help="Epochs per tuning candidate (quick: 2; paper: 3).")
@click.option("--kdd-sizes", help="KDD training-set sizes of the kdd-size part, 'full' for the "
                                  "whole file (quick: 50000,100000; paper: 50000 to full).")
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Folder to look in first for the data sets.")
@click.option("--kdd-file", help="KDD Cup 99 file, or 'full' for kddcup.data.gz (default: "
                                 "the 10% file, if found).")
@click.option("--train-file", type=click.Path(path_type=Path),
              help="A table of your own (CSV, TSV, Parquet, .npz), trained on in the tune and "
                   "accuracy parts as the data set 'file' (its last column the target).")
@click.option("--samples", type=click.IntRange(min=1), help="Synthetic data set: samples.")
@click.option("--features", type=click.IntRange(min=1), help="Synthetic data set: features.")
@click.option("--classes", type=click.IntRange(min=2), help="Synthetic data set: classes.")
@timing_options({}, "a speed configuration or a training run")
@click.option("--gemm-size", type=click.IntRange(min=1),
              help="n of the n x n x n GEMM that measures the ceiling (default 2048).")
@blas_option
@seed_option()
@out_option("Folder for study.json and the harness's outputs.", default=Path("study-results"))
@quiet_option("No progress and no tables.")
@click.pass_context
def study_command(ctx: click.Context, preset: str, data_dir: Path | None, kdd_file: str | None,
                  train_file: Path | None, out: Path, quiet: bool, **settings):
    """Run the seed's study on this machine: tuning, accuracy, speed, scaling."""
    from ..blas_choice import select_blas
    from ..study.run import run_study

    select_blas(settings.pop("blas"))   # inherited by every run the study starts
    config = study_config(ctx, preset, settings)
    echo = (lambda line: None) if quiet else click.echo
    try:
        doc = run_study(config, out, data_dir=data_dir, kdd_file=kdd_file,
                        train_file=train_file, progress=not quiet,
                        log=echo, command=["pbp", *command_argv()],
                        plugins=command_plugins())
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was done is in {out / 'study.json'}") from None
    echo(f"study written to {out / 'study.json'} in {doc['wall_s'] / 60:.1f} min; "
         f"`pbp report {out / 'study.json'} --out DIR` writes the report")


def study_config(ctx: click.Context, preset: str, settings: dict):
    """The StudyConfig of ``preset`` with the options given replacing its values."""
    from ..bench.config import parse_ints, parse_list, parse_systems
    from ..study.config import StudyConfig, parse_floats, parse_sizes

    settings = dict(settings)
    lists = parse_comma_lists(ctx, settings, {
        "parts": parse_list, "systems": lambda text, option: parse_systems(text),
        "shapes": parse_list, "nets": parse_list, "batch_sizes": parse_ints,
        "thread_counts": parse_ints, "widths": parse_ints, "datasets": parse_list,
        "executors": parse_list, "lrs": parse_floats, "precisions": parse_list,
        "kdd_sizes": lambda text, option: parse_sizes(text)})
    return StudyConfig.preset_config(preset, **lists, **timing_settings(settings), **settings)


@click.command("report")
@click.argument("study_json", metavar="STUDY.json", type=click.Path(path_type=Path))
@out_option("Folder for report.md, report.html and figures/.", required=True)
@quiet_option()
def report_command(study_json: Path, out: Path, quiet: bool):
    """Write a study's report: Markdown, a self-contained HTML page and the PNG figures."""
    from ..study.report import write_report

    written = write_report(study_json, out)
    if not quiet:
        count = len(written["figures"])
        click.echo(f"{written['markdown']}, {written['html']} and {count} "
                   f"figure{'s' if count != 1 else ''} in {out / 'figures'}")
