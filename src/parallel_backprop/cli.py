"""The ``pbp`` command line: train, predict, fetch, bench, tune, study, report.

Options are validated here, at the boundary; any bad input ends with one
line on stderr (``pbp: error: ...``) and a non-zero exit status, never a
traceback. Outputs are checked for writability before training starts and
written atomically after it ends.
"""

from __future__ import annotations

import json
import signal
import sys
from dataclasses import replace
from pathlib import Path

import click
import numpy as np

from . import __version__
from .activations import LOSSES
from .errors import ConfigError, PbpError
from .executors import EXECUTORS, all_precisions
from .fileio import atomic_open, check_writable
from .modelio import Model, load_model, save_model
from .network import Network
from .trainer import (LR_SCHEDULES, TrainConfig, TrainingInterrupted, evaluate, predict_outputs,
                      train)

DATASET_NAMES = ("mnist", "fashion-mnist", "kdd99", "synthetic")


def _dataset_options(func):
    """Options shared by every command that loads a data set."""
    options = [
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
                     help="KDD Cup 99 test file (e.g. corrected.gz) instead of a held-out split."),
        click.option("--samples", type=click.IntRange(min=1), default=60000, show_default=True,
                     help="Synthetic: number of samples."),
        click.option("--features", type=click.IntRange(min=1), default=784, show_default=True,
                     help="Synthetic: number of input features."),
        click.option("--classes", type=click.IntRange(min=2), default=10, show_default=True,
                     help="Synthetic: number of classes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _load(dataset, seed, quiet, data_dir, limit, kdd_task, kdd_encoding, kdd_file, test_file,
          samples, features, classes, fitted=None, image_scaling="standard"):
    from .data import load_dataset

    return load_dataset(
        dataset, data_dir=data_dir, limit=limit, seed=seed, progress=not quiet,
        kdd_task=kdd_task, kdd_encoding=kdd_encoding, kdd_file=kdd_file,
        kdd_test_file=test_file, synthetic_samples=samples,
        synthetic_features=features, synthetic_classes=classes, fitted=fitted,
        image_scaling=image_scaling)


# Options of `pbp train` that do not define the run: never recorded in a checkpoint.
NOT_RECORDED = {"save", "metrics_json", "quiet", "checkpoint_dir", "checkpoint_every",
                "keep_checkpoints", "resume", "ranks"}
# Recorded options a resumed run may change: where the data are (the data
# themselves are checked by fingerprint) and how many epochs to train in all.
FREE_ON_RESUME = {"data_dir", "kdd_file", "test_file", "epochs"}


def _resume_callback(ctx: click.Context, param: click.Parameter, folder: Path | None):
    """``--resume D``: the newest checkpoint's options become the defaults of every option."""
    if folder is None or ctx.resilient_parsing:
        return folder
    from .checkpoint import latest_checkpoint

    checkpoint = latest_checkpoint(folder)
    ctx.meta["pbp.checkpoint"] = checkpoint
    recorded = {k: v for k, v in checkpoint.options.items() if v is not None}
    ctx.default_map = {**(ctx.default_map or {}), **recorded}
    return folder


def _recorded_options(ctx: click.Context) -> dict:
    """The options that define this run, as plain JSON values."""
    return {name: str(value) if isinstance(value, Path) else value
            for name, value in ctx.params.items() if name not in NOT_RECORDED}


def _check_resume_options(ctx: click.Context, checkpoint) -> None:
    """Options given again with --resume must be the checkpointed run's."""
    now = _recorded_options(ctx)
    differ = [f"--{name.replace('_', '-')} {now.get(name)} (the run used {value})"
              for name, value in checkpoint.options.items()
              if name not in FREE_ON_RESUME and name in now and now[name] != value]
    if differ:
        raise ConfigError(f"--resume {checkpoint.path.parent}: {'; '.join(differ)}; leave "
                          "those options out to continue the checkpointed run as it was")


def _checkpointing(ctx, network, data, folder, keep, root):
    """The resume state (or None) and the checkpoint writer of ``pbp train``.

    Every process gets a writer, so that all run the same loop; only the
    root (rank 0 under MPI) writes.
    """
    from .checkpoint import (CheckpointWriter, check_same_run, data_fingerprint,
                             prepare_folder)

    checkpoint = ctx.meta.get("pbp.checkpoint")
    fingerprint = data_fingerprint(data.x_train, data.y_train, data.x_val, data.y_val)
    if checkpoint is not None:
        check_same_run(checkpoint, network, fingerprint)
    if root:   # resuming into the checkpoint's own folder; any other must hold no run
        same = checkpoint is not None and Path(folder).resolve() == checkpoint.path.parent.resolve()
        folder = prepare_folder(folder, resuming=same)
    writer = CheckpointWriter(folder, network, data.preprocessor, data.class_names, data.name,
                              _recorded_options(ctx), fingerprint, keep=keep, enabled=root)
    return (None if checkpoint is None else checkpoint.state), writer


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pbp")
def cli() -> None:
    """Train multilayer perceptrons with parallel backpropagation."""


@cli.command("train")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True)
@_dataset_options
@click.option("--image-scaling", type=click.Choice(["standard", "unit"]), default="standard",
              show_default=True,
              help="MNIST, Fashion-MNIST: pixels in [0, 1] standardised with the training "
                   "split's mean and deviation (saved with the model), or left in [0, 1].")
@click.option("--net", default="1h", show_default=True,
              help="Layer sizes such as 784-1024-10, or 1h / 2h for the seed's "
                   "one- and two-hidden-layer networks of 1024 units.")
@click.option("--activation", default="sigmoid", show_default=True,
              help="Hidden activation (sigmoid, tanh, relu, linear, or a registered one); "
                   "a comma-separated list gives one per hidden layer.")
@click.option("--output-activation",
              help="Output activation (default: the hidden one for mse; softmax, or "
                   "sigmoid for two classes, for cross-entropy).")
@click.option("--loss", type=click.Choice(LOSSES), default="mse", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True, help="Learning rate.")
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant",
              show_default=True,
              help="linear: the rate falls by lr/epochs after each epoch, to lr/epochs.")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="serial",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers (threads, hybrid) or BLAS threads (blas).")
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS threads inside each hybrid worker.")
@click.option("--precision", type=click.Choice(all_precisions()), default="fp32", show_default=True,
              help="gpu: matrix products in IEEE fp32 (PyTorch's default) or tf32 "
                   "(tensor cores).")
@click.option("--ranks", type=click.IntRange(min=1),
              help="mpi: start N ranks on this machine with mpiexec (under mpiexec, leave "
                   "it out: mpiexec -n sets the ranks).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--save", type=click.Path(path_type=Path), help="Write the model to this .npz.")
@click.option("--metrics-json", type=click.Path(path_type=Path),
              help="Write metrics (accuracy, throughput, per-epoch list) to this JSON file.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="Write checkpoints into this folder (created if missing) at the end of "
                   "every epoch, every --checkpoint-every steps and on Ctrl-C.")
@click.option("--checkpoint-every", type=click.IntRange(min=1),
              help="Also write a checkpoint every N steps (mini-batches).")
@click.option("--keep-checkpoints", type=click.IntRange(min=1), default=3, show_default=True,
              help="How many of the newest checkpoints to keep.")
@click.option("--resume", type=click.Path(path_type=Path), is_eager=True,
              callback=_resume_callback,
              help="Continue the run checkpointed in this folder, with its options; options "
                   "given again must match (--epochs may grow; --data-dir may move).")
def train_command(dataset, data_dir, limit, kdd_task, kdd_encoding, kdd_file, test_file,
                  samples, features, classes, image_scaling, net, activation,
                  output_activation, loss, batch_size, lr, lr_schedule, epochs, executor,
                  threads, blas_threads, precision, ranks, seed, save, metrics_json, quiet,
                  checkpoint_dir, checkpoint_every, keep_checkpoints, resume):
    """Train a network on a data set and report its accuracy."""
    ctx = click.get_current_context()
    if resume is not None:
        _check_resume_options(ctx, ctx.meta["pbp.checkpoint"])
        checkpoint_dir = checkpoint_dir or resume
    elif checkpoint_every is not None and checkpoint_dir is None:
        raise ConfigError("--checkpoint-every: needs --checkpoint-dir (where to write them)")
    config = TrainConfig(batch_size=batch_size, lr=lr, epochs=epochs, seed=seed,
                         executor=executor, threads=threads, blas_threads=blas_threads,
                         precision=precision, lr_schedule=lr_schedule)
    if ranks is not None:
        return _launch_ranks(ranks, config, save, metrics_json)
    # Under MPI every rank runs this command with the same seed (same data, same
    # batches); only rank 0 prints, evaluates on the test set and writes files.
    rank, n_ranks = _mpi_world() if executor == "mpi" else (0, 1)
    root = rank == 0
    # Fail on an unwritable output now, not after the training it would lose.
    if save is not None and root:
        check_writable(save, "--save")
    if metrics_json is not None and root:
        check_writable(metrics_json, "--metrics-json")
    if executor == "gpu":   # no GPU (or no Triton): say so before loading any data
        from .executors.gpu import load_backend, select_device

        select_device(*load_backend())
    data = _load(dataset, seed, quiet or not root, data_dir, limit, kdd_task, kdd_encoding,
                 kdd_file, test_file, samples, features, classes, image_scaling=image_scaling)
    network = Network.from_spec(net, data.n_features, data.n_classes, activation=activation,
                                output_activation=output_activation, loss=loss)
    echo = click.echo if root and not quiet else (lambda line: None)
    where = (f" ({n_ranks} ranks x {threads} thread{'s' if threads > 1 else ''})"
             if executor == "mpi" else "")
    echo(f"{data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
         f"{len(data.x_test)} test samples; net {network.spec} "
         f"({', '.join(network.activations)}; {network.loss}); executor {executor}{where}")
    resume_state, writer = None, None
    if checkpoint_dir is not None:
        resume_state, writer = _checkpointing(ctx, network, data, checkpoint_dir,
                                              keep_checkpoints, root)
    if resume_state is not None:
        echo(f"resuming from {ctx.meta['pbp.checkpoint'].path} (epoch {resume_state.epoch}, "
             f"step {resume_state.step})")
    try:
        result = train(network, config, data.x_train, data.y_train, data.x_val, data.y_val,
                       progress=root and not quiet, log=echo, resume=resume_state,
                       checkpoint=writer, checkpoint_every=checkpoint_every)
    except TrainingInterrupted as exc:
        raise TrainingInterrupted(
            f"{exc}; checkpoint saved in {checkpoint_dir}; continue with "
            f"`pbp train --resume {checkpoint_dir}`", exc.state) from None
    if not root:
        return 0
    result.test_accuracy = evaluate(network, result.params, data.x_test, data.y_test)
    summary = result.summary(network, config)
    summary["dataset"] = data.name
    summary.update(n_train=len(data.x_train), n_val=len(data.x_val), n_test=len(data.x_test))
    if executor == "mpi":
        summary["ranks"] = n_ranks
    echo(f"test accuracy {result.test_accuracy:.4f}  "
         f"({summary['samples_per_s']:,.0f} samples/s, {summary['epoch_s']:.2f} s/epoch)")
    if save is not None:
        save_model(save, Model(network, result.params, data.preprocessor, data.class_names,
                               data.name, metadata=summary))
        echo(f"model saved to {save}")
    if metrics_json is not None:
        with atomic_open(metrics_json, "w") as handle:
            json.dump(summary, handle, indent=2)
            handle.write("\n")


def _mpi_world() -> tuple[int, int]:
    """This process's (rank, ranks); ranks other than 0 leave Ctrl-C to rank 0.

    mpiexec forwards a Ctrl-C to every rank, and each would notice it at a
    different step; rank 0 alone stops (after writing a checkpoint, when
    asked to) and its abort then ends the others.
    """
    from .executors.mpi import world

    rank, n_ranks = world()
    if rank != 0:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    return rank, n_ranks


def _launch_ranks(ranks: int, config: TrainConfig, save, metrics_json) -> int:
    """``--ranks N``: check what can be checked here, then run this command under mpiexec."""
    from .executors.mpi import check_launch, launch

    if config.executor != "mpi":
        raise ConfigError(f"--ranks {ranks}: only the mpi executor runs on ranks; add "
                          f"--executor mpi or drop --ranks (executor {config.executor!r})")
    mpiexec = check_launch(ranks, config.batch_size)
    if save is not None:
        check_writable(save, "--save")
    if metrics_json is not None:
        check_writable(metrics_json, "--metrics-json")
    obj = click.get_current_context().find_root().obj or {}
    return launch(mpiexec, ranks, obj.get("argv", sys.argv[1:]))


@cli.command("fetch")
@click.argument("dataset", type=click.Choice(["mnist", "fashion-mnist", "kdd99"]))
@click.option("--data-dir", type=click.Path(path_type=Path),
              help="Folder to look in first (then $PBP_DATA_DIR, the cache, system packages).")
@click.option("--full", is_flag=True, help="kdd99: the full kddcup.data.gz, not the 10% file.")
@click.option("--quiet", is_flag=True, help="Print only the paths.")
def fetch_command(dataset, data_dir, full, quiet):
    """Find DATASET's files, downloading (checksum-verified) what is missing; print the paths.

    Run it once where there is network, then train offline.
    """
    from .data.sources import locate_images, locate_kdd

    if dataset == "kdd99":
        paths = [locate_kdd("full" if full else None, data_dir, progress=not quiet)]
    else:
        paths = list(locate_images(dataset, data_dir, progress=not quiet).values())
    for path in paths:
        click.echo(str(path))


@cli.command("predict")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@click.option("--dataset", type=click.Choice(DATASET_NAMES),
              help="Predict a data set's test split (default: the model's data set).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Predict the rows of a .npy or .csv file instead of a data set.")
@_dataset_options
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the data split (use the training run's).")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write predicted classes to this .csv (index,class,name) or .npy.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def predict_command(model_path, dataset, input_path, data_dir, limit, kdd_task, kdd_encoding,
                    kdd_file, test_file, samples, features, classes, seed, output, quiet):
    """Predict classes with a saved MODEL and print the accuracy when labels are known."""
    from .data import load_features_file

    if output is not None:
        if output.suffix not in (".csv", ".npy"):
            raise PbpError(f"--output {output}: expected a .csv or .npy file name")
        check_writable(output, "--output")
    model = load_model(model_path)
    if input_path is not None:
        x, labels = load_features_file(input_path, model.preprocessor, model.network.sizes[0])
    else:
        name = dataset or model.dataset
        if name not in DATASET_NAMES:
            raise PbpError(f"model file {model_path}: trained on {name!r}; pass --dataset or --input")
        # The model's own fitted preprocessing, never one refitted on this data.
        fitted = model.preprocessor if name != "synthetic" else None
        data = _load(name, seed, quiet, data_dir, limit, kdd_task, kdd_encoding, kdd_file,
                     test_file, samples, features, classes, fitted)
        x, labels = data.x_test, data.y_test
    if x.shape[1] != model.network.sizes[0]:
        raise PbpError(f"input has {x.shape[1]} features, model {model_path} expects "
                       f"{model.network.sizes[0]}")
    predicted = model.network.classify(predict_outputs(model.network, model.params, x))
    if labels is not None and not quiet:
        click.echo(f"accuracy {np.mean(predicted == labels):.4f} on {len(labels)} samples")
    elif not quiet:
        click.echo(f"predicted {len(predicted)} samples")
    if output is not None:
        _write_predictions(output, predicted, model.class_names)


def _write_predictions(path: Path, predicted: np.ndarray, class_names: list[str]) -> None:
    with atomic_open(path, "wb") as handle:
        if path.suffix == ".npy":
            np.save(handle, predicted)
            return
        handle.write(b"index,class,name\n")
        for i, label in enumerate(predicted):
            name = class_names[label] if label < len(class_names) else ""
            handle.write(f"{i},{label},{name}\n".encode())


@cli.command("bench")
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
@click.option("--warmup", type=click.FloatRange(min=0),
              help="Seconds of untimed passes after the first (default 1; --quick 0.2).")
@click.option("--min-time", type=click.FloatRange(min=0),
              help="Seconds each timed round lasts at least (default 0.5; --quick 0.1).")
@click.option("--repeats", type=click.IntRange(min=1),
              help="Timed rounds per configuration: median and best are reported "
                   "(default 5; --quick 3).")
@click.option("--gemm-size", type=click.IntRange(min=1), default=2048, show_default=True,
              help="n of the n x n x n float32 GEMM that measures the ceiling.")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds before a configuration is stopped (default 600; --quick 180).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("bench-results"),
              show_default=True, help="Folder for bench.json, bench.csv and the plots.")
@click.option("--no-plots", is_flag=True, help="Write no PNG plots.")
@click.option("--list-systems", is_flag=True,
              help="List the systems and whether each can run here, then exit.")
@click.option("--replot", type=click.Path(path_type=Path),
              help="Redraw the plots of an earlier bench.json into --out; measure nothing.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
@click.pass_context
def bench_command(ctx, quick, systems, nets, batch_sizes, thread_counts, blas_threads, features,
                  classes, epoch_samples, warmup, min_time, repeats, gemm_size, timeout, seed,
                  out, no_plots, list_systems, replot, quiet):
    """Time our executors and their peers on the same work, side by side."""
    from .bench import BenchConfig, replot as redraw, run_bench
    from .bench.config import parse_ints, parse_list, parse_systems

    if list_systems:
        from .bench.systems import SYSTEMS, missing_modules

        for system in SYSTEMS.values():
            missing = missing_modules(system)
            state = f"needs {', '.join(missing)}" if missing else "available"
            click.echo(f"{system.name:<14} {system.kind:<9} {state:<16} {system.description}")
        return
    if replot is not None:
        doc = redraw(replot, out, log=(lambda line: None) if quiet else click.echo)
        if not quiet:
            click.echo(f"plots {', '.join(doc['plots'])} in {out}")
        return
    config = BenchConfig.preset(
        quick, systems=parse_systems(systems), nets=parse_list(nets, "--nets"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"),
        threads=parse_ints(thread_counts, "--threads"), hybrid_blas_threads=blas_threads,
        features=features, classes=classes, epoch_samples=epoch_samples, gemm_size=gemm_size,
        timeout_s=timeout, seed=seed, warmup_s=warmup, min_time_s=min_time, repeats=repeats)
    echo = (lambda line: None) if quiet else click.echo
    argv = (ctx.obj or {}).get("argv") if isinstance(ctx.obj, dict) else None
    try:
        run_bench(config, out, plots=not no_plots, progress=not quiet, log=echo,
                  command=["pbp", *(argv if argv is not None else sys.argv[1:])])
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was measured is in {out}") from None
    echo(f"results in {out}")


@cli.command("tune")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True)
@_dataset_options
@click.option("--net", default="1h", show_default=True,
              help="Layer sizes such as 784-1024-10, or 1h / 2h.")
@click.option("--activation", default="sigmoid", show_default=True,
              help="Hidden activation, or a comma-separated list, one per hidden layer.")
@click.option("--output-activation", help="Output activation (default as for pbp train).")
@click.option("--loss", type=click.Choice(LOSSES), default="mse", show_default=True)
@click.option("--lrs", help="Comma-separated learning rates (default: the seed's grid, "
                            "0.001,0.002,0.01,0.1,0.5,1).")
@click.option("--batch-sizes", help="Comma-separated batch sizes, each tried with every "
                                    "learning rate (default: 128).")
@click.option("--epochs", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--lr-schedule", type=click.Choice(LR_SCHEDULES), default="constant",
              show_default=True)
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="serial",
              show_default=True, help="The executor every candidate trains with.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers (threads, hybrid) or BLAS threads (blas) of each candidate.")
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS threads inside each hybrid worker.")
@click.option("--jobs", type=click.IntRange(min=1),
              help="Candidates trained at once, each in a process of its own (default: as "
                   "many as the usable cores hold at --threads each; 1 for gpu and mpi).")
@click.option("--ranks", type=click.IntRange(min=1),
              help="mpi: start N ranks on this machine with mpiexec.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path),
              help="Write the table, the winner and the environment to this JSON file.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def tune_command(dataset, data_dir, limit, kdd_task, kdd_encoding, kdd_file, test_file, samples,
                 features, classes, net, activation, output_activation, loss, lrs, batch_sizes,
                 epochs, lr_schedule, executor, threads, blas_threads, jobs, ranks, seed, out,
                 quiet):
    """Pick the learning rate with the highest validation accuracy (grid search)."""
    from .bench.config import parse_ints
    from .study.config import parse_floats
    from .study.tune import SEED_LRS, TuneConfig, table, tune

    config = TuneConfig(
        lrs=parse_floats(lrs, "--lrs") or SEED_LRS,
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes") or (128,),
        train=TrainConfig(epochs=epochs, seed=seed, executor=executor, threads=threads,
                          blas_threads=blas_threads, lr_schedule=lr_schedule),
        jobs=jobs)
    if ranks is not None:
        return _launch_ranks(ranks, replace(config.train, batch_size=min(config.batch_sizes)),
                             None, out)
    rank, _ = _mpi_world() if executor == "mpi" else (0, 1)
    root = rank == 0
    if out is not None and root:
        check_writable(out, "--out")
    data = _load(dataset, seed, quiet or not root, data_dir, limit, kdd_task, kdd_encoding,
                 kdd_file, test_file, samples, features, classes)
    network = Network.from_spec(net, data.n_features, data.n_classes, activation=activation,
                                output_activation=output_activation, loss=loss)
    echo = click.echo if root and not quiet else (lambda line: None)
    candidates = len(config.candidates())
    echo(f"{data.name}: {len(data.x_train)} train, {len(data.x_val)} validation samples; net "
         f"{network.spec}; {candidates} candidates, {epochs} epoch(s) each, executor {executor}")
    doc = tune(network, data, config, log=echo)
    for line in table(doc):
        echo(line)
    if out is not None and root:
        from .bench.environment import environment

        obj = click.get_current_context().find_root().obj or {}
        doc = {**doc, "command": ["pbp", *obj.get("argv", sys.argv[1:])],
               "environment": environment()}
        with atomic_open(out, "w") as handle:
            json.dump(doc, handle, indent=1)
            handle.write("\n")


@cli.command("study")
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
@click.option("--samples", type=click.IntRange(min=1), help="Synthetic data set: samples.")
@click.option("--features", type=click.IntRange(min=1), help="Synthetic data set: features.")
@click.option("--classes", type=click.IntRange(min=2), help="Synthetic data set: classes.")
@click.option("--warmup", type=click.FloatRange(min=0), help="Speed grids: untimed seconds.")
@click.option("--min-time", type=click.FloatRange(min=0),
              help="Speed grids: seconds each timed round lasts at least.")
@click.option("--repeats", type=click.IntRange(min=1), help="Speed grids: timed rounds.")
@click.option("--gemm-size", type=click.IntRange(min=1),
              help="n of the n x n x n GEMM that measures the ceiling (default 2048).")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True),
              help="Seconds before a configuration or a training run is stopped.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("study-results"),
              show_default=True, help="Folder for study.json and the harness's outputs.")
@click.option("--quiet", is_flag=True, help="No progress and no tables.")
@click.pass_context
def study_command(ctx, preset, parts, systems, shapes, nets, batch_sizes, thread_counts, widths,
                  datasets, executors, train_net, epochs, limit, lr, lrs, tune_epochs, kdd_sizes,
                  data_dir, kdd_file, samples, features, classes, warmup, min_time, repeats,
                  gemm_size, timeout, seed, out, quiet):
    """Run the seed's study on this machine: tuning, accuracy, speed, scaling."""
    from .bench.config import parse_ints, parse_list, parse_systems
    from .study.config import StudyConfig, parse_floats, parse_sizes
    from .study.run import run_study

    config = StudyConfig.preset_config(
        preset, parts=parse_list(parts, "--parts"), systems=parse_systems(systems),
        shapes=parse_list(shapes, "--shapes"), nets=parse_list(nets, "--nets"),
        batch_sizes=parse_ints(batch_sizes, "--batch-sizes"),
        thread_counts=parse_ints(thread_counts, "--threads"),
        widths=parse_ints(widths, "--widths"), datasets=parse_list(datasets, "--datasets"),
        executors=parse_list(executors, "--executors"), train_net=train_net, epochs=epochs,
        limit=limit, lr=lr, lrs=parse_floats(lrs, "--lrs"), tune_epochs=tune_epochs,
        kdd_sizes=parse_sizes(kdd_sizes), samples=samples, features=features, classes=classes,
        warmup_s=warmup, min_time_s=min_time, repeats=repeats, gemm_size=gemm_size,
        timeout_s=timeout, seed=seed)
    echo = (lambda line: None) if quiet else click.echo
    argv = (ctx.obj or {}).get("argv") if isinstance(ctx.obj, dict) else None
    try:
        doc = run_study(config, out, data_dir=data_dir, kdd_file=kdd_file, progress=not quiet,
                        log=echo, command=["pbp", *(argv if argv is not None else sys.argv[1:])])
    except KeyboardInterrupt:
        raise KeyboardInterrupt(f"what was done is in {out / 'study.json'}") from None
    echo(f"study written to {out / 'study.json'} in {doc['wall_s'] / 60:.1f} min; "
         f"`pbp report {out / 'study.json'} --out DIR` writes the report")


@cli.command("report")
@click.argument("study_json", metavar="STUDY.json", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), required=True,
              help="Folder for report.md, report.html and figures/.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def report_command(study_json, out, quiet):
    """Write a study's report: Markdown, a self-contained HTML page and the PNG figures."""
    from .study.report import write_report

    written = write_report(study_json, out)
    if not quiet:
        count = len(written["figures"])
        click.echo(f"{written['markdown']}, {written['html']} and {count} "
                   f"figure{'s' if count != 1 else ''} in {out / 'figures'}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pbp`` script: one-line errors, non-zero exit codes."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        # The arguments travel in ``obj`` so that --ranks can start the same command.
        result = cli.main(args=args, prog_name="pbp", standalone_mode=False,
                          obj={"argv": args})
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        return _fail(exc.exit_code, exc.format_message())
    except (click.Abort, KeyboardInterrupt) as exc:
        # Click turns a KeyboardInterrupt into Abort: the message is the original's.
        return _fail(130, str(exc.__cause__ or exc), what="interrupted")
    except PbpError as exc:
        return _fail(1, str(exc))
    except MemoryError:
        return _fail(1, "out of memory; try a smaller --batch-size or --limit")
    return result if isinstance(result, int) else 0


def _fail(code: int, message: str = "", what: str = "error") -> int:
    """Print ``pbp: error: <message>``; as one of several MPI ranks, name it and end the job.

    Returning would leave the other ranks waiting for this one in a collective
    (or this one waiting for them in MPI_Finalize): the job would hang.
    """
    from .executors.mpi import abort_job, distributed_rank

    where = distributed_rank()
    if where is not None:
        what += f" on rank {where[0]} of {where[1]}"
    click.echo(f"pbp: {what}" + (f": {message}" if message else ""), err=True)
    abort_job(code)
    return code


if __name__ == "__main__":
    sys.exit(main())
