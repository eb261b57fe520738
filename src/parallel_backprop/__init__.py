"""parallel-backprop: multilayer perceptrons trained with hand-written
backpropagation, in parallel on CPU threads, BLAS threads, MPI ranks and GPUs.

The pieces, each in one place:

- :mod:`.network`      architecture and the flat parameter buffer
- :mod:`.resources`    the host memory a training run needs, checked before it starts
- :mod:`.backprop`     forward pass, deltas, gradients (the reference math)
- :mod:`.executors`    where a training step runs (``serial``, ...)
- :mod:`.trainer`      epochs, shuffling, evaluation, metrics, checkpoints, progress
- :mod:`.data`         MNIST / Fashion-MNIST / KDD Cup 99 / synthetic data
- :mod:`.modelio`      model files
- :mod:`.checkpoint`  checkpoint files: continue a stopped run exactly
- :mod:`.estimator`   ``BackpropClassifier`` / ``BackpropRegressor`` for scikit-learn
                      (imported on first use: scikit-learn is optional)
"""

__version__ = "0.1.0"

from .activations import register_activation
from .errors import ConfigError, DataError, InputError, ModelFileError, PbpError
from .executors import make_executor
from .modelio import Model, load_model, save_model
from .network import Network
from .trainer import (TrainConfig, TrainingDiverged, TrainingInterrupted, TrainResult, TrainState,
                      train)

__all__ = [
    "ConfigError", "DataError", "InputError", "Model", "ModelFileError", "Network", "PbpError",
    "TrainConfig", "TrainResult", "TrainState", "TrainingDiverged", "TrainingInterrupted",
    "load_model", "make_executor", "register_activation", "save_model", "train", "__version__",
]

# The scikit-learn estimators, imported on first use: scikit-learn is optional,
# and without it they raise an ImportError that says how to install it.
_ESTIMATORS = ("BackpropClassifier", "BackpropRegressor")


def __getattr__(name: str):
    if name in _ESTIMATORS:
        from . import estimator
        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ESTIMATORS])
