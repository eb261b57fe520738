"""scikit-learn estimators: :class:`BackpropClassifier` and :class:`BackpropRegressor`.

Drop-in replacements for scikit-learn's ``MLPClassifier`` and
``MLPRegressor``: the same parameter names, meanings and defaults where the
concept exists here, and the same fitted attributes, trained by this
package's trainer and executors::

    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from parallel_backprop import BackpropClassifier

    model = make_pipeline(StandardScaler(), BackpropClassifier(
        hidden_layer_sizes=(256,), executor="threads", threads=2, random_state=0))
    model.fit(X_train, y_train).score(X_test, y_test)

How scikit-learn's parameters map onto the trainer
---------------------------------------------------
solver              'adam' -> OptimizerConfig('adam', beta1=beta_1, beta2=beta_2,
                    eps=epsilon); 'sgd' -> 'nesterov' (nesterovs_momentum and
                    momentum > 0), 'momentum' (momentum > 0), plain 'sgd' (momentum 0).
                    'lbfgs' is refused: the executors run mini-batch steps.
alpha               OptimizerConfig.weight_decay = alpha / (batch * mean row weight).
                    scikit-learn adds ``alpha * W`` to the gradient SUM of a batch and
                    divides both by the batch's weight sum; our gradient is the batch
                    mean, so the same penalty is alpha / batch. (The last, shorter
                    batch of an epoch gets alpha / batch_size, scikit-learn's alpha /
                    its length; biases are never decayed, as in scikit-learn.)
batch_size          'auto' = min(200, n_samples); larger than n: n (scikit-learn warns).
learning_rate       (the schedule; solver 'sgd' only, as in scikit-learn.) The estimator
                    applies scikit-learn's rules between epochs itself, not the trainer's
                    schedules: it runs the trainer for as many epochs as cannot end in a
                    decision, each call continuing the last exactly (parameters,
                    optimizer state, shuffle stream), and reads every epoch's loss and
                    weights from its end-of-epoch checkpoint. 'constant'; 'invscaling'
                    (one epoch per call): epoch e runs at
                    learning_rate_init / (t_ + 1) ** power_t, t_ the samples seen
                    before it; 'adaptive': when the no-improvement count exceeds
                    n_iter_no_change (scikit-learn's code; its docstring's "two
                    epochs" is out of date) the rate is divided by 5, and training
                    stops once it is at most 1e-6.
tol, n_iter_no_change, early_stopping, validation_fraction
                    scikit-learn's stopping rule exactly: the training loss (with the
                    L2 term) or, with early_stopping, the validation score (accuracy,
                    R²) must improve by tol; after more than n_iter_no_change epochs
                    without, training stops (or 'adaptive' lowers the rate). With
                    early_stopping a stratified validation_fraction is held out and
                    the best epoch's weights are kept.

Where a name cannot mean quite the same:

* ``shuffle=False`` is refused: the trainer draws every epoch's order from
  ``random_state``. ``max_fun`` (an L-BFGS setting) is checked and ignored.
* Momentum: velocity ``v = momentum * v + g``, step ``lr * v`` (PyTorch's form);
  scikit-learn keeps ``v = momentum * v - lr * g``. Equal at a constant rate; when
  'invscaling' or 'adaptive' changes the rate, ours rescales the whole velocity.
* Adam: epsilon is added to ``sqrt(v_hat)`` (PyTorch's placement); scikit-learn adds
  it to ``sqrt(v)`` and folds the bias corrections into the rate: the same up to
  epsilon * sqrt(1 - beta_2 ** t).
* Initial weights: Glorot-uniform with zero biases (scikit-learn draws biases
  too), float32 throughout; ``momentum`` must be below 1 (scikit-learn allows 1).
* sample_weight: row weights (times class_weight) are scaled to average 1 over
  the training rows and each batch's gradient is the weighted sum over the batch
  size; scikit-learn divides by each batch's weight sum. Equal with a full batch
  (and on average otherwise).
* ``loss_`` (and ``loss_curve_``, ``best_loss_``): the epoch's mean loss over its
  steps plus the L2 term ``0.5 * weight_decay * sum(W**2)`` at the epoch's end
  (scikit-learn adds each batch's term as it goes).
* The regressor standardises its targets (``y_mean_``, ``y_scale_``), so the
  last layer (``coefs_[-1]``, ``intercepts_[-1]``) predicts standardised values;
  its ``loss_`` is half the squared error summed over the targets.

Earlier names. ``max_epochs`` is ``max_iter``, ``learning_rate=<number>`` is
``learning_rate_init`` with the constant schedule, and the classifier's
``loss='cross-entropy' | 'mse'`` are ``'log_loss' | 'squared_error'``: they
still work, with a FutureWarning, and will be removed. ``validation_fraction``
now only matters with ``early_stopping=True`` (scikit-learn's meaning); it no
longer scores a held-out part without it. ``n_iter_`` counts the epochs of the
last ``fit`` or ``partial_fit`` call (scikit-learn's meaning), not all of them.

Ours besides: ``executor`` (a name in
:data:`parallel_backprop.executors.EXECUTORS`, default its ``BASELINE``),
``threads`` (its parallelism) and ``blas_threads`` (BLAS threads per worker of
an executor that nests them), ``precision`` (of the matrix products: "fp32",
or "bf16" where the CPU has native bf16; see docs/precision.md);
``class_weight`` for the classifier.

This is the only module that imports scikit-learn, which is not a
dependency of the package: ``import parallel_backprop`` works without it.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass, replace
from functools import partial

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.model_selection import train_test_split
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:   # scikit-learn missing, or older than 1.6 (no validate_data)
    raise ImportError(
        "parallel_backprop.BackpropClassifier and BackpropRegressor need scikit-learn 1.6 "
        f"or newer ({exc}); install it with: pip install 'scikit-learn>=1.6'") from exc

from .activations import activation_names
from .errors import ConfigError, InputError
from .executors import BASELINE
from .network import Network, output_units
from .optim import OptimizerConfig
from .resources import check_fits_in_memory
from .trainer import (TrainConfig, class_probabilities, predict_outputs, seed_streams,
                      train)

__all__ = ["BackpropClassifier", "BackpropRegressor"]

# Until the trainer takes an optimizer and row weights (they are being added),
# only plain SGD on unweighted rows can run; these two flags say which trainer
# this is, and go once it has both.

# scikit-learn's hidden activations and ours; ours are accepted too.
_ACTIVATIONS = {"identity": "linear", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}
_OUT_ACTIVATIONS = {"linear": "identity", "sigmoid": "logistic", "softmax": "softmax"}
_CLASSIFIER_LOSSES = {"log_loss": "cross-entropy", "squared_error": "mse"}
_EARLIER_LOSSES = {"cross-entropy": "log_loss", "mse": "squared_error"}
_SCHEDULES = ("constant", "invscaling", "adaptive")
# The start of the trainer's and the optimizer's messages -> the estimator's parameter.
_MESSAGE_PARAMS = {"batch size": "batch_size", "learning rate": "learning_rate_init",
                   "executor": "executor", "threads": "threads",
                   "blas threads": "blas_threads", "blas": "blas", "--optimizer": "solver",
                   "precision": "precision", "--precision": "precision",
                   "--momentum": "momentum", "--beta1": "beta_1", "--beta2": "beta_2",
                   "--eps": "epsilon"}
# Numbers checked here: (param, integer, low, low included, high); None: unbounded.
_NUMBERS = (("alpha", False, 0.0, True, None), ("power_t", False, 0.0, True, None),
            ("tol", False, 0.0, True, None), ("max_fun", True, 1, True, None),
            ("validation_fraction", False, 0.0, True, 1.0))
_FLAGS = ("shuffle", "warm_start", "nesterovs_momentum", "early_stopping")
# 'adaptive' stops once the rate is this small (scikit-learn's limit).
_SMALLEST_RATE = 1e-6


def _python_number(value, kind: type):
    """A numpy or Python number as ``kind`` (int or float); anything else, booleans
    included, as it is, for the trainer's checks to refuse."""
    abstract = numbers.Integral if kind is int else numbers.Real
    if isinstance(value, abstract) and not isinstance(value, bool):
        return kind(value)
    return value


def _in_range(value, integer: bool, low, low_in: bool, high) -> bool:
    kind = numbers.Integral if integer else numbers.Real
    if not isinstance(value, kind) or isinstance(value, bool) or not math.isfinite(value):
        return False
    return (value >= low if low_in else value > low) and (high is None or value < high)


def _range_words(integer: bool, low, low_in: bool, high) -> str:
    what = "an integer" if integer else "a number"
    if high is not None:
        return f"{what} in {'[' if low_in else '('}{low}, {high})"
    return f"{what} {'>=' if low_in else '>'} {low}"


def _arguments(names: dict) -> dict:
    """An ``__init__``'s parameters from its ``locals()``."""
    return {name: value for name, value in names.items() if name not in ("self", "__class__")}


@dataclass(frozen=True)
class _Settings:
    """The parameters checked and resolved (earlier names, scikit-learn's spellings)."""

    hidden: tuple[int, ...]
    activation: str          # ours
    max_iter: int
    lr_init: float
    schedule: str            # constant, invscaling, adaptive
    seed: int
    config: TrainConfig      # batch size, executor, threads checked; lr = lr_init; seed


class _Backprop(BaseEstimator):
    """What the classifier and the regressor share: parameters, checks, the epochs."""

    def __init__(self, **params):
        # Each subclass spells its parameters out (scikit-learn reads its signature)
        # and hands them here; stored as given, checked when fitting.
        for name, value in params.items():
            setattr(self, name, value)

    # ---- parameters: checked when fitting, never in __init__ (scikit-learn's rule) ----

    def _bad(self, param: str, expected: str) -> ConfigError:
        return ConfigError(f"{type(self).__name__}: {param}={getattr(self, param)!r}: "
                           f"{expected}")

    def _check_params(self) -> _Settings:
        """Check every parameter; the resolved settings."""
        hidden = self._hidden_sizes()
        activation = _ACTIVATIONS.get(self.activation, self.activation)
        ours = [a for a in activation_names() if a != "softmax"]
        if not isinstance(activation, str) or activation not in ours:
            raise self._bad("activation", f"expected one of {', '.join(_ACTIVATIONS)} (or "
                                          f"ours: {', '.join(ours)})")
        if self.solver == "lbfgs":
            raise self._bad("solver", "not offered: L-BFGS takes full-batch steps with line "
                                      "searches, the executors mini-batch steps; use 'adam' "
                                      "or 'sgd'")
        if self.solver not in ("sgd", "adam"):
            raise self._bad("solver", "expected 'adam' or 'sgd' ('lbfgs' is not offered)")
        self._check_numbers()
        if not self.shuffle:
            raise self._bad("shuffle", "not offered: every epoch's order is drawn from "
                                       "random_state (fix it for a repeatable order)")
        max_iter, lr_init, schedule = self._earlier_names()
        rs = self.random_state
        if not (rs is None or isinstance(rs, np.random.RandomState)
                or (isinstance(rs, numbers.Integral) and not isinstance(rs, bool)
                    and 0 <= rs < 2**32)):
            raise self._bad("random_state", "expected None, an integer in [0, 2**32) or a "
                                            "RandomState")
        seed = self._seed()
        config = self._train_config(lr_init, 1 if self.batch_size == "auto" else self.batch_size,
                                    seed)
        return _Settings(hidden, activation, max_iter, lr_init, schedule, seed, config)

    def _hidden_sizes(self) -> tuple[int, ...]:
        sizes = self.hidden_layer_sizes
        sizes = (sizes,) if isinstance(sizes, numbers.Integral) else sizes
        expected = "expected a tuple of positive integers such as (100,)"
        try:
            sizes = tuple(sizes)
        except TypeError:
            raise self._bad("hidden_layer_sizes", expected) from None
        if not all(isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1
                   for n in sizes):
            raise self._bad("hidden_layer_sizes", expected)
        return tuple(int(n) for n in sizes)

    def _check_numbers(self) -> None:
        for param, integer, low, low_in, high in _NUMBERS:
            if not _in_range(getattr(self, param), integer, low, low_in, high):
                raise self._bad(param, f"expected {_range_words(integer, low, low_in, high)}")
        patience = self.n_iter_no_change
        if not (patience == np.inf or _in_range(patience, True, 1, True, None)):
            raise self._bad("n_iter_no_change", "expected an integer >= 1 or numpy.inf")
        for param in _FLAGS:
            if not isinstance(getattr(self, param), (bool, np.bool_)):
                raise self._bad(param, "expected True or False")

    def _earlier_names(self) -> tuple[int, float, str]:
        """max_iter, learning_rate_init and the schedule, from the earlier names if given."""
        name = type(self).__name__
        max_iter, param = self.max_iter, "max_iter"
        if self.max_epochs is not None:
            warnings.warn(f"{name}: max_epochs is deprecated and will be removed; use "
                          "max_iter (the same meaning)", FutureWarning, stacklevel=5)
            max_iter, param = self.max_epochs, "max_epochs"
        if not _in_range(max_iter, True, 1, True, None):
            raise self._bad(param, "expected a positive integer")
        schedule, lr_init = self.learning_rate, self.learning_rate_init
        if isinstance(schedule, numbers.Real) and not isinstance(schedule, bool):
            warnings.warn(f"{name}: learning_rate=<number> is deprecated and will be removed: "
                          "learning_rate is now scikit-learn's schedule; use "
                          "learning_rate_init", FutureWarning, stacklevel=5)
            schedule, lr_init = "constant", schedule
        elif schedule not in _SCHEDULES:
            raise self._bad("learning_rate", f"expected one of {', '.join(_SCHEDULES)}")
        return int(max_iter), lr_init, schedule

    def _train_config(self, lr, batch, seed: int) -> TrainConfig:
        """The trainer's configuration (one epoch), which validates what it takes."""
        fields_ = dict(batch_size=_python_number(batch, int), lr=_python_number(lr, float),
                       epochs=1, executor=self.executor,
                       threads=_python_number(self.threads, int),
                       blas_threads=_python_number(self.blas_threads, int),
                       precision=self.precision, blas=self.blas)
        # The trainer's own rules off: the estimator applies scikit-learn's.
        fields_.update(lr_schedule="constant", early_stopping=False)
        try:
            return TrainConfig(seed=seed, **fields_)
        except ConfigError as exc:
            raise self._renamed(exc) from None

    def _renamed(self, exc: ConfigError) -> ConfigError:
        """The trainer's or the optimizer's error, naming the estimator's parameter."""
        name, message = type(self).__name__, str(exc)
        for words, param in _MESSAGE_PARAMS.items():
            if message.startswith(words + " ") and ": " in message:
                if param == "learning_rate_init" and not isinstance(self.learning_rate, str):
                    param = "learning_rate"
                return self._bad(param, message.split(": ", 1)[1])
        return ConfigError(f"{name}: {message}")

    def _optimizer(self, batch: int, weight_mean: float) -> OptimizerConfig:
        """The update rule: solver, momentum, Adam's settings; alpha as weight decay."""
        if self.solver == "adam":
            settings = dict(name="adam", beta1=_python_number(self.beta_1, float),
                            beta2=_python_number(self.beta_2, float),
                            eps=_python_number(self.epsilon, float))
        elif self.momentum == 0:
            settings = dict(name="sgd")
        else:
            settings = dict(name="nesterov" if self.nesterovs_momentum else "momentum",
                            momentum=_python_number(self.momentum, float))
        decay = float(self.alpha) / (batch * weight_mean)
        try:
            optimizer = OptimizerConfig(weight_decay=decay, **settings)
        except ConfigError as exc:
            raise self._renamed(exc) from None
        return optimizer

    def _seed(self) -> int:
        """An integer random_state is the trainer's seed as it is (same model as `pbp train`)."""
        if isinstance(self.random_state, numbers.Integral):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(0, 2**31 - 1))

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

    def _row_weights(self, sample_weight, n: int) -> np.ndarray | None:
        """sample_weight checked: float64 (n,), finite and >= 0; None stays None."""
        if sample_weight is None:
            return None
        try:
            w = np.asarray(sample_weight, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{type(self).__name__}: sample_weight: {exc}") from None
        if w.ndim == 0:
            w = np.full(n, float(w))
        if w.shape != (n,):
            raise InputError(f"{type(self).__name__}: sample_weight has shape {w.shape}: "
                             f"expected ({n},), one weight per sample")
        if not np.all(np.isfinite(w)) or np.any(w < 0):
            raise InputError(f"{type(self).__name__}: sample_weight: expected finite "
                             "weights >= 0")
        return w

    def _scaled_weights(self, raw: np.ndarray | None) -> tuple[np.ndarray | None, float]:
        """Row weights averaging 1 (None when all are equal) and the raw weights' mean."""
        if raw is None:
            return None, 1.0
        mean = float(raw.mean())
        if not mean > 0:
            raise InputError(f"{type(self).__name__}: sample_weight is zero for every "
                             "training sample; expected at least one positive weight")
        scaled = (raw / mean).astype(np.float32)
        if np.all(scaled == 1):
            return None, mean          # the same steps as no weights, at no cost
        return scaled, mean

    # ---- training: scikit-learn's epochs and stopping rule around the trainer ----

    def _fit_rows(self, settings: _Settings, X, y, raw, *, first_pass: bool,
                  incremental: bool):
        """Train on rows X, internal targets y (class indices or scaled targets)."""
        if self.early_stopping and incremental:
            raise self._bad("early_stopping", "partial_fit does not support it (it holds "
                                              "out part of each call's rows)")
        val = None
        if self.early_stopping:
            X, y, raw, val = self._hold_out(X, y, raw, settings.seed)
        weights, mean = self._scaled_weights(raw)
        n = X.shape[0]
        batch = min(200, n) if self.batch_size == "auto" else min(int(self.batch_size), n)
        config = replace(settings.config, batch_size=batch)
        optimizer = self._optimizer(batch, mean)
        config = replace(config, optimizer=optimizer)
        check_fits_in_memory(self.network_, batch, config.threads)
        if first_pass:
            self._initialize(settings)
        elif not incremental:      # warm_start: these weights, a fresh optimizer and shuffle
            self._fresh_state(self.params_, settings.lr_init)
        self._decay = float(self.alpha) / (batch * mean)
        targets = self._targets_of(y)
        self.n_iter_ = 0
        epochs = 1 if incremental else settings.max_iter
        while self.n_iter_ < epochs:
            if self._run(config, settings, X, targets, weights, val,
                         self._chunk(settings, epochs - self.n_iter_)):
                break
        else:
            if not incremental:
                warnings.warn(f"{type(self).__name__}: max_iter={settings.max_iter} epochs "
                              "reached and the optimization has not converged yet",
                              ConvergenceWarning, stacklevel=4)
        if self.early_stopping:
            self.params_ = self._best_params

    def _initialize(self, settings: _Settings) -> None:
        """A first fit: initial weights and shuffle as ``train`` draws them; fresh records."""
        init_rng, _ = seed_streams(settings.seed)
        self._fresh_state(self.network_.init_params(init_rng), settings.lr_init)
        self.t_ = 0
        self.loss_curve_ = []
        self._no_improvement_count = 0
        self.best_validation_score_ = -np.inf if self.early_stopping else None
        self.validation_scores_ = [] if self.early_stopping else None
        self.best_loss_ = None if self.early_stopping else np.inf
        self._best_params = self.params_.copy()

    def _fresh_state(self, params: np.ndarray, lr: float) -> None:
        """Start from ``params`` with a fresh optimizer and the seed's shuffle stream."""
        self.params_ = params
        self._state = None         # the next epoch is a new run of the trainer
        self._learning_rate = float(lr)

    def _hold_out(self, X, y, raw, seed: int):
        """scikit-learn's early-stopping split: validation_fraction held out, stratified."""
        stratify = y if isinstance(self, ClassifierMixin) else None
        parts = [X, y] + ([] if raw is None else [raw])
        try:
            split = train_test_split(*parts, test_size=self.validation_fraction,
                                     random_state=seed, stratify=stratify)
        except ValueError as exc:
            raise InputError(f"{type(self).__name__}: early_stopping with validation_"
                             f"fraction={self.validation_fraction}: {exc}") from None
        if split[1].shape[0] < 2:
            raise InputError(f"{type(self).__name__}: the validation set is too small "
                             f"({split[1].shape[0]} samples); increase validation_fraction "
                             "or the data")
        x_tr, x_val, y_tr, y_val = split[:4]
        w_tr, w_val = (None, None) if raw is None else split[4:]
        return x_tr, y_tr, w_tr, (x_val, y_val, w_val)

    def _chunk(self, settings: _Settings, left: int) -> int:
        """Epochs for one call of the trainer: as many as cannot end in a decision.

        The count of epochs without improvement grows by at most one an epoch, so
        it cannot pass n_iter_no_change (stop, or a new 'adaptive' rate) before
        the last of these; 'invscaling' sets a new rate every epoch. Fewer calls,
        fewer executors started: the same steps as one call per epoch.
        """
        if settings.schedule == "invscaling" and self.solver == "sgd":
            return 1
        before = self.n_iter_no_change - self._no_improvement_count + 1
        return int(max(1, min(left, before)))

    def _run(self, config: TrainConfig, settings: _Settings, X, targets, weights, val,
             epochs: int) -> bool:
        """``epochs`` epochs through the trainer, then scikit-learn's decision; True: stop."""
        extra = {} if weights is None else {"sample_weight": weights}
        if self._state is None:
            extra["params"] = self.params_
        else:          # the last epoch's end: parameters, optimizer state, shuffle stream
            extra["resume"] = replace(self._state, epoch=1, step=0, loss_total=0.0,
                                      train_s=0.0, epochs=[], steps_per_epoch=0)
        try:
            config = replace(config, lr=self._learning_rate, epochs=epochs)
        except ConfigError as exc:
            raise self._renamed(exc) from None
        result = train(self.network_, config, X, targets, progress=False, log=False,
                       task=self._task, checkpoint=partial(self._epoch_done, X.shape[0], val),
                       **extra)
        self._state, self.params_ = result.state, result.params
        if settings.schedule == "invscaling" and self.solver == "sgd":
            self._learning_rate = settings.lr_init / (self.t_ + 1) ** float(self.power_t)
        if self._no_improvement_count > self.n_iter_no_change:
            return self._no_improvement()
        return False

    def _epoch_done(self, n_rows: int, val, state) -> None:
        """The trainer's state at an epoch's end: scikit-learn's records and count."""
        if state.step:             # a stop signal's mid-epoch state, not an epoch's end
            return
        self.params_ = state.params
        self.n_iter_ += 1
        self.t_ += n_rows
        self.loss_ = state.epochs[-1].loss + self._penalty()
        self.loss_curve_.append(self.loss_)
        if self.verbose:
            print(f"Iteration {self.n_iter_}, loss = {self.loss_:.8f}")
        self._track(val)

    def _penalty(self) -> float:
        """The L2 term the weight decay minimises: 0.5 * decay * sum of squared weights."""
        if not self._decay:
            return 0.0
        squares = sum(float(np.dot(w.ravel(), w.ravel())) for w, _ in
                      self.network_.layers(self.params_))
        return 0.5 * self._decay * squares

    def _track(self, val) -> None:
        """scikit-learn's no-improvement count, on the validation score or the loss."""
        if val is not None:
            x_val, y_val, w_val = val
            outputs = predict_outputs(self.network_, self.params_, x_val)
            score = float(self._val_score(outputs, y_val, w_val))
            self.validation_scores_.append(score)
            if self.verbose:
                print(f"Validation score: {score:f}")
            improved = score >= self.best_validation_score_ + self.tol
            if score > self.best_validation_score_:
                self.best_validation_score_ = score
                self._best_params = self.params_.copy()
        else:
            improved = self.loss_ <= self.best_loss_ - self.tol
            self.best_loss_ = min(self.best_loss_, self.loss_)
        self._no_improvement_count = 0 if improved else self._no_improvement_count + 1

    def _no_improvement(self) -> bool:
        """Too long without improvement: stop, or ('adaptive') a fifth of the rate."""
        what = "Validation score" if self.early_stopping else "Training loss"
        message = (f"{what} did not improve more than tol={self.tol:f} for "
                   f"{self.n_iter_no_change} consecutive epochs.")
        adaptive = self.learning_rate == "adaptive" and self.solver == "sgd"
        if not adaptive or self._learning_rate <= _SMALLEST_RATE:
            if self.verbose:
                print(message + " Stopping.")
            return True
        self._learning_rate /= 5.0
        self._no_improvement_count = 0
        if self.verbose:
            print(message + f" Setting learning rate to {self._learning_rate:f}")
        return False

    # ---- fitted attributes scikit-learn's MLP has, read from the network ----

    @property
    def coefs_(self) -> list[np.ndarray]:
        """Weights of each layer, (n_in, n_out) views into ``params_``."""
        return [w for w, _ in self.network_.layers(self.params_)]

    @property
    def intercepts_(self) -> list[np.ndarray]:
        """Biases of each layer, (n_out,) views into ``params_``."""
        return [b for _, b in self.network_.layers(self.params_)]

    @property
    def n_layers_(self) -> int:
        return len(self.network_.sizes)

    @property
    def n_outputs_(self) -> int:
        return self.network_.sizes[-1]

    @property
    def out_activation_(self) -> str:
        return _OUT_ACTIVATIONS.get(self.network_.activations[-1],
                                    self.network_.activations[-1])

    def _outputs(self, X) -> np.ndarray:
        check_is_fitted(self, "params_")
        X = self._validate(X, reset=False)
        return predict_outputs(self.network_, self.params_, X,
                               what=f"{type(self).__name__}: X")


class BackpropClassifier(ClassifierMixin, _Backprop):
    """A multilayer perceptron classifier trained by parallel backpropagation.

    scikit-learn's ``MLPClassifier`` parameters, with its defaults and
    meanings (see the module's docstring for how each maps onto the trainer
    and where one cannot mean quite the same); fitted attributes
    ``classes_``, ``coefs_``, ``intercepts_``, ``loss_``, ``best_loss_``,
    ``loss_curve_``, ``validation_scores_``, ``best_validation_score_``,
    ``n_iter_``, ``t_``, ``n_layers_``, ``n_outputs_``, ``out_activation_``,
    ``n_features_in_``, and ours: ``network_`` (sizes
    ``(n_features_in_, *hidden_layer_sizes, n_outputs_)``, two classes on one
    sigmoid unit) and ``params_`` (all weights and biases, flat float32;
    ``coefs_`` and ``intercepts_`` are views into it).

    Parameters beyond scikit-learn's
    --------------------------------
    loss : {"log_loss", "squared_error"}, default="log_loss"
        Cross-entropy on softmax (one sigmoid unit for two classes), or the
        seed paper's squared error on sigmoid outputs.
    class_weight : "balanced", dict or None, default=None
        Per-class weights, multiplied into ``sample_weight`` (then scaled to
        average 1). "balanced": n / (n_classes * count of the class); not in
        ``partial_fit``, which sees part of the data (pass a dict).
    executor : str, default=parallel_backprop.executors.BASELINE
        Where training steps run: a name in ``parallel_backprop.executors.EXECUTORS``.
    threads : int, default=1
        The executor's parallelism (workers, or BLAS threads for ``blas``).
    blas_threads : int, default=1
        BLAS threads inside each worker, for an executor that nests them.
    precision : {"fp32", "bf16"}, default="fp32"
        Of the matrix products; "bf16": bfloat16 products accumulated in
        float32, float32 weights (CPUs with AMX or AVX512-BF16, and MKL).
    blas : {"auto", "openblas", "mkl"} or None, default=None
        The BLAS the CPU executors compute with (for the whole process; see
        docs/blas.md): ``auto`` measures which is faster here; None keeps the
        one in use (``$PBP_BLAS``, else OpenBLAS).
    max_epochs : int or None, default=None
        Deprecated: ``max_iter``.
    """

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam",
                 alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 loss="log_loss", class_weight=None, executor=BASELINE, threads=1,
                 blas_threads=1, precision="fp32", blas=None, max_epochs=None):
        super().__init__(**_arguments(locals()))

    _task = "classify"

    def _network_loss(self) -> str:
        loss = self.loss
        if isinstance(loss, str) and loss in _EARLIER_LOSSES:
            warnings.warn(f"BackpropClassifier: loss={loss!r} is deprecated and will be "
                          f"removed; use loss={_EARLIER_LOSSES[loss]!r}", FutureWarning,
                          stacklevel=5)
            loss = _EARLIER_LOSSES[loss]
        if not isinstance(loss, str) or loss not in _CLASSIFIER_LOSSES:
            raise self._bad("loss", f"expected one of {', '.join(_CLASSIFIER_LOSSES)}")
        return _CLASSIFIER_LOSSES[loss]

    def _build(self, classes: np.ndarray, n_features: int, settings: _Settings) -> None:
        if len(classes) < 2:
            raise InputError(f"BackpropClassifier: y holds one class ({classes[0]!r}); a "
                             "classifier needs at least 2 classes")
        loss = self._network_loss()
        output = "softmax" if loss == "cross-entropy" and len(classes) > 2 else "sigmoid"
        sizes = (n_features, *settings.hidden, output_units(len(classes), output))
        self.classes_ = classes
        self.network_ = Network(sizes, (settings.activation,) * len(settings.hidden)
                                + (output,), loss)

    def _labels(self, y) -> np.ndarray:
        try:
            check_classification_targets(y)
        except ValueError as exc:
            raise InputError(f"BackpropClassifier: {' '.join(str(exc).split())}; expected "
                             "class labels") from None
        return y

    def _class_rows(self, indices: np.ndarray, incremental: bool) -> np.ndarray | None:
        """Each row's class weight, or None without class_weight."""
        weights = self.class_weight
        if weights is None:
            return None
        if isinstance(weights, str) and weights == "balanced" and incremental:
            raise self._bad("class_weight", "'balanced' is not offered in partial_fit, "
                                            "which sees part of the data; pass a dict")
        if not (isinstance(weights, dict) or (isinstance(weights, str)
                                              and weights == "balanced")):
            raise self._bad("class_weight", "expected 'balanced', a dict {label: weight} "
                                            "or None")
        per_class = np.ones(len(self.classes_))
        if isinstance(weights, str):      # balanced over the classes present
            counts = np.bincount(indices, minlength=len(per_class))
            present = counts > 0
            per_class[present] = len(indices) / (present.sum() * counts[present])
            return per_class[indices]
        for label, weight in weights.items():
            where = np.flatnonzero(self.classes_ == label)
            if not where.size or not _in_range(weight, False, 0.0, True, None):
                raise self._bad("class_weight", f"entry {label!r}: {weight!r}: expected a "
                                                "label among classes_ and a weight >= 0")
            per_class[where[0]] = weight
        return per_class[indices]

    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs on X (n, n_features), labels y (n,)."""
        return self._fit(X, y, None, sample_weight, incremental=False)

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One epoch on X, y, continuing the model; ``classes`` is required the first time."""
        return self._fit(X, y, classes, sample_weight, incremental=True)

    def _fit(self, X, y, classes, sample_weight, *, incremental: bool):
        settings = self._check_params()
        first_pass = not hasattr(self, "params_") or (not self.warm_start and not incremental)
        if first_pass and incremental and classes is None:
            raise InputError("BackpropClassifier: partial_fit needs classes=... (all the "
                             "labels y will ever hold) on its first call")
        X, y = self._validate(X, y, reset=first_pass)
        y = self._labels(y)
        if first_pass:
            labels = np.unique(np.asarray(classes) if incremental else y)
            self._build(labels, X.shape[1], settings)
        elif not incremental and not np.array_equal(np.unique(y), self.classes_):
            raise InputError(f"BackpropClassifier: warm_start needs the classes of the last "
                             f"fit, {self.classes_.tolist()}; y has {np.unique(y).tolist()}")
        unknown = ~np.isin(y, self.classes_)
        if unknown.any():
            label = y[np.argmax(unknown)].tolist()
            raise InputError(f"BackpropClassifier: label {label!r} is not among classes_ "
                             f"{self.classes_.tolist()}")
        indices = np.searchsorted(self.classes_, y)
        raw = self._row_weights(sample_weight, X.shape[0])
        per_class = self._class_rows(indices, incremental)
        if per_class is not None:
            raw = per_class if raw is None else raw * per_class
        weighted = np.unique(indices if raw is None else indices[raw > 0])
        if not incremental and len(weighted) == 1:     # none: the zero-weight error
            raise InputError(f"BackpropClassifier: the samples of positive weight hold one "
                             f"class ({self.classes_[weighted].tolist()}); a classifier needs "
                             "at least 2 classes")
        self._fit_rows(settings, X, indices, raw, first_pass=first_pass,
                       incremental=incremental)
        return self

    def _targets_of(self, indices: np.ndarray) -> np.ndarray:
        return self.network_.targets(indices)

    def _val_score(self, outputs, indices, weights) -> float:
        return accuracy_score(indices, self.network_.classify(outputs), sample_weight=weights)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities, float64 (n, n_classes), rows summing to 1."""
        return class_probabilities(self._outputs(X))

    def predict_log_proba(self, X) -> np.ndarray:
        """The logarithm of ``predict_proba`` (scikit-learn's MLP offers it)."""
        with np.errstate(divide="ignore"):
            return np.log(self.predict_proba(X))

    def predict(self, X) -> np.ndarray:
        """Labels (n,) from ``classes_``: the most probable class of each row."""
        outputs = self._outputs(X)
        return self.classes_[self.network_.classify(outputs)]


class BackpropRegressor(RegressorMixin, _Backprop):
    """A multilayer perceptron regressor (squared error, linear outputs) trained by backprop.

    scikit-learn's ``MLPRegressor`` parameters and fitted attributes, as for
    :class:`BackpropClassifier` (no ``class_weight``). ``loss`` is
    'squared_error' ('poisson' is not offered: no exponential output). The
    targets are standardised for training (``y_mean_``, ``y_scale_``) and
    predictions mapped back, so the learning rate does not depend on the
    targets' units; the last layer predicts standardised targets.
    """

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 executor=BASELINE, threads=1, blas_threads=1, precision="fp32", blas=None,
                 max_epochs=None):
        super().__init__(**_arguments(locals()))

    _task = "regress"

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _scaled(self, y) -> np.ndarray:
        """float32 (n, n_targets): standardised with y_mean_ and y_scale_."""
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        if y2.shape[1] != self.network_.sizes[-1]:
            raise InputError(f"BackpropRegressor: y has {y2.shape[1]} targets per sample, the "
                             f"model predicts {self.network_.sizes[-1]}")
        return np.ascontiguousarray((y2 - self.y_mean_) / self.y_scale_, dtype=np.float32)

    def _build(self, y: np.ndarray, n_features: int, settings: _Settings) -> None:
        if self.loss == "poisson":
            raise self._bad("loss", "not offered (an exponential output); use "
                                    "'squared_error'")
        if self.loss != "squared_error":
            raise self._bad("loss", "expected 'squared_error'")
        y2 = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
        self._y_ndim = np.ndim(y)
        self.y_mean_ = y2.mean(axis=0)
        std = y2.std(axis=0)
        self.y_scale_ = np.where(std > 1e-12 * np.maximum(1.0, np.abs(self.y_mean_)), std, 1.0)
        sizes = (n_features, *settings.hidden, y2.shape[1])
        self.network_ = Network(sizes, (settings.activation,) * len(settings.hidden)
                                + ("linear",), "mse")

    def fit(self, X, y, sample_weight=None):
        """Train for up to ``max_iter`` epochs on X (n, n_features), y (n,) or (n, k)."""
        return self._fit(X, y, sample_weight, incremental=False)

    def partial_fit(self, X, y, sample_weight=None):
        """One epoch on X, y, continuing the model (the first call fixes the scaling of y)."""
        return self._fit(X, y, sample_weight, incremental=True)

    def _fit(self, X, y, sample_weight, *, incremental: bool):
        settings = self._check_params()
        first_pass = not hasattr(self, "params_") or (not self.warm_start and not incremental)
        X, y = self._validate(X, y, reset=first_pass, multi_output=True)
        if first_pass:
            self._build(y, X.shape[1], settings)
        raw = self._row_weights(sample_weight, X.shape[0])
        self._fit_rows(settings, X, self._scaled(y), raw, first_pass=first_pass,
                       incremental=incremental)
        return self

    def _targets_of(self, scaled: np.ndarray) -> np.ndarray:
        return scaled

    def _val_score(self, outputs, scaled, weights) -> float:
        # R² of each target is the same on standardised targets; their mean, as score().
        return r2_score(scaled, outputs, sample_weight=weights)

    def predict(self, X) -> np.ndarray:
        """Predictions, float64 (n,) or (n, k) like the y given to fit."""
        out = self._outputs(X).astype(np.float64) * self.y_scale_ + self.y_mean_
        return out[:, 0] if self._y_ndim == 1 else out
