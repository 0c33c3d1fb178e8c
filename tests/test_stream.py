"""Streams (``layer.stream()``): consecutive chunks of any lengths (hypothesis draws them,
single steps ``(N, H_in)`` included) equal one whole call on their concatenation; the
weights are a snapshot; no dropout, no gradients; ``state`` and ``reset``; bad chunks
and bad streams get clear errors. No torch needed: the reference is rnnkit's own call."""

import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnkit
from rnnkit import nn

from helpers import assert_close

# API.md: a stream equals one call to 1e-12 (float64), 1e-6 relative (float32)
TOL = {np.float64: (1e-12, 1e-12), np.float32: (1e-6, 1e-6)}
KINDS = {"LSTM": ("LSTM", {}), "LSTM-proj": ("LSTM", {"proj_size": 3}), "GRU": ("GRU", {}),
         "RNN-tanh": ("RNN", {}), "RNN-relu": ("RNN", {"nonlinearity": "relu"})}


def _layer(kind, dtype, **kwargs):
    name, extra = KINDS[kind]
    return getattr(nn, name)(4, 5, dtype=dtype, **extra, **kwargs)


def _states(layer, N, rng):
    H_out = layer.proj_size or layer.hidden_size
    h = rng.standard_normal((layer.num_layers, N, H_out)).astype(layer.dtype)
    if layer.mode != "LSTM":
        return h
    return h, rng.standard_normal((layer.num_layers, N, layer.hidden_size)).astype(layer.dtype)


def _split(result):
    output, state = result
    return output, (state if isinstance(state, tuple) else (state,))


def _stream_chunks(stream, x, cuts, batch_first):
    """Feed x's time axis cut at ``cuts``; a 1-step piece goes in as (N, H_in)."""
    axis = 1 if batch_first else 0
    bounds = [0, *cuts, x.shape[axis]]
    outputs = []
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        piece = x[:, t0:t1] if batch_first else x[t0:t1]
        if t1 - t0 == 1:
            step = stream(piece[:, 0] if batch_first else piece[0])
            assert step.shape == (x.shape[1 - axis], stream.state[0].shape[-1]
                                  if isinstance(stream.state, tuple) else stream.state.shape[-1])
            outputs.append(np.expand_dims(step, axis))
        else:
            outputs.append(stream(piece))
    return np.concatenate(outputs, axis=axis)


@given(kind=st.sampled_from(sorted(KINDS)), dtype=st.sampled_from([np.float32, np.float64]),
       batch_first=st.booleans(), num_layers=st.integers(1, 3), N=st.integers(1, 4),
       with_hx=st.booleans(), seed=st.integers(0, 2 ** 16),
       T_and_cuts=st.integers(1, 12).flatmap(lambda T: st.tuples(
           st.just(T), st.lists(st.integers(1, T - 1), max_size=T - 1, unique=True)
           if T > 1 else st.just([]))))
def test_chunks_equal_one_call(kind, dtype, batch_first, num_layers, N, with_hx, seed,
                               T_and_cuts):
    T, cuts = T_and_cuts
    rnnkit.manual_seed(seed)
    layer = _layer(kind, dtype, num_layers=num_layers, batch_first=batch_first)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N, T, 4) if batch_first else (T, N, 4)).astype(dtype)
    hx = _states(layer, N, rng) if with_hx else None
    stream = layer.stream(hx=hx) if with_hx else layer.stream(batch_size=N)
    got = _stream_chunks(stream, x, sorted(cuts), batch_first)
    want, want_state = _split(layer(x, hx))
    rtol, atol = TOL[dtype]
    assert_close(got, want, rtol, atol, "output")
    state = stream.state if isinstance(stream.state, tuple) else (stream.state,)
    for g, w, what in zip(state, want_state, ("h", "c")):
        assert_close(g, w, rtol, atol, what)


def test_one_step_at_a_time_long_sequence():
    layer = nn.LSTM(4, 6, num_layers=2, proj_size=2, dtype=np.float64)
    x = np.random.default_rng(1).standard_normal((200, 3, 4))
    stream = layer.stream(batch_size=3)
    got = np.stack([stream(x_t) for x_t in x])
    want, (h_n, c_n) = layer(x)
    assert_close(got, want, 1e-12, 1e-12)
    assert_close(stream.state[0], h_n, 1e-12, 1e-12)
    assert_close(stream.state[1], c_n, 1e-12, 1e-12)


def test_small_and_large_chunks_take_both_engines(monkeypatch):
    # a one-step chunk runs in the one-call engine (packed once), a 30-step chunk of this
    # size in the layer-by-layer kernels; the whole call too: all agree
    from rnnkit import _ops
    from rnnkit.nn.modules import stream as stream_module

    packs, large = [], []
    run, forward = _ops.SmallStack.run, stream_module._stack_forward

    def spy_run(self, *args, pack=True):
        packs.append(pack)
        return run(self, *args, pack=pack)

    def spy_forward(*args, **kwargs):
        large.append(1)
        return forward(*args, **kwargs)

    monkeypatch.setattr(_ops.SmallStack, "run", spy_run)
    monkeypatch.setattr(stream_module, "_stack_forward", spy_forward)
    lstm = nn.LSTM(4, 64, dtype=np.float64)
    x = np.random.default_rng(2).standard_normal((40, 8, 4))
    stream = lstm.stream(batch_size=8)
    got = np.concatenate([stream(x[0])[None], stream(x[1:31]), stream(x[31])[None],
                          stream(x[32:])])
    assert packs == [True, False, False] and len(large) == 1  # x[32:]: 8 steps, small
    assert_close(got, lstm(x)[0], 1e-12, 1e-12)
    assert_close(stream.state[1], lstm(x)[1][1], 1e-12, 1e-12)


def test_weights_are_a_snapshot(rng):
    gru = nn.GRU(4, 5, dtype=np.float64)
    before = {k: v.copy() for k, v in gru.state_dict().items()}
    stream = gru.stream(batch_size=2)
    np.asarray(gru.weight_hh_l0)[...] = 0.0  # an in-place update, as an optimizer's
    gru.load_state_dict({k: v + 1 for k, v in before.items()})  # and new arrays
    x = rng.standard_normal((3, 2, 4))
    fresh = nn.GRU(4, 5, dtype=np.float64)
    fresh.load_state_dict(before)
    assert_close(stream(x), fresh(x)[0], 0, 0)


def test_no_dropout_in_training_mode(rng):
    lstm = nn.LSTM(4, 5, num_layers=3, dropout=0.5, dtype=np.float64)
    assert lstm.training
    x = rng.standard_normal((4, 2, 4))
    got = lstm.stream(batch_size=2)(x)
    assert_close(got, lstm.eval()(x)[0], 1e-12, 1e-12)


def test_reset_all_and_some_rows(rng):
    lstm = nn.LSTM(4, 5, num_layers=2, dtype=np.float64)
    x = rng.standard_normal((6, 3, 4))
    stream = lstm.stream(batch_size=3)
    stream(x[:3])
    h, c = (s.copy() for s in stream.state)
    stream.reset([0, 2])
    h[:, [0, 2]] = 0
    c[:, [0, 2]] = 0
    assert_close(stream.state[0], h, 0, 0)
    assert_close(stream.state[1], c, 0, 0)
    assert_close(stream(x[3:]), lstm(x[3:], (h, c))[0], 1e-12, 1e-12)
    stream.reset(np.array([False, True, False]))
    assert not stream.state[0][:, 1].any() and stream.state[0][:, 0].any()
    stream.reset()
    assert not stream.state[0].any() and not stream.state[1].any()
    assert_close(stream(x), lstm(x)[0], 1e-12, 1e-12)


def test_state_is_read_only_and_never_changes_after_it_is_read(rng):
    rnn = nn.RNN(4, 5, dtype=np.float64)
    stream = rnn.stream(batch_size=2)
    stream(rng.standard_normal((2, 2, 4)))
    h = stream.state
    seen = h.copy()
    with pytest.raises(ValueError, match="read-only"):
        h[0] = 1.0
    stream(rng.standard_normal((3, 2, 4)))
    stream.reset()
    assert_close(h, seen, 0, 0)


def test_stream_from_hx_and_empty_chunk(rng):
    gru = nn.GRU(4, 5, num_layers=2, batch_first=True, dtype=np.float32)
    h_0 = rng.standard_normal((2, 3, 5)).astype(np.float32)
    stream = gru.stream(hx=h_0)
    assert stream.batch_size == 3 and "GRU" in repr(stream)
    empty = stream(np.zeros((3, 0, 4), np.float32))
    assert empty.shape == (3, 0, 5) and empty.dtype == np.float32
    assert_close(stream.state, h_0, 0, 0)
    h_0[...] = 0  # the stream copied hx
    assert stream.state.any()


def test_default_batch_is_one():
    stream = nn.GRU(4, 5).stream()
    assert stream(np.zeros((4,), np.float32)[None]).shape == (1, 5)


# ---------------------------------------------------------------- bad input


def raises(kind, *fragments):
    return pytest.raises(kind, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_bidirectional_cannot_stream():
    with raises(ValueError, "a bidirectional layer cannot stream", "reverse direction"):
        nn.LSTM(4, 5, bidirectional=True).stream(batch_size=2)


def test_bad_chunks():
    lstm = nn.LSTM(4, 5)
    stream = lstm.stream(batch_size=3)
    with raises(ValueError, "chunk must have shape (steps, batch, input_size) = (2, 3, 4)",
                "got (2, 2, 4)", "batch (2) must equal the stream's batch_size (3)"):
        stream(np.zeros((2, 2, 4), np.float32))
    with raises(ValueError, "chunk must have shape (steps, batch, input_size) = (2, 3, 4)",
                "got (2, 3, 7)", "input_size = 4"):
        stream(np.zeros((2, 3, 7), np.float32))
    with raises(ValueError, "(batch, input_size) = (3, 4) for one step", "got (2, 4)"):
        stream(np.zeros((2, 4), np.float32))
    with raises(ValueError, "(batch, input_size) = (3, 4) for one step", "got (3, 5)"):
        stream(np.zeros((3, 5), np.float32))
    with raises(TypeError, "chunk has dtype float64 but the layer's parameters are float32",
                "chunk.astype(np.float32)"):
        stream(np.zeros((3, 4)))
    with raises(TypeError, "chunk must be a float32 or float64 array, got int64"):
        stream(np.zeros((3, 4), np.int64))
    with raises(ValueError, "chunk must be 3-D (steps, batch, input_size) or 2-D one step",
                "got 1-D shape (4,)"):
        stream(np.zeros(4, np.float32))
    with raises(TypeError, "chunk must be a numpy array, got list"):
        stream([[0.0] * 4] * 3)
    bf = nn.GRU(4, 5, batch_first=True).stream(batch_size=3)
    with raises(ValueError, "(batch, steps, input_size) = (3, 2, 4)", "got (2, 2, 4)"):
        bf(np.zeros((2, 2, 4), np.float32))
    # the stream still works after refusing
    assert stream(np.zeros((3, 4), np.float32)).shape == (3, 5)


def test_a_stream_keeps_no_gradients():
    lstm = nn.LSTM(4, 5, dtype=np.float64)
    stream = lstm.stream(batch_size=1)

    def loss(model, x):
        return stream(x).sum()

    with raises(TypeError, "a stream runs inference only"):
        rnnkit.grad(loss, argnums=1)(lstm, np.zeros((2, 1, 4)))


def test_bad_streams():
    lstm = nn.LSTM(4, 5, num_layers=2)
    h = np.zeros((2, 3, 5), np.float32)
    with raises(TypeError, "hx must be a tuple (h_0, c_0) for the LSTM"):
        lstm.stream(hx=h)
    with raises(ValueError, "c_0 must have shape (num_layers*num_directions, batch, "
                "hidden_size) = (2, 3, 5), got (2, 2, 5)"):
        lstm.stream(hx=(h, np.zeros((2, 2, 5), np.float32)))
    with raises(ValueError, "h_0 of a stream must be 3-D", "got shape (2, 5)"):
        lstm.stream(hx=(h[:, 0], h[:, 0]))
    with raises(ValueError, "batch_size (2) must equal the batch of h_0 (3)"):
        lstm.stream(batch_size=2, hx=(h, h))
    with raises(ValueError, "batch_size must be at least 1, got 0"):
        lstm.stream(batch_size=0)
    with raises(TypeError, "h_0 has dtype float64 but the layer's parameters are float32"):
        nn.GRU(4, 5).stream(hx=np.zeros((1, 2, 5)))
    stream = lstm.stream(batch_size=3)
    with raises(ValueError, "rows must be batch indices in [0, batch_size = 3)", "[0, 3]"):
        stream.reset([0, 3])
    with raises(TypeError, "rows must be batch indices (ints)", "float64"):
        stream.reset([0.5])
    with raises(ValueError, "rows as a bool mask must have one entry per sequence, shape (3,)"):
        stream.reset([True, False])
