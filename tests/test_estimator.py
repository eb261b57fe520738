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

# Every check applies and passes: none is expected to fail. Two are skipped by
# scikit-learn itself where their requirements are missing (pandas for
# check_*_data_not_an_array, SCIPY_ARRAY_API=1 for check_array_api_input).
EXPECTED_FAILED_CHECKS = {}


@parametrize_with_checks([BackpropClassifier(), BackpropRegressor()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
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
    model = BackpropClassifier(hidden_layer_sizes=(9,), activation="tanh", learning_rate=0.3,
                               batch_size=16, max_epochs=3, executor=executor, threads=threads,
                               random_state=4).fit(x, labels)
    network = Network((5, 9, 3), ("tanh", "softmax"), "cross-entropy")
    expected = train(network, TrainConfig(batch_size=16, lr=0.3, epochs=3, seed=4,
                                          executor=executor, threads=threads), x, y,
                     progress=False)
    assert model.network_ == network and model.n_features_in_ == 5
    assert np.array_equal(model.params_, expected.params)
    assert model.loss_curve_ == [e.loss for e in expected.epochs] and model.n_iter_ == 3
    assert model.classes_.tolist() == ["ant", "bee", "cat"]
    assert set(model.predict(x)) <= {"ant", "bee", "cat"}


def test_partial_fit_continues_exactly_where_fit_stopped():
    x, y = problem()
    kwargs = dict(hidden_layer_sizes=(8,), batch_size=10, random_state=2)
    three = BackpropClassifier(max_epochs=3, **kwargs).fit(x, y)
    one_plus_two = BackpropClassifier(max_epochs=1, **kwargs).fit(x, y)
    one_plus_two.partial_fit(x, y).partial_fit(x, y)
    assert np.array_equal(one_plus_two.params_, three.params_)
    assert one_plus_two.loss_curve_ == three.loss_curve_ and one_plus_two.n_iter_ == 3
    stepwise = BackpropClassifier(**kwargs)
    for _ in range(3):
        stepwise.partial_fit(x, y, classes=[0, 1, 2])
    assert np.array_equal(stepwise.params_, three.params_)


def test_pipeline_grid_search_and_pickle():
    x, y = load_iris(return_X_y=True)
    pipe = make_pipeline(StandardScaler(), BackpropClassifier(max_epochs=30, random_state=0))
    grid = GridSearchCV(pipe, {"backpropclassifier__hidden_layer_sizes": [(4,), (16,)],
                               "backpropclassifier__learning_rate": [0.03, 0.3]}, cv=3)
    grid.fit(x, y)
    assert grid.best_score_ > 0.85
    best = grid.best_estimator_
    again = pickle.loads(pickle.dumps(best))
    assert np.array_equal(again.predict_proba(x), best.predict_proba(x))


@pytest.mark.parametrize("loss", ["cross-entropy", "mse"])
@pytest.mark.parametrize("classes", [2, 4])
def test_probabilities(loss, classes):
    x, y = problem(classes=classes)
    model = BackpropClassifier(loss=loss, max_epochs=20, random_state=0).fit(x, y)
    proba = model.predict_proba(x)
    assert proba.shape == (len(x), classes) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    assert np.array_equal(model.classes_[proba.argmax(axis=1)], model.predict(x))
    assert model.network_.sizes[-1] == (1 if classes == 2 else classes)   # one sigmoid unit
    assert model.score(x, y) > 0.8


def test_regressor_learns_and_keeps_target_shape():
    x, y = make_regression(200, 4, n_targets=2, noise=1.0, random_state=0)
    y = y * 1000 + 5e4          # units the learning rate need not know about
    model = BackpropRegressor(hidden_layer_sizes=(32,), max_epochs=60, random_state=0)
    model.fit(x, y)
    assert model.predict(x).shape == (200, 2) and model.score(x, y) > 0.9
    assert model.fit(x, y[:, 0]).predict(x).shape == (200,)


def test_validation_fraction_scores_every_epoch():
    x, y = problem(n=120)
    model = BackpropClassifier(max_epochs=4, validation_fraction=0.25, random_state=1)
    model.fit(x, y)
    assert len(model.validation_scores_) == 4
    assert all(0 <= s <= 1 for s in model.validation_scores_)


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
    "learning rate zero": (dict(learning_rate=0.0), "learning_rate=0.0"),
    "learning rate nan": (dict(learning_rate=float("nan")), "learning_rate=nan"),
    "batch size zero": (dict(batch_size=0), "batch_size=0"),
    "batch size float": (dict(batch_size=12.5), "batch_size=12.5"),
    "max epochs zero": (dict(max_epochs=0), "max_epochs=0"),
    "executor unknown": (dict(executor="quantum"), "executor='quantum'"),
    "threads zero": (dict(threads=0), "threads=0"),
    "random state negative": (dict(random_state=-1), "random_state=-1"),
    "validation fraction one": (dict(validation_fraction=1.0), "validation_fraction=1.0"),
    "absurd hidden layer": (dict(hidden_layer_sizes=(10**11,)), "more than this machine's"),
}


@pytest.mark.parametrize("case", sorted(BAD_PARAMS))
def test_bad_parameters_name_the_parameter(case):
    params, expected = BAD_PARAMS[case]
    model = BackpropClassifier(**params)          # never refused in __init__
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
        BackpropClassifier(max_epochs=1).fit(x, y)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert BAD_DATA[case][1] in message and "\n" not in message, message


def test_bad_prediction_and_partial_fit_input():
    model = BackpropClassifier(max_epochs=1, random_state=0).fit(X, Y)
    with pytest.raises(InputError, match="X has 3 features, but BackpropClassifier is "
                                         "expecting 5 features"):
        model.predict(X[:, :3])
    with pytest.raises(InputError, match="Input X contains NaN"):
        model.predict_proba(nan_x())
    with pytest.raises(InputError, match="label 7 is not among classes_"):
        model.partial_fit(X, np.where(Y == 0, 7, Y))
    with pytest.raises(InputError, match="partial_fit needs classes="):
        BackpropClassifier().partial_fit(X, Y)
    regressor = BackpropRegressor(max_epochs=1).fit(X, np.ones((40, 2)))
    with pytest.raises(InputError, match="y has 3 targets per sample, the model predicts 2"):
        regressor.partial_fit(X, np.ones((40, 3)))
    with pytest.raises(InputError, match="Input y contains infinity"):
        BackpropRegressor().fit(X, np.full(40, np.inf))
