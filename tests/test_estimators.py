"""The aeon / scikit-learn estimators (rnnkit.estimators): aeon's own conformance suite,
scikit-learn's tools used for real, the same model as ``rnnkit train``, bad input.

Every fit here is tiny (4 hidden units, a few epochs, a few dozen short series): the
file checks the plumbing, not accuracy (docs/datasets.md measures that)."""

from __future__ import annotations

import contextlib
import io
import pickle

import numpy as np
import pytest

from helpers import INSTALL, in_ci

try:  # the whole file needs aeon: its checks are collected at import
    import aeon  # noqa: F401
except ModuleNotFoundError:
    if in_ci():  # CI must not pass having checked nothing (see helpers.require)
        raise
    pytest.skip(f"aeon is not installed: {INSTALL}", allow_module_level=True)

from aeon.testing.estimator_checking import parametrize_with_checks  # noqa: E402

import rnnkit  # noqa: E402
from rnnkit.commands import train as train_command  # noqa: E402
from rnnkit.estimators import RNNClassifier, RNNRegressor  # noqa: E402

TINY = {"hidden_size": 4, "num_layers": 1, "epochs": 3, "batch_size": 8, "random_state": 0}


@parametrize_with_checks([RNNClassifier, RNNRegressor])
def test_aeon_conformance(check):
    check()


@pytest.fixture(scope="module")
def motions():
    """A small multivariate classification problem: BasicMotions, 24 training series
    (6 of each class) of 6 channels, cut to 30 steps; 16 test series."""
    from aeon.datasets import load_classification

    def first(split, n):
        X, y = load_classification("BasicMotions", split=split)
        keep = np.concatenate([np.flatnonzero(y == c)[:n] for c in np.unique(y)])
        return X[keep, :, :30], y[keep]

    return (*first("train", 6), *first("test", 4))


@pytest.fixture(scope="module")
def unequal():
    """Unequal-length univariate regression: a list of (1, L_i) series, y their mean."""
    rng = np.random.default_rng(1)
    X = [rng.standard_normal((1, int(n))) + k % 3 for k, n in enumerate(rng.integers(5, 15, 24))]
    return X, np.array([x.mean() for x in X])


def weights(model) -> dict:
    return {k: np.array(v) for k, v in model.state_dict().items()}


# ---------------------------------------------------------------- the same training


def test_defaults_are_rnnkit_trains():
    import inspect

    for cls in (RNNClassifier, RNNRegressor):
        params = inspect.signature(cls.__init__).parameters
        for key, default in train_command.DEFAULTS.items():
            if key in params:
                assert params[key].default == default, (cls.__name__, key)


def test_same_model_as_the_command_line(tmp_path):
    """``rnnkit train --seed 3`` and ``RNNClassifier(random_state=3)`` on the same data
    end with the same weights, bit for bit."""
    from aeon.datasets import load_classification

    from rnnkit.cli import main

    settings = ["--hidden-size", "4", "--num-layers", "1", "--epochs", "2", "--batch-size",
                "64", "--dropout", "0.2", "--noise", "0.1", "--seed", "3"]
    out = tmp_path / "run"
    with contextlib.redirect_stdout(io.StringIO()):
        assert main(["train", "--dataset", "JapaneseVowels", "--out", str(out), *settings]) == 0
    X, y = load_classification("JapaneseVowels", split="train")
    clf = RNNClassifier(hidden_size=4, num_layers=1, epochs=2, batch_size=64, dropout=0.2,
                        noise=0.1, random_state=3).fit(X, y)
    cli = dict(rnnkit.load(out / "model.safetensors"))
    ours = weights(clf.model_)
    assert cli.keys() == ours.keys()
    for name in cli:
        np.testing.assert_array_equal(ours[name], cli[name], err_msg=name)
    saved = rnnkit.load_module(out / "model.safetensors")
    assert saved.classes == clf.model_.classes


def test_fit_is_deterministic_with_a_fixed_random_state(motions):
    X, y, X_test, _ = motions
    a = RNNClassifier(**TINY).fit(X, y)
    b = RNNClassifier(**TINY).fit(X, y)
    for name, value in weights(a.model_).items():
        np.testing.assert_array_equal(weights(b.model_)[name], value, err_msg=name)
    np.testing.assert_array_equal(a.predict_proba(X_test), b.predict_proba(X_test))
    c = RNNClassifier(**{**TINY, "random_state": 1}).fit(X, y)
    assert not np.array_equal(weights(c.model_)["fc.weight"], weights(a.model_)["fc.weight"])


# ---------------------------------------------------------------- scikit-learn


def test_clone_keeps_the_parameters_and_drops_the_fit(motions):
    from sklearn.base import clone

    X, y, _, _ = motions
    clf = RNNClassifier(**TINY, model="gru").fit(X, y)
    copy = clone(clf)
    assert copy.get_params() == clf.get_params()
    assert not hasattr(copy, "model_") and copy.is_fitted is False


def test_cross_val_score(motions):
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    X, y, _, _ = motions
    cv = StratifiedKFold(3, shuffle=True, random_state=0)
    scores = cross_val_score(RNNClassifier(**TINY), X, y, cv=cv)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))


def test_grid_search_over_hidden_size(motions):
    from sklearn.model_selection import GridSearchCV

    X, y, X_test, _ = motions
    search = GridSearchCV(RNNClassifier(**TINY), {"hidden_size": [2, 4]}, cv=2).fit(X, y)
    assert search.best_params_["hidden_size"] in (2, 4)
    assert search.best_estimator_.model_.rnn.hidden_size == search.best_params_["hidden_size"]
    assert search.predict(X_test).shape == (len(X_test),)


def test_pipeline_with_an_aeon_transformer_in_front(motions, unequal):
    from aeon.transformations.collection import Normalizer
    from sklearn.pipeline import make_pipeline

    X, y, X_test, y_test = motions
    pipe = make_pipeline(Normalizer(), RNNClassifier(**TINY)).fit(X, y)
    assert set(pipe.predict(X_test)) <= set(y)
    assert 0 <= pipe.score(X_test, y_test) <= 1
    # the transformer's output is what the classifier was fit on
    inner = RNNClassifier(**TINY).fit(Normalizer().fit_transform(X), y)
    np.testing.assert_array_equal(pipe.predict_proba(X_test),
                                  inner.predict_proba(Normalizer().fit_transform(X_test)))
    X_r, y_r = unequal
    reg = make_pipeline(Normalizer(), RNNRegressor(**TINY)).fit(X_r, y_r)
    assert reg.predict(X_r).shape == (len(X_r),)


def test_pickled_estimators_predict_identically(motions, unequal):
    X, y, X_test, _ = motions
    clf = RNNClassifier(**TINY).fit(X, y)
    back = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(back.predict_proba(X_test), clf.predict_proba(X_test))
    np.testing.assert_array_equal(back.predict(X_test), clf.predict(X_test))
    X_r, y_r = unequal
    reg = RNNRegressor(**TINY).fit(X_r, y_r)
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(reg)).predict(X_r), reg.predict(X_r))


# ---------------------------------------------------------------- what they take and give


def test_classifier_keeps_the_labels_and_their_type(motions):
    X, y, X_test, _ = motions
    codes = np.searchsorted(np.unique(y), y) * 10  # int labels 0, 10, 20, 30
    clf = RNNClassifier(**TINY).fit(X, codes)
    pred = clf.predict(X_test)
    assert pred.dtype == codes.dtype and set(pred) <= {0, 10, 20, 30}
    proba = clf.predict_proba(X_test)
    assert proba.shape == (len(X_test), 4)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(pred, clf.classes_[proba.argmax(axis=1)])
    assert clf.model_.classes == ["0", "10", "20", "30"]


def test_regressor_takes_unequal_lengths_and_predicts_floats(unequal):
    X, y = unequal
    reg = RNNRegressor(**{**TINY, "epochs": 20}).fit(X, y)
    pred = reg.predict(X)
    assert pred.shape == (len(X),) and pred.dtype == np.float64
    # trained on squared error: better than the constant that ignores the series
    assert np.mean((pred - y) ** 2) < np.var(y)
    assert reg.history_[0]["train_loss"] > reg.history_[-1]["train_loss"]


def test_the_model_saves_and_reloads(motions, tmp_path):
    X, y, X_test, _ = motions
    clf = RNNClassifier(**TINY).fit(X, y)
    rnnkit.save(clf.model_, tmp_path / "m.safetensors")
    model = rnnkit.load_module(tmp_path / "m.safetensors")
    series = [np.ascontiguousarray(x.T) for x in X_test]
    np.testing.assert_array_equal(model.predict_proba(series), clf.predict_proba(X_test))


# ---------------------------------------------------------------- bad input


def test_predict_before_fit():
    from sklearn.exceptions import NotFittedError

    X = np.zeros((4, 1, 5))
    for est in (RNNClassifier(**TINY), RNNRegressor(**TINY)):
        with pytest.raises(NotFittedError, match="has not been fitted"):
            est.predict(X)


def test_two_dimensional_input_where_a_collection_is_expected(motions):
    X, y, X_test, _ = motions
    clf = RNNClassifier(**TINY).fit(X, y)
    # one (channels, steps) series is read by aeon as 6 univariate series: refused
    with pytest.raises(ValueError, match="number of channels"):
        clf.predict(X_test[0])
    with pytest.raises(TypeError, match="must be 2D or 3D"):
        RNNClassifier(**TINY).fit(X[0, 0], y)


def test_missing_values_in_X(motions):
    X, y, _, _ = motions
    X = X.copy()
    X[3, 1, 7] = np.nan
    with pytest.raises(ValueError, match="missing values"):
        RNNClassifier(**TINY).fit(X, y)
    with pytest.raises(ValueError, match="missing values"):
        RNNRegressor(**TINY).fit(X, np.arange(len(X), dtype=float))


def test_a_single_class_in_y(motions):
    X, y, _, _ = motions
    with pytest.raises(ValueError, match="at least 2 unique labels"):
        RNNClassifier(**TINY).fit(X, np.full(len(X), y[0]))


def test_bad_hyper_parameters_fail_at_fit_not_construction(motions):
    X, y, _, _ = motions
    clf = RNNClassifier(model="transformer")  # stored, not checked (scikit-learn's rule)
    with pytest.raises(ValueError, match="model must be one of"):
        clf.fit(X, y)
    with pytest.raises(ValueError, match="random_state must be >= 0"):
        RNNClassifier(**{**TINY, "random_state": -1}).fit(X, y)
