"""Parity with torch where torch is absent: outputs and gradients saved by
make_golden.py (torch 2.13.0, float64) must be reproduced exactly. Never skips."""

from pathlib import Path

import numpy as np
import pytest

import rnnkit
from make_golden import BUILDS
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import assert_close

GOLDEN = Path(__file__).with_name("golden")


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_matches_saved_torch_results(name):
    kind, kw, lengths, with_hx = BUILDS[name]
    g = np.load(GOLDEN / f"{name}.npz")
    layer = getattr(rnnkit.nn, kind)(**kw, dtype=np.float64)
    layer.load_state_dict({k[len("param/"):]: g[k] for k in g.files if k.startswith("param/")})
    batch_first = kw.get("batch_first", False)
    hx = None
    if with_hx:
        hx = (g["h_0"], g["c_0"]) if kind == "LSTM" else g["h_0"]

    def run(model, x):
        inp = x
        if lengths:
            inp = pack_padded_sequence(x, g["lengths"], batch_first, enforce_sorted=False)
        out, state = model(inp, hx)
        if lengths:
            out = pad_packed_sequence(out, batch_first)[0]
        h_n, c_n = state if kind == "LSTM" else (state, None)
        return out, h_n, c_n

    def loss_fn(model, x):
        out, h_n, c_n = run(model, x)
        loss = (out * g["coeff"]).sum() + (h_n**2).sum()
        return loss if c_n is None else loss + c_n.sum()

    out, h_n, c_n = run(layer, g["x"])
    assert_close(out, g["output"], 1e-10, 1e-13, "output")
    assert_close(h_n, g["h_n"], 1e-10, 1e-13, "h_n")
    if c_n is not None:
        assert_close(c_n, g["c_n"], 1e-10, 1e-13, "c_n")
    loss, (grads, dx) = rnnkit.value_and_grad(loss_fn, argnums=(0, 1))(layer, g["x"])
    assert_close(loss, g["loss"], 1e-10, 1e-13, "loss")
    assert_close(dx, g["dx"], 1e-9, 1e-12, "dx")
    for key in g.files:
        if key.startswith("grad/"):
            assert_close(grads[key[len("grad/"):]], g[key], 1e-9, 1e-12, key)
