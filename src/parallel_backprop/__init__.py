"""parallel-backprop: multilayer perceptrons trained with hand-written
backpropagation, in parallel on CPU threads, BLAS threads, MPI ranks and GPUs.

The pieces, each in one place:

- :mod:`.network`      architecture and the flat parameter buffer
- :mod:`.backprop`     forward pass, deltas, gradients (the reference math)
- :mod:`.executors`    where a training step runs (``serial``, ...)
- :mod:`.trainer`      epochs, shuffling, evaluation, metrics
- :mod:`.data`         MNIST / Fashion-MNIST / KDD Cup 99 / synthetic data
- :mod:`.modelio`      model files
"""

__version__ = "0.1.0"

from .activations import register_activation
from .errors import ConfigError, DataError, ModelFileError, PbpError
from .executors import make_executor
from .modelio import Model, load_model, save_model
from .network import Network
from .trainer import TrainConfig, TrainResult, train

__all__ = [
    "ConfigError", "DataError", "Model", "ModelFileError", "Network", "PbpError",
    "TrainConfig", "TrainResult", "load_model", "make_executor", "register_activation",
    "save_model", "train", "__version__",
]
