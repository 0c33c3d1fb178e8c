"""Modules: the building blocks users subclass and stack."""

from .container import Sequential
from .dropout import Dropout
from .linear import Identity, Linear
from .module import Module, Parameter
from .rnn import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNBase, RNNCell, RNNCellBase
from .sparse import Embedding
from .stream import Stream

__all__ = [
    "Module",
    "Parameter",
    "RNNBase",
    "LSTM",
    "GRU",
    "RNN",
    "RNNCellBase",
    "LSTMCell",
    "GRUCell",
    "RNNCell",
    "Linear",
    "Identity",
    "Embedding",
    "Dropout",
    "Sequential",
    "Stream",
]
