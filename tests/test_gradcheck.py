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
