"""The cell options on the layers (``nn.LSTM``/``GRU``/``RNN`` with ``layer_norm``,
``recurrent_dropout``, ``zoneout``, ``peepholes``) against an independent reference:
API.md's equations as per-step torch code (``test_reference_options._torch_layer``),
stacked over layers and directions here, differentiated by torch's autograd.

The masks a training call draws are recorded (``StackSpec.masks`` wrapped) and handed to
the torch reference, so the comparison is exact (float64 to 1e-9) for output, h_n, c_n
and the gradient of the input, the initial states and every parameter, across
``num_layers``, ``bidirectional``, ``batch_first``, ``proj_size``, packing, ``lengths=``
and unbatched input. Then: the draws themselves (rates, scaling, one recurrent mask per
call and layer-direction, determinism under ``manual_seed`` and finite differences of the
seeded loss), eval semantics, state_dict, init, repr, save/load, streams and bad input.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import _autodiff, nn
from rnnkit.nn.utils.rnn import pack_padded_sequence
from test_reference_options import _torch_layer

from helpers import GRAD_ATOL, GRAD_RTOL, assert_close, to_numpy

TOL = dict(rtol=GRAD_RTOL[np.float64], atol=GRAD_ATOL[np.float64])
KINDS = {"LSTM": nn.LSTM, "GRU": nn.GRU, "RNN": nn.RNN}
OPTIONS = {  # name -> the keyword arguments of the layer
    "ln": dict(layer_norm=True),
    "rd": dict(recurrent_dropout=0.3),
    "zo": dict(zoneout=0.4),
    "ph": dict(peepholes=True),
    "all": dict(layer_norm=True, recurrent_dropout=0.3, zoneout=0.4, peepholes=True),
}


@pytest.fixture(scope="module")
def torch(torch):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # one thread beside OpenBLAS on a shared 2-core machine
    yield torch
    torch.set_num_threads(threads)


@pytest.fixture
def recorded(monkeypatch):
    """Every ``StackSpec.masks`` a call draws, in order (one per layer-direction)."""
    draws = []
    original = _autodiff.StackSpec.masks

    def masks(self, *args):
        out = original(self, *args)
        draws.append(out)
        return out

    monkeypatch.setattr(_autodiff.StackSpec, "masks", masks)
    return draws


def _layer(kind, options, seed=0, **kwargs):
    rnnkit.manual_seed(seed)
    if kind != "LSTM":
        options = {k: v for k, v in options.items() if k != "peepholes"}
    layer = KINDS[kind](3, 4, dtype=np.float64, **options, **kwargs)
    rng = np.random.default_rng(seed + 1)
    for name, p in layer.named_parameters():  # γ, β and peepholes away from their init
        if "_ln_" in name:
            p[...] = (1.0 if name.startswith("weight") else 0.0) + rng.uniform(-0.5, 0.5, p.shape)
    return layer


def _torch_stack(torch, layer, x, h_0, c_0, batch_sizes, draws, params):
    """The layer's stack in torch: per layer-direction ``_torch_layer`` with that
    layer-direction's recorded masks; x (L, N, I) time-major, rows sorted when packed."""
    kind = "LSTM" if layer.mode == "LSTM" else ("GRU" if layer.mode == "GRU" else "RNN")
    D = 2 if layer.bidirectional else 1
    L, N = x.shape[:2]
    layer_input, h_n, c_n = x, [], []
    for k_layer in range(layer.num_layers):
        outs = []
        for direction in range(D):
            k = D * k_layer + direction
            sfx = f"_l{k_layer}" + ("_reverse" if direction else "")
            p = {"x": layer_input, "h_0": h_0[k]}
            if c_0 is not None:
                p["c_0"] = c_0[k]
            for ours, theirs in [("weight_ih", "w_ih"), ("weight_hh", "w_hh"),
                                 ("bias_ih", "b_ih"), ("bias_hh", "b_hh"),
                                 ("weight_hr", "w_hr"), ("weight_ln_ih", "w_ln_ih"),
                                 ("weight_ln_hh", "w_ln_hh"), ("weight_ln_c", "w_ln_c"),
                                 ("bias_ln_c", "b_ln_c"), ("weight_ph", "w_ph")]:
                if ours + sfx in params:
                    p[theirs] = params[ours + sfx]
            options = dict(draws[k])
            if layer.layer_norm:
                options["w_ln_ih"] = True  # _torch_layer asks the case whether LN is on
            case = dict(kind=kind, L=L, N=N, H=layer.hidden_size, batch_sizes=batch_sizes,
                        nonlinearity=getattr(layer, "nonlinearity", None), options=options)
            out, h, c = _torch_layer(torch, case, p, reverse=direction == 1)
            outs.append(out)
            h_n.append(h)
            c_n.append(c)
        layer_input = torch.cat(outs, dim=2)
    return layer_input, torch.stack(h_n), (torch.stack(c_n) if c_0 is not None else None)


def _compare(torch, layer, x, lengths=None, batch_first=False, recorded=None, seed=5):
    """Output, states and every gradient of the rnnkit layer (``rnnkit.grad``) against
    the torch stack fed the same masks. ``x``: (L, N, I) time-major; ``lengths``: packed
    input (sorted, decreasing)."""
    L, N, _ = x.shape
    D = 2 if layer.bidirectional else 1
    H_out = layer.proj_size or layer.hidden_size
    rng = np.random.default_rng(seed)
    h_0 = rng.uniform(-1, 1, (layer.num_layers * D, N, H_out))
    lstm = layer.mode == "LSTM"
    c_0 = rng.uniform(-1, 1, (layer.num_layers * D, N, layer.hidden_size)) if lstm else None
    d_out = rng.uniform(-1, 1, (L, N, D * H_out))
    d_h = rng.uniform(-1, 1, h_0.shape)
    d_c = rng.uniform(-1, 1, c_0.shape) if lstm else None
    batch_sizes = None
    if lengths is not None:
        batch_sizes = (np.asarray(lengths)[None] > np.arange(L)[:, None]).sum(1)
        valid = np.arange(L)[:, None] < np.asarray(lengths)[None]
        d_out = d_out * valid[:, :, None]

    def loss(m, x, h_0, c_0=None):
        hx = (h_0, c_0) if lstm else h_0
        if lengths is not None:
            out, hn = m(pack_padded_sequence(x, lengths), hx)
            out = rnnkit.nn.utils.rnn.pad_packed_sequence(out, total_length=L)[0]
        elif batch_first:
            out, hn = m(x.transpose((1, 0, 2)), hx)
            out = out.transpose((1, 0, 2))
        else:
            out, hn = m(x, hx)
        h_n, c_n = hn if lstm else (hn, None)
        total = (out * d_out).sum() + (h_n * d_h).sum()
        return total + (c_n * d_c).sum() if lstm else total

    recorded.clear()
    rnnkit.manual_seed(seed)
    if lstm:
        value, (g_params, g_x, g_h, g_c) = rnnkit.value_and_grad(loss, argnums=(0, 1, 2, 3))(
            layer, x, h_0, c_0)
    else:
        value, (g_params, g_x, g_h) = rnnkit.value_and_grad(loss, argnums=(0, 1, 2))(
            layer, x, h_0)
    draws = list(recorded)
    assert len(draws) == layer.num_layers * D

    params = {n: torch.tensor(np.asarray(p), requires_grad=True)
              for n, p in layer.named_parameters()}
    leaves = {"x": torch.tensor(x, requires_grad=True),
              "h_0": torch.tensor(h_0, requires_grad=True)}
    if lstm:
        leaves["c_0"] = torch.tensor(c_0, requires_grad=True)
    out, h_n, c_n = _torch_stack(torch, layer, leaves["x"], leaves["h_0"], leaves.get("c_0"),
                                 batch_sizes, draws, params)
    t_loss = (out * torch.tensor(d_out)).sum() + (h_n * torch.tensor(d_h)).sum()
    if lstm:
        t_loss = t_loss + (c_n * torch.tensor(d_c)).sum()
    names = list(params) + list(leaves)
    grads = torch.autograd.grad(t_loss, [{**params, **leaves}[n] for n in names],
                                allow_unused=True)
    t_grads = {n: np.zeros(params[n].shape) if g is None else to_numpy(g)
               for n, g in zip(names, grads, strict=True)}
    assert_close(value, t_loss.item(), **TOL, err_msg="loss")
    assert sorted(g_params) == sorted(params)
    for name in params:
        assert_close(g_params[name], t_grads[name], **TOL, err_msg=f"d{name}")
    assert_close(g_x, t_grads["x"], **TOL, err_msg="dx")
    assert_close(g_h, t_grads["h_0"], **TOL, err_msg="dh_0")
    if lstm:
        assert_close(g_c, t_grads["c_0"], **TOL, err_msg="dc_0")
    return draws


def _x(L=5, N=3, seed=3):
    return np.random.default_rng(seed).uniform(-2, 2, (L, N, 3))


# ---------------------------------------------------------------- parity with the torch reference


def _parity_cases():
    for kind, option in itertools.product(KINDS, OPTIONS):
        if option == "ph" and kind != "LSTM":
            continue
        yield pytest.param(kind, option, id=f"{kind}-{option}")


@pytest.mark.parametrize(("kind", "option"), list(_parity_cases()))
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_matches_torch_one_layer(torch, recorded, kind, option, training):
    layer = _layer(kind, OPTIONS[option])
    layer.train(training)
    draws = _compare(torch, layer, _x(), recorded=recorded)
    if not training:  # eval: no recurrent mask, zoneout's probability instead of a mask
        assert all("recurrent_mask" not in d and "zoneout_mask" not in d for d in draws)


@pytest.mark.parametrize(("kind", "num_layers", "bidirectional", "batch_first", "proj_size"),
                         [(kind, 2, False, False, 0) for kind in KINDS]
                         + [(kind, 1, True, True, 0) for kind in KINDS]
                         + [("LSTM", 2, True, False, 2)])  # proj_size: the LSTM's
def test_matches_torch_stacked(torch, recorded, kind, num_layers, bidirectional, batch_first,
                               proj_size):
    layer = _layer(kind, OPTIONS["all"], num_layers=num_layers, bidirectional=bidirectional,
                   batch_first=batch_first, **({"proj_size": proj_size} if proj_size else {}))
    _compare(torch, layer, _x(), batch_first=batch_first, recorded=recorded)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("option", ["ln", "zo", "all"])
def test_matches_torch_packed(torch, recorded, kind, option):
    layer = _layer(kind, OPTIONS[option], num_layers=2, bidirectional=True)
    _compare(torch, layer, _x(L=6, N=4), lengths=[6, 4, 4, 1], recorded=recorded)


@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_torch_without_bias(torch, recorded, kind):
    layer = _layer(kind, OPTIONS["all"], bias=False)
    _compare(torch, layer, _x(), recorded=recorded)


@st.composite
def _drawn(draw):
    kind = draw(st.sampled_from(sorted(KINDS)))
    names = ["layer_norm", "recurrent_dropout", "zoneout"] + (["peepholes"] if kind == "LSTM"
                                                               else [])
    chosen = draw(st.lists(st.sampled_from(names), unique=True, min_size=1))
    options = {n: (True if n in ("layer_norm", "peepholes") else
                   draw(st.sampled_from([0.1, 0.5, 0.9]))) for n in chosen}
    shape = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()))
    if kind == "LSTM" and draw(st.booleans()):
        shape["proj_size"] = draw(st.integers(1, 3))
    L, N = draw(st.integers(1, 5)), draw(st.integers(1, 3))
    lengths = None
    if draw(st.booleans()):
        rest = draw(st.lists(st.integers(1, L), min_size=N - 1, max_size=N - 1))
        lengths = [L] + sorted(rest, reverse=True)  # the longest fills L: packing keeps L steps
    return kind, options, shape, L, N, lengths, draw(st.booleans()), draw(st.integers(0, 99))


@settings(max_examples=20, deadline=None)
@given(drawn=_drawn())
def test_matches_torch_drawn(torch, drawn):
    kind, options, shape, L, N, lengths, training, seed = drawn
    draws = []  # hypothesis and function-scoped fixtures do not mix: record by hand
    original = _autodiff.StackSpec.masks

    def masks(self, *args):
        out = original(self, *args)
        draws.append(out)
        return out

    _autodiff.StackSpec.masks = masks
    try:
        layer = _layer(kind, options, seed, **shape)
        layer.train(training)
        _compare(torch, layer, _x(L, N, seed), lengths=lengths, recorded=draws, seed=seed)
    finally:
        _autodiff.StackSpec.masks = original


# ---------------------------------------------------------------- the draws


def test_masks_rates_scaling_and_shapes(recorded):
    """One recurrent keep-mask (N, H_out) per call and layer-direction, 0 or 1/(1-p), kept
    at rate 1-p; one zoneout mask (L, N, H_out) of 0/1 at rate p."""
    layer = nn.LSTM(3, 64, num_layers=2, bidirectional=True, proj_size=32,
                    recurrent_dropout=0.3, zoneout=0.2, dtype=np.float64)
    x = np.zeros((50, 40, 3))
    rnnkit.grad(lambda m: m(x)[0].sum())(layer)
    assert len(recorded) == 4
    for draw in recorded:
        q, d = draw["recurrent_mask"], draw["zoneout_mask"]
        assert q.shape == (40, 32) and d.shape == (50, 40, 32)
        assert set(np.unique(q)) <= {0.0, 1 / 0.7}
        assert abs((q > 0).mean() - 0.7) < 0.05
        assert set(np.unique(d)) <= {0.0, 1.0}
        assert abs(d.mean() - 0.2) < 0.01
    assert not np.array_equal(recorded[0]["recurrent_mask"], recorded[1]["recurrent_mask"])


def test_seeded_loss_is_deterministic_and_matches_finite_differences():
    """With manual_seed before each forward the loss is a function of the parameters:
    its gradient equals central finite differences along random directions."""
    layer = nn.LSTM(3, 4, num_layers=2, layer_norm=True, recurrent_dropout=0.3, zoneout=0.3,
                    peepholes=True, dtype=np.float64)
    x = _x(L=6, N=3)

    def loss(m):
        rnnkit.manual_seed(11)
        out, (h, c) = m(x)
        return (out ** 2).sum() + (c * h).sum()

    value, grads = rnnkit.value_and_grad(loss)(layer)
    assert loss(layer) == value  # deterministic
    rng = np.random.default_rng(0)
    params = dict(layer.named_parameters())
    for _ in range(3):
        direction = {n: rng.standard_normal(p.shape) for n, p in params.items()}
        eps = 1e-6
        for n, p in params.items():
            p += eps * direction[n]
        up = loss(layer)
        for n, p in params.items():
            p -= 2 * eps * direction[n]
        down = loss(layer)
        for n, p in params.items():
            p += eps * direction[n]
        numeric = (up - down) / (2 * eps)
        analytic = sum((grads[n] * direction[n]).sum() for n in params)
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic))


def test_training_draws_differ_between_calls():
    layer = nn.GRU(3, 4, zoneout=0.5, dtype=np.float64)
    x = _x()
    assert not np.array_equal(layer(x)[0], layer(x)[0])
    layer.eval()
    assert np.array_equal(layer(x)[0], layer(x)[0])


# ---------------------------------------------------------------- eval semantics


@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_recurrent_dropout_does_nothing(kind):
    plain = _layer(kind, {})
    dropped = _layer(kind, {"recurrent_dropout": 0.5})
    dropped.load_state_dict(plain.state_dict())
    dropped.eval()
    x = _x()
    np.testing.assert_array_equal(dropped(x)[0], plain(x)[0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_eval_zoneout_is_the_interpolation(kind):
    """Eval zoneout, one step at a time with the plain layer's cell as h̃:
    ``h_t = p h_{t-1} + (1 - p) h̃_t``; the LSTM's c_t is not interpolated."""
    p = 0.3
    plain = _layer(kind, {})
    zoned = _layer(kind, {"zoneout": p})
    zoned.load_state_dict(plain.state_dict())
    zoned.eval()
    x = _x(L=4)
    out = zoned(x)[0]
    h = np.zeros((1, 3, 4))
    c = np.zeros((1, 3, 4))
    for t in range(4):
        if kind == "LSTM":
            _, (h_tilde, c) = plain(x[t:t + 1], (h, c))
        else:
            _, h_tilde = plain(x[t:t + 1], h)
        h = p * h + (1 - p) * h_tilde
        assert_close(out[t], h[0], rtol=1e-12, atol=1e-14, err_msg=f"step {t}")


# ---------------------------------------------------------------- parameters, repr, files


def test_default_layer_is_torch_state_dict(torch):
    for kind in KINDS:
        ours = KINDS[kind](3, 4, num_layers=2, bidirectional=True)
        theirs = getattr(torch.nn, kind)(3, 4, num_layers=2, bidirectional=True)
        assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]


def test_option_parameters_names_shapes_and_init():
    rnnkit.manual_seed(0)
    plain = nn.LSTM(3, 8, num_layers=2, bidirectional=True, proj_size=2)
    rnnkit.manual_seed(0)
    layer = nn.LSTM(3, 8, num_layers=2, bidirectional=True, proj_size=2, layer_norm=True,
                    peepholes=True)
    state = layer.state_dict()
    plain_state = plain.state_dict()
    assert list(state)[:len(plain_state)] == list(plain_state)  # torch's keys first, same draws
    for key, value in plain_state.items():
        np.testing.assert_array_equal(state[key], value)
    extra = {k: v for k, v in state.items() if k not in plain_state}
    for sfx in ["_l0", "_l0_reverse", "_l1", "_l1_reverse"]:
        np.testing.assert_array_equal(extra.pop("weight_ln_ih" + sfx), np.ones(32))
        np.testing.assert_array_equal(extra.pop("weight_ln_hh" + sfx), np.ones(32))
        np.testing.assert_array_equal(extra.pop("weight_ln_c" + sfx), np.ones(8))
        np.testing.assert_array_equal(extra.pop("bias_ln_c" + sfx), np.zeros(8))
        ph = extra.pop("weight_ph" + sfx)
        assert ph.shape == (24,) and np.all(np.abs(ph) <= 1 / np.sqrt(8)) and ph.std() > 0.05
    assert not extra
    gru = nn.GRU(3, 5, layer_norm=True, recurrent_dropout=0.2, zoneout=0.1)
    assert sorted(n for n, _ in gru.named_parameters() if "_ln_" in n) == \
        ["weight_ln_hh_l0", "weight_ln_ih_l0"]
    assert gru.weight_ln_ih_l0.shape == (15,)
    rnn = nn.RNN(3, 5, recurrent_dropout=0.2, zoneout=0.1)
    assert len(rnn.state_dict()) == 4  # dropout and zoneout add no parameters


def test_repr_shows_the_options_that_are_set():
    assert repr(nn.LSTM(3, 4, zoneout=0.25)) == "LSTM(3, 4, zoneout=0.25)"
    assert repr(nn.GRU(3, 4, layer_norm=True, recurrent_dropout=0.1)) == \
        "GRU(3, 4, layer_norm=True, recurrent_dropout=0.1)"
    assert repr(nn.LSTM(3, 4, peepholes=True)) == "LSTM(3, 4, peepholes=True)"
    assert repr(nn.RNN(3, 4)) == "RNN(3, 4)"


@pytest.mark.parametrize("kind", list(KINDS))
def test_save_and_load_module_keep_the_options(tmp_path, kind):
    layer = _layer(kind, OPTIONS["all"], num_layers=2)
    path = tmp_path / "layer.safetensors"
    rnnkit.save(layer, path)
    loaded = rnnkit.load_module(path)
    assert repr(loaded) == repr(layer)
    assert loaded.config() == layer.config()
    layer.eval()
    loaded.eval()
    x = _x()
    np.testing.assert_array_equal(loaded(x)[0], layer(x)[0])
    assert "zoneout" not in nn.GRU(3, 4).config()  # a plain layer's config is as it was


# ---------------------------------------------------------------- other calls


@pytest.mark.parametrize("kind", list(KINDS))
def test_stream_has_eval_semantics(kind):
    layer = _layer(kind, OPTIONS["all"], num_layers=2)
    x = _x(L=7)
    stream = layer.stream(batch_size=3)
    parts = np.concatenate([stream(x[:3]), stream(x[3])[None], stream(x[4:])])
    layer.eval()
    assert_close(parts, layer(x)[0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_lengths_equals_packed(kind, padding_side):
    layer = _layer(kind, OPTIONS["all"], batch_first=True)
    layer.eval()
    lengths = [2, 5, 3]
    x = np.random.default_rng(0).uniform(-1, 1, (3, 5, 3))
    out, _ = layer(x, lengths=lengths, padding_side=padding_side)
    for b, n in enumerate(lengths):
        steps = x[b, :n] if padding_side == "right" else x[b, 5 - n:]
        alone = layer(steps[None])[0][0]
        got = out[b, :n] if padding_side == "right" else out[b, 5 - n:]
        assert_close(got, alone, rtol=1e-12, atol=1e-14, err_msg=f"row {b}")


def test_unbatched_input():
    layer = _layer("LSTM", OPTIONS["all"])
    layer.eval()
    x = _x(N=1)
    out, (h, c) = layer(x[:, 0])
    out_b, (h_b, c_b) = layer(x)
    np.testing.assert_array_equal(out, out_b[:, 0])
    np.testing.assert_array_equal(h, h_b[:, 0])


@pytest.mark.parametrize("kind", list(KINDS))
def test_float32_follows_float64(kind):
    layer64 = _layer(kind, OPTIONS["all"], num_layers=2)
    layer32 = KINDS[kind](3, 4, num_layers=2, **{k: v for k, v in OPTIONS["all"].items()
                                                if kind == "LSTM" or k != "peepholes"})
    layer32.load_state_dict({k: v.astype(np.float32) for k, v in layer64.state_dict().items()})
    x = _x()
    rnnkit.manual_seed(2)
    g64 = rnnkit.grad(lambda m: (m(x)[0] ** 2).sum())(layer64)
    rnnkit.manual_seed(2)
    g32 = rnnkit.grad(lambda m: (m(x.astype(np.float32))[0] ** 2).sum())(layer32)
    for name, g in g64.items():
        assert g32[name].dtype == np.float32
        assert_close(g32[name].astype(np.float64), g, rtol=1e-3, atol=1e-4, err_msg=name)


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("value", [-0.1, 1.0, 1.5, float("nan")])
def test_probability_out_of_range(kind, name, value):
    with pytest.raises(ValueError, match=f"{name} must be a probability in \\[0, 1\\)"):
        KINDS[kind](3, 4, **{name: value})


@pytest.mark.parametrize("name", ["recurrent_dropout", "zoneout"])
@pytest.mark.parametrize("value", ["0.1", None, True, [0.1]])
def test_probability_not_a_number(name, value):
    with pytest.raises(TypeError, match=name):
        nn.LSTM(3, 4, **{name: value})


@pytest.mark.parametrize("name", ["layer_norm", "peepholes"])
@pytest.mark.parametrize("value", [1, 0, "yes", None, 1.0])
def test_flag_not_a_bool(name, value):
    with pytest.raises(TypeError, match=f"{name} must be True or False"):
        nn.LSTM(3, 4, **{name: value})


@pytest.mark.parametrize("kind", ["GRU", "RNN"])
def test_peepholes_are_the_lstms(kind):
    with pytest.raises(ValueError, match=f"peepholes=True is only supported for LSTM, not {kind}"):
        KINDS[kind](3, 4, peepholes=True)
    assert KINDS[kind](3, 4, peepholes=False).peepholes is False
