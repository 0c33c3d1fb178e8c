"""The recurrent modes, by torch's names: ``"LSTM"``, ``"GRU"``, ``"RNN_TANH"``, ``"RNN_RELU"``.

Everything that differs between them lives here, once:

- ``gates``: rows of ``W_ih``/``W_hh`` per hidden unit (4, 3, 1, 1);
- the order of a layer-direction's weights in the flat list the stack's autograd
  node takes, and their torch names (``weight_names``), then the parameters
  of the cell options (``option_names``; API.md "Cell options (beyond torch)");
- one forward and one backward per layer-direction with a common signature,
  which adapt the mode's ``_ops`` function (the LSTM and RNN kernels take the
  summed bias ``b_ih + b_hh``, the GRU keeps ``b_hn`` apart, the RNN takes its
  nonlinearity).

Modules, cells, the stack's autograd node and the exporters all ask this file; none
of them branches on the mode for these things.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from . import _ops
from . import _ops_options as _options

__all__ = ["Mode", "MODES", "rnn_mode", "weight_names", "layer_suffix", "LayerWeights",
           "layer_weights", "CellOptions", "NO_OPTIONS", "option_names"]


class CellOptions(NamedTuple):
    """A stack's cell options (API.md "Cell options (beyond torch)"); all off by default."""

    layer_norm: bool = False
    recurrent_dropout: float = 0.0
    zoneout: float = 0.0
    peepholes: bool = False  # the LSTM only

    @property
    def any(self) -> bool:
        return self != NO_OPTIONS


NO_OPTIONS = CellOptions()

# an option parameter's name -> the keyword the option kernels take it by
OPTION_KEYWORDS = {"weight_ln_ih": "w_ln_ih", "weight_ln_hh": "w_ln_hh",
                   "weight_ln_c": "w_ln_c", "bias_ln_c": "b_ln_c", "weight_ph": "w_ph"}


def option_names(cell_state: bool, options: CellOptions) -> tuple[str, ...]:
    """The option parameters of a layer-direction, after its ``weight_names``: layer norm's
    gains ``weight_ln_ih, weight_ln_hh`` (G*H,), and for the LSTM ``weight_ln_c`` and
    ``bias_ln_c`` (H,); then the LSTM's ``weight_ph`` (3*H,). Dropout and zoneout have none."""
    names = ()
    if options.layer_norm:
        names += ("weight_ln_ih", "weight_ln_hh") + (
            ("weight_ln_c", "bias_ln_c") if cell_state else ())
    if options.peepholes:
        names += ("weight_ph",)
    return names


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
    """One layer-direction's weights; absent ones are None. ``options``: the option
    parameters by the option kernels' keywords (``OPTION_KEYWORDS``), ``{}`` without."""

    w_ih: object
    w_hh: object
    b_ih: object
    b_hh: object
    w_hr: object
    options: dict


def layer_weights(flat, k: int, bias: bool, proj: bool, names: tuple = ()) -> LayerWeights:
    """Layer-direction ``k``'s weights from the flat list (order of ``weight_names``, then
    the option parameters ``names``)."""
    plain = 2 + 2 * bias + proj
    per = plain + len(names)
    w = flat[k * per:(k + 1) * per]
    return LayerWeights(w[0], w[1], w[2] if bias else None, w[3] if bias else None,
                        w[plain - 1] if proj else None,
                        {OPTION_KEYWORDS[n]: v for n, v in zip(names, w[plain:], strict=True)})


def _summed(w: LayerWeights):
    """``b_ih + b_hh``: the LSTM and RNN add both biases to the same pre-activation."""
    return None if w.b_ih is None else w.b_ih + w.b_hh


# ---------------------------------------------------------------- per mode
# forward(x, h_0, c_0, w, batch_sizes, reverse, keep, masks) -> (output, h_n, c_n, saved)
#   c_0, c_n: the LSTM's cell state, None for the others; saved: None unless keep.
#   masks: the drawn masks of the options (``recurrent_mask``, ``zoneout_mask`` or
#   ``zoneout_eval``, as ``_ops_options`` takes them), ``{}`` without.
# backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse, masks)
#   -> (dx, dh_0, dc_0, weight gradients in weight_names order, then option_names order)
# A layer-direction without options (no option parameters, no masks) runs ``_ops``'s
# kernels: torch's math; with any, ``_ops_options``'s.


def _option_grads(w: LayerWeights, doptions: dict) -> list:
    return [doptions[keyword] for keyword in w.options]


def _lstm_forward(x, h_0, c_0, w, batch_sizes, reverse, keep, masks):
    if w.options or masks:
        return _options.lstm_forward(x, h_0, c_0, w.w_ih, w.w_hh, _summed(w), w.w_hr,
                                     batch_sizes, reverse, keep=keep, **w.options, **masks)
    return _ops.lstm_forward(x, h_0, c_0, w.w_ih, w.w_hh, _summed(w), w.w_hr, batch_sizes,
                             reverse, keep=keep)


def _lstm_backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse, masks):
    doptions = {}
    if w.options or masks:
        dx, dh_0, dc_0, dw_ih, dw_hh, db, dw_hr, doptions = _options.lstm_backward(
            x, w.w_ih, w.w_hh, w.w_hr, saved, d_output, dh_n, dc_n, batch_sizes, reverse,
            **w.options, **masks)
    else:
        dx, dh_0, dc_0, dw_ih, dw_hh, db, dw_hr = _ops.lstm_backward(
            x, w.w_ih, w.w_hh, w.w_hr, saved, d_output, dh_n, dc_n, batch_sizes, reverse)
    biases = [db, db.copy()] if w.b_ih is not None else []  # one sum: the same gradient
    return dx, dh_0, dc_0, [dw_ih, dw_hh] + biases + ([dw_hr] if w.w_hr is not None else []) \
        + _option_grads(w, doptions)


def _gru_forward(x, h_0, c_0, w, batch_sizes, reverse, keep, masks):
    if w.options or masks:
        output, h_n, saved = _options.gru_forward(x, h_0, w.w_ih, w.w_hh, w.b_ih, w.b_hh,
                                                  batch_sizes, reverse, keep=keep, **w.options,
                                                  **masks)
    else:
        output, h_n, saved = _ops.gru_forward(x, h_0, w.w_ih, w.w_hh, w.b_ih, w.b_hh,
                                              batch_sizes, reverse, keep=keep)
    return output, h_n, None, saved


def _gru_backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse, masks):
    doptions = {}
    if w.options or masks:
        dx, dh_0, dw_ih, dw_hh, db_ih, db_hh, doptions = _options.gru_backward(
            x, w.w_ih, w.w_hh, saved, d_output, dh_n, batch_sizes, reverse, **w.options,
            **masks)
    else:
        dx, dh_0, dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(
            x, w.w_ih, w.w_hh, saved, d_output, dh_n, batch_sizes, reverse)
    return dx, dh_0, None, [dw_ih, dw_hh] + ([db_ih, db_hh] if w.b_ih is not None else []) \
        + _option_grads(w, doptions)


def _rnn(nonlinearity: str):
    def forward(x, h_0, c_0, w, batch_sizes, reverse, keep, masks):
        if w.options or masks:
            output, h_n, saved = _options.rnn_forward(
                x, h_0, w.w_ih, w.w_hh, _summed(w), nonlinearity, batch_sizes, reverse,
                keep=keep, **w.options, **masks)
        else:
            output, h_n, saved = _ops.rnn_forward(x, h_0, w.w_ih, w.w_hh, _summed(w),
                                                  nonlinearity, batch_sizes, reverse, keep=keep)
        return output, h_n, None, saved

    def backward(x, w, saved, d_output, dh_n, dc_n, batch_sizes, reverse, masks):
        doptions = {}
        if w.options or masks:
            dx, dh_0, dw_ih, dw_hh, db, doptions = _options.rnn_backward(
                x, w.w_ih, w.w_hh, saved, d_output, dh_n, nonlinearity, batch_sizes, reverse,
                **w.options, **masks)
        else:
            dx, dh_0, dw_ih, dw_hh, db = _ops.rnn_backward(
                x, w.w_ih, w.w_hh, saved, d_output, dh_n, nonlinearity, batch_sizes, reverse)
        return dx, dh_0, None, [dw_ih, dw_hh] + ([db, db.copy()] if w.b_ih is not None else []) \
            + _option_grads(w, doptions)

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
