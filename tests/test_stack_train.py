"""A small stack's training step in two compiled calls (``_kernels/stack_train.py``): the
same value and the same gradients (every weight, x, h_0, c_0) through
``rnnkit.value_and_grad`` as the layer-by-layer path, on every mode, projection,
direction count, packed or padded input, with and without bias, float32 and float64;
and the modules and cells take it when a traced call is small."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import _autodiff, _ops, nn
from rnnkit._modes import MODES

from helpers import draw_lengths, run_python, stack_args

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}
STACKS = [("LSTM", False), ("LSTM", True), ("GRU", False), ("RNN_TANH", False),
          ("RNN_RELU", False)]


class _Counting:
    """Counts the fused forwards (``SmallStack.train_forward``) while installed."""

    def __init__(self, monkeypatch):
        self.calls = 0
        forward = _ops.SmallStack.train_forward

        def counted(stack, *args):
            self.calls += 1
            return forward(stack, *args)

        monkeypatch.setattr(_ops.SmallStack, "train_forward", counted)


def _value_and_grads(spec, x, h_0, c_0, flat, cotangents):
    """value_and_grad of a weighted sum of the stack's outputs, by x, h_0, c_0 and flat."""
    lstm = MODES[spec.mode].cell_state

    def loss(x, h_0, c_0, flat):
        out, h_n, c_n = _autodiff.stacked_layers(spec, x, h_0, c_0, list(flat))
        total = (out * cotangents[0]).sum() + (h_n * cotangents[1]).sum()
        return total + (c_n * cotangents[2]).sum() if lstm else total

    return rnnkit.value_and_grad(loss, argnums=(0, 1, 2, 3))(x, h_0, c_0, tuple(flat))


def _compare(mode, num_layers, D, I, H, P, bias, L, N, lengths, dtype, seed=0,
             monkeypatch=None):
    """The fused path against the layer-by-layer path (forced): value and gradients."""
    rng = np.random.default_rng(seed)
    x, h_0, c_0, flat, batch_sizes = stack_args(rng, mode, num_layers, D, I, H, P, bias, L, N,
                                           lengths, dtype)
    spec = _autodiff.StackSpec(mode, num_layers, D, 0.0, True, batch_sizes, bias, P != H)
    cotangents = [rng.standard_normal(s).astype(dtype)
                  for s in ((L, N, D * P), h_0.shape, c_0.shape)]
    assert _ops.is_small(mode, x, num_layers, D, H, P)
    saved = _autodiff._FUSED_TRAIN
    calls = []
    forward = _ops.SmallStack.train_forward
    _ops.SmallStack.train_forward = lambda *a: calls.append(1) or forward(*a)
    try:
        _autodiff._FUSED_TRAIN = True
        got = _value_and_grads(spec, x, h_0, c_0, flat, cotangents)
        assert len(calls) == 1, "the fused path was not taken"
        _autodiff._FUSED_TRAIN = False
        expected = _value_and_grads(spec, x, h_0, c_0, flat, cotangents)
        assert len(calls) == 1, "the layer path was not forced"
    finally:
        _autodiff._FUSED_TRAIN = saved
        _ops.SmallStack.train_forward = forward
    np.testing.assert_allclose(got[0], expected[0], **TOL[dtype])
    (dx, dh_0, dc_0, d_flat), (ex, eh_0, ec_0, e_flat) = got[1], expected[1]
    names = ["x", "h_0"] + (["c_0"] if mode == "LSTM" else [])
    pairs = [(dx, ex), (dh_0, eh_0)] + ([(dc_0, ec_0)] if mode == "LSTM" else [])
    names += [f"flat[{i}] {w.shape}" for i, w in enumerate(flat)]
    pairs += list(zip(d_flat, e_flat, strict=True))
    for name, (a, b) in zip(names, pairs, strict=True):
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, err_msg=f"{mode} d{name}", **TOL[dtype])
    if mode != "LSTM":
        assert not np.any(dc_0) and not np.any(ec_0)  # c_0 unread


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("mode,proj", STACKS, ids=[m + "-proj" * p for m, p in STACKS])
def test_fused_training_equals_layer_by_layer(mode, proj, D, packed, bias, dtype):
    lengths = [5, 5, 3, 1] if packed else None
    _compare(mode, 2, D, 7, 6, 4 if proj else 6, bias, 5, 4, lengths, dtype)


@settings(max_examples=15, deadline=None)
@given(stack=st.sampled_from(STACKS), num_layers=st.integers(1, 3), D=st.integers(1, 2),
       I=st.integers(1, 9), H=st.integers(1, 12), L=st.integers(1, 6), N=st.integers(1, 6),
       bias=st.booleans(), data=st.data())
def test_fused_training_equals_layer_by_layer_everywhere(stack, num_layers, D, I, H, L, N,
                                                         bias, data):
    mode, proj = stack
    P = data.draw(st.integers(1, H)) if proj and H > 1 else H
    lengths = draw_lengths(data, L, N)
    _compare(mode, num_layers, D, I, H, P, bias, L, N, lengths, np.float64,
             seed=data.draw(st.integers(0, 2**16)))


def _module_grads(model, x, fused):
    saved = _autodiff._FUSED_TRAIN
    _autodiff._FUSED_TRAIN = fused
    try:
        def loss(m, x):
            out = m(x)
            out = out[0] if isinstance(out, tuple) else out  # output, or a cell's h
            return (out * np.linspace(-1, 1, out.size).reshape(out.shape)).sum()

        return rnnkit.value_and_grad(loss, argnums=(0, 1))(model, x)
    finally:
        _autodiff._FUSED_TRAIN = saved


@pytest.mark.parametrize("make", [
    lambda: nn.LSTM(10, 20, num_layers=2),  # the seed
    lambda: nn.GRU(10, 20, num_layers=2),
    lambda: nn.LSTM(10, 8, num_layers=2, proj_size=3, bidirectional=True),
    lambda: nn.RNN(10, 6, nonlinearity="relu", bias=False),
    lambda: nn.LSTMCell(10, 7),
    lambda: nn.GRUCell(10, 7),
], ids=["seed-lstm", "gru", "lstm-proj-bi", "rnn-relu", "lstm-cell", "gru-cell"])
def test_modules_and_cells_take_the_fused_path(make, monkeypatch):
    # a module's weights come from the traced parameter dict (_stack_in_dict): the fused
    # path copies them into a flat buffer per call; every parameter gets its gradient
    rng = np.random.default_rng(0)
    model = make()
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    x = x[0] if isinstance(model, (nn.LSTMCell, nn.GRUCell)) else x
    counting = _Counting(monkeypatch)
    value, (grads, dx) = _module_grads(model, x, True)
    assert counting.calls == 1
    for p in model.parameters():
        p.grad = None
    e_value, (e_grads, e_dx) = _module_grads(model, x, False)
    assert counting.calls == 1
    np.testing.assert_allclose(value, e_value, rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(dx, e_dx, rtol=2e-5, atol=2e-6)
    assert set(grads) == set(e_grads) == set(dict(model.named_parameters()))
    for name in grads:
        np.testing.assert_allclose(grads[name], e_grads[name], rtol=2e-5, atol=2e-5,
                                   err_msg=name)
    # a second step after an in-place update sees the new weights (no stale copy)
    next(iter(model.parameters()))[...] *= 0.5
    value2, _ = _module_grads(model, x, True)
    e_value2, _ = _module_grads(model, x, False)
    assert not np.isclose(value2, value)
    np.testing.assert_allclose(value2, e_value2, rtol=2e-5, atol=2e-6)


def test_dropout_options_and_large_calls_keep_the_layer_path(monkeypatch):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    counting = _Counting(monkeypatch)
    lstm = nn.LSTM(10, 20, num_layers=2, dropout=0.5)
    rnnkit.grad(lambda m: m(x)[0].sum())(lstm)  # training-mode dropout between layers
    assert counting.calls == 0
    lstm.eval()
    rnnkit.grad(lambda m: m(x)[0].sum())(lstm)  # eval: no dropout, fused
    assert counting.calls == 1
    big = nn.GRU(256, 256)
    xb = rng.standard_normal((20, 16, 256)).astype(np.float32)
    rnnkit.grad(lambda m: m(xb)[0].sum())(big)
    assert counting.calls == 1


_SLOW_TWIN = """
import numpy as np
import numba
assert numba.config.DISABLE_JIT
from test_stack_train import _compare
_compare("LSTM", 2, 2, 3, 4, 2, True, 3, 3, [3, 2, 1], np.float64)
_compare("GRU", 2, 1, 3, 4, 4, True, 3, 2, [3, 1], np.float32)
_compare("RNN_RELU", 1, 2, 2, 3, 3, False, 2, 2, None, np.float64)
print("ok")
"""


def test_fused_kernels_as_python_under_disable_jit():
    stdout = run_python(_SLOW_TWIN, 600, NUMBA_DISABLE_JIT="1")
    assert stdout.strip().endswith("ok")
