"""Layers (torch's ``torch.nn`` names), functions and utilities."""

from . import functional, utils
from .modules import (
    GRU,
    LSTM,
    RNN,
    GRUCell,
    LSTMCell,
    Module,
    Parameter,
    RNNBase,
    RNNCell,
    RNNCellBase,
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
]
