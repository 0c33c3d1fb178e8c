"""Gate layouts: torch's rows against ONNX's.

torch stacks the gates of ``weight_ih``/``weight_hh``/biases in the order i, f, g, o
(LSTM) and r, z, n (GRU); the ONNX operators want i, o, f, c and z, r, h, with
``W`` (D, G, H_in), ``R`` (D, G, H) and ``B`` (D, 2G) = [Wb || Rb] per direction.
"""

from __future__ import annotations

import numpy as np

from .._modes import MODES

GATES = {op: MODES[mode].gates for op, mode in (("LSTM", "LSTM"), ("GRU", "GRU"),
                                                ("RNN", "RNN_TANH"))}  # by ONNX operator
# ONNX block k is torch block TORCH_OF_ONNX[mode][k]
TORCH_OF_ONNX = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}
ONNX_OF_TORCH = {mode: list(np.argsort(order)) for mode, order in TORCH_OF_ONNX.items()}


def reorder(w: np.ndarray, order) -> np.ndarray:
    """Permute the gate blocks along axis 0 of ``w`` (G, ...) : block k <- block order[k]."""
    blocks = np.split(w, len(order), axis=0)
    return np.concatenate([blocks[k] for k in order], axis=0)

