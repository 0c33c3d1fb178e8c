"""Functions on arrays: the stacked recurrences, dropout, linear, losses.

Everything here is written with ``autograd.numpy`` so gradients flow through it;
the recurrences themselves are single primitives with fused backward passes
(``rnnkit._autodiff``).
"""

from __future__ import annotations

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from .. import _autodiff
from .._random import default_generator

__all__ = ["dropout", "recurrent_layers"]


def dropout(input, p: float = 0.5, training: bool = True):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``, like
    ``torch.nn.functional.dropout``; the identity when not ``training`` or ``p == 0``.

    The Bernoulli mask is drawn from rnnkit's generator (``rnnkit.manual_seed``).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    value = getval(input)
    if p == 1.0:
        return input * np.zeros_like(value)
    keep = default_generator().random(value.shape) >= p  # Bernoulli(1 - p) per element
    return input * (keep.astype(value.dtype) / value.dtype.type(1.0 - p))


def recurrent_layers(mode, x, h_0, c_0, weights, num_layers, num_directions, dropout_p,
                     training, nonlinearity="tanh", batch_sizes=None):
    """Run a stack of recurrent layers over a padded, time-major batch.

    Args:
        mode: ``"LSTM"``, ``"GRU"`` or ``"RNN"``.
        x: ``(L, N, H_in)``; rows sorted by decreasing length when ``batch_sizes`` is given.
        h_0: ``(num_layers * D, N, H_out)``. c_0: ``(num_layers * D, N, H_cell)`` (LSTM).
        weights: per layer-direction ``k = D * layer + direction``, a dict with
            ``w_ih, w_hh, b_ih, b_hh`` (None without bias) and ``w_hr`` (None without
            projection).
        batch_sizes: rows active at each step, or None (every row every step).

    Returns:
        ``output (L, N, D * H_out), h_n, c_n`` (``c_n`` None but for the LSTM).
    """
    layer_input = x
    h_n, c_n = [], []
    for layer in range(num_layers):
        outputs = []
        for direction in range(num_directions):
            k = num_directions * layer + direction
            w = weights[k]
            reverse = direction == 1
            if mode == "LSTM":
                b = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
                out, h, c = _autodiff.lstm_layer(
                    layer_input, h_0[k], c_0[k], w["w_ih"], w["w_hh"], b, w["w_hr"],
                    batch_sizes, reverse,
                )
                c_n.append(c)
            elif mode == "GRU":
                out, h = _autodiff.gru_layer(
                    layer_input, h_0[k], w["w_ih"], w["w_hh"], w["b_ih"], w["b_hh"],
                    batch_sizes, reverse,
                )
            else:
                b = None if w["b_ih"] is None else w["b_ih"] + w["b_hh"]
                out, h = _autodiff.rnn_layer(
                    layer_input, h_0[k], w["w_ih"], w["w_hh"], b, nonlinearity,
                    batch_sizes, reverse,
                )
            outputs.append(out)
            h_n.append(h)
        # forward direction first in the last axis
        layer_output = outputs[0] if num_directions == 1 else anp.concatenate(outputs, axis=2)
        if layer < num_layers - 1:
            layer_output = dropout(layer_output, dropout_p, training)  # between layers only
        layer_input = layer_output
    return layer_input, anp.stack(h_n), (anp.stack(c_n) if mode == "LSTM" else None)
