"""``pbp predict``: predict a data set's test split, or a file's rows, with a saved model.

A model trained on a user's table (preprocessor kind "table") reads its
``--input`` as a table (:func:`..data.tables.read_table`), by column names
when it has a header, and predicts classes (their probabilities with
``--proba``) or regression values in the targets' original units.
"""

from __future__ import annotations

import csv
from pathlib import Path

import click
import numpy as np

from ..data import DATASETS
from ..errors import PbpError
from ..fileio import atomic_open, check_outputs
from ..modelio import load_model
from ..trainer import class_probabilities, predict_outputs, regression_metrics
from .data import TABLE_DATASET, DataOptions
from .options import dataset_choice, dataset_options, quiet_option, seed_option

OUTPUT_SUFFIXES = (".csv", ".npy")


@click.command("predict")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@dataset_choice(required=False,
                help="Predict a data set's test split (default: the model's data set).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Predict the rows of a file instead of a data set: .npy or .csv, or for "
                   "a model trained on your own table, a table like its --train-file.")
@dataset_options
@seed_option(help="Seed of the data split (use the training run's).")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write the predictions to this .csv (index,class,name; a regression: "
                   "index,<target>) or .npy.")
@click.option("--proba", is_flag=True,
              help="Write each class's probability (index,<class names>) instead of the class.")
@quiet_option()
def predict_command(model_path: Path, input_path: Path | None, seed: int, output: Path | None,
                    proba: bool, quiet: bool, **params):
    """Predict with a saved MODEL; print the accuracy (or R², RMSE, MAE) when targets are known."""
    data = DataOptions.take(params)
    if output is not None and output.suffix not in OUTPUT_SUFFIXES:
        raise PbpError(f"--output {output}: expected a .csv or .npy file name")
    model = load_model(model_path)
    inputs = ({"--input": input_path} if input_path is not None
              else data.input_files(data.dataset or model.dataset))
    check_outputs({"--output": output}, {"MODEL": model_path, **inputs})
    # A built-in data set read as a table (kdd99) predicts its test split as any other.
    own_table = input_path is not None or (data.dataset or model.dataset) == TABLE_DATASET
    if getattr(model.preprocessor, "kind", None) == "table" and own_table:
        return _predict_table(model, model_path, input_path, output, proba, quiet)
    if input_path is not None:
        from ..data import load_features_file

        x, labels = load_features_file(input_path, model.preprocessor, model.network.sizes[0])
        what = str(input_path)
    else:
        x, labels = _test_split(model, model_path, data, seed, quiet)
        what = f"the test split of {data.dataset or model.dataset}"
    if x.shape[1] != model.network.sizes[0]:
        raise PbpError(f"input has {x.shape[1]} features, model {model_path} expects "
                       f"{model.network.sizes[0]}")
    outputs = predict_outputs(model.network, model.params, x, what=what)
    _write_classes(model, outputs, labels, output, proba, quiet)


def _write_classes(model, outputs: np.ndarray, labels: np.ndarray | None, output: Path | None,
                   proba: bool, quiet: bool) -> None:
    """Say the accuracy (with labels) and write the classes, or with ``proba`` their
    probabilities, to ``output``."""
    predicted = model.network.classify(outputs)
    if labels is not None and not quiet:
        click.echo(f"accuracy {np.mean(predicted == labels):.4f} on {len(labels)} samples")
    elif not quiet:
        click.echo(f"predicted {len(predicted)} samples")
    if output is None:
        return
    if proba:
        write_values(output, class_probabilities(outputs), model.class_names)
    else:
        write_predictions(output, predicted, model.class_names)


def _predict_table(model, model_path: Path, input_path: Path | None, output: Path | None,
                   proba: bool, quiet: bool) -> None:
    """A table model on the rows of ``--input``: classes, probabilities or values."""
    from ..data.tables import read_table

    if input_path is None:
        raise PbpError(f"model file {model_path}: trained on your own table; pass --input "
                       "with rows like its training file's")
    prep = model.preprocessor
    table = read_table(input_path, what="--input")
    x = prep.transform_table(table)
    targets = prep.targets_of(table)
    outputs = predict_outputs(model.network, model.params, x, what=str(input_path))
    if prep.task != "regress":
        return _write_classes(model, outputs, targets, output, proba, quiet)
    if proba:
        raise PbpError(f"--proba: model file {model_path} predicts values (a regression), "
                       "not classes; leave --proba out")
    values = prep.inverse_targets(outputs)
    if not quiet and targets is not None:
        m = regression_metrics(values, prep.inverse_targets(targets))
        click.echo(f"R² {m['r2']:.4f}  RMSE {m['rmse']:.4g}  MAE {m['mae']:.4g} on "
                   f"{len(values)} samples")
    elif not quiet:
        click.echo(f"predicted {len(values)} samples")
    if output is not None:
        write_values(output, values, model.class_names)


def _test_split(model, model_path: Path, data: DataOptions, seed: int, quiet: bool):
    """The test split (inputs, labels) of --dataset, else of the model's own data set."""
    name = data.dataset or model.dataset
    if name not in DATASETS:
        raise PbpError(f"model file {model_path}: trained on {name!r}; pass --dataset or --input")
    # The model's own fitted preprocessing, never one refitted on this data; generated
    # data are drawn afresh and carry none.
    fitted = None if DATASETS[name].generated else model.preprocessor
    loaded = data.load(seed, quiet, dataset=name, fitted=fitted)
    return loaded.x_test, loaded.y_test


def write_predictions(path: Path, predicted: np.ndarray, class_names: list[str]) -> None:
    """Write predicted class indices as .npy, or as .csv rows ``index,class,name``."""
    if path.suffix == ".npy":
        return _write_npy(path, predicted)
    names = [class_names[label] if label < len(class_names) else "" for label in predicted]
    _write_csv(path, ["index", "class", "name"],
               ([i, int(label), name] for i, (label, name) in enumerate(zip(predicted, names))))


def write_values(path: Path, values: np.ndarray, columns: list[str]) -> None:
    """Write float values (n, k) as .npy, or as .csv rows ``index,<one column each>``."""
    if path.suffix == ".npy":
        return _write_npy(path, values)
    _write_csv(path, ["index", *columns],
               ([i, *row] for i, row in enumerate(values)))   # float32: shortest digits


def _write_npy(path: Path, array: np.ndarray) -> None:
    with atomic_open(path, "wb", "--output") as handle:
        np.save(handle, array)


def _write_csv(path: Path, header: list[str], rows) -> None:
    # The csv module quotes a class or column name holding a comma or a quote.
    with atomic_open(path, "w", "--output") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
