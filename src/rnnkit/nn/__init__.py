"""Layers (torch's ``torch.nn`` names), functions and utilities."""

from . import functional, utils
from .modules import (
    GRU,
    LSTM,
    RNN,
    Dropout,
    Embedding,
    GRUCell,
    Identity,
    Linear,
    LSTMCell,
    Module,
    Parameter,
    RNNBase,
    RNNCell,
    RNNCellBase,
    Sequential,
    Stream,
)

__all__ = [
    "functional",
    "utils",
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
