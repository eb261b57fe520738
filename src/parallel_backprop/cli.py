"""The ``pbp`` command line: train, predict, fetch.

Options are validated here, at the boundary; any bad input ends with one
line on stderr (``pbp: error: ...``) and a non-zero exit status, never a
traceback. Outputs are checked for writability before training starts and
written atomically after it ends.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .activations import LOSSES
from .errors import PbpError
from .executors import EXECUTORS
from .fileio import atomic_open, check_writable
from .modelio import Model, load_model, save_model
from .network import Network
from .trainer import TrainConfig, evaluate, predict_outputs, train

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
                                        "(default: the 10%% file)."),
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
          samples, features, classes, fitted=None):
    from .data import load_dataset

    return load_dataset(
        dataset, data_dir=data_dir, limit=limit, seed=seed, progress=not quiet,
        kdd_task=kdd_task, kdd_encoding=kdd_encoding, kdd_file=kdd_file,
        kdd_test_file=test_file, synthetic_samples=samples,
        synthetic_features=features, synthetic_classes=classes, fitted=fitted)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pbp")
def cli() -> None:
    """Train multilayer perceptrons with parallel backpropagation."""


@cli.command("train")
@click.option("--dataset", type=click.Choice(DATASET_NAMES), required=True)
@_dataset_options
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
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--executor", type=click.Choice(list(EXECUTORS)), default="serial",
              show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Workers (threads, hybrid) or BLAS threads (blas).")
@click.option("--blas-threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="BLAS threads inside each hybrid worker.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--save", type=click.Path(path_type=Path), help="Write the model to this .npz.")
@click.option("--metrics-json", type=click.Path(path_type=Path),
              help="Write metrics (accuracy, throughput, per-epoch list) to this JSON file.")
@click.option("--quiet", is_flag=True, help="Print only errors.")
def train_command(dataset, data_dir, limit, kdd_task, kdd_encoding, kdd_file, test_file,
                  samples, features, classes, net, activation, output_activation, loss,
                  batch_size, lr, epochs, executor, threads, blas_threads, seed, save, metrics_json,
                  quiet):
    """Train a network on a data set and report its accuracy."""
    config = TrainConfig(batch_size=batch_size, lr=lr, epochs=epochs, seed=seed,
                         executor=executor, threads=threads, blas_threads=blas_threads)
    # Fail on an unwritable output now, not after the training it would lose.
    if save is not None:
        check_writable(save, "--save")
    if metrics_json is not None:
        check_writable(metrics_json, "--metrics-json")
    data = _load(dataset, seed, quiet, data_dir, limit, kdd_task, kdd_encoding, kdd_file,
                 test_file, samples, features, classes)
    network = Network.from_spec(net, data.n_features, data.n_classes, activation=activation,
                                output_activation=output_activation, loss=loss)
    echo = (lambda line: None) if quiet else click.echo
    echo(f"{data.name}: {len(data.x_train)} train, {len(data.x_val)} validation, "
         f"{len(data.x_test)} test samples; net {network.spec} "
         f"({', '.join(network.activations)}; {network.loss}); executor {executor}")
    result = train(network, config, data.x_train, data.y_train, data.x_val, data.y_val,
                   progress=not quiet, log=echo)
    result.test_accuracy = evaluate(network, result.params, data.x_test, data.y_test)
    summary = result.summary(network, config)
    summary["dataset"] = data.name
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
        # KDD rows go through the model's own fitted encoding, never a refitted one.
        fitted = model.preprocessor if name == "kdd99" else None
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


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pbp`` script: one-line errors, non-zero exit codes."""
    try:
        result = cli.main(args=argv, prog_name="pbp", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        click.echo(f"pbp: error: {exc.format_message()}", err=True)
        return exc.exit_code
    except (click.Abort, KeyboardInterrupt):
        click.echo("pbp: interrupted", err=True)
        return 130
    except PbpError as exc:
        click.echo(f"pbp: error: {exc}", err=True)
        return 1
    except MemoryError:
        click.echo("pbp: error: out of memory; try a smaller --batch-size or --limit", err=True)
        return 1
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    sys.exit(main())
