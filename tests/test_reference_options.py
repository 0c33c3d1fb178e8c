"""``rnnkit._reference_options`` (the cell options' plain-NumPy forward and hand-derived
backward) against an independent reference: API.md's "Cell options" equations written as
per-step torch code and differentiated by torch's autograd.

Forward (output, h_n, c_n) and every gradient (x, h_0, c_0, each weight and bias, γ, β,
peepholes) in float64 to 1e-9, for LSTM (with and without proj_size), GRU and RNN
(tanh, relu); each option alone and combined; forward and reverse; padded and packed
(``batch_sizes``); parametrized cases and hypothesis-drawn shapes. Then what must hold
exactly: every option off is ``_reference`` bit for bit, an all-ones recurrent-dropout
mask is no dropout, eval-mode zoneout is the interpolation ``p h_{t-1} + (1 - p) h̃_t``,
and an inactive row's zoneout mask is never read.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rnnkit import _reference, _reference_options

from helpers import GRAD_ATOL, GRAD_RTOL, assert_close, to_numpy

# mode -> (kind, G / H, nonlinearity, projected)
MODES = {
    "LSTM": ("LSTM", 4, None, False),
    "LSTM-proj": ("LSTM", 4, None, True),
    "GRU": ("GRU", 3, None, False),
    "RNN-tanh": ("RNN", 1, "tanh", False),
    "RNN-relu": ("RNN", 1, "relu", False),
}
RECURRENT_DROPOUT, ZONEOUT = 0.3, 0.4
LAYOUTS = {  # (packed, reverse)
    "padded": (False, False),
    "padded-reverse": (False, True),
    "packed": (True, False),
    "packed-reverse": (True, True),
}
# option sets: each alone, in pairs with layer norm, and all together (train and eval zoneout)
COMMON_OPTIONS = [
    ("layer_norm",),
    ("recurrent_dropout",),
    ("zoneout",),
    ("zoneout_eval",),
    ("layer_norm", "recurrent_dropout"),
    ("layer_norm", "zoneout"),
    ("recurrent_dropout", "zoneout"),
    ("layer_norm", "recurrent_dropout", "zoneout"),
    ("layer_norm", "recurrent_dropout", "zoneout_eval"),
]
LSTM_OPTIONS = [
    ("peepholes",),
    ("layer_norm", "peepholes"),
    ("peepholes", "zoneout"),
    ("layer_norm", "recurrent_dropout", "zoneout", "peepholes"),
    ("layer_norm", "recurrent_dropout", "zoneout_eval", "peepholes"),
]


def _batch_sizes(lengths, L):
    """lengths [3, 2, 1] -> batch_sizes [3, 2, 1]: rows active at each step."""
    return (np.asarray(lengths)[None, :] > np.arange(L)[:, None]).sum(axis=1).astype(np.int64)


def _make_case(mode, L, N, H_in, H, options, lengths=None, proj=2, bias=True, seed=0,
               dtype=np.float64):
    """Inputs, weights, options (masks drawn here), cotangents: a dict of NumPy arrays."""
    kind, gates, nonlinearity, projected = MODES[mode]
    rng = np.random.default_rng(seed)
    G, P = gates * H, (proj if projected else H)

    def u(*shape, scale=1.0):
        return (rng.uniform(-1, 1, shape) * scale).astype(dtype)

    k = 1 / np.sqrt(H)
    case = dict(mode=mode, kind=kind, nonlinearity=nonlinearity, L=L, N=N, H=H, P=P,
                batch_sizes=None if lengths is None else _batch_sizes(lengths, L),
                x=u(L, N, H_in, scale=2), h_0=u(N, P), c_0=u(N, H) if kind == "LSTM" else None,
                w_ih=u(G, H_in, scale=k), w_hh=u(G, P, scale=k),
                b_ih=u(G, scale=k) if bias else None, b_hh=u(G, scale=k) if bias else None,
                w_hr=u(P, H, scale=k) if projected else None,
                d_output=u(L, N, P), dh_n=u(N, P), dc_n=u(N, H) if kind == "LSTM" else None)
    opts = {}
    if "layer_norm" in options:  # gains and bias away from their init, so each one matters
        opts["w_ln_ih"], opts["w_ln_hh"] = 1 + u(G, scale=0.5), 1 + u(G, scale=0.5)
        if kind == "LSTM":
            opts["w_ln_c"], opts["b_ln_c"] = 1 + u(H, scale=0.5), u(H, scale=0.5)
    if "peepholes" in options:
        opts["w_ph"] = u(3 * H, scale=k)
    if "recurrent_dropout" in options:  # kept entries scaled by 1 / (1 - p), as the caller does
        keep = rng.random((N, P)) >= RECURRENT_DROPOUT
        opts["recurrent_mask"] = (keep / (1 - RECURRENT_DROPOUT)).astype(dtype)
    if "zoneout" in options:  # P(d = 1) = p, in processing order
        opts["zoneout_mask"] = (rng.random((L, N, P)) < ZONEOUT).astype(dtype)
    if "zoneout_eval" in options:
        opts["zoneout_eval"] = ZONEOUT
    case["options"] = opts
    return case


def _bias_sum(case):
    return None if case["b_ih"] is None else case["b_ih"] + case["b_hh"]


def _ours(case, reverse, impl=_reference_options, keep=True, options=None):
    """Forward then backward of ``impl``. Returns ``output, h_n, c_n, grads`` (grads by the
    torch reference's leaf names), and the forward's ``saved``."""
    c, bs = case, case["batch_sizes"]
    opts = c["options"] if options is None else options
    if c["kind"] == "LSTM":
        output, h_n, c_n, saved = impl.lstm_forward(
            c["x"], c["h_0"], c["c_0"], c["w_ih"], c["w_hh"], _bias_sum(c), c["w_hr"], bs,
            reverse, keep=keep, **opts)
        back = impl.lstm_backward(c["x"], c["w_ih"], c["w_hh"], c["w_hr"], saved,
                                  c["d_output"], c["dh_n"], c["dc_n"], bs, reverse, **opts)
        names = ["x", "h_0", "c_0", "w_ih", "w_hh", "b", "w_hr"]
    elif c["kind"] == "GRU":
        output, h_n, saved = impl.gru_forward(c["x"], c["h_0"], c["w_ih"], c["w_hh"], c["b_ih"],
                                              c["b_hh"], bs, reverse, keep=keep, **opts)
        c_n = None
        back = impl.gru_backward(c["x"], c["w_ih"], c["w_hh"], saved, c["d_output"], c["dh_n"],
                                 bs, reverse, **opts)
        names = ["x", "h_0", "w_ih", "w_hh", "b_ih", "b_hh"]
    else:
        output, h_n, saved = impl.rnn_forward(c["x"], c["h_0"], c["w_ih"], c["w_hh"],
                                              _bias_sum(c), c["nonlinearity"], bs, reverse,
                                              keep=keep, **opts)
        c_n = None
        back = impl.rnn_backward(c["x"], c["w_ih"], c["w_hh"], saved, c["d_output"], c["dh_n"],
                                 c["nonlinearity"], bs, reverse, **opts)
        names = ["x", "h_0", "w_ih", "w_hh", "b"]
    grads = dict(zip(names, back, strict=False))
    if impl is _reference_options:
        grads.update(back[len(names)])
    if "b" in grads:  # b = b_ih + b_hh: one gradient reaches both
        db = grads.pop("b")
        grads["b_ih"] = grads["b_hh"] = db
    if c["b_ih"] is None:  # no biases: nothing to compare their gradient with
        grads.pop("b_ih"), grads.pop("b_hh")
    grads = {k: v for k, v in grads.items() if v is not None}
    return output, h_n, c_n, grads, saved


# ---------------------------------------------------------------- the torch reference


@pytest.fixture(scope="module")
def torch(torch):
    """conftest's torch on one thread while this file runs: its intra-op threads and
    OpenBLAS's spin against each other on a shared 2-core machine (as in
    test_lengths_vs_torch.py)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield torch
    torch.set_num_threads(threads)


def _torch_layer(torch, case, p, reverse):
    """One layer-direction, step by step, as API.md writes it. ``p``: torch leaves by name.

    Packed: the first ``batch_sizes[t]`` rows are active at time ``t``; the others keep
    their state and output zeros. Masks are read by processing step ``s``.
    """
    F = torch.nn.functional
    kind, L, N = case["kind"], case["L"], case["N"]
    bs = case["batch_sizes"]
    opts = case["options"]
    ln = "w_ln_ih" in opts
    q = torch.tensor(opts["recurrent_mask"]) if "recurrent_mask" in opts else None
    if "zoneout_mask" in opts:
        zoneout = torch.tensor(opts["zoneout_mask"])
    else:
        zoneout = opts.get("zoneout_eval")

    def LN(v):  # (v - mean) / sqrt(var + 1e-5), biased variance, over the last axis
        return F.layer_norm(v, v.shape[-1:], eps=1e-5)

    def bias(name):
        return p[name] if name in p else 0.0

    h = p["h_0"]
    c = p.get("c_0")
    outputs = [None] * L
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = N if bs is None else int(bs[t])
        h_prev = h[:n]
        h_bar = h_prev if q is None else q[:n] * h_prev  # W_hh (m ⊙ h_{t-1})
        u, v = p["x"][t, :n] @ p["w_ih"].T, h_bar @ p["w_hh"].T
        if ln:
            u, v = LN(u) * p["w_ln_ih"], LN(v) * p["w_ln_hh"]
        if kind == "LSTM":
            H = case["H"]
            c_prev = c[:n]
            a = u + bias("b_ih") + v + bias("b_hh")
            a_i, a_f, a_g, a_o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            if "w_ph" in p:
                ph = p["w_ph"]
                a_i = a_i + ph[:H] * c_prev
                a_f = a_f + ph[H : 2 * H] * c_prev
            i, f, g = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g)
            c_t = f * c_prev + i * g
            if "w_ph" in p:
                a_o = a_o + p["w_ph"][2 * H :] * c_t  # the raw c_t
            o = torch.sigmoid(a_o)
            c_out = LN(c_t) * p["w_ln_c"] + p["b_ln_c"] if ln else c_t
            h_tilde = o * torch.tanh(c_out)
            if "w_hr" in p:
                h_tilde = h_tilde @ p["w_hr"].T
            c = torch.cat([c_t, c[n:]])
        elif kind == "GRU":
            H = case["H"]
            a, b = u + bias("b_ih"), v + bias("b_hh")
            r = torch.sigmoid(a[:, :H] + b[:, :H])
            z = torch.sigmoid(a[:, H : 2 * H] + b[:, H : 2 * H])
            n_gate = torch.tanh(a[:, 2 * H :] + r * b[:, 2 * H :])
            h_tilde = (1 - z) * n_gate + z * h_prev  # z h_{t-1} unmasked
        else:
            a = u + bias("b_ih") + v + bias("b_hh")
            h_tilde = torch.tanh(a) if case["nonlinearity"] == "tanh" else torch.relu(a)
        if zoneout is None:
            h_t = h_tilde
        else:
            d = zoneout if isinstance(zoneout, float) else zoneout[s, :n]
            h_t = d * h_prev + (1 - d) * h_tilde
        h = torch.cat([h_t, h[n:]])
        outputs[t] = torch.cat([h_t, torch.zeros_like(h[n:])])
    return torch.stack(outputs), h, c


def _theirs(torch, case, reverse):
    """The torch reference's output, h_n, c_n and the gradients of
    ``Σ output ⊙ d_output + Σ h_n ⊙ dh_n (+ Σ c_n ⊙ dc_n)``, by leaf name."""
    arrays = {k: case[k] for k in ("x", "h_0", "c_0", "w_ih", "w_hh", "b_ih", "b_hh", "w_hr")}
    arrays.update({k: v for k, v in case["options"].items() if k.startswith("w_") or
                   k.startswith("b_")})
    leaves = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items() if v is not None}
    output, h_n, c_n = _torch_layer(torch, case, leaves, reverse)
    loss = (output * torch.tensor(case["d_output"])).sum()
    loss = loss + (h_n * torch.tensor(case["dh_n"])).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.tensor(case["dc_n"])).sum()
    names = list(leaves)
    grads = torch.autograd.grad(loss, [leaves[k] for k in names], allow_unused=True)
    grads = {k: (np.zeros_like(arrays[k]) if g is None else to_numpy(g))
             for k, g in zip(names, grads, strict=True)}
    return to_numpy(output), to_numpy(h_n), None if c_n is None else to_numpy(c_n), grads


def _check_against_torch(torch, case, reverse):
    output, h_n, c_n, grads, _ = _ours(case, reverse)
    t_output, t_h_n, t_c_n, t_grads = _theirs(torch, case, reverse)
    tol = dict(rtol=GRAD_RTOL[np.float64], atol=GRAD_ATOL[np.float64])
    assert_close(output, t_output, **tol, err_msg="output")
    assert_close(h_n, t_h_n, **tol, err_msg="h_n")
    if t_c_n is not None:
        assert_close(c_n, t_c_n, **tol, err_msg="c_n")
    assert sorted(grads) == sorted(t_grads), "a gradient is missing or extra"
    for name, expected in t_grads.items():
        assert_close(grads[name], expected, **tol, err_msg=f"d{name}")


def _cases():
    for mode in MODES:
        option_sets = COMMON_OPTIONS + (LSTM_OPTIONS if MODES[mode][0] == "LSTM" else [])
        for options in option_sets:
            for layout in LAYOUTS:
                yield pytest.param(mode, options, layout, id=f"{mode}-{'+'.join(options)}-{layout}")


@pytest.mark.parametrize(("mode", "options", "layout"), list(_cases()))
def test_matches_torch_autograd(torch, mode, options, layout):
    packed, reverse = LAYOUTS[layout]
    L, N = 5, 4
    lengths = [5, 3, 3, 1] if packed else None
    case = _make_case(mode, L, N, H_in=3, H=3, options=options, lengths=lengths, proj=2)
    _check_against_torch(torch, case, reverse)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN-tanh"])
def test_matches_torch_autograd_without_bias(torch, mode):
    """``bias=False`` drops b_ih, b_hh only: layer norm's γ (and the LSTM's β_c) stay."""
    options = ("layer_norm", "recurrent_dropout", "zoneout")
    options += ("peepholes",) if mode == "LSTM" else ()
    case = _make_case(mode, 4, 3, H_in=2, H=3, options=options, lengths=[4, 2, 1], bias=False)
    _check_against_torch(torch, case, reverse=True)


@st.composite
def _drawn_cases(draw):
    mode = draw(st.sampled_from(sorted(MODES)))
    L, N = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    H_in, H = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    proj = draw(st.integers(1, 4))
    allowed = ["layer_norm", "recurrent_dropout"]
    allowed += ["peepholes"] if MODES[mode][0] == "LSTM" else []
    options = tuple(draw(st.lists(st.sampled_from(allowed), unique=True)))
    options += draw(st.sampled_from([(), ("zoneout",), ("zoneout_eval",)]))
    lengths = None
    if draw(st.booleans()):
        rest = draw(st.lists(st.integers(1, L), min_size=N - 1, max_size=N - 1))
        lengths = [L] + sorted(rest, reverse=True)
    reverse, bias = draw(st.booleans()), draw(st.booleans())
    seed = draw(st.integers(0, 2**16))
    return _make_case(mode, L, N, H_in, H, options, lengths, proj, bias, seed), reverse


@settings(max_examples=40, deadline=None)
@given(drawn=_drawn_cases())
def test_matches_torch_autograd_drawn_shapes(torch, drawn):
    case, reverse = drawn
    _check_against_torch(torch, case, reverse)


# ---------------------------------------------------------------- exact properties


def _assert_same(ours, theirs):
    """Bit for bit: forward results, every gradient, the histories both keep (an RNN with
    zoneout also keeps h̃)."""
    output, h_n, c_n, grads, saved = ours
    r_output, r_h_n, r_c_n, r_grads, r_saved = theirs
    for what, a, b in [("output", output, r_output), ("h_n", h_n, r_h_n), ("c_n", c_n, r_c_n)]:
        np.testing.assert_array_equal(a, b, err_msg=what)
    assert sorted(grads) == sorted(r_grads)
    for name in grads:
        np.testing.assert_array_equal(grads[name], r_grads[name], err_msg=f"d{name}")
    if saved is not None:
        assert set(r_saved) <= set(saved)
        for name in r_saved:
            np.testing.assert_array_equal(saved[name], r_saved[name], err_msg=name)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize("bias", [True, False])
def test_every_option_off_is_reference_bit_for_bit(mode, layout, bias):
    packed, reverse = LAYOUTS[layout]
    L = 70  # past _reference's inference chunk (64 steps per input GEMM) when nothing is kept
    lengths = [L, 40, 40, 3] if packed else None
    case = _make_case(mode, L, 4, 3, 5, (), lengths, proj=3, bias=bias, seed=1)
    _assert_same(_ours(case, reverse), _ours(case, reverse, impl=_reference))
    for impl_output, ref_output in zip(
        _forward_only(_reference_options, case, reverse), _forward_only(_reference, case, reverse),
        strict=True,
    ):
        np.testing.assert_array_equal(impl_output, ref_output)


def _forward_only(impl, case, reverse, **opts):
    """The forward without histories (``keep=False``): output, h_n (, c_n)."""
    c, bs = case, case["batch_sizes"]
    if c["kind"] == "LSTM":
        out = impl.lstm_forward(c["x"], c["h_0"], c["c_0"], c["w_ih"], c["w_hh"], _bias_sum(c),
                                c["w_hr"], bs, reverse, **opts)
    elif c["kind"] == "GRU":
        out = impl.gru_forward(c["x"], c["h_0"], c["w_ih"], c["w_hh"], c["b_ih"], c["b_hh"], bs,
                               reverse, **opts)
    else:
        out = impl.rnn_forward(c["x"], c["h_0"], c["w_ih"], c["w_hh"], _bias_sum(c),
                               c["nonlinearity"], bs, reverse, **opts)
    assert out[-1] is None  # nothing saved
    return out[:-1]


@pytest.mark.parametrize("mode", list(MODES))
def test_inference_forward_equals_training_forward(mode):
    """``keep=False`` (bounded input-GEMM chunks, no histories) computes what ``keep=True``
    does, with every option on."""
    options = ("layer_norm", "recurrent_dropout", "zoneout")
    options += ("peepholes",) if MODES[mode][0] == "LSTM" else ()
    case = _make_case(mode, 70, 3, 2, 3, options, [70, 50, 9], seed=2)
    kept = _ours(case, reverse=True)[:3]
    for a, b in zip(_forward_only(_reference_options, case, True, **case["options"]), kept,
                    strict=False):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layer_norm", [False, True])
def test_all_ones_recurrent_mask_is_no_dropout(mode, layer_norm):
    options = ("zoneout",) + (("layer_norm",) if layer_norm else ())
    options += ("peepholes",) if MODES[mode][0] == "LSTM" else ()
    case = _make_case(mode, 6, 4, 3, 3, options, [6, 4, 4, 2], seed=3)
    ones = dict(case["options"], recurrent_mask=np.ones((4, case["P"])))
    _assert_same(_ours(case, True, options=ones), _ours(case, True))
    # and a mask that drops something does change the result
    dropped = dict(ones, recurrent_mask=np.where(np.eye(4, case["P"]) > 0, 0.0, 1.0))
    assert not np.array_equal(_ours(case, True, options=dropped)[0], _ours(case, True)[0])


@pytest.mark.parametrize("mode", list(MODES))
def test_zero_zoneout_mask_is_no_zoneout(mode):
    options = ("layer_norm", "recurrent_dropout")
    case = _make_case(mode, 6, 4, 3, 3, options, [6, 4, 4, 2], seed=4)
    zeros = dict(case["options"], zoneout_mask=np.zeros((6, 4, case["P"])))
    _assert_same(_ours(case, False, options=zeros), _ours(case, False))


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("layout", ["padded", "packed-reverse"])
def test_eval_zoneout_is_the_interpolation(mode, layout):
    """``h_t = p h_{t-1} + (1 - p) h̃_t`` at every step, ``h̃_t`` being one plain step (no
    zoneout) of the same cell from the same state; the LSTM's c_t is that step's own."""
    packed, reverse = LAYOUTS[layout]
    kind = MODES[mode][0]
    L, N, p = 5, 4, 0.3
    options = ("layer_norm", "zoneout_eval") + (("peepholes",) if kind == "LSTM" else ())
    case = _make_case(mode, L, N, 3, 3, options, [5, 3, 3, 1] if packed else None, seed=5)
    case["options"]["zoneout_eval"] = p
    saved = _ours(case, reverse)[4]
    plain = {k: v for k, v in case["options"].items() if k != "zoneout_eval"}
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = N if case["batch_sizes"] is None else int(case["batch_sizes"][t])
        step = dict(case, L=1, N=n, batch_sizes=None, x=case["x"][t : t + 1, :n],
                    h_0=saved["h"][s, :n], c_0=None if kind != "LSTM" else saved["c"][s, :n],
                    options=plain)
        out = _forward_only(_reference_options, step, False, **plain)
        h_tilde = out[1]
        expected = p * saved["h"][s, :n] + (1 - p) * h_tilde
        np.testing.assert_allclose(saved["h"][s + 1, :n], expected, rtol=1e-14, atol=1e-15)
        assert not np.allclose(h_tilde, expected)  # the interpolation moved h
        if kind == "LSTM":  # c is never zoned
            np.testing.assert_allclose(saved["c"][s + 1, :n], out[2], rtol=1e-14, atol=1e-15)
        np.testing.assert_array_equal(saved["h"][s + 1, n:], saved["h"][s, n:])  # inactive


@pytest.mark.parametrize("mode", list(MODES))
def test_eval_zoneout_equals_a_constant_mask(mode):
    """``zoneout_eval=p`` is the training step with ``d_t = p`` everywhere, backward too."""
    case = _make_case(mode, 5, 3, 2, 3, ("layer_norm", "zoneout_eval"), [5, 5, 2], seed=6)
    const = dict(case["options"], zoneout_mask=np.full((5, 3, case["P"]), ZONEOUT))
    del const["zoneout_eval"]
    _assert_same(_ours(case, False, options=const), _ours(case, False))


def test_lstm_all_ones_zoneout_freezes_h_not_c():
    """d = 1 everywhere: h stays h_0 (the output is h_0 each step) while c evolves from it."""
    case = _make_case("LSTM-proj", 4, 3, 2, 3, ("peepholes",), seed=7)
    case["options"]["zoneout_mask"] = np.ones((4, 3, case["P"]))
    output, h_n, c_n, _, saved = _ours(case, False)
    np.testing.assert_array_equal(h_n, case["h_0"])
    np.testing.assert_array_equal(output, np.broadcast_to(case["h_0"], output.shape))
    assert not np.allclose(c_n, case["c_0"])
    frozen = dict(case, options={"w_ph": case["options"]["w_ph"]})
    for s in range(4):  # each step's c: one plain step from (h_0, c_{s})
        step = dict(frozen, L=1, x=case["x"][s : s + 1], c_0=saved["c"][s])
        np.testing.assert_allclose(_forward_only(_reference_options, step, False,
                                                 **frozen["options"])[2],
                                   saved["c"][s + 1], rtol=1e-14, atol=1e-15)


@pytest.mark.parametrize("mode", list(MODES))
def test_inactive_rows_zoneout_mask_is_never_read(mode):
    options = ("layer_norm", "recurrent_dropout", "zoneout")
    case = _make_case(mode, 5, 4, 2, 3, options, [5, 3, 3, 1], seed=8)
    poisoned = dict(case["options"], zoneout_mask=case["options"]["zoneout_mask"].copy())
    for s in range(5):  # reverse: step s is time 4 - s
        n = int(case["batch_sizes"][4 - s])
        poisoned["zoneout_mask"][s, n:] = np.nan
    _assert_same(_ours(case, True, options=poisoned), _ours(case, True))


@pytest.mark.parametrize("mode", list(MODES))
def test_float32_stays_float32(mode):
    options = ("layer_norm", "recurrent_dropout", "zoneout")
    options += ("peepholes",) if MODES[mode][0] == "LSTM" else ()
    wide, narrow = (_make_case(mode, 5, 3, 2, 3, options, [5, 4, 2], dtype=d, seed=9)
                    for d in (np.float64, np.float32))
    o64, h64, _, g64, _ = _ours(wide, True)
    o32, h32, _, g32, _ = _ours(narrow, True)
    for a, b, what in [(o32, o64, "output"), (h32, h64, "h_n")] + [
        (g32[k], g64[k], f"d{k}") for k in g64
    ]:
        assert a.dtype == np.float32, what
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=what)
