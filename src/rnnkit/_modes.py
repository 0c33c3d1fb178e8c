"""The recurrent modes, by torch's names: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``.

Everything that differs between them lives here, once:

- ``gates``: rows of ``W_ih``/``W_hh`` per hidden unit (4, 3, 1, 1);
- the order of a layer-direction's weights in the flat list the autograd
  primitive takes, and their torch names (``weight_names``);
- one forward and one backward per layer-direction with a common signature,
  which adapt the mode's ``_ops`` function (the LSTM and RNN kernels take the
  summed bias ``b_ih + b_hh``, the GRU keeps ``b_hn`` apart, the RNN takes its
  nonlinearity).

Modules, cells, the autograd primitive and the exporters all ask this file; none
of them branches on the mode for these things.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import _ops

__all__ = ["Mode", "MODES", "rnn_mode", "weight_names", "layer_suffix", "LayerWeights",
           "layer_weights"]


def weight_names(bias: bool, proj: bool) -> tuple[str, ...]:
    """A layer-direction's weights in flat order: ``weight_ih, weight_hh``, then
    ``bias_ih, bias_hh`` (with bias), then ``weight_hr`` (with projection). Layers add
    torch's suffix ``_l{layer}`` (and ``_reverse``); cells use the bare names."""
    return ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ()) \
        + (("weight_hr",) if proj else ())


def layer_suffix(layer: int, direction: int) -> str:
    """torch's suffix of a layer-direction's weight names: ``_l1`` or ``_l1_reverse``."""
    return f"_l{layer}" + ("_reverse" if direction == 1 else "")


class LayerWeights(NamedTuple):
    """One layer-direction's weights; absent ones are None."""

    w_ih: object
    w_hh: object
    b_ih: object
    b_hh: object
    w_hr: object


def layer_weights(flat, k: int, bias: bool, proj: bool) -> LayerWeights:
    """Layer-direction ``k``'s weights from the flat list (order of ``weight_names``)."""
    per = 2 + 2 * bias + proj
    w = flat[k * per:(k + 1) * per]
    return LayerWeights(w[0], w[1], w[2] if bias else None, w[3] if bias else None,
                        w[-1] if proj else None)


def _summed(w: LayerWeights):
    """``b_ih + b_hh``: the LSTM and RNN add both biases to the same pre-activation."""
    return None if w.b_ih is None else w.b_ih + w.b_hh


# ---------------------------------------------------------------- per mode
# forward(x, h_0, c_0, w, batch_sizes, reverse, keep) -> (output, h_n, c_n, saved)
#   c_0, c_n: the LSTM's cell state, None for the others; saved: None unless keep.
# backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse)
#   -> (dx, dh_0, dc_0, weight gradients in weight_names order)


def _lstm_forward(x, h_0, c_0, w, batch_sizes, reverse, keep):
    return _ops.lstm_forward(x, h_0, c_0, w.w_ih, w.w_hh, _summed(w), w.w_hr, batch_sizes,
                             reverse, keep=keep)


def _lstm_backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse):
    dx, dh_0, dc_0, dw_ih, dw_hh, db, dw_hr = _ops.lstm_backward(
        x, w.w_ih, w.w_hh, w.w_hr, saved, d_output, dh_n, dc_n, batch_sizes, reverse)
    biases = [db, db.copy()] if w.b_ih is not None else []  # one sum: the same gradient
    return dx, dh_0, dc_0, [dw_ih, dw_hh] + biases + ([dw_hr] if w.w_hr is not None else [])


def _gru_forward(x, h_0, c_0, w, batch_sizes, reverse, keep):
    output, h_n, saved = _ops.gru_forward(x, h_0, w.w_ih, w.w_hh, w.b_ih, w.b_hh, batch_sizes,
                                          reverse, keep=keep)
    return output, h_n, None, saved


def _gru_backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse):
    dx, dh_0, dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(
        x, w.w_ih, w.w_hh, saved, d_output, dh_n, batch_sizes, reverse)
    return dx, dh_0, None, [dw_ih, dw_hh] + ([db_ih, db_hh] if w.b_ih is not None else [])


def _rnn(nonlinearity: str):
    def forward(x, h_0, c_0, w, batch_sizes, reverse, keep):
        output, h_n, saved = _ops.rnn_forward(x, h_0, w.w_ih, w.w_hh, _summed(w), nonlinearity,
                                              batch_sizes, reverse, keep=keep)
        return output, h_n, None, saved

    def backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse):
        dx, dh_0, dw_ih, dw_hh, db = _ops.rnn_backward(
            x, w.w_ih, w.w_hh, saved, d_output, dh_n, nonlinearity, batch_sizes, reverse)
        return dx, dh_0, None, [dw_ih, dw_hh] + ([db, db.copy()] if w.b_ih is not None else [])

    return forward, backward


class Mode(NamedTuple):
    """What one recurrent mode is made of."""

    name: str                # torch's: "LSTM", "GRU", "RNN_TANH", "RNN_RELU"
    gates: int               # rows of W_ih per hidden unit
    cell_state: bool         # carries c besides h (the LSTM)
    nonlinearity: str | None  # the Elman RNN's 'tanh' or 'relu'
    forward: Callable
    backward: Callable


MODES = {
    "LSTM": Mode("LSTM", 4, True, None, _lstm_forward, _lstm_backward),
    "GRU": Mode("GRU", 3, False, None, _gru_forward, _gru_backward),
    "RNN_TANH": Mode("RNN_TANH", 1, False, "tanh", *_rnn("tanh")),
    "RNN_RELU": Mode("RNN_RELU", 1, False, "relu", *_rnn("relu")),
}


def rnn_mode(nonlinearity: str) -> str:
    """The mode of an Elman RNN with this nonlinearity (checked: torch's message)."""
    if nonlinearity not in ("tanh", "relu"):
        raise ValueError(f"Unknown nonlinearity {nonlinearity!r}. Select from 'tanh' or 'relu'.")
    return "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
