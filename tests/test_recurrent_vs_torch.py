"""The recurrent layers (LSTM, GRU, RNN) and their cells against torch 2.13.0: forward
values and gradients, layer by layer, over the argument space (a grid plus hypothesis-drawn
configurations). Linear, Embedding, Dropout and Sequential against torch:
test_linear_embedding_dropout_vs_torch.py."""

import itertools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnkit
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import (
    ATOL,
    GRAD_ATOL,
    GRAD_RTOL,
    RTOL,
    assert_close,
    build_pair,
    to_numpy,
    torch_dtype,
)

DTYPES = [np.float32, np.float64]


def _layer_kwargs(kind, num_layers, bidirectional, batch_first, bias, extra):
    kw = dict(input_size=5, hidden_size=6, num_layers=num_layers, bidirectional=bidirectional,
              batch_first=batch_first, bias=bias)
    kw.update(extra)
    return kw


GRID = []
for kind, extras in [("LSTM", [{}, {"proj_size": 3}]), ("GRU", [{}]),
                     ("RNN", [{}, {"nonlinearity": "relu"}])]:
    for num_layers, bidirectional, batch_first, bias, extra, with_hx in itertools.product(
        [1, 2], [False, True], [False, True], [True, False], extras, [False, True]
    ):
        GRID.append((kind, _layer_kwargs(kind, num_layers, bidirectional, batch_first, bias,
                                         extra), with_hx))


def _ids(case):
    kind, kw, with_hx = case
    parts = [kind, f"L{kw['num_layers']}"]
    parts += ["bi"] * kw["bidirectional"] + ["bf"] * kw["batch_first"]
    parts += ["nobias"] * (not kw["bias"]) + ["hx"] * with_hx
    parts += [f"{k}={v}" for k, v in kw.items() if k in ("proj_size", "nonlinearity")]
    return "-".join(parts)


def _states(kind, kw, N, dtype, rng, unbatched=False):
    D = 2 if kw["bidirectional"] else 1
    H = kw["hidden_size"]
    H_out = kw.get("proj_size") or H
    lead = (D * kw["num_layers"],) if unbatched else (D * kw["num_layers"], N)
    h = rng.standard_normal(lead + (H_out,)).astype(dtype)
    if kind == "LSTM":
        return h, rng.standard_normal(lead + (H,)).astype(dtype)
    return h


def _to_torch(torch, hx, requires_grad=True):
    if hx is None:
        return None
    if isinstance(hx, tuple):
        return tuple(_to_torch(torch, h) for h in hx)
    return torch.tensor(hx, requires_grad=requires_grad)


def _split(kind, result):
    output, state = result
    if kind == "LSTM":
        return output, state[0], state[1]
    return output, state, None


def _weighted_sum(arrays, coefficients, lib):
    """sum_k <a_k, w_k>: a loss that weighs every output element differently."""
    total = 0.0
    for a, w in zip(arrays, coefficients):
        if a is not None:
            total = total + (a * (w if lib is np else lib.tensor(w))).sum()
    return total


def _check_layer(torch, kind, kw, dtype, x, hx, rng, lengths=None):
    """Forward values and gradients (parameters, input, initial states) equal torch's."""
    torch.manual_seed(0)
    theirs, ours = build_pair(torch, kind, dtype, **kw)
    x_t = torch.tensor(x, requires_grad=True)
    hx_t = _to_torch(torch, hx)
    if lengths is not None:
        packed_t = torch.nn.utils.rnn.pack_padded_sequence(
            x_t, torch.tensor(lengths), batch_first=kw["batch_first"], enforce_sorted=False
        )
        out_t, h_t, c_t = _split(kind, theirs(packed_t, hx_t))
        out_t = torch.nn.utils.rnn.pad_packed_sequence(out_t, batch_first=kw["batch_first"])[0]
    else:
        out_t, h_t, c_t = _split(kind, theirs(x_t, hx_t))
    coefficients = [rng.standard_normal(tuple(t.shape)).astype(dtype)
                    for t in (out_t, h_t, c_t) if t is not None]
    loss_t = _weighted_sum([out_t, h_t, c_t], coefficients, torch)
    loss_t.backward()

    def run(model, x, hx):
        if lengths is not None:
            packed = pack_padded_sequence(x, lengths, batch_first=kw["batch_first"],
                                          enforce_sorted=False)
            out, h, c = _split(kind, model(packed, hx))
            out = pad_packed_sequence(out, batch_first=kw["batch_first"])[0]
        else:
            out, h, c = _split(kind, model(x, hx))
        return out, h, c

    out, h, c = run(ours, x, hx)  # plain inference path
    rtol, atol = RTOL[dtype], ATOL[dtype]
    assert out.dtype == dtype
    assert_close(out, to_numpy(out_t), rtol, atol, "output")
    assert_close(h, to_numpy(h_t), rtol, atol, "h_n")
    if kind == "LSTM":
        assert_close(c, to_numpy(c_t), rtol, atol, "c_n")

    def loss_fn(model, x, hx):
        return _weighted_sum(run(model, x, hx), coefficients, np)

    argnums = (0, 1) if hx is None else (0, 1, 2)
    loss, grads = rnnkit.value_and_grad(loss_fn, argnums=argnums)(ours, x, hx)
    grtol, gatol = GRAD_RTOL[dtype], GRAD_ATOL[dtype]
    assert_close(loss, loss_t.item(), grtol, gatol, "loss")
    for name, p in theirs.named_parameters():
        assert_close(grads[0][name], to_numpy(p.grad), grtol, gatol, name)
        assert_close(getattr(ours, name).grad, to_numpy(p.grad), grtol, gatol, name + ".grad")
    assert_close(grads[1], to_numpy(x_t.grad), grtol, gatol, "d input")
    if hx is not None:
        if kind == "LSTM":
            assert isinstance(grads[2], tuple)
            assert_close(grads[2][0], to_numpy(hx_t[0].grad), grtol, gatol, "d h_0")
            assert_close(grads[2][1], to_numpy(hx_t[1].grad), grtol, gatol, "d c_0")
        else:
            assert_close(grads[2], to_numpy(hx_t.grad), grtol, gatol, "d h_0")


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", GRID, ids=[_ids(c) for c in GRID])
def test_layer_matches_torch(case, dtype, rng, torch):
    kind, kw, with_hx = case
    L, N = 4, 3
    shape = (N, L, kw["input_size"]) if kw["batch_first"] else (L, N, kw["input_size"])
    x = rng.standard_normal(shape).astype(dtype)
    hx = _states(kind, kw, N, dtype, rng) if with_hx else None
    _check_layer(torch, kind, kw, dtype, x, hx, rng)


PACKED = [
    ("LSTM", {"bidirectional": True, "num_layers": 2}),
    ("LSTM", {"bidirectional": True, "proj_size": 2, "batch_first": True}),
    ("LSTM", {"num_layers": 3}),
    ("GRU", {"bidirectional": True, "num_layers": 2}),
    ("GRU", {"batch_first": True, "bias": False}),
    ("RNN", {"bidirectional": True, "nonlinearity": "relu"}),
    ("RNN", {"num_layers": 2, "batch_first": True}),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("kind,extra", PACKED)
def test_packed_matches_torch(kind, extra, with_hx, dtype, rng, torch):
    kw = _layer_kwargs(kind, 1, False, False, True, {})
    kw.update(extra)
    lengths = [3, 6, 1, 6, 4]  # unsorted, with a tie
    N, L = len(lengths), max(lengths)
    shape = (N, L, kw["input_size"]) if kw["batch_first"] else (L, N, kw["input_size"])
    x = rng.standard_normal(shape).astype(dtype)
    hx = _states(kind, kw, N, dtype, rng) if with_hx else None
    _check_layer(torch, kind, kw, dtype, x, hx, rng, lengths=lengths)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("kind,extra", [("LSTM", {"bidirectional": True, "proj_size": 2}),
                                        ("GRU", {"num_layers": 2}),
                                        ("RNN", {"bidirectional": True})])
def test_unbatched_matches_torch(kind, extra, with_hx, dtype, rng, torch):
    kw = _layer_kwargs(kind, 1, False, False, True, {})
    kw.update(extra)
    x = rng.standard_normal((4, kw["input_size"])).astype(dtype)
    hx = _states(kind, kw, None, dtype, rng, unbatched=True) if with_hx else None
    _check_layer(torch, kind, kw, dtype, x, hx, rng)


@st.composite
def layer_configs(draw):
    kind = draw(st.sampled_from(["LSTM", "GRU", "RNN"]))
    hidden = draw(st.integers(1, 7))
    kw = dict(
        input_size=draw(st.integers(1, 6)),
        hidden_size=hidden,
        num_layers=draw(st.integers(1, 3)),
        bidirectional=draw(st.booleans()),
        batch_first=draw(st.booleans()),
        bias=draw(st.booleans()),
    )
    if kind == "LSTM" and hidden > 1 and draw(st.booleans()):
        kw["proj_size"] = draw(st.integers(1, hidden - 1))
    if kind == "RNN":
        kw["nonlinearity"] = draw(st.sampled_from(["tanh", "relu"]))
    N = draw(st.integers(1, 4))
    lengths = draw(st.lists(st.integers(1, 5), min_size=N, max_size=N))
    packed = draw(st.booleans())
    with_hx = draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return kind, kw, lengths, packed, with_hx, seed


@given(layer_configs())
def test_drawn_configurations_match_torch(torch, config):
    kind, kw, lengths, packed, with_hx, seed = config
    rng = np.random.default_rng(seed)
    N, L = len(lengths), max(lengths)
    shape = (N, L, kw["input_size"]) if kw["batch_first"] else (L, N, kw["input_size"])
    x = rng.standard_normal(shape)
    hx = _states(kind, kw, N, np.float64, rng) if with_hx else None
    _check_layer(torch, kind, kw, np.float64, x, hx, rng, lengths=lengths if packed else None)


def test_seed_example(torch):
    """The explainer's example: LSTM(10, 20, 2), input (5, 3, 10), h0/c0 (2, 3, 20)."""
    torch.manual_seed(0)
    rnn_t = torch.nn.LSTM(10, 20, 2)
    rnn = rnnkit.nn.LSTM(10, 20, 2)
    rnn.load_state_dict({k: v.numpy() for k, v in rnn_t.state_dict().items()})
    input = torch.randn(5, 3, 10)
    h0 = torch.randn(2, 3, 20)
    c0 = torch.randn(2, 3, 20)
    output_t, (hn_t, cn_t) = rnn_t(input, (h0, c0))
    output, (hn, cn) = rnn(input.numpy(), (h0.numpy(), c0.numpy()))
    assert output.shape == (5, 3, 20)
    assert hn.shape == (2, 3, 20) and cn.shape == (2, 3, 20)
    assert_close(output, to_numpy(output_t), 1e-5, 1e-6)
    assert_close(hn, to_numpy(hn_t), 1e-5, 1e-6)
    assert_close(cn, to_numpy(cn_t), 1e-5, 1e-6)


# ---------------------------------------------------------------- cells

CELLS = [("LSTMCell", {}), ("LSTMCell", {"bias": False}), ("GRUCell", {}),
         ("GRUCell", {"bias": False}), ("RNNCell", {}), ("RNNCell", {"nonlinearity": "relu"})]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("with_hx", [False, True], ids=["nohx", "hx"])
@pytest.mark.parametrize("kind,extra", CELLS)
def test_cell_matches_torch(kind, extra, with_hx, batched, dtype, rng, torch):
    torch.manual_seed(1)
    theirs, ours = build_pair(torch, kind, dtype, input_size=4, hidden_size=5, **extra)
    lead = (3,) if batched else ()
    x = rng.standard_normal(lead + (4,)).astype(dtype)
    hx = None
    if with_hx:
        h = rng.standard_normal(lead + (5,)).astype(dtype)
        hx = (h, rng.standard_normal(lead + (5,)).astype(dtype)) if kind == "LSTMCell" else h
    x_t, hx_t = torch.tensor(x, requires_grad=True), _to_torch(torch, hx)
    out_t = theirs(x_t, hx_t)
    outs_t = list(out_t) if kind == "LSTMCell" else [out_t]
    coefficients = [rng.standard_normal(tuple(o.shape)).astype(dtype) for o in outs_t]
    _weighted_sum(outs_t, coefficients, torch).backward()

    out = ours(x, hx)
    outs = list(out) if kind == "LSTMCell" else [out]
    for a, b in zip(outs, outs_t):
        assert_close(a, to_numpy(b), RTOL[dtype], ATOL[dtype], kind)

    def loss_fn(cell, x, hx):
        result = cell(x, hx)
        return _weighted_sum(list(result) if kind == "LSTMCell" else [result], coefficients, np)

    argnums = (0, 1) if hx is None else (0, 1, 2)
    grads = rnnkit.grad(loss_fn, argnums=argnums)(ours, x, hx)
    grtol, gatol = GRAD_RTOL[dtype], GRAD_ATOL[dtype]
    for name, p in theirs.named_parameters():
        assert_close(grads[0][name], to_numpy(p.grad), grtol, gatol, name)
    assert_close(grads[1], to_numpy(x_t.grad), grtol, gatol, "d input")
    if hx is not None:
        if kind == "LSTMCell":
            assert_close(grads[2][0], to_numpy(hx_t[0].grad), grtol, gatol, "d h")
            assert_close(grads[2][1], to_numpy(hx_t[1].grad), grtol, gatol, "d c")
        else:
            assert_close(grads[2], to_numpy(hx_t.grad), grtol, gatol, "d h")


# ---------------------------------------------------------------- weights both ways


@pytest.mark.parametrize("kind,extra", [("LSTM", {"proj_size": 3, "bidirectional": True}),
                                        ("GRU", {"bidirectional": True}),
                                        ("RNN", {"nonlinearity": "relu", "bias": False})])
def test_state_dict_round_trip_with_torch(kind, extra, torch):
    """Parameter names, order, shapes and init range are torch's; weights move both ways."""
    torch.manual_seed(2)
    kw = dict(input_size=4, hidden_size=6, num_layers=2, **extra)
    theirs = getattr(torch.nn, kind)(**kw)
    ours = getattr(rnnkit.nn, kind)(**kw)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    bound = 1 / np.sqrt(6)
    for name, p in ours.named_parameters():
        assert p.shape == tuple(getattr(theirs, name).shape), name
        assert p.dtype == np.float32
        assert np.all(np.abs(p) <= bound), name
    # rnnkit -> torch, then torch -> rnnkit: exact copies both ways
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in ours.state_dict().items()})
    for name, p in theirs.named_parameters():
        np.testing.assert_array_equal(to_numpy(p), np.asarray(getattr(ours, name)))
    fresh = getattr(rnnkit.nn, kind)(**kw)
    fresh.load_state_dict(theirs.state_dict())  # torch tensors accepted directly
    for name, p in fresh.named_parameters():
        np.testing.assert_array_equal(np.asarray(p), to_numpy(getattr(theirs, name)))


def test_state_dict_returns_copies():
    lstm = rnnkit.nn.LSTM(2, 3)
    sd = lstm.state_dict()
    sd["weight_ih_l0"][...] = 7.0
    assert not np.any(np.asarray(lstm.weight_ih_l0) == 7.0)


def test_float32_layers_compute_in_float32(rng):
    lstm = rnnkit.nn.LSTM(3, 4, bidirectional=True)
    out, (h, c) = lstm(rng.standard_normal((2, 2, 3)).astype(np.float32))
    assert out.dtype == h.dtype == c.dtype == np.float32


def test_torch_dtype_names_the_same_precision(torch):
    assert torch_dtype(torch, np.float32) == torch.float32


def test_sigmoid_tanh_saturate_without_warnings():
    """Pre-activations of ±1e4 give finite outputs and no overflow warning (warnings are
    errors in this suite)."""
    for dtype in DTYPES:
        lstm = rnnkit.nn.LSTM(1, 2, dtype=dtype)
        gru = rnnkit.nn.GRU(1, 2, dtype=dtype)
        for layer in (lstm, gru):
            for p in layer.parameters():
                p[...] = 1.0
            x = np.array([[[1e4]], [[-1e4]]], dtype=dtype)
            out = layer(x)[0]
            assert np.all(np.isfinite(out))
        out = lstm(np.array([[[-1e4]]], dtype=dtype))[0]
        # i = f = o = σ(-1e4 + ...) = 0 -> c = h = 0
        assert_close(out, np.zeros((1, 1, 2), dtype), atol=1e-30)
