"""Finite-difference checks of the fused stack primitive (autograd's check_grads, float64),
independent of torch: one layer and two, padded and packed, both directions, with and
without bias and projection; and the stack against composing one-layer stacks."""

import autograd.numpy as anp
import numpy as np
import pytest
from autograd.test_util import check_grads

from rnnkit import _autodiff
from rnnkit._autodiff import StackSpec
from rnnkit._modes import MODES


def _flat(outputs):
    """All outputs in one traced vector: check_grads needs a single traced result."""
    return anp.concatenate([o.ravel() for o in outputs])


BATCH_SIZES = [None, np.array([3, 3, 2, 1], dtype=np.int64)]


def _w(rng, *shape):
    return rng.standard_normal(shape) * 0.5


# ---------------------------------------------------------------- the stacked primitive

STACKS = [("LSTM", 0), ("LSTM", 2), ("GRU", 0), ("RNN_TANH", 0), ("RNN_RELU", 0)]


def _stack_args(rng, mode, proj, D, bias, layers=2, L=4, N=3, I=2, H=3):
    G = MODES[mode].gates * H
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
@pytest.mark.parametrize("mode,proj", STACKS)
@pytest.mark.parametrize("layers,bias", [(2, True), (1, False)], ids=["2layers", "1layer-nobias"])
def test_stacked_layers(batch_sizes, D, mode, proj, layers, bias, rng):
    x, h_0, c_0, flat = _stack_args(rng, mode, proj, D, bias, layers=layers)
    lstm = MODES[mode].cell_state
    spec = StackSpec(mode, layers, D, 0.0, True, batch_sizes, bias, bool(proj))

    def f(x, h_0, c_0, *flat):
        out = _autodiff.stacked_layers(spec, x, h_0, c_0, list(flat))
        return _flat(out if lstm else out[:2])

    args = (x, h_0, c_0 if lstm else np.zeros(1), *flat)
    argnum = tuple(k for k in range(len(args)) if lstm or k != 2)
    check_grads(f, argnum=argnum, modes=["rev"], order=1)(*args)


@pytest.mark.parametrize("D", [1, 2], ids=["uni", "bi"])
@pytest.mark.parametrize("mode,proj", STACKS)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_stacked_layers_equal_layer_by_layer_with_dropout(D, mode, proj, bias, rng):
    # the fused 3-layer stack against composing three one-layer stacks with F.dropout
    # between them, both drawing their masks from the same seed: values and every
    # gradient agree
    import autograd

    import rnnkit
    from rnnkit.nn import functional as F

    x, h_0, c_0, flat = _stack_args(rng, mode, proj, D, bias, layers=3)
    lstm = MODES[mode].cell_state
    per = D * (2 + 2 * bias + bool(proj))  # weights of one layer, both directions

    def stacked(x, h_0, c_0, flat):
        spec = StackSpec(mode, 3, D, 0.4, True, None, bias, bool(proj))
        out = _autodiff.stacked_layers(spec, x, h_0, c_0, flat)
        return sum(anp.sum(o * o) for o in (out if lstm else out[:2]))

    def by_layer(x, h_0, c_0, flat):
        layer_input, hs, cs = x, [], []
        one_layer = StackSpec(mode, 1, D, 0.0, True, None, bias, bool(proj))
        for layer in range(3):
            rows = slice(D * layer, D * (layer + 1))
            layer_input, h, c = _autodiff.stacked_layers(
                one_layer, layer_input, h_0[rows], c_0[rows] if lstm else None,
                flat[layer * per:(layer + 1) * per])
            hs.append(h)
            cs.append(c)
            if layer < 2:
                layer_input = F.dropout(layer_input, 0.4, True)
        outputs = [layer_input, anp.concatenate(hs)] + ([anp.concatenate(cs)] if lstm else [])
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


@pytest.mark.parametrize("mode,proj", STACKS)
def test_stacked_layers_untraced_keeps_no_history_and_agrees(mode, proj, rng):
    # with nothing to differentiate the stack runs the inference kernels: the same
    # values as the traced node's training forward, and no saved histories
    x, h_0, c_0, flat = _stack_args(rng, mode, proj, 2, bias=True, L=6)
    spec = StackSpec(mode, 2, 2, 0.0, True, None, True, bool(proj))
    lstm = MODES[mode].cell_state
    plain = _autodiff.stacked_layers(spec, x, h_0, c_0, flat)
    trained, saved = _autodiff.stack_train_forward(spec, x, h_0, c_0 if lstm else None, flat)
    assert saved  # the training forward keeps what its VJP needs
    for o, t in zip(plain, trained, strict=True):
        if o is None:
            assert t is None
        else:
            np.testing.assert_allclose(o, t, rtol=1e-13, atol=1e-14)
    if not lstm:
        assert plain[2] is None


@pytest.mark.parametrize("mode,proj", [m for m in STACKS if not m[1]])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_stacked_layers_with_a_cells_states(mode, proj, bias, rng):
    # a cell passes its (N, H) states as they are: one step, one layer-direction
    x, h_0, c_0, flat = _stack_args(rng, mode, 0, 1, bias, layers=1, L=1)
    lstm = MODES[mode].cell_state
    spec = StackSpec(mode, 1, 1, 0.0, False, None, bias, False)

    def f(x, h, c, *flat):
        out = _autodiff.stacked_layers(spec, x, h, c, list(flat))
        assert out[1].shape == h.shape
        return _flat(out if lstm else out[:2])

    args = (x, h_0[0], c_0[0] if lstm else np.zeros(1), *flat)
    argnum = tuple(k for k in range(len(args)) if lstm or k != 2)
    check_grads(f, argnum=argnum, modes=["rev"], order=1)(*args)
