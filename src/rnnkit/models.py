"""Ready-made models built from rnnkit layers; ``rnnkit.load_module`` rebuilds them by name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import nn
from . import numpy as rnp
from .nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

__all__ = ["SequenceClassifier", "SequenceRegressor"]

_LAYERS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}
# the layers' cell options (API.md "Cell options (beyond torch)") and their off values:
# a model's config names only those that are set, so a model without them saves the
# config it always did, and files saved before the options existed load as they are
_CELL_OPTIONS = {"layer_norm": False, "recurrent_dropout": 0.0, "zoneout": 0.0,
                 "peepholes": False}


def _patches(x, lengths, p: int):
    """``(N, L, C)`` standardized steps -> ``(N, ceil(L / p), p C)`` patches of ``p`` steps
    (steps after a series' end, and past ``L``, read as zeros), and the patches' lengths."""
    N, L, C = x.shape
    if lengths is not None:  # zero the padding: standardized, it would not be zero
        after_end = np.arange(L)[None, :] >= np.asarray(lengths)[:, None]  # (N, L)
        x = rnp.where(after_end[:, :, None], 0.0, x)
    pad = -L % p
    if pad:
        x = rnp.concatenate([x, np.zeros((N, pad, C), x.dtype)], axis=1)
    x = rnp.reshape(x, (N, (L + pad) // p, p * C))  # step t's p C values, steps in order
    if lengths is not None:
        lengths = -(-np.asarray(lengths) // p)
    return x, lengths


def _cell_options_set(rnn) -> dict:
    """The recurrent layer's cell options that are set (not off), for ``config()``."""
    chosen = {}
    for name, off in _CELL_OPTIONS.items():
        value = getattr(rnn, name)
        if value != off:
            chosen[name] = bool(value) if isinstance(off, bool) else float(value)
    return chosen


def _build_reader(self, input_size, num_outputs, model, hidden_size, num_layers,
                  bidirectional, dropout, dtype, mean, std, patch, pool,
                  options: dict) -> None:
    """The recurrent reader and linear head that both models share, built on ``self``."""
    if model not in _LAYERS:
        raise ValueError(f"model must be one of {sorted(_LAYERS)}, got {model!r}")
    if isinstance(patch, bool) or not isinstance(patch, (int, np.integer)) or patch < 1:
        raise ValueError(f"patch must be a positive int, got {patch!r}")
    if pool not in ("last", "mean", "both"):
        raise ValueError(f"pool must be 'last', 'mean' or 'both', got {pool!r}")
    self.input_size, self.patch, self.pool = int(input_size), int(patch), pool
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    layer = getattr(nn, _LAYERS[model])
    # torch warns about dropout with one layer: there is nothing between layers
    self.rnn = layer(patch * input_size, hidden_size, num_layers=num_layers, batch_first=True,
                     dropout=dropout if num_layers > 1 else 0.0,
                     bidirectional=bidirectional, dtype=dtype, **options)
    self.dropout = nn.Dropout(dropout)
    D = 2 if bidirectional else 1
    features = (2 if pool == "both" else 1) * D * hidden_size
    self.fc = nn.Linear(features, num_outputs, dtype=dtype)
    self.model = model
    self.dtype = self.rnn.dtype
    self.mean = None if mean is None else np.asarray(mean, dtype=self.dtype)
    self.std = None if std is None else np.asarray(std, dtype=self.dtype)
    for name, stat in (("mean", self.mean), ("std", self.std)):
        if stat is not None and stat.shape != (input_size,):
            raise ValueError(f"{name} must have shape (input_size,) = ({input_size},), "
                             f"got {stat.shape}")


class SequenceClassifier(nn.Module):
    r"""Classify variable-length multichannel series: a recurrent layer reads each
    series to its own last step; its final hidden state (both directions' when
    bidirectional) feeds a linear head::

        x'     = (x - mean) / std                      per channel, if given
        x''    = x' in patches: steps [p t, p t + p) side by side, (N, L/p, p C)
        h_n    = RNN(pack_padded_sequence(x'', ceil(lengths / p)))
        logits = W [h_n[-2] ; h_n[-1]] + b             bidirectional: last layer's two directions
               = W mean_t(output_t) + b                pool="mean": the outputs of every step
               = W [h_n[-2] ; h_n[-1] ; mean_t(output_t)] + b             pool="both"

    The model also keeps what turns raw series into class names, so a saved model
    is all ``rnnkit predict`` needs: ``classes`` (names, in logit order) and the
    training set's channel statistics ``mean``, ``std``.

    Args:
        input_size: C, channels per step.
        num_classes: outputs of the head.
        model: ``"lstm"``, ``"gru"`` or ``"rnn"`` (tanh Elman). Default: ``"lstm"``
        hidden_size: H, features in the recurrent state. Default: 64
        num_layers: stacked recurrent layers. Default: 1
        bidirectional: read each series both ways. Default: True
        dropout: dropout before the head, and between stacked layers. Default: 0.0
        dtype: ``np.float32`` or ``np.float64`` (or their names). Default: float32
        classes: ``num_classes`` class names, or None for ``"0", "1", ...``.
        mean, std: C numbers each, to standardize inputs with, or None.
        patch: p, consecutive steps read as one (their p C values side by side; a
            series' last patch is completed with zeros): the recurrence runs
            ``ceil(L / p)`` steps, which long series need. Default: 1
        pool: ``"last"``, the final states (each direction's at the end of its reading),
            ``"mean"``, the last layer's outputs averaged over each series' steps, or
            ``"both"``, the two side by side.
            Default: ``"last"``
        layer_norm, recurrent_dropout, zoneout, peepholes: the recurrent layer's cell
            options (API.md "Cell options (beyond torch)"; ``peepholes``: LSTM only),
            passed to it as they are; ``config()`` names those that are set. Default: off

    Shape:
        input: (N, L, C), zero-padded after each series' end; lengths: (N,) or None
        (every series has all L steps). Output: (N, num_classes) logits.

    Example:
        >>> import numpy as np
        >>> model = SequenceClassifier(3, 4, hidden_size=5, classes=["a", "b", "c", "d"])
        >>> model(np.zeros((2, 6, 3), np.float32), lengths=[6, 2]).shape
        (2, 4)
        >>> labels = model.predict([np.zeros((6, 3)), np.ones((2, 3))])  # (L_i, C) series
        >>> len(labels), set(labels) <= {"a", "b", "c", "d"}
        (2, True)
    """

    def __init__(self, input_size: int, num_classes: int, model: str = "lstm",
                 hidden_size: int = 64, num_layers: int = 1, bidirectional: bool = True,
                 dropout: float = 0.0, dtype=None, classes: Sequence[str] | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 patch: int = 1, pool: str = "last", *, layer_norm: bool = False,
                 recurrent_dropout: float = 0.0, zoneout: float = 0.0,
                 peepholes: bool = False):
        super().__init__()
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        _build_reader(self, input_size, num_classes, model, hidden_size, num_layers,
                      bidirectional, dropout, dtype, mean, std, patch, pool,
                      dict(layer_norm=layer_norm, recurrent_dropout=recurrent_dropout,
                           zoneout=zoneout, peepholes=peepholes))
        self.num_classes = int(num_classes)
        if classes is None:
            classes = [str(k) for k in range(num_classes)]
        if len(classes) != num_classes:
            raise ValueError(f"classes must name num_classes = {num_classes} classes, "
                             f"got {len(classes)}")
        self.classes = [str(c) for c in classes]

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (JSON-able)."""
        rnn = self.rnn
        return {
            "input_size": self.input_size, "num_classes": self.num_classes, "model": self.model,
            "hidden_size": rnn.hidden_size, "num_layers": rnn.num_layers,
            "bidirectional": rnn.bidirectional, "dropout": float(self.dropout.p),
            "dtype": self.dtype.name, "classes": list(self.classes),
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "patch": self.patch, "pool": self.pool, **_cell_options_set(rnn),
        }

    def extra_repr(self) -> str:
        return f"classes={self.classes[:5]}{'...' if len(self.classes) > 5 else ''}"

    def forward(self, input: np.ndarray, lengths=None):
        x = input
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        if self.patch > 1:
            x, lengths = _patches(x, lengths, self.patch)
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, state = self.rnn(x)
        h_n = state[0] if self.model == "lstm" else state  # (num_layers * D, N, H)
        if self.rnn.bidirectional:
            last = rnp.concatenate([h_n[-2], h_n[-1]], axis=1)  # (N, 2H), forward first
        else:
            last = h_n[-1]  # (N, H)
        features = last
        if self.pool != "last":
            if isinstance(output, PackedSequence):
                output, lengths = pad_packed_sequence(output, batch_first=True)  # zero-padded
                mean = output.sum(axis=1) / np.asarray(lengths, output.dtype)[:, None]
            else:
                mean = output.mean(axis=1)  # (N, D * H)
            features = mean if self.pool == "mean" else rnp.concatenate([last, mean], axis=1)
        return self.fc(self.dropout(features))  # (N, num_classes)

    def _logits(self, series: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Logits ``(N, num_classes)`` of raw ``(L_i, C)`` series, in eval mode and in
        batches: the one inference loop, of ``predict_proba`` and of ``rnnkit train``'s
        evaluation (which takes its float64 loss from these logits)."""
        from . import no_grad
        from .data import pad_batch

        was_training = self.training
        self.eval()
        chunks = []
        try:
            with no_grad():
                for start in range(0, len(series), batch_size):
                    x, lengths = pad_batch(series[start: start + batch_size], self.dtype)
                    chunks.append(np.asarray(self(x, lengths)))  # (batch, num_classes)
        finally:
            self.train(was_training)
        return np.concatenate(chunks) if chunks else np.zeros((0, self.num_classes), self.dtype)

    def predict_proba(self, series: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """Class probabilities ``(N, num_classes)`` of raw ``(L_i, C)`` series."""
        logits = self._logits(series, batch_size).astype(np.float64)
        return nn.functional.softmax(logits, dim=1)

    def predict(self, series: Sequence[np.ndarray], batch_size: int = 256) -> list[str]:
        """Class names of raw ``(L_i, C)`` series."""
        return [self.classes[k] for k in self.predict_proba(series, batch_size).argmax(axis=1)]


class SequenceRegressor(nn.Module):
    r"""Predict one number per variable-length multichannel series: the reader of
    :class:`SequenceClassifier` (same layers, same standardization of inputs) with a
    head of one output, trained on standardized targets and mapped back::

        y = target_std * (W [h_n[-2] ; h_n[-1]] + b) + target_mean

    Args:
        input_size, model, hidden_size, num_layers, bidirectional, dropout, dtype,
        mean, std, patch, pool, layer_norm, recurrent_dropout, zoneout, peepholes: as for
            :class:`SequenceClassifier`.
        target_mean, target_std: the training targets' mean and standard deviation.
            Default: 0.0, 1.0

    Shape:
        input: (N, L, C), zero-padded; lengths: (N,) or None. Output: (N,), standardized
        targets (``predict`` maps them back).

    Example:
        >>> import numpy as np
        >>> model = SequenceRegressor(3, hidden_size=5, target_mean=10.0)
        >>> model(np.zeros((2, 6, 3), np.float32), lengths=[6, 2]).shape
        (2,)
        >>> model.predict([np.zeros((6, 3)), np.ones((2, 3))]).shape
        (2,)
    """

    def __init__(self, input_size: int, model: str = "lstm", hidden_size: int = 64,
                 num_layers: int = 1, bidirectional: bool = True, dropout: float = 0.0,
                 dtype=None, mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None, patch: int = 1, pool: str = "last",
                 target_mean: float = 0.0, target_std: float = 1.0, *,
                 layer_norm: bool = False, recurrent_dropout: float = 0.0,
                 zoneout: float = 0.0, peepholes: bool = False):
        super().__init__()
        _build_reader(self, input_size, 1, model, hidden_size, num_layers, bidirectional,
                      dropout, dtype, mean, std, patch, pool,
                      dict(layer_norm=layer_norm, recurrent_dropout=recurrent_dropout,
                           zoneout=zoneout, peepholes=peepholes))
        if not (np.isfinite(target_std) and target_std > 0 and np.isfinite(target_mean)):
            raise ValueError("target_mean must be finite and target_std positive, got "
                             f"{target_mean}, {target_std}")
        self.num_classes = 1  # outputs of the head, for _logits
        self.target_mean, self.target_std = float(target_mean), float(target_std)

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (JSON-able)."""
        rnn = self.rnn
        return {
            "input_size": self.input_size, "model": self.model, "hidden_size": rnn.hidden_size,
            "num_layers": rnn.num_layers, "bidirectional": rnn.bidirectional,
            "dropout": float(self.dropout.p), "dtype": self.dtype.name,
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
            "patch": self.patch, "pool": self.pool, "target_mean": self.target_mean,
            "target_std": self.target_std, **_cell_options_set(rnn),
        }

    def extra_repr(self) -> str:
        return f"target_mean={self.target_mean:g}, target_std={self.target_std:g}"

    def forward(self, input: np.ndarray, lengths=None):
        return SequenceClassifier.forward(self, input, lengths)[:, 0]  # (N,), standardized

    _logits = SequenceClassifier._logits  # (N,) here: the one inference loop, shared

    def predict(self, series: Sequence[np.ndarray], batch_size: int = 256) -> np.ndarray:
        """One float64 prediction per raw ``(L_i, C)`` series, in the targets' units."""
        z = self._logits(series, batch_size).reshape(-1).astype(np.float64)  # (N,)
        return z * self.target_std + self.target_mean
