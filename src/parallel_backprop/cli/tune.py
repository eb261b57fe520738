"""``pbp tune``: pick the learning rate (and batch size) by validation accuracy."""

from __future__ import annotations

from pathlib import Path

import click

from ..fileio import write_json
from .methods import MethodOptions, apply_preset, method_options
from .options import (dataset_choice, dataset_options, epochs_option, executor_options,
                      network_options, out_option, quiet_option, seed_option, stack,
                      table_options)
from .runs import (DataOptions, ExecutorOptions, NetOptions, command_argv, command_plugins,
                   launch_ranks, start_run)

# The update rules searched: each list's default is the single value of its option.
OPTIMIZER_GRID = (("--optimizers", "update rules, each tried with every other setting",
                   "--optimizer"),
                  ("--momentums", "momentums for momentum and nesterov", "--momentum"),
                  ("--weight-decays", "weight decays", "--weight-decay"))
optimizer_grid_options = stack(*(
    click.option(flag, help=f"Comma-separated {what} (default: {default}).")
    for flag, what, default in OPTIMIZER_GRID))


@click.command("tune")
@dataset_choice(required=False, help="The data set (default: file, with --train-file).")
@dataset_options
@table_options
@network_options
@click.option("--lrs", help="Comma-separated learning rates (default: 0.0003,0.001,0.003; "
                            "seed preset: the seed's grid, 0.001,0.002,0.01,0.1,0.5,1).")
@click.option("--batch-sizes", help="Comma-separated batch sizes, each tried with every "
                                    "learning rate (default: 128).")
@optimizer_grid_options
@epochs_option(5)
@method_options
@executor_options
@click.option("--jobs", type=click.IntRange(min=1),
              help="Candidates trained at once, each in a process of its own (default: as "
                   "many as the usable cores hold at --threads each; 1 for gpu and mpi).")
@seed_option()
@out_option("Write the table, the winner and the environment to this JSON file.")
@quiet_option()
def tune_command(batch_sizes: str | None, epochs: int, jobs: int | None, seed: int,
                 out: Path | None, quiet: bool, **params):
    """Pick the learning rate (and update rule) with the highest validation accuracy."""
    from ..bench.config import parse_ints
    from ..study.config import parse_floats
    from ..study.tune import TuneConfig, table, tune

    apply_preset(params)
    lrs, optimizers = params.pop("lrs"), params.pop("optimizers")
    momentums, weight_decays = params.pop("momentums"), params.pop("weight_decays")
    data, net, run = (DataOptions.take(params), NetOptions.take(params),
                      ExecutorOptions.take(params))
    method = MethodOptions.take(params)
    config = TuneConfig(
        lrs=parse_floats(lrs, "--lrs"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes") or (128,),
        optimizers=tuple(name.strip() for name in optimizers.split(",") if name.strip())
        if optimizers else (),
        momentums=parse_floats(momentums, "--momentums") or (),
        weight_decays=parse_floats(weight_decays, "--weight-decays", zero=True) or (),
        train=run.train_config(epochs=epochs, seed=seed, **method.settings()), jobs=jobs)
    outputs = {"--out": out}
    if run.ranks is not None or run.hostfile is not None or run.restarts:
        return launch_ranks(run, min(config.batch_sizes), outputs, data.input_files())
    candidates = len(config.candidates())
    started = start_run(
        data, net, run, seed=seed, quiet=quiet, outputs=outputs,
        header=lambda started: (
            f"{started.data.name}: {len(started.data.x_train)} train, "
            f"{len(started.data.x_val)} validation samples; net {started.network.spec}; "
            f"{candidates} candidates, {epochs} epoch(s) each, executor {run.executor}"))
    doc = tune(started.network, started.data, config, log=started.echo,
               plugins=command_plugins())
    for line in table(doc):
        started.echo(line)
    if out is not None and started.root:
        from ..harness.environment import environment

        write_json(out, {**doc, "command": ["pbp", *command_argv()],
                         "environment": environment()}, what="--out")
    return 0
