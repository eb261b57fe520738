"""scikit-learn estimators: :class:`BackpropClassifier` and :class:`BackpropRegressor`.

Thin adapters: they check their inputs with scikit-learn's own validation,
build a :class:`~.network.Network`, and call :func:`~.trainer.train` with
the chosen executor; no math of their own. They follow scikit-learn's
conventions, so they work in ``Pipeline``, ``GridSearchCV``, ``clone`` and
pickle, and pass ``sklearn.utils.estimator_checks.check_estimator``::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from parallel_backprop import BackpropClassifier

    model = make_pipeline(StandardScaler(),
                          BackpropClassifier(hidden_layer_sizes=(256,), random_state=0))
    model.fit(X_train, y_train).score(X_test, y_test)

``executor`` names where the steps run, any entry of the registry
:data:`parallel_backprop.executors.EXECUTORS` (default: its
:data:`~parallel_backprop.executors.BASELINE`), and ``threads`` how many
cores it uses.

This is the only module that imports scikit-learn, which is not a
dependency of the package: ``import parallel_backprop`` works without it
and only these two names ask for it.

Training is plain mini-batch SGD with a fixed learning rate, exactly what
``pbp train`` runs: with an integer ``random_state`` the estimator's model
is the one ``train(network, TrainConfig(seed=random_state, ...), X, y)``
gives. Inputs are converted to float32 C-ordered arrays (the executors'
type). Prediction runs on the baseline executor.

The parameters the trainer takes (learning rate, batch size, epochs,
executor and threads) are validated where the trainer validates them, by
building its :class:`~.trainer.TrainConfig` when fitting; its errors are
given back naming the estimator's parameter, as scikit-learn's do.
"""

from __future__ import annotations

import numbers

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:   # scikit-learn missing, or older than 1.6 (no validate_data)
    raise ImportError(
        "parallel_backprop.BackpropClassifier and BackpropRegressor need scikit-learn 1.6 "
        f"or newer ({exc}); install it with: pip install 'scikit-learn>=1.6'") from exc

from .activations import LOSSES, activation_names
from .errors import ConfigError, InputError
from .executors import BASELINE
from .network import Network, output_units
from .trainer import (TrainConfig, TrainState, class_probabilities, predict_outputs,
                      seed_streams, train)

__all__ = ["BackpropClassifier", "BackpropRegressor"]

# The estimator's parameter behind a TrainConfig field, where their names differ.
_PARAM_OF_FIELD = dict(lr="learning_rate", epochs="max_epochs")
# TrainConfig's messages start with the field in words: "batch size 0: expected ...".
_WORDS_OF_FIELD = dict(lr="learning rate")


def _python_number(value, kind: type):
    """A numpy or Python number as ``kind`` (int or float); anything else, booleans
    included, as it is, for TrainConfig to refuse."""
    abstract = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, abstract) and not isinstance(value, bool):
        return kind(value)
    return value


class _Backprop(BaseEstimator):
    """What the classifier and the regressor share: parameters, checks, the training call."""

    def __init__(self, *, hidden_layer_sizes, activation, learning_rate, batch_size,
                 max_epochs, executor, threads, blas_threads, random_state, verbose):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.executor = executor
        self.threads = threads
        self.blas_threads = blas_threads
        self.random_state = random_state
        self.verbose = verbose

    # ---- parameters: checked when fitting, never in __init__ (scikit-learn's rule) ----

    def _check_params(self) -> TrainConfig:
        """Check the parameters; the trainer's configuration for ``max_epochs`` epochs."""
        name = type(self).__name__

        def bad(param: str, expected: str) -> ConfigError:
            return ConfigError(f"{name}: {param}={getattr(self, param)!r}: expected {expected}")

        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else sizes
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise bad("hidden_layer_sizes", "a tuple of positive integers such as (100,)")
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
                   for n in sizes):
            raise bad("hidden_layer_sizes", "a tuple of positive integers such as (100,)")
        hidden = [a for a in activation_names() if a != "softmax"]
        if self.activation not in hidden:
            raise bad("activation", f"one of {', '.join(hidden)}")
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.RandomState)
                or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)
                    and 0 <= rs < 2**32)):
            raise bad("random_state", "None, an integer in [0, 2**32) or a RandomState")
        self._hidden = tuple(int(n) for n in sizes)
        return self._train_config(self.max_epochs, self._seed())

    def _train_config(self, epochs, seed: int = 0) -> TrainConfig:
        """The trainer's configuration, which validates the parameters it takes."""
        fields = dict(batch_size=_python_number(self.batch_size, int),
                      lr=_python_number(self.learning_rate, float),
                      epochs=_python_number(epochs, int), executor=self.executor,
                      threads=_python_number(self.threads, int),
                      blas_threads=_python_number(self.blas_threads, int))
        try:
            return TrainConfig(seed=seed, **fields)
        except ConfigError as exc:
            raise self._parameter_error(exc, fields) from None

    def _parameter_error(self, exc: ConfigError, fields: dict) -> ConfigError:
        """TrainConfig's error about one of ``fields``, naming the estimator's parameter."""
        name, message = type(self).__name__, str(exc)
        for field, value in fields.items():
            prefix = f"{_WORDS_OF_FIELD.get(field, field.replace('_', ' '))} {value!r}: "
            if message.startswith(prefix):
                param = _PARAM_OF_FIELD.get(field, field)
                return ConfigError(f"{name}: {param}={getattr(self, param)!r}: "
                                   f"{message[len(prefix):]}")
        return ConfigError(f"{name}: {message}")

    def _seed(self) -> int:
        """An integer random_state is the trainer's seed as it is (same model as `pbp train`)."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

    def _start(self, seed: int) -> None:
        """partial_fit's first call: initial weights and shuffle, as ``fit`` would draw them."""
        init_rng, shuffle_rng = seed_streams(seed)
        self.params_ = self.network_.init_params(init_rng)
        self._state = TrainState(self.params_, 1, 0, shuffle_rng.bit_generator.state)

    # ---- inputs ----------------------------------------------------------------

    def _validate(self, X, y="no_validation", *, reset: bool, multi_output: bool = False):
        """X as float32 (n, n_features) C-ordered, and y checked; bad input is an InputError.

        ``y`` left out: X alone (prediction); ``y=None`` is refused (fitting needs it).
        """
        x_only = isinstance(y, str) and y == "no_validation"
        try:
            with np.errstate(over="ignore", invalid="ignore"):   # beyond float32: see below
                if x_only:
                    X = validate_data(self, X, reset=reset, dtype=np.float32, order="C")
                else:
                    X, y = validate_data(self, X, y, reset=reset, dtype=np.float32, order="C",
                                         multi_output=multi_output, y_numeric=multi_output)
        except ValueError as exc:
            raise InputError(" ".join(str(exc).split())) from None
        if not np.all(np.isfinite(X)):
            raise InputError(f"{type(self).__name__}: X has values too large for float32 "
                             "(above 3.4e38); expected finite float32 inputs")
        return X if x_only else (X, y)

    def _train(self, network: Network, config: TrainConfig, X, targets, x_val=None,
               y_val=None, state: TrainState | None = None):
        log = print if self.verbose else None
        result = train(network, config, X, targets, x_val, y_val, progress=False, log=log,
                       resume=state)
        self.params_ = result.params
        self._state = result.state     # where partial_fit continues: params and shuffle
        self.loss_curve_ = getattr(self, "loss_curve_", []) + [e.loss for e in result.epochs]
        self.n_iter_ = getattr(self, "n_iter_", 0) + len(result.epochs)
        return result

    def _resume_state(self) -> TrainState:
        """One more epoch from where the last fit or partial_fit stopped."""
        state = self._state
        return TrainState(self.params_, 1, 0, state.shuffle_state)

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "params_")
        X = self._validate(X, reset=False)
        return predict_outputs(self.network_, self.params_, X,
                               what=f"{type(self).__name__}: X")


class BackpropClassifier(ClassifierMixin, _Backprop):
    """A multilayer perceptron classifier trained by parallel backpropagation.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default=(100,)
        Units of each hidden layer.
    activation : str, default="relu"
        Hidden activation: sigmoid, tanh, relu, linear or a registered one.
    loss : {"cross-entropy", "mse"}, default="cross-entropy"
        Cross-entropy with a softmax output (one sigmoid unit for two
        classes), or the seed paper's squared error with sigmoid outputs.
    learning_rate : float, default=0.1
        SGD step size.
    batch_size : int, default=32
        Mini-batch size (capped at the number of samples).
    max_epochs : int, default=100
        Epochs of ``fit``; ``partial_fit`` runs one.
    executor : str, default=parallel_backprop.executors.BASELINE
        Where training steps run: a name in the registry
        ``parallel_backprop.executors.EXECUTORS`` (``pbp bench --list-systems`` lists
        them); the default is the one-core baseline.
    threads : int, default=1
        The executor's parallelism (data-parallel workers, or BLAS threads
        for an executor that parallelises inside the matrix products).
    blas_threads : int, default=1
        BLAS threads inside each worker, for an executor that nests them
        (its class sets ``nested_blas``); 1 for any other.
    random_state : int, RandomState or None, default=None
        Seeds the initial weights, the shuffles and the validation split.
    validation_fraction : float in [0, 1), default=0.0
        Share of the training samples held out and scored after every epoch
        (``validation_scores_``); 0 trains on everything.
    verbose : bool, default=False
        Print one line per epoch.

    Attributes
    ----------
    classes_ : ndarray (n_classes,)
    n_features_in_ : int
    network_ : Network
        Sizes ``(n_features_in_, *hidden_layer_sizes, n_outputs)``; two
        classes use one output unit.
    params_ : float32 ndarray (network_.n_params,)
        All weights and biases, flat; ``network_.layers(params_)`` gives
        each layer's ``(W, b)`` views.
    loss_curve_ : list of float
        Mean training loss per sample of each epoch.
    validation_scores_ : list of float
        Validation accuracy after each epoch (when validation_fraction > 0).
    n_iter_ : int
        Epochs trained.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", loss="cross-entropy",
                 learning_rate=0.1, batch_size=32, max_epochs=100, executor=BASELINE,
                 threads=1, blas_threads=1, random_state=None, validation_fraction=0.0,
                 verbose=False):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         learning_rate=learning_rate, batch_size=batch_size,
                         max_epochs=max_epochs, executor=executor, threads=threads,
                         blas_threads=blas_threads, random_state=random_state, verbose=verbose)
        self.loss = loss
        self.validation_fraction = validation_fraction

    def _check_params(self) -> TrainConfig:
        config = super()._check_params()
        if self.loss not in LOSSES:
            raise ConfigError(f"BackpropClassifier: loss={self.loss!r}: expected one of "
                              f"{', '.join(LOSSES)}")
        fraction = self.validation_fraction
        if not (isinstance(fraction, numbers.Real) and not isinstance(fraction, bool)
                and 0 <= fraction < 1):
            raise ConfigError(f"BackpropClassifier: validation_fraction={fraction!r}: "
                              "expected a number in [0, 1)")
        return config

    def _build(self, classes: np.ndarray, n_features: int) -> None:
        if len(classes) < 2:
            raise InputError(f"BackpropClassifier: y holds one class ({classes[0]!r}); a "
                             "classifier needs at least 2 classes")
        output = ("softmax" if len(classes) > 2 else "sigmoid") \
            if self.loss == "cross-entropy" else "sigmoid"
        sizes = (n_features, *self._hidden, output_units(len(classes), output))
        self.classes_ = classes
        self.network_ = Network(sizes, (self.activation,) * len(self._hidden) + (output,),
                                self.loss)

    def _labels(self, y) -> np.ndarray:
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise InputError(f"BackpropClassifier: {' '.join(str(exc).split())}; expected "
                             "class labels") from None
        return y

    def fit(self, X, y):
        """Train from scratch for ``max_epochs`` epochs on X (n, n_features), labels y (n,)."""
        config = self._check_params()
        X, y = self._validate(X, y, reset=True)
        classes, indices = np.unique(self._labels(y), return_inverse=True)
        self._build(classes, X.shape[1])
        x_val = y_val = None
        if self.validation_fraction > 0:
            n_val = round(len(X) * self.validation_fraction)
            if not 1 <= n_val < len(X):
                raise InputError(f"BackpropClassifier: validation_fraction="
                                 f"{self.validation_fraction} of {len(X)} samples leaves "
                                 f"{n_val} for validation; expected at least 1 on each side")
            order = np.random.default_rng(config.seed).permutation(len(X))
            x_val, y_val = X[order[:n_val]], indices[order[:n_val]]
            X, indices = X[order[n_val:]], indices[order[n_val:]]
        for attr in ("loss_curve_", "n_iter_", "validation_scores_"):
            self.__dict__.pop(attr, None)
        result = self._train(self.network_, config, X, indices.reshape(-1), x_val, y_val)
        if x_val is not None:
            self.validation_scores_ = [e.val_accuracy for e in result.epochs]
        return self

    def partial_fit(self, X, y, classes=None):
        """One epoch on X, y, continuing the model; ``classes`` is required the first time."""
        first = not hasattr(self, "params_")
        if first:
            seed = self._check_params().seed
            if classes is None:
                raise InputError("BackpropClassifier: partial_fit needs classes=... (all the "
                                 "labels y will ever hold) on its first call")
            classes = np.unique(np.asarray(classes))
        X, y = self._validate(X, y, reset=first)
        y = self._labels(y)
        if first:
            self._build(classes, X.shape[1])
            self._start(seed)
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            label = y[np.argmax(unknown)].tolist()
            raise InputError(f"BackpropClassifier: label {label!r} is not among classes_ "
                             f"{self.classes_.tolist()}")
        indices = np.searchsorted(self.classes_, y)
        self._train(self.network_, self._train_config(1), X, indices,
                    state=self._resume_state())
        return self

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, float64 (n, n_classes), rows summing to 1."""
        return class_probabilities(self._outputs(X))

    def predict(self, X) -> np.ndarray:
        """Labels (n,) from ``classes_``: the most probable class of each row."""
        outputs = self._outputs(X)
        return self.classes_[self.network_.classify(outputs)]


class BackpropRegressor(RegressorMixin, _Backprop):
    """A multilayer perceptron regressor (squared error, linear outputs) trained by backprop.

    The targets are standardised for training (``y_mean_``, ``y_scale_``)
    and predictions mapped back, so the learning rate does not depend on
    the targets' units. Parameters as for :class:`BackpropClassifier`, without
    ``loss`` (always mse) and ``validation_fraction``.

    Attributes
    ----------
    n_features_in_ : int
    network_ : Network
        Sizes ``(n_features_in_, *hidden_layer_sizes, n_targets)``.
    params_ : float32 ndarray (network_.n_params,)
    y_mean_, y_scale_ : float64 ndarray (n_targets,)
    loss_curve_ : list of float
    n_iter_ : int
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", learning_rate=0.01,
                 batch_size=32, max_epochs=100, executor=BASELINE, threads=1, blas_threads=1,
                 random_state=None, verbose=False):
        super().__init__(hidden_layer_sizes=hidden_layer_sizes, activation=activation,
                         learning_rate=learning_rate, batch_size=batch_size,
                         max_epochs=max_epochs, executor=executor, threads=threads,
                         blas_threads=blas_threads, random_state=random_state, verbose=verbose)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _targets(self, y) -> np.ndarray:
        """float32 (n, n_targets): standardised with y_mean_ and y_scale_."""
        y = np.asarray(y, dtype=np.float64)
        y2 = y.reshape(len(y), -1)
        if y2.shape[1] != self.network_.sizes[-1]:
            raise InputError(f"BackpropRegressor: y has {y2.shape[1]} targets per sample, the "
                             f"model predicts {self.network_.sizes[-1]}")
        return np.ascontiguousarray((y2 - self.y_mean_) / self.y_scale_, dtype=np.float32)

    def _build(self, y: np.ndarray, n_features: int) -> None:
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self._y_ndim = np.ndim(y)
        self.y_mean_ = y2.mean(axis=0)
        std = y2.std(axis=0)
        self.y_scale_ = np.where(std > 1e-12 * np.maximum(1.0, np.abs(self.y_mean_)), std, 1.0)
        sizes = (n_features, *self._hidden, y2.shape[1])
        self.network_ = Network(sizes, (self.activation,) * len(self._hidden) + ("linear",),
                                "mse")

    def fit(self, X, y):
        """Train from scratch for ``max_epochs`` epochs on X (n, n_features), y (n,) or (n, k)."""
        config = self._check_params()
        X, y = self._validate(X, y, reset=True, multi_output=True)
        self._build(y, X.shape[1])
        for attr in ("loss_curve_", "n_iter_"):
            self.__dict__.pop(attr, None)
        self._train(self.network_, config, X, self._targets(y))
        return self

    def partial_fit(self, X, y):
        """One epoch on X, y, continuing the model (the first call fixes the scaling of y)."""
        first = not hasattr(self, "params_")
        if first:
            seed = self._check_params().seed
        X, y = self._validate(X, y, reset=first, multi_output=True)
        if first:
            self._build(y, X.shape[1])
            self._start(seed)
        self._train(self.network_, self._train_config(1), X, self._targets(y),
                    state=self._resume_state())
        return self

    def predict(self, X) -> np.ndarray:
        """Predictions, float64 (n,) or (n, k) like the y given to fit."""
        out = self._outputs(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_ndim == 1 else out
