"""``pbp train``: train a network on a data set, report its accuracy, save it.

The checkpoint and resume policy is :mod:`..checkpoint`'s; here is only its
click glue: ``--resume D`` is eager and makes the checkpointed run's options
the defaults of every other option.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import click

from ..checkpoint import (check_resume_options, latest_checkpoint, layout_change,
                          resume_defaults, start_checkpointing)
from ..errors import ConfigError
from ..fileio import labelled, write_json
from ..modelio import Model, save_model
from ..trainer import TrainConfig, TrainingInterrupted, evaluate, evaluate_regression, train
from .data import DataOptions, OptionGroup
from .methods import MethodOptions, apply_preset, method_options
from .options import (dataset_choice, dataset_options, epochs_option, executor_options,
                      network_options, quiet_option, seed_option, table_options)
from .runs import ExecutorOptions, NetOptions, Run, launch_ranks, run_layout, start_run

CHECKPOINT_KEY = "pbp.checkpoint"   # ctx.meta: the Checkpoint that --resume read


def resume_callback(ctx: click.Context, param: click.Parameter, folder: Path | None):
    """``--resume D``: the newest checkpoint's options become the defaults of every option."""
    if folder is None or ctx.resilient_parsing:
        return folder
    checkpoint = latest_checkpoint(folder)
    ctx.meta[CHECKPOINT_KEY] = checkpoint
    ctx.default_map = {**(ctx.default_map or {}), **resume_defaults(checkpoint)}
    return folder


@dataclass(frozen=True)
class TrainOptions(OptionGroup):
    """How to train (besides the executor) and what to write at the end."""

    batch_size: int
    lr: float
    epochs: int
    seed: int
    save: Path | None
    metrics_json: Path | None
    quiet: bool

    def config(self, run: ExecutorOptions, method: MethodOptions) -> TrainConfig:
        return run.train_config(batch_size=self.batch_size, lr=self.lr, epochs=self.epochs,
                                seed=self.seed, **method.settings())

    @property
    def outputs(self) -> dict:
        return {"--save": self.save, "--metrics-json": self.metrics_json}


@dataclass(frozen=True)
class CheckpointOptions(OptionGroup):
    """Where and how often to checkpoint, and the folder resumed (``--resume``)."""

    checkpoint_dir: Path | None
    checkpoint_every: int | None
    keep_checkpoints: int
    resume: Path | None


@click.command("train")
@dataset_choice(required=False, help="The data set (default: file, with --train-file).")
@dataset_options
@table_options
@click.option("--image-scaling", type=click.Choice(["standard", "unit"]), default="standard",
              show_default=True,
              help="MNIST, Fashion-MNIST: pixels in [0, 1] standardised with the training "
                   "split's mean and deviation (saved with the model), or left in [0, 1].")
@network_options
@click.option("--batch-size", type=click.IntRange(min=1), help="default: 128 (both presets).")
@click.option("--lr", type=float, help="Learning rate (default: 0.001; seed preset: 0.1).")
@method_options
@epochs_option(10)
@executor_options
@seed_option()
@click.option("--save", type=click.Path(path_type=Path), help="Write the model to this .npz.")
@click.option("--metrics-json", type=click.Path(path_type=Path),
              help="Write metrics (accuracy, throughput, per-epoch list) to this JSON file.")
@quiet_option()
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="Write checkpoints into this folder (created if missing) at the end of "
                   "every epoch, every --checkpoint-every steps and on Ctrl-C.")
@click.option("--checkpoint-every", type=click.IntRange(min=1),
              help="Also write a checkpoint every N steps (mini-batches).")
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the newest checkpoints to keep.")
@click.option("--resume", type=click.Path(path_type=Path), is_eager=True,
              callback=resume_callback,
              help="Continue the run checkpointed in this folder, with its options; options "
                   "given again must match (--epochs may grow; --data-dir may move).")
@click.pass_context
def train_command(ctx: click.Context, **params):
    """Train a network on a data set and report its accuracy."""
    # Resolved once, in ctx.params too: checkpoints record (and --resume compares)
    # the settings the run trains with, not the preset that gave them.
    ctx.params.update(apply_preset(params))
    data, net = DataOptions.take(params).check(), NetOptions.take(params)
    run, job = ExecutorOptions.take(params), TrainOptions.take(params)
    method = MethodOptions.take(params)
    saving = CheckpointOptions.take(params)
    resumed = ctx.meta.get(CHECKPOINT_KEY)
    if resumed is not None:
        check_resume_options(resumed, ctx.params)
    elif saving.checkpoint_every is not None and saving.checkpoint_dir is None:
        raise ConfigError("--checkpoint-every: needs --checkpoint-dir (where to write them)")
    folder = saving.checkpoint_dir or saving.resume
    config = job.config(run, method)
    if run.ranks is not None or run.hostfile is not None or run.restarts:
        return launch_ranks(run, config.batch_size, job.outputs, data.input_files(), folder)
    started = start_run(data, net, run, seed=job.seed, quiet=job.quiet, outputs=job.outputs,
                        header=lambda started: _header(started, run))
    resume_state, writer = None, None
    if folder is not None:
        layout = run_layout(started, run)
        resume_state, writer = start_checkpointing(
            resumed, folder, started.network, started.data, ctx.params,
            keep=saving.keep_checkpoints, enabled=started.root, layout=layout)
    if resume_state is not None:
        started.echo(f"resuming from {resumed.path} (epoch {resume_state.epoch}, "
                     f"step {resume_state.step}){_destinations(job)}")
        changed = layout_change(resumed, layout)
        if changed:
            started.echo(changed)
    try:
        result = train(started.network, config, started.data.x_train, started.data.y_train,
                       started.data.x_val, started.data.y_val,
                       progress=started.root and not job.quiet, log=started.echo,
                       resume=resume_state, checkpoint=writer,
                       checkpoint_every=saving.checkpoint_every,
                       task=started.data.task)
        if started.root:
            _report(started, result, config, job, run)
    except TrainingInterrupted as exc:
        raise TrainingInterrupted(
            f"{exc}; checkpoint saved in {folder}; continue with "
            f"`pbp train --resume {folder}`", exc.state, exc.signum) from None
    finally:
        if writer is not None:   # the folder's lock: another run may take it now
            writer.close()
    return 0


def _destinations(job: "TrainOptions") -> str:
    """Where a resumed run writes its outputs (restored from the checkpoint or given)."""
    said = [f"{what} {path}" for what, path in (("the model will be saved to", job.save),
                                                ("the metrics written to", job.metrics_json))
            if path is not None]
    return f"; {' and '.join(said)}" if said else ""


def _header(started: Run, run: ExecutorOptions) -> str:
    data, network = started.data, started.network
    where = (f" ({started.n_ranks} ranks x {run.threads} thread{'s' if run.threads > 1 else ''})"
             if run.distributed else "")
    task = (f"; regression of {', '.join(data.class_names)} (linear output, mse)"
            if data.task == "regress" else "")
    return (f"{data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
            f"{len(data.x_test)} test samples{task}; net {network.spec} "
            f"({', '.join(network.activations)}; {network.loss}); executor {run.executor}{where}")


def _report(started: Run, result, config: TrainConfig, job: TrainOptions,
            run: ExecutorOptions) -> None:
    """Rank 0 after training: test metrics, the summary line, the model and metrics files."""
    data, network, echo = started.data, started.network, started.echo
    score = _test_score(started, result)
    summary = result.summary(network, config)
    summary["dataset"] = data.name
    summary.update(n_train=len(data.x_train), n_val=len(data.x_val), n_test=len(data.x_test))
    if run.distributed:
        summary["ranks"] = started.n_ranks
    echo(f"{score}  ({summary['samples_per_s']:,.0f} samples/s, "
         f"{summary['epoch_s']:.2f} s/epoch)")
    if job.save is not None:
        with labelled("--save"):
            save_model(job.save, Model(network, result.params, data.preprocessor,
                                       data.class_names, data.name, metadata=summary))
        echo(f"model saved to {job.save}")
    if job.metrics_json is not None:
        write_json(job.metrics_json, summary, indent=2, what="--metrics-json")



def _test_score(started: Run, result) -> str:
    """Score the test split into ``result`` and say it: accuracy, or R², RMSE and MAE in the
    targets' original units (through the table preprocessor's ``inverse_targets``)."""
    data, network = started.data, started.network
    if result.task != "regress":
        result.test_accuracy = evaluate(network, result.params, data.x_test, data.y_test)
        return f"test accuracy {result.test_accuracy:.4f}"
    inverse = getattr(data.preprocessor, "inverse_targets", None)
    result.test_metrics = evaluate_regression(network, result.params, data.x_test,
                                              data.y_test, inverse)
    m = result.test_metrics
    return f"test R² {m['r2']:.4f}  RMSE {m['rmse']:.4g}  MAE {m['mae']:.4g}"
