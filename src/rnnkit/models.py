"""Ready-made models built from rnnkit layers; ``rnnkit.load_module`` rebuilds them by name."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import nn
from . import numpy as rnp
from .nn.utils.rnn import pack_padded_sequence

__all__ = ["SequenceClassifier"]

_LAYERS = {"lstm": "LSTM", "gru": "GRU", "rnn": "RNN"}


class SequenceClassifier(nn.Module):
    r"""Classify variable-length multichannel series: a recurrent layer reads each
    series to its own last step; its final hidden state (both directions' when
    bidirectional) feeds a linear head::

        x'     = (x - mean) / std                      per channel, if given
        h_n    = RNN(pack_padded_sequence(x', lengths))
        logits = W [h_n[-2] ; h_n[-1]] + b             bidirectional: last layer's two directions

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
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
        super().__init__()
        if model not in _LAYERS:
            raise ValueError(f"model must be one of {sorted(_LAYERS)}, got {model!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
                or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        layer = getattr(nn, _LAYERS[model])
        # torch warns about dropout with one layer: there is nothing between layers
        self.rnn = layer(input_size, hidden_size, num_layers=num_layers, batch_first=True,
                         dropout=dropout if num_layers > 1 else 0.0,
                         bidirectional=bidirectional, dtype=dtype)
        self.dropout = nn.Dropout(dropout)
        D = 2 if bidirectional else 1
        self.fc = nn.Linear(D * hidden_size, num_classes, dtype=dtype)
        self.model = model
        self.num_classes = int(num_classes)
        self.dtype = self.rnn.dtype
        if classes is None:
            classes = [str(k) for k in range(num_classes)]
        if len(classes) != num_classes:
            raise ValueError(f"classes must name num_classes = {num_classes} classes, "
                             f"got {len(classes)}")
        self.classes = [str(c) for c in classes]
        self.mean = None if mean is None else np.asarray(mean, dtype=self.dtype)
        self.std = None if std is None else np.asarray(std, dtype=self.dtype)
        for name, stat in (("mean", self.mean), ("std", self.std)):
            if stat is not None and stat.shape != (input_size,):
                raise ValueError(f"{name} must have shape (input_size,) = ({input_size},), "
                                 f"got {stat.shape}")

    def config(self) -> dict:
        """The constructor arguments that rebuild this model (JSON-able)."""
        rnn = self.rnn
        return {
            "input_size": rnn.input_size, "num_classes": self.num_classes, "model": self.model,
            "hidden_size": rnn.hidden_size, "num_layers": rnn.num_layers,
            "bidirectional": rnn.bidirectional, "dropout": float(self.dropout.p),
            "dtype": self.dtype.name, "classes": list(self.classes),
            "mean": None if self.mean is None else [float(v) for v in self.mean],
            "std": None if self.std is None else [float(v) for v in self.std],
        }

    def extra_repr(self) -> str:
        return f"classes={self.classes[:5]}{'...' if len(self.classes) > 5 else ''}"

    def forward(self, input: np.ndarray, lengths=None):
        x = input
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        if lengths is not None:
            x = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, state = self.rnn(x)
        h_n = state[0] if self.model == "lstm" else state  # (num_layers * D, N, H)
        if self.rnn.bidirectional:
            features = rnp.concatenate([h_n[-2], h_n[-1]], axis=1)  # (N, 2H), forward first
        else:
            features = h_n[-1]  # (N, H)
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
