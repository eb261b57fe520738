"""``pbp predict``: classify a data set's test split, or a file's rows, with a saved model."""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np

from ..data import DATASETS
from ..errors import PbpError
from ..fileio import atomic_open, check_outputs
from ..modelio import load_model
from ..trainer import predict_outputs
from .options import dataset_choice, dataset_options, quiet_option, seed_option
from .runs import DataOptions

OUTPUT_SUFFIXES = (".csv", ".npy")


@click.command("predict")
@click.argument("model_path", metavar="MODEL", type=click.Path(path_type=Path))
@dataset_choice(required=False,
                help="Predict a data set's test split (default: the model's data set).")
@click.option("--input", "input_path", type=click.Path(path_type=Path),
              help="Predict the rows of a .npy or .csv file instead of a data set.")
@dataset_options
@seed_option(help="Seed of the data split (use the training run's).")
@click.option("--output", type=click.Path(path_type=Path),
              help="Write predicted classes to this .csv (index,class,name) or .npy.")
@quiet_option()
def predict_command(model_path: Path, input_path: Path | None, seed: int, output: Path | None,
                    quiet: bool, **params):
    """Predict classes with a saved MODEL and print the accuracy when labels are known."""
    data = DataOptions.take(params)
    if output is not None and output.suffix not in OUTPUT_SUFFIXES:
        raise PbpError(f"--output {output}: expected a .csv or .npy file name")
    model = load_model(model_path)
    inputs = ({"--input": input_path} if input_path is not None
              else data.input_files(data.dataset or model.dataset))
    check_outputs({"--output": output}, {"MODEL": model_path, **inputs})
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
    predicted = model.network.classify(predict_outputs(model.network, model.params, x,
                                                        what=what))
    if labels is not None and not quiet:
        click.echo(f"accuracy {np.mean(predicted == labels):.4f} on {len(labels)} samples")
    elif not quiet:
        click.echo(f"predicted {len(predicted)} samples")
    if output is not None:
        write_predictions(output, predicted, model.class_names)


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
    with atomic_open(path, "wb", "--output") as handle:
        if path.suffix == ".npy":
            np.save(handle, predicted)
            return
        handle.write(b"index,class,name\n")
        for i, label in enumerate(predicted):
            name = class_names[label] if label < len(class_names) else ""
            handle.write(f"{i},{label},{name}\n".encode())
