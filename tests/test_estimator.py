"""The scikit-learn estimators: scikit-learn's own checks, agreement with the trainer,
Pipeline / GridSearchCV, partial_fit, and bad input."""

import pickle
import subprocess
import sys

import numpy as np
import pytest

sklearn = pytest.importorskip("sklearn")

from sklearn.datasets import load_iris, make_regression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from parallel_backprop import (BackpropClassifier, BackpropRegressor, ConfigError,  # noqa: E402
                               InputError, Network, TrainConfig, train)
from parallel_backprop.optim import OptimizerConfig  # noqa: E402

# Settings that run on plain SGD, the seed's method (and the trainer's default).
PLAIN = dict(solver="sgd", momentum=0.0, alpha=0.0, learning_rate_init=0.1, batch_size=32)
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")

# Float32 training: weighted rows and repeated rows agree to about 1e-6, the
# check asks 1e-7 (scikit-learn's own MLPClassifier passes it with lbfgs only).
EXPECTED_FAILED_CHECKS = {
    "check_sample_weight_equivalence_on_dense_data":
        "float32 training: equal to about 1e-6, the check asks 1e-7"}
ESTIMATORS = [BackpropClassifier(), BackpropRegressor()]


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def problem(n=150, features=5, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    y = np.argmax(x @ rng.standard_normal((features, classes)), axis=1)
    return x, y


@pytest.mark.parametrize("executor,threads", [("serial", 1), ("threads", 2)])
def test_classifier_is_the_trainer(executor, threads):
    x, y = problem()
    labels = np.array(["ant", "bee", "cat"])[y]
    model = BackpropClassifier(hidden_layer_sizes=(9,), activation="tanh",
                               **{**PLAIN, "learning_rate_init": 0.3, "batch_size": 16},
                               max_iter=3, executor=executor, threads=threads,
                               random_state=4).fit(x, labels)
    network = Network((5, 9, 3), ("tanh", "softmax"), "cross-entropy")
    expected = train(network, TrainConfig(batch_size=16, lr=0.3, epochs=3, seed=4,
                                          executor=executor, threads=threads), x, y,
                     progress=False)
    assert model.network_ == network and model.n_features_in_ == 5
    assert np.array_equal(model.params_, expected.params)
    assert model.loss_curve_ == [e.loss for e in expected.epochs] and model.n_iter_ == 3
    assert model.loss_ == model.loss_curve_[-1] and model.t_ == 3 * 150
    assert model.classes_.tolist() == ["ant", "bee", "cat"]
    assert set(model.predict(x)) <= {"ant", "bee", "cat"}
    (w1, w2), (_, b2) = model.coefs_, model.intercepts_
    assert w1.shape == (5, 9) and w2.shape == (9, 3) and b2.shape == (3,)
    assert np.shares_memory(w1, model.params_) and np.shares_memory(b2, model.params_)
    assert (model.n_layers_, model.n_outputs_, model.out_activation_) == (3, 3, "softmax")


def test_partial_fit_continues_exactly_where_fit_stopped():
    x, y = problem()
    kwargs = dict(hidden_layer_sizes=(8,), **{**PLAIN, "batch_size": 10}, random_state=2)
    three = BackpropClassifier(max_iter=3, **kwargs).fit(x, y)
    one_plus_two = BackpropClassifier(max_iter=1, **kwargs).fit(x, y)
    one_plus_two.partial_fit(x, y).partial_fit(x, y)
    assert np.array_equal(one_plus_two.params_, three.params_)
    assert one_plus_two.loss_curve_ == three.loss_curve_
    assert one_plus_two.n_iter_ == 1 and one_plus_two.t_ == 3 * 150   # scikit-learn's counts
    stepwise = BackpropClassifier(**kwargs)
    for _ in range(3):
        stepwise.partial_fit(x, y, classes=[0, 1, 2])
    assert np.array_equal(stepwise.params_, three.params_)


def test_warm_start_keeps_the_weights_and_the_records():
    x, y = problem()
    model = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, max_iter=2, random_state=0)
    before = model.fit(x, y).params_.copy()
    model.set_params(warm_start=True).fit(x, y)
    assert len(model.loss_curve_) == 4 and model.n_iter_ == 2 and model.t_ == 4 * 150
    fresh = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, max_iter=2, random_state=0)
    assert not np.array_equal(model.params_, before)
    assert not np.array_equal(model.params_, fresh.fit(x, y).params_)
    with pytest.raises(InputError, match="warm_start needs the classes of the last fit"):
        model.fit(x[y < 2], y[y < 2])


def test_pipeline_grid_search_and_pickle():
    x, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), BackpropClassifier(**PLAIN, max_iter=30,
                                                              random_state=0))
    grid = GridSearchCV(pipe, {"backpropclassifier__hidden_layer_sizes": [(4,), (16,)],
                               "backpropclassifier__learning_rate_init": [0.03, 0.3]}, cv=3)
    grid.fit(x, y)
    assert grid.best_score_ > 0.85
    best = grid.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    assert np.array_equal(again.predict_proba(x), best.predict_proba(x))
    assert np.array_equal(again[-1].coefs_[0], best[-1].coefs_[0])


@pytest.mark.parametrize("loss", ["log_loss", "squared_error"])
@pytest.mark.parametrize("classes", [2, 4])
def test_probabilities(loss, classes):
    x, y = problem(classes=classes)
    model = BackpropClassifier(loss=loss, **PLAIN, max_iter=20, random_state=0).fit(x, y)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), classes) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(model.classes_[proba.argmax(axis=1)], model.predict(x))
    assert model.network_.sizes[-1] == (1 if classes == 2 else classes)   # one sigmoid unit
    assert model.out_activation_ == ("softmax" if loss == "log_loss" and classes > 2
                                     else "logistic")
    assert model.score(x, y) > 0.8
    np.testing.assert_allclose(np.exp(model.predict_log_proba(x)), proba)


def test_regressor_learns_and_keeps_target_shape():
    x, y = make_regression(200, 4, n_targets=2, noise=1.0, random_state=0)
    y = y * 1000 + 5e4          # units the learning rate need not know about
    model = BackpropRegressor(hidden_layer_sizes=(32,), **{**PLAIN, "learning_rate_init": 0.01},
                              max_iter=60, random_state=0)
    model.fit(x, y)
    assert model.predict(x).shape == (200, 2) and model.score(x, y) > 0.9
    assert model.out_activation_ == "identity" and model.n_outputs_ == 2
    assert model.fit(x, y[:, 0]).predict(x).shape == (200,)


# ---- scikit-learn's stopping rule, schedules and early stopping --------------------------


def test_loss_that_stops_improving_stops_training():
    x, y = problem()
    model = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, max_iter=200, tol=10.0,
                               n_iter_no_change=3, random_state=0).fit(x, y)
    # tol 10: after the first (better than none), no epoch improves on the best by 10,
    # and the 4th of those in a row (more than 3) stops.
    assert model.n_iter_ == 5 and len(model.loss_curve_) == 5
    assert model.best_loss_ == min(model.loss_curve_)
    assert model.validation_scores_ is None and model.best_validation_score_ is None


def test_invscaling_rate_of_each_epoch():
    x, y = problem()
    kwargs = dict(hidden_layer_sizes=(8,), **PLAIN, random_state=0)
    model = BackpropClassifier(learning_rate="invscaling", power_t=0.5, max_iter=3, **kwargs)
    model.fit(x, y)
    # Epoch e runs at lr / (t + 1) ** power_t, t the samples seen before it; by hand:
    by_hand = BackpropClassifier(max_iter=1, **kwargs).fit(x, y)
    for seen in (150, 300):
        by_hand._learning_rate = 0.1 / (seen + 1) ** 0.5
        by_hand.partial_fit(x, y)
    assert np.array_equal(model.params_, by_hand.params_)
    assert model._learning_rate == pytest.approx(0.1 / 451 ** 0.5)


def test_adaptive_rate_divides_by_five_then_stops():
    x, y = problem()
    model = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, learning_rate="adaptive",
                               tol=10.0, n_iter_no_change=1, max_iter=500, random_state=0)
    model.fit(x, y)
    # After the first epoch, every 2 without improvement: lr / 5, until it is at most 1e-6
    # (0.1 / 5**8, 8 divisions); the 9th time it stops.
    assert model._learning_rate == pytest.approx(0.1 / 5 ** 8)
    assert model.n_iter_ == 1 + 2 * 9


def test_early_stopping_keeps_the_best_epoch():
    x, y = problem(n=300)
    model = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, early_stopping=True,
                               validation_fraction=0.2, n_iter_no_change=3, max_iter=40,
                               random_state=1).fit(x, y)
    scores = model.validation_scores_
    assert len(scores) == model.n_iter_ == len(model.loss_curve_)
    assert model.best_validation_score_ == max(scores) and model.best_loss_ is None
    assert model.t_ == model.n_iter_ * 240       # the held-out fifth is not trained on
    best = scores.index(max(scores)) + 1
    again = BackpropClassifier(hidden_layer_sizes=(8,), **PLAIN, early_stopping=True,
                               validation_fraction=0.2, n_iter_no_change=np.inf,
                               max_iter=best, random_state=1).fit(x, y)
    assert np.array_equal(again.params_, model.params_)
    with pytest.raises(ConfigError, match="early_stopping=True: partial_fit does not"):
        model.partial_fit(x, y)


def test_earlier_names_still_work_with_a_warning():
    x, y = problem()
    with pytest.warns(FutureWarning) as record:
        old = BackpropClassifier(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0,
                                 alpha=0.0, learning_rate=0.2, max_epochs=3, loss="mse",
                                 random_state=0).fit(x, y)
    assert {str(w.message).split(";")[0].split(" is ")[0] for w in record
            if w.category is FutureWarning} == {
        "BackpropClassifier: max_epochs", "BackpropClassifier: learning_rate=<number>",
        "BackpropClassifier: loss='mse'"}
    new = BackpropClassifier(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0, alpha=0.0,
                             learning_rate_init=0.2, max_iter=3, loss="squared_error",
                             random_state=0).fit(x, y)
    assert np.array_equal(old.params_, new.params_)


# ---- the mapping onto the trainer's optimizer and row weights ---------------------------


@pytest.mark.parametrize("params,expected", [
    (dict(solver="adam", beta_1=0.8, beta_2=0.99, epsilon=1e-7),
     OptimizerConfig("adam", beta1=0.8, beta2=0.99, eps=1e-7)),
    (dict(solver="sgd", momentum=0.5), OptimizerConfig("nesterov", momentum=0.5)),
    (dict(solver="sgd", momentum=0.5, nesterovs_momentum=False),
     OptimizerConfig("momentum", momentum=0.5)),
    (dict(solver="sgd", momentum=0.0), OptimizerConfig("sgd")),
])
def test_solver_maps_to_the_update_rule(params, expected):
    model = BackpropClassifier(alpha=0.5, **params)
    # scikit-learn: (sum of gradients + alpha W) / weight sum; ours the mean + decay W.
    assert model._optimizer(batch=25, weight_mean=2.0) == replace(expected,
                                                                   weight_decay=0.5 / 50)


def replace(config, **changes):
    from dataclasses import replace as dataclass_replace
    return dataclass_replace(config, **changes)


def test_row_weights_average_one_and_class_weights_multiply():
    model = BackpropClassifier(class_weight="balanced")
    model.classes_ = np.array(["a", "b", "c"])
    indices = np.array([0, 0, 0, 1, 2, 2])
    rows = model._class_rows(indices, incremental=False)
    # balanced: n / (classes * count)
    np.testing.assert_allclose(rows, [6 / 9] * 3 + [2.0] + [1.0] * 2)
    model.set_params(class_weight={"b": 3.0})
    np.testing.assert_allclose(model._class_rows(indices, incremental=False), [1, 1, 1, 3, 1, 1])
    with pytest.raises(ConfigError, match="class_weight=.*'balanced' is not offered in "
                                          "partial_fit"):
        model.set_params(class_weight="balanced")._class_rows(indices, incremental=True)
    with pytest.raises(ConfigError, match="class_weight=.*entry 'z'"):
        model.set_params(class_weight={"z": 1.0})._class_rows(indices, incremental=False)
    scaled, mean = model._scaled_weights(np.full(6, 3.0))
    assert scaled is None and mean == 3.0          # uniform weights: plain steps
    with pytest.raises(InputError, match="sample_weight is zero for every"):
        model._scaled_weights(np.zeros(6))
    scaled, mean = model._scaled_weights(np.array([1.0, 3.0]))
    assert scaled.tolist() == [0.5, 1.5] and scaled.dtype == np.float32 and mean == 2.0


# ---- end to end on the trainer's optimizers and row weights -----------------------------


def test_adam_fit_is_train_with_the_same_config():
    x, y = problem()
    model = BackpropClassifier(hidden_layer_sizes=(9,), solver="adam", alpha=0.01,
                               batch_size=16, learning_rate_init=0.01, max_iter=4,
                               n_iter_no_change=np.inf, random_state=3).fit(x, y)
    network = Network((5, 9, 3), ("relu", "softmax"), "cross-entropy")
    config = TrainConfig(batch_size=16, lr=0.01, epochs=4, seed=3, lr_schedule="constant",
                         optimizer=OptimizerConfig("adam", weight_decay=0.01 / 16))
    expected = train(network, config, x, y, progress=False)
    assert np.array_equal(model.params_, expected.params)


def test_integer_sample_weights_are_repeated_rows():
    x, y = problem(n=40)
    counts = np.random.default_rng(0).integers(0, 4, 40)
    kwargs = dict(hidden_layer_sizes=(8,), batch_size=200, max_iter=20, learning_rate_init=0.01,
                  n_iter_no_change=np.inf, random_state=0)    # one batch: the whole set
    weighted = BackpropClassifier(**kwargs).fit(x, y, sample_weight=counts)
    repeated = BackpropClassifier(**kwargs).fit(np.repeat(x, counts, axis=0),
                                                np.repeat(y, counts))
    np.testing.assert_allclose(weighted.predict_proba(x), repeated.predict_proba(x),
                               rtol=1e-4, atol=1e-5)


def test_balanced_class_weight_is_the_same_sample_weight():
    x, y = problem(n=120)
    y = np.where(np.arange(120) < 100, 0, y)                # class 0 dominates
    kwargs = dict(hidden_layer_sizes=(8,), max_iter=5, random_state=0)
    balanced = BackpropClassifier(class_weight="balanced", **kwargs).fit(x, y)
    counts = np.bincount(y)
    weights = (120 / (3 * counts))[y]
    by_rows = BackpropClassifier(**kwargs).fit(x, y, sample_weight=weights)
    np.testing.assert_allclose(balanced.params_, by_rows.params_, rtol=1e-6, atol=1e-7)
    plain = BackpropClassifier(**kwargs).fit(x, y)
    assert not np.allclose(plain.params_, balanced.params_)


def test_early_stopping_with_adam_sets_the_best_validation_score():
    x, y = problem(n=300)
    model = BackpropClassifier(hidden_layer_sizes=(16,), early_stopping=True, max_iter=30,
                               learning_rate_init=0.01, random_state=0).fit(x, y)
    assert model.best_validation_score_ == max(model.validation_scores_) > 0.8


def test_import_without_scikit_learn():
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "import parallel_backprop\n"
            "try:\n"
            "    parallel_backprop.BackpropClassifier\n"
            "except ImportError as exc:\n"
            "    print(exc)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    assert "pip install 'scikit-learn>=1.6'" in result.stdout


X, Y = problem(n=40)


def nan_x():
    x = X.copy()
    x[3, 1] = np.nan
    return x


def inf_x():
    x = X.copy()
    x[0, 0] = np.inf
    return x


BAD_PARAMS = {
    "hidden sizes negative": (dict(hidden_layer_sizes=(8, -1)), "hidden_layer_sizes=(8, -1)"),
    "hidden sizes text": (dict(hidden_layer_sizes="big"), "hidden_layer_sizes='big'"),
    "activation unknown": (dict(activation="swish"), "activation='swish': expected one of"),
    "activation softmax": (dict(activation="softmax"), "activation='softmax'"),
    "loss unknown": (dict(loss="hinge"), "loss='hinge'"),
    "learning rate zero": (dict(learning_rate_init=0.0), "learning_rate_init=0.0"),
    "learning rate nan": (dict(learning_rate_init=float("nan")), "learning_rate_init=nan"),
    "schedule unknown": (dict(learning_rate="cosine"), "learning_rate='cosine'"),
    "solver lbfgs": (dict(solver="lbfgs"), "solver='lbfgs': not offered"),
    "solver unknown": (dict(solver="newton"), "solver='newton'"),
    "shuffle off": (dict(shuffle=False), "shuffle=False: not offered"),
    "alpha negative": (dict(alpha=-1.0), "alpha=-1.0"),
    "momentum one": (dict(momentum=1.0), "momentum=1.0: expected a number in [0, 1)"),
    "beta_2 one": (dict(beta_2=1.0, solver="adam"), "beta_2=1.0"),
    "epsilon zero": (dict(epsilon=0.0, solver="adam"), "epsilon=0.0"),
    "tol negative": (dict(tol=-1e-3), "tol=-0.001"),
    "patience zero": (dict(n_iter_no_change=0), "n_iter_no_change=0"),
    "max_fun zero": (dict(max_fun=0), "max_fun=0"),
    "early_stopping text": (dict(early_stopping="yes"), "early_stopping='yes'"),
    "class_weight text": (dict(class_weight="even"), "class_weight='even'"),
    "max iter zero": (dict(max_iter=0), "max_iter=0"),
    "batch size zero": (dict(batch_size=0), "batch_size=0"),
    "batch size float": (dict(batch_size=12.5), "batch_size=12.5"),
    "batch size text": (dict(batch_size="big"), "batch_size='big'"),
    "executor unknown": (dict(executor="quantum"), "executor='quantum'"),
    "threads zero": (dict(threads=0), "threads=0"),
    "random state negative": (dict(random_state=-1), "random_state=-1"),
    "validation fraction one": (dict(validation_fraction=1.0), "validation_fraction=1.0"),
    "loss poisson": (dict(loss="poisson"), "loss='poisson'"),
    "absurd hidden layer": (dict(hidden_layer_sizes=(10**11,)), "more than this machine's"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_parameters_name_the_parameter(case):
    params, expected = BAD_PARAMS[case]
    model = BackpropClassifier(**{**PLAIN, **params})   # never refused in __init__
    with pytest.raises(ConfigError) as info:
        model.fit(X, Y)
    assert isinstance(info.value, ValueError)      # what scikit-learn expects
    message = str(info.value)
    assert expected in message and "\n" not in message, message


BAD_DATA = {
    "X one-dimensional": (lambda: (X[:, 0], Y), "Expected 2D array"),
    "X three-dimensional": (lambda: (X.reshape(40, 5, 1), Y), "dim 3"),
    "X empty": (lambda: (X[:0], Y[:0]), "0 sample(s)"),
    "X with NaN": (lambda: (nan_x(), Y), "Input X contains NaN"),
    "X with infinity": (lambda: (inf_x(), Y), "Input X contains infinity"),
    "X too large for float32": (lambda: (X.astype(np.float64) * 1e300, Y), "too large for"),
    "X of strings": (lambda: (np.full((40, 5), "a"), Y), "could not convert"),
    "X complex": (lambda: (X + 1j, Y), "Complex data not supported"),
    "y shorter than X": (lambda: (X, Y[:30]), "inconsistent numbers of samples"),
    "y continuous": (lambda: (X, Y + 0.5), "Unknown label type"),
    "y one class": (lambda: (X, np.zeros(40, int)), "one class"),
    "y missing": (lambda: (X, None), "requires y to be passed"),
    "y with NaN": (lambda: (X, np.where(Y == 0, np.nan, Y)), "Input y contains NaN"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_bad_training_data_is_an_input_error(case):
    x, y = BAD_DATA[case][0]()
    with pytest.raises(InputError) as info:
        BackpropClassifier(**PLAIN, max_iter=1).fit(x, y)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert BAD_DATA[case][1] in message and "\n" not in message, message


def test_bad_prediction_and_partial_fit_input():
    model = BackpropClassifier(**PLAIN, max_iter=1, random_state=0).fit(X, Y)
    with pytest.raises(InputError, match="X has 3 features, but BackpropClassifier is "
                                         "expecting 5 features"):
        model.predict(X[:, :3])
    with pytest.raises(InputError, match="Input X contains NaN"):
        model.predict_proba(nan_x())
    with pytest.raises(InputError, match="label 7 is not among classes_"):
        model.partial_fit(X, np.where(Y == 0, 7, Y))
    with pytest.raises(InputError, match="partial_fit needs classes="):
        BackpropClassifier().partial_fit(X, Y)
    regressor = BackpropRegressor(**PLAIN, max_iter=1).fit(X, np.ones((40, 2)))
    with pytest.raises(InputError, match="y has 3 targets per sample, the model predicts 2"):
        regressor.partial_fit(X, np.ones((40, 3)))
    with pytest.raises(InputError, match="Input y contains infinity"):
        BackpropRegressor().fit(X, np.full(40, np.inf))


@pytest.mark.parametrize("weights,expected", [
    (np.ones(39), r"sample_weight has shape \(39,\): expected \(40,\)"),
    (np.ones((40, 2)), r"sample_weight has shape \(40, 2\)"),
    (-np.ones(40), "expected finite weights >= 0"),
    (np.full(40, np.nan), "expected finite weights >= 0"),
    (np.zeros(40), "sample_weight is zero for every training sample"),
    (np.where(Y == Y[0], 1.0, 0.0), "the samples of positive weight hold one class"),
])
def test_bad_sample_weight_is_an_input_error(weights, expected):
    with pytest.raises(InputError, match=expected):
        BackpropClassifier(**PLAIN, max_iter=1).fit(X, Y, sample_weight=weights)


def test_regressor_refuses_poisson():
    with pytest.raises(ConfigError, match="loss='poisson': not offered"):
        BackpropRegressor(loss="poisson", **PLAIN).fit(X, np.ones(40))
