"""``layer(x, lengths=..., padding_side=...)`` against torch's packed path: forward values,
h_n/c_n and gradients (input, h_0, c_0, every weight), right and left padding, zero
lengths, batch_first, bidirectional, num_layers, proj_size, every mode, both dtypes;
lengths drawn by hypothesis. Bad lengths: test_errors.py's way, at the end.

torch's side is built sequence by sequence (each sequence's real steps sliced out of
the padded batch, ``pack_sequence``, the call, ``unpack_sequence``, then the padding put
back around each output), so it shares none of rnnkit's index arithmetic; torch refuses
empty sequences, so a zero-length sequence's output is zeros and its h_n is its h_0 by
construction there (API.md), and the others run packed."""

import itertools
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import rnnkit
from rnnkit import nn
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from helpers import ATOL, GRAD_ATOL, GRAD_RTOL, RTOL, assert_close, build_pair, to_numpy

KINDS = {  # name: (torch class, extra constructor arguments)
    "LSTM": ("LSTM", {}),
    "LSTM-proj": ("LSTM", {"proj_size": 3}),
    "GRU": ("GRU", {}),
    "RNN-tanh": ("RNN", {}),
    "RNN-relu": ("RNN", {"nonlinearity": "relu"}),
}
H_IN, H = 4, 5


@pytest.fixture(scope="module")
def torch(torch):
    """conftest's torch on one thread while this file runs: its intra-op threads and
    OpenBLAS's spin against each other on a shared 2-core machine (40 ms a case -> 1.5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _torch_call(torch, layer, x, hx, lengths, batch_first, left):
    """torch's result for rnnkit's ``lengths=`` call, sequence by sequence (see the module
    docstring). Returns ``(output, h_n, c_n)`` with c_n None but for the LSTM."""
    rnn = torch.nn.utils.rnn
    L = x.shape[1] if batch_first else x.shape[0]
    lstm = isinstance(layer, torch.nn.LSTM)
    D = 2 if layer.bidirectional else 1
    width = D * (layer.proj_size or layer.hidden_size)

    def steps(b):  # sequence b's real steps, (lengths[b], H_in)
        column = x[b] if batch_first else x[:, b]
        return column[L - lengths[b]:] if left else column[:lengths[b]]

    running = [b for b in range(len(lengths)) if lengths[b] > 0]
    if hx is None:
        shape = (D * layer.num_layers, len(lengths))
        hx = (torch.zeros(shape + (layer.proj_size or layer.hidden_size,), dtype=x.dtype),
              torch.zeros(shape + (layer.hidden_size,), dtype=x.dtype))
        hx = hx if lstm else hx[0]
    h_0, c_0 = hx if lstm else (hx, None)
    outs, h_cols, c_cols = {}, {}, {}
    if running:
        packed = rnn.pack_sequence([steps(b) for b in running], enforce_sorted=False)
        sub = (h_0[:, running], c_0[:, running]) if lstm else h_0[:, running]
        out_p, state = layer(packed, sub)
        h_n, c_n = state if lstm else (state, None)
        for k, (b, out_b) in enumerate(zip(running, rnn.unpack_sequence(out_p))):
            outs[b], h_cols[b] = out_b, h_n[:, k]
            if lstm:
                c_cols[b] = c_n[:, k]
    columns = []
    for b in range(len(lengths)):
        pad = torch.zeros((L - lengths[b], width), dtype=x.dtype)
        real = outs.get(b, torch.zeros((0, width), dtype=x.dtype))
        columns.append(torch.cat([pad, real] if left else [real, pad]))
    output = torch.stack(columns, dim=0 if batch_first else 1)
    h_n = torch.stack([h_cols.get(b, h_0[:, b]) for b in range(len(lengths))], dim=1)
    c_n = torch.stack([c_cols.get(b, c_0[:, b]) for b in range(len(lengths))], dim=1) \
        if lstm else None
    return output, h_n, c_n


def _split(result, lstm):
    output, state = result
    return (output, state[0], state[1]) if lstm else (output, state, None)


def _check(torch, kind, dtype, lengths, L, *, batch_first=False, bidirectional=False,
           num_layers=1, left=False, with_hx=True, seed=0, padding=0.0, hidden=H):
    """rnnkit's lengths= call equals torch's packed path, forward and every gradient."""
    name, extra = KINDS[kind]
    lstm = name == "LSTM"
    torch.manual_seed(seed)
    theirs, ours = build_pair(torch, name, dtype, input_size=H_IN, hidden_size=hidden,
                              num_layers=num_layers, bidirectional=bidirectional,
                              batch_first=batch_first, **extra)
    rng = np.random.default_rng(seed)
    N = len(lengths)
    x = rng.standard_normal((N, L, H_IN) if batch_first else (L, N, H_IN)).astype(dtype)
    for b, n in enumerate(lengths):  # padding: `padding` everywhere but the real steps
        t = slice(0, L - n) if left else slice(n, L)
        if batch_first:
            x[b, t] = padding
        else:
            x[t, b] = padding
    D = 2 if bidirectional else 1
    H_out = extra.get("proj_size") or hidden
    hx = None
    if with_hx:
        h_0 = rng.standard_normal((D * num_layers, N, H_out)).astype(dtype)
        hx = (h_0, rng.standard_normal((D * num_layers, N, hidden)).astype(dtype)) if lstm \
            else h_0

    x_t = torch.tensor(np.nan_to_num(x), requires_grad=True)  # torch never reads padding
    hx_t = None if hx is None else (
        tuple(torch.tensor(a, requires_grad=True) for a in hx) if lstm
        else torch.tensor(hx, requires_grad=True))
    expected = _torch_call(torch, theirs, x_t, hx_t, list(lengths), batch_first, left)
    weights = [rng.standard_normal(tuple(e.shape)).astype(dtype) for e in expected
               if e is not None]
    loss_t = sum((e * torch.tensor(w)).sum() for e, w in zip(expected, weights))
    if loss_t.requires_grad:  # not when every length is 0 and no state is given
        loss_t.backward()

    def grad_of(t):  # torch leaves None where nothing reached
        return np.zeros(tuple(t.shape), dtype) if t.grad is None else to_numpy(t.grad)

    side = "left" if left else "right"
    got = _split(ours(x, hx, lengths=lengths, padding_side=side), lstm)  # inference path
    for g, e, what in zip(got, expected, ("output", "h_n", "c_n")):
        if e is not None:
            assert_close(g, to_numpy(e), RTOL[dtype], ATOL[dtype], err_msg=what)

    def loss(model, x, hx):
        result = _split(model(x, hx, lengths=lengths, padding_side=side), lstm)
        return sum((r * w).sum() for r, w in zip([r for r in result if r is not None],
                                                 weights))

    argnums = (0, 1, 2) if with_hx else (0, 1)
    value, grads = rnnkit.value_and_grad(loss, argnums=argnums)(ours, x, hx)
    assert_close(value, dtype(loss_t.item()), GRAD_RTOL[dtype], GRAD_ATOL[dtype], "loss")
    tol = (GRAD_RTOL[dtype], GRAD_ATOL[dtype])
    d_x = grads[1]
    assert_close(d_x, grad_of(x_t), *tol, err_msg="d input")
    assert np.all(np.isfinite(d_x))
    if with_hx:
        d_hx = grads[2] if lstm else (grads[2],)
        for d, t_in, what in zip(d_hx, hx_t if lstm else (hx_t,), ("d h_0", "d c_0")):
            assert_close(d, grad_of(t_in), *tol, err_msg=what)
    for pname, p in theirs.named_parameters():
        assert_close(grads[0][pname], grad_of(p), *tol, err_msg=pname)
    return got


# ---------------------------------------------------------------- the grid

# (batch_first, bidirectional, num_layers, dtype): each pair of options meets in some row
LAYOUTS = [(False, False, 1, np.float64), (True, True, 2, np.float32),
           (False, True, 1, np.float32), (True, False, 2, np.float64),
           (False, True, 2, np.float64)]
GRID = list(itertools.product(KINDS, ["right", "left"], LAYOUTS))


def _grid_id(case):
    kind, side, (batch_first, bidirectional, num_layers, dtype) = case
    return "-".join([kind, side] + ["bf"] * batch_first + ["bi"] * bidirectional
                    + [f"L{num_layers}", np.dtype(dtype).name])


@pytest.mark.parametrize("kind,side,layout", GRID, ids=map(_grid_id, GRID))
def test_matches_torch_packed_path(torch, kind, side, layout):
    # L = 7 > max length 6 (the output gets a zero step past the run); one zero length
    batch_first, bidirectional, num_layers, dtype = layout
    _check(torch, kind, dtype, [3, 0, 6, 1, 6], 7, batch_first=batch_first,
           bidirectional=bidirectional, num_layers=num_layers, left=side == "left",
           with_hx=num_layers == 2)


@given(kind=st.sampled_from(sorted(KINDS)), dtype=st.sampled_from([np.float32, np.float64]),
       left=st.booleans(), batch_first=st.booleans(), bidirectional=st.booleans(),
       num_layers=st.integers(1, 2), with_hx=st.booleans(),
       L_and_lengths=st.integers(1, 6).flatmap(
           lambda L: st.tuples(st.just(L), st.lists(st.integers(0, L), min_size=1,
                                                     max_size=5))))
def test_drawn_lengths(torch, kind, dtype, left, batch_first, bidirectional, num_layers,
                       with_hx, L_and_lengths):
    L, lengths = L_and_lengths
    _check(torch, kind, dtype, lengths, L, batch_first=batch_first, left=left,
           bidirectional=bidirectional, num_layers=num_layers, with_hx=with_hx)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_a_call_too_large_for_the_one_call_engine(torch, kind):
    # above _ops' small-call bound: inference runs the layer-by-layer kernels
    from rnnkit import _ops

    assert not _ops.is_small(kind, np.zeros((20, 8, H_IN)), 1, 1, 80, 80)  # L_run 20, N 8
    _check(torch, kind, np.float64, [20, 0, 7, 13, 1, 20, 5, 9], 22, left=True, hidden=80)


@pytest.mark.parametrize("side", ["right", "left"])
def test_nan_padding_never_reaches_a_gradient(torch, side):
    # unequal series padded with NaN (aeon's collections): torch's packed path never reads
    # the padding, and neither does lengths=
    _check(torch, "LSTM", np.float64, [4, 2, 0, 3], 5, left=side == "left",
           bidirectional=True, num_layers=2, padding=np.nan)


@pytest.mark.parametrize("kind", ["LSTM", "GRU"])
def test_every_length_zero(torch, kind):
    output, h_n, c_n = _check(torch, kind, np.float64, [0, 0, 0], 4, num_layers=2,
                              bidirectional=True)
    assert not output.any()


def test_full_lengths_equal_the_plain_call_and_packing(rng):
    lstm = nn.LSTM(H_IN, H, num_layers=2, bidirectional=True, dtype=np.float64)
    x = rng.standard_normal((6, 4, H_IN))
    out, (h_n, c_n) = lstm(x)
    out_l, (h_l, c_l) = lstm(x, lengths=[6] * 4)
    for got, want in [(out_l, out), (h_l, h_n), (c_l, c_n)]:
        assert_close(got, want, 1e-13, 1e-14)
    lengths = np.array([2, 6, 5, 1])  # rnnkit's own packing: the same result
    packed_out, (h_p, c_p) = lstm(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out_l, (h_l, c_l) = lstm(x, lengths=lengths)
    assert_close(out_l, pad_packed_sequence(packed_out, total_length=6)[0], 1e-13, 1e-14)
    assert_close(h_l, h_p, 1e-13, 1e-14)
    assert_close(c_l, c_p, 1e-13, 1e-14)


def test_lengths_as_list_tuple_int32_and_torch_tensor(torch, rng):
    gru = nn.GRU(H_IN, H, dtype=np.float64)
    x = rng.standard_normal((5, 3, H_IN))
    want = gru(x, lengths=np.array([5, 0, 2]))
    for lengths in ([5, 0, 2], (5, 0, 2), np.array([5, 0, 2], np.int32),
                    torch.tensor([5, 0, 2])):
        got = gru(x, lengths=lengths)
        assert_close(got[0], want[0], 0, 0)
        assert_close(got[1], want[1], 0, 0)


def test_results_never_alias_the_callers_states(rng):
    lstm = nn.LSTM(H_IN, H, dtype=np.float64)
    h_0, c_0 = rng.standard_normal((2, 1, 2, H))
    _, (h_n, c_n) = lstm(rng.standard_normal((3, 2, H_IN)), (h_0, c_0), lengths=[0, 0])
    assert_close(h_n, h_0, 0, 0)
    h_n[...] = 7.0
    assert not np.any(h_0 == 7.0)


# ---------------------------------------------------------------- bad input


def raises(kind, *fragments):
    return pytest.raises(kind, match="(?s)" + "".join(f"(?=.*{re.escape(f)})" for f in fragments))


def test_bad_lengths():
    lstm = nn.LSTM(H_IN, H)
    x = np.zeros((5, 3, H_IN), np.float32)
    with raises(ValueError, "lengths must have one entry per sequence", "expected 3", "got 2"):
        lstm(x, lengths=[5, 2])
    with raises(ValueError, "lengths must not be negative", "[5, -1, 2]"):
        lstm(x, lengths=[5, -1, 2])
    with raises(ValueError, "lengths must not exceed the padded length of input (seq_len = 5)",
                "[6, 1, 2]"):
        lstm(x, lengths=[6, 1, 2])
    with raises(ValueError, "lengths must be integers", "float64", "[5.0, 1.0, 2.0]"):
        lstm(x, lengths=[5.0, 1.0, 2.0])
    with raises(ValueError, "lengths must be integers", "bool"):
        lstm(x, lengths=np.array([True, True, False]))
    with raises(ValueError, "lengths must be 1-D", "batch = 3", "got shape (3, 1)"):
        lstm(x, lengths=[[5], [1], [2]])
    bf = nn.GRU(H_IN, H, batch_first=True)  # seq_len is axis 1 there
    with raises(ValueError, "(seq_len = 3)", "[4, 1, 1, 1, 1]"):
        bf(np.zeros((5, 3, H_IN), np.float32), lengths=[4, 1, 1, 1, 1])


def test_lengths_with_packed_or_unbatched_input():
    rnn = nn.RNN(H_IN, H)
    packed = pack_padded_sequence(np.zeros((5, 2, H_IN), np.float32), [5, 3])
    with raises(ValueError, "lengths= takes a padded array input, got a PackedSequence",
                "batch_sizes"):
        rnn(packed, lengths=[5, 3])
    with raises(ValueError, "lengths= needs a batched 3-D input (seq_len, batch, input_size)",
                "got 2-D shape (5, 4)"):
        rnn(np.zeros((5, H_IN), np.float32), lengths=[5])


def test_bad_padding_side():
    gru = nn.GRU(H_IN, H)
    x = np.zeros((5, 2, H_IN), np.float32)
    with raises(ValueError, "padding_side must be 'left' or 'right', got 'top'"):
        gru(x, lengths=[5, 3], padding_side="top")
    with raises(ValueError, "padding_side='left' needs lengths="):
        gru(x, padding_side="left")
    with pytest.raises(TypeError, match="positional"):  # lengths is keyword-only
        gru(x, None, [5, 3])
