"""Finite-difference checks of every fused primitive (autograd's check_grads, float64),
independent of torch: padded and packed, both directions, with projection."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads

from rnnkit import _autodiff


def _flat(outputs):
    """All outputs in one traced vector: check_grads needs a single traced result."""
    return anp.concatenate([o.ravel() for o in outputs])


BATCH_SIZES = [None, np.array([3, 3, 2, 1], dtype=np.int64)]


def _w(rng, *shape):
    return rng.standard_normal(shape) * 0.5


@pytest.mark.parametrize("batch_sizes", BATCH_SIZES, ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("proj", [0, 2], ids=["noproj", "proj"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_lstm_layer(batch_sizes, reverse, proj, bias, rng):
    L, N, I, H = 4, 3, 2, 3
    P = proj or H
    args = [_w(rng, L, N, I), _w(rng, N, P), _w(rng, N, H), _w(rng, 4 * H, I),
            _w(rng, 4 * H, P), _w(rng, 4 * H) if bias else None, _w(rng, P, H) if proj else None]
    argnum = tuple(k for k, a in enumerate(args) if a is not None)

    def f(*a):
        return _flat(_autodiff.lstm_layer(*a, batch_sizes=batch_sizes, reverse=reverse))

    check_grads(f, argnum=argnum, modes=["rev"], order=1)(*args)


@pytest.mark.parametrize("batch_sizes", BATCH_SIZES, ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_gru_layer(batch_sizes, reverse, bias, rng):
    L, N, I, H = 4, 3, 2, 3
    args = [_w(rng, L, N, I), _w(rng, N, H), _w(rng, 3 * H, I), _w(rng, 3 * H, H),
            _w(rng, 3 * H) if bias else None, _w(rng, 3 * H) if bias else None]
    argnum = tuple(k for k, a in enumerate(args) if a is not None)

    def f(*a):
        return _flat(_autodiff.gru_layer(*a, batch_sizes=batch_sizes, reverse=reverse))

    check_grads(f, argnum=argnum, modes=["rev"], order=1)(*args)


@pytest.mark.parametrize("batch_sizes", BATCH_SIZES, ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["fwd", "rev"])
@pytest.mark.parametrize("nonlinearity", ["tanh", "relu"])
def test_rnn_layer(batch_sizes, reverse, nonlinearity, rng):
    L, N, I, H = 4, 3, 2, 3
    args = [_w(rng, L, N, I), _w(rng, N, H), _w(rng, H, I), _w(rng, H, H), _w(rng, H)]

    def f(*a):
        return _flat(_autodiff.rnn_layer(*a, nonlinearity=nonlinearity,
                                         batch_sizes=batch_sizes, reverse=reverse))

    check_grads(f, argnum=(0, 1, 2, 3, 4), modes=["rev"], order=1)(*args)


# ---------------------------------------------------------------- the stacked primitive

STACKS = [("LSTM", 0, "tanh"), ("LSTM", 2, "tanh"), ("GRU", 0, "tanh"), ("RNN", 0, "relu")]


def _stack_args(rng, mode, proj, D, bias, layers=2, L=4, N=3, I=2, H=3):
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[mode] * H
    P = proj or H
    flat = []
    for layer in range(layers):
        for _ in range(D):
            flat += [_w(rng, G, I if layer == 0 else D * P), _w(rng, G, P)]
            flat += [_w(rng, G), _w(rng, G)] if bias else []
            flat += [_w(rng, P, H)] if proj else []
    K = layers * D
    c_0 = _w(rng, K, N, H) if mode == "LSTM" else None
    return _w(rng, L, N, I), _w(rng, K, N, P), c_0, flat


@pytest.mark.parametrize("batch_sizes", BATCH_SIZES, ids=["padded", "packed"])
@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj,nonlinearity", STACKS)
def test_stacked_layers(batch_sizes, D, mode, proj, nonlinearity, rng):
    x, h_0, c_0, flat = _stack_args(rng, mode, proj, D, bias=True)
    lstm = mode == "LSTM"

    def f(x, h_0, c_0, *flat):
        out = _autodiff.stacked_layers(mode, x, h_0, c_0, list(flat), 2, D, 0.0, True,
                                       nonlinearity, batch_sizes, True, bool(proj))
        return _flat(out if lstm else out[:2])

    args = (x, h_0, c_0 if lstm else np.zeros(1), *flat)
    argnum = tuple(k for k in range(len(args)) if lstm or k != 2)
    check_grads(f, argnum=argnum, modes=["rev"], order=1)(*args)


@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj,nonlinearity", STACKS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_stacked_layers_equal_layer_by_layer_with_dropout(D, mode, proj, nonlinearity, bias,
                                                          rng):
    # the fused stack against composing the per-layer primitives with F.dropout, both
    # drawing their masks from the same seed: values and every gradient agree
    import autograd

    import rnnkit
    from rnnkit.nn import functional as F

    x, h_0, c_0, flat = _stack_args(rng, mode, proj, D, bias, layers=3)
    lstm = mode == "LSTM"
    per = 2 + 2 * bias + bool(proj)

    def stacked(x, h_0, c_0, flat):
        out = _autodiff.stacked_layers(mode, x, h_0, c_0, flat, 3, D, 0.4, True, nonlinearity,
                                       None, bias, bool(proj))
        return sum(anp.sum(o * o) for o in (out if lstm else out[:2]))

    def by_layer(x, h_0, c_0, flat):
        layer_input, hs, cs = x, [], []
        for layer in range(3):
            outs = []
            for direction in range(D):
                k = D * layer + direction
                w = flat[k * per:(k + 1) * per]
                b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
                w_hr = w[-1] if proj else None
                if lstm:
                    b = None if b_ih is None else b_ih + b_hh
                    out, h, c = _autodiff.lstm_layer(layer_input, h_0[k], c_0[k], w[0], w[1], b,
                                                     w_hr, None, direction == 1)
                    cs.append(c)
                elif mode == "GRU":
                    out, h = _autodiff.gru_layer(layer_input, h_0[k], w[0], w[1], b_ih, b_hh,
                                                 None, direction == 1)
                else:
                    b = None if b_ih is None else b_ih + b_hh
                    out, h = _autodiff.rnn_layer(layer_input, h_0[k], w[0], w[1], b,
                                                 nonlinearity, None, direction == 1)
                outs.append(out)
                hs.append(h)
            layer_input = outs[0] if D == 1 else anp.concatenate(outs, axis=2)
            if layer < 2:
                layer_input = F.dropout(layer_input, 0.4, True)
        outputs = [layer_input, anp.stack(hs)] + ([anp.stack(cs)] if lstm else [])
        return sum(anp.sum(o * o) for o in outputs)

    argnums = (0, 1, 2, 3) if lstm else (0, 1, 3)
    results = []
    for fun in (stacked, by_layer):
        rnnkit.manual_seed(7)
        results.append(autograd.value_and_grad(fun, argnums)(x, h_0, c_0, flat))
    (v1, g1), (v2, g2) = results
    np.testing.assert_allclose(v1, v2, rtol=1e-12)
    for a, b in zip(g1, g2, strict=True):
        for u, w in zip(*(([a], [b]) if not isinstance(a, list) else (a, b)), strict=True):
            np.testing.assert_allclose(u, w, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("mode,proj,nonlinearity", STACKS)
def test_stacked_layers_untraced_keeps_no_history_and_agrees(mode, proj, nonlinearity, rng):
    # with nothing to differentiate the stack runs the inference kernels: the same
    # values as the primitive's training forward, and no saved histories
    x, h_0, c_0, flat = _stack_args(rng, mode, proj, 2, bias=True, L=6)
    spec = (mode, 2, 2, 0.0, True, nonlinearity, None, True, bool(proj))
    plain = _autodiff.stacked_layers(mode, x, h_0, c_0, flat, 2, 2, 0.0, True, nonlinearity,
                                     None, True, bool(proj))
    traced = _autodiff._stack(spec, x, h_0, c_0 if mode == "LSTM" else None, *flat)
    assert traced[-1].arrays  # the primitive's forward keeps what its VJP needs
    for o, t in zip(plain, traced[:-1], strict=False):
        np.testing.assert_allclose(o, t, rtol=1e-13, atol=1e-14)
    if mode != "LSTM":
        assert plain[2] is None
