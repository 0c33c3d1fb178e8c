"""aeon / scikit-learn estimators: a recurrent classifier and regressor of collections
of series, trained by ``rnnkit train``'s own code (:func:`rnnkit.commands.train.train_series`).

They are aeon estimators (``pip install 'rnnkit[data]'`` brings aeon): they take aeon's
collection formats, a 3-D array ``(n_cases, n_channels, n_timepoints)`` or a list of
``(n_channels, n_timepoints_i)`` arrays of unequal lengths, and they work with
scikit-learn's ``clone``, ``cross_val_score``, ``GridSearchCV``, ``Pipeline`` and pickle.
The hyper-parameters and their defaults are ``rnnkit train``'s; the same data and
``random_state`` give the same model as ``rnnkit train --seed``.

Example:
    >>> import numpy as np
    >>> from rnnkit.estimators import RNNClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 2, 12))              # 40 series, 2 channels, 12 steps
    >>> y = np.array(["up", "down"] * 20)
    >>> X[y == "up"] += np.linspace(0, 2, 12)             # "up" series drift upwards
    >>> clf = RNNClassifier(hidden_size=8, epochs=10, batch_size=8, random_state=0).fit(X, y)
    >>> clf.predict(X[:4]).tolist()
    ['up', 'down', 'up', 'down']
"""

from __future__ import annotations

import numpy as np
from aeon.classification.base import BaseClassifier
from aeon.regression.base import BaseRegressor

__all__ = ["RNNClassifier", "RNNRegressor"]

# the estimators' hyper-parameters that are settings of `rnnkit train` (same names)
_SETTINGS = ("model", "hidden_size", "num_layers", "bidirectional", "dropout", "patch",
             "pool", "epochs", "batch_size", "lr", "optimizer", "lr_decay", "weight_decay",
             "noise", "clip", "val_fraction", "layer_norm", "recurrent_dropout", "zoneout",
             "peepholes")

_TAGS = {
    "capability:multivariate": True,
    "capability:unequal_length": True,
    "X_inner_type": ["np-list", "numpy3D"],
    "algorithm_type": "deeplearning",
}

_TEST_PARAMS = {"hidden_size": 4, "num_layers": 1, "epochs": 2, "batch_size": 8,
                "random_state": 0}


def _series(X) -> list[np.ndarray]:
    """aeon's ``(n_channels, n_timepoints_i)`` cases -> rnnkit's ``(L_i, C)`` float64 series."""
    return [np.ascontiguousarray(np.asarray(x, dtype=np.float64).T) for x in X]


def _seed(random_state) -> int:
    """``random_state`` as ``rnnkit train``'s ``--seed``: an int is used as it is (so the
    same seed gives the command line's model); None or a ``RandomState`` draws one."""
    from sklearn.utils import check_random_state

    if isinstance(random_state, (int, np.integer)) and not isinstance(random_state, bool):
        if random_state < 0:
            raise ValueError(f"random_state must be >= 0, got {random_state}")
        return int(random_state)
    return int(check_random_state(random_state).randint(np.iinfo(np.int32).max))


class _RNNEstimator:
    """What both estimators share: the hyper-parameters (the constructor only stores
    them, scikit-learn's rule) and the training call."""

    def __init__(self, model: str = "lstm", hidden_size: int = 64, num_layers: int = 2,
                 bidirectional: bool = True, dropout: float = 0.3, patch: int | None = None,
                 pool: str = "both", epochs: int = 60,
                 batch_size: int = 32, lr: float | None = None, optimizer: str = "adam",
                 lr_decay: float = 0.95, weight_decay: float | None = None,
                 noise: float = 0.3, clip: float = 1.0, val_fraction: float = 0.0,
                 layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, peepholes: bool = False,
                 random_state=None, verbose: bool = False):
        self.model = model
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bidirectional = bidirectional
        self.dropout = dropout
        self.patch = patch
        self.pool = pool
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.lr_decay = lr_decay
        self.weight_decay = weight_decay
        self.noise = noise
        self.clip = clip
        self.val_fraction = val_fraction
        self.layer_norm = layer_norm
        self.recurrent_dropout = recurrent_dropout
        self.zoneout = zoneout
        self.peepholes = peepholes
        self.random_state = random_state
        self.verbose = verbose
        super().__init__()

    def _train(self, series: list[np.ndarray], labels: np.ndarray, classes: list[str],
               regression: bool):
        from .commands.train import train_series
        from .data import Split

        settings = {key: getattr(self, key) for key in _SETTINGS}
        settings["seed"] = _seed(self.random_state)
        split = Split(series, labels, classes, source=type(self).__name__)
        self.model_, self.history_ = train_series(split, settings, regression=regression,
                                                  verbose=self.verbose)


class RNNClassifier(_RNNEstimator, BaseClassifier):
    r"""A recurrent classifier of collections of series: ``rnnkit train`` as an aeon
    classifier. A (by default 2-layer bidirectional) LSTM, GRU or Elman RNN reads each
    series to its own end; a linear head on its final states gives the class logits.

    Training standardizes each channel by the training statistics, adds Gaussian
    input noise, decays the learning rate every epoch and keeps the last epoch's
    weights (or, with ``val_fraction``, those of the best validation epoch):
    everything as ``rnnkit train`` does, from the same code.

    Args:
        model: ``"lstm"``, ``"gru"`` or ``"rnn"``. Default: ``"lstm"``
        hidden_size: features in the recurrent state. Default: 64
        num_layers: stacked recurrent layers. Default: 2
        bidirectional: read each series both ways. Default: True
        dropout: before the head and between layers. Default: 0.3
        patch: consecutive steps read as one input; None: the smallest that reads
            the longest training series in at most 32 steps. Default: None
        pool: what feeds the head: ``"last"``, the final states, ``"mean"``, the last
            layer's outputs averaged over each series' steps, or ``"both"``, the two
            side by side. Default: ``"both"``
        epochs: passes over the training part. Default: 60
        batch_size: series per gradient step. Default: 32
        lr: learning rate; None: the optimizer's default (5e-3 for Adam). Default: None
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9). Default: ``"adam"``
        lr_decay: the learning rate is multiplied by it after each epoch. Default: 0.95
        weight_decay: None: the optimizer's default. Default: None
        noise: standard deviation of the input noise, in each channel's units. Default: 0.3
        clip: clip the gradient norm to this; 0: never. Default: 1.0
        val_fraction: part of each class held out to choose the best epoch; 0: none,
            the last epoch is kept. Default: 0.0
        layer_norm: layer-normalize each step's gate projections (and the LSTM's cell
            state); ``rnnkit train --layer-norm``. Default: False
        recurrent_dropout: in training, the probability of dropping a unit of
            h_{t-1} where the recurrence reads it (one mask per series and layer);
            ``--recurrent-dropout``. Default: 0.0
        zoneout: in training, the probability of keeping a unit of h_{t-1} instead of
            updating it; ``--zoneout``. Default: 0.0
        peepholes: the LSTM's cell state feeds its gates (``model="lstm"`` only);
            ``--peepholes``. Default: False
        random_state: an int seed (``rnnkit train --seed``), a ``RandomState`` or None.
        verbose: print ``rnnkit train``'s epoch lines. Default: False

    Attributes:
        model_: the trained :class:`rnnkit.models.SequenceClassifier`
            (``rnnkit.save(clf.model_, path)``; ``rnnkit predict`` reads the file).
        history_: per-epoch training and validation loss and accuracy.
        classes_: the class labels, in the order of ``predict_proba``'s columns.
    """

    _tags = dict(_TAGS)


    def _fit(self, X, y):
        names = [str(c) for c in self.classes_]
        if len(set(names)) < len(names):  # labels that print alike: name them by index
            names = [str(k) for k in range(len(names))]
        index = np.array([self._class_dictionary[v] for v in y])
        self._train(_series(X), np.asarray(names)[index], names, regression=False)
        return self

    def _predict_proba(self, X) -> np.ndarray:
        return self.model_.predict_proba(_series(X))  # (n_cases, n_classes), float64

    def _predict(self, X) -> np.ndarray:
        return self.classes_[self._predict_proba(X).argmax(axis=1)]

    @classmethod
    def _get_test_params(cls, parameter_set: str = "default"):
        """Tiny settings (4 hidden units, 2 epochs) that train in well under a second."""
        return [dict(_TEST_PARAMS), {**_TEST_PARAMS, "model": "gru", "bidirectional": False}]


class RNNRegressor(_RNNEstimator, BaseRegressor):
    r"""A recurrent regressor of collections of series: one float per series.

    The reader of :class:`RNNClassifier` with a head of one output, trained on mean
    squared error of standardized targets (with ``val_fraction``, the epoch with the
    lowest validation error is kept). Arguments, defaults and training are
    :class:`RNNClassifier`'s (``rnnkit train``'s), except that validation series are
    drawn at random, not per class.

    Attributes:
        model_: the trained :class:`rnnkit.models.SequenceRegressor`.
        history_: per-epoch training and validation mean squared error (standardized).
    """

    _tags = dict(_TAGS)

    def _fit(self, X, y):
        self._train(_series(X), np.asarray(y, dtype=np.float64), [], regression=True)
        return self

    def _predict(self, X) -> np.ndarray:
        return self.model_.predict(_series(X))  # (n_cases,), float64

    _get_test_params = RNNClassifier._get_test_params
