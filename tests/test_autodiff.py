"""value_and_grad / grad / no_grad semantics, dropout in training, inference memory."""

import tracemalloc

import numpy as np
import pytest
from autograd.tracer import isbox

import rnnkit
from rnnkit import _autodiff, nn
from rnnkit.nn.utils.rnn import pack_padded_sequence

from helpers import assert_close


def _loss(model, x):
    out, _ = model(x)
    return (out**2).sum()


def test_grad_accumulates_like_backward_and_dict_is_fresh(rng):
    gru = nn.GRU(2, 3, dtype=np.float64)
    x = rng.standard_normal((4, 2, 2))
    assert all(p.grad is None for p in gru.parameters())
    loss, first = rnnkit.value_and_grad(_loss)(gru, x)
    assert list(first) == [name for name, _ in gru.named_parameters()]
    for name, p in gru.named_parameters():
        assert_close(p.grad, first[name], 0, 0)
    second = rnnkit.grad(_loss)(gru, x)
    assert second is not first
    for name, p in gru.named_parameters():
        assert_close(second[name], first[name], 0, 0)
        assert_close(p.grad, 2 * first[name], 1e-15, 0)  # None -> g -> g + g
    gru.zero_grad()
    assert all(p.grad is None for p in gru.parameters())
    assert_close(loss, _loss(gru, x), 1e-15, 0)


def test_argnums_tuple_and_state_tuple(rng):
    lstm = nn.LSTM(2, 3, dtype=np.float64)
    x = rng.standard_normal((4, 2, 2))
    hx = (rng.standard_normal((1, 2, 3)), rng.standard_normal((1, 2, 3)))

    def f(model, x, hx):
        out, (h, c) = model(x, hx)
        return out.sum() + (c**2).sum()

    grads, dx, dhx = rnnkit.grad(f, argnums=(0, 1, 2))(lstm, x, hx)
    assert set(grads) == {"weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"}
    assert dx.shape == x.shape and isinstance(dhx, tuple) and dhx[1].shape == (1, 2, 3)
    # input gradient against central differences on one entry
    eps = 1e-6
    x_plus, x_minus = x.copy(), x.copy()
    x_plus[1, 0, 1] += eps
    x_minus[1, 0, 1] -= eps
    numeric = (f(lstm, x_plus, hx) - f(lstm, x_minus, hx)) / (2 * eps)
    assert_close(dx[1, 0, 1], numeric, 1e-6, 1e-8)
    only_x = rnnkit.grad(f, argnums=1)(lstm, x, hx)
    assert_close(only_x, dx, 0, 0)


def test_argnums_errors_and_non_scalar_loss(rng):
    gru = nn.GRU(2, 3)
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)
    with pytest.raises(ValueError, match="argnums=3 asks for argument 3, but the function got 2"):
        rnnkit.grad(_loss, argnums=3)(gru, x)
    with pytest.raises(ValueError, match=r"must return a scalar loss, got an array of shape "
                                         r"\(4, 2, 3\)"):
        rnnkit.grad(lambda m, x: m(x)[0])(gru, x)


def test_plain_numpy_on_traced_values_is_a_clear_error(rng):
    gru = nn.GRU(2, 3, num_layers=1, bidirectional=True)
    x = rng.standard_normal((4, 2, 2)).astype(np.float32)

    def f(model, x):
        _, h = model(x)
        return np.concatenate([h[0], h[1]], axis=1).sum()

    with pytest.raises(TypeError, match=r"numpy\.concatenate was called on a value that rnnkit "
                                        r"is differentiating.*rnnkit\.numpy\.concatenate"):
        rnnkit.grad(f)(gru, x)
    with pytest.raises(TypeError, match="rnnkit.numpy"):
        rnnkit.grad(lambda m, x: np.asarray(m(x)[0]).sum())(gru, x)

    import rnnkit.numpy as rnp

    def g(model, x):
        _, h = model(x)
        return rnp.concatenate([h[0], h[1]], axis=1).sum()

    grads = rnnkit.grad(g)(gru, x)
    assert np.any(grads["weight_hh_l0_reverse"] != 0)


def test_no_grad_inside_a_trace_stops_the_gradient(rng):
    rnn = nn.RNN(2, 3, dtype=np.float64)
    x = rng.standard_normal((4, 2, 2))

    def f(model, x):
        with rnnkit.no_grad():
            frozen, _ = model(x)
        out, _ = model(x)
        assert not isbox(frozen)
        return (out * frozen).sum()

    grads = rnnkit.grad(f)(rnn, x)
    # d/dW sum(out * frozen) treats frozen as a constant: equals grad of sum(out * c)
    c, _ = rnn(x)
    expected = rnnkit.grad(lambda m, x: (m(x)[0] * c).sum())(rnn, x)
    for name in grads:
        assert_close(grads[name], expected[name], 1e-13, 1e-15)


def _extra_peak(layer, x):
    """Peak bytes allocated during an inference call, beyond its output."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        out, _ = layer(x)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak - out.nbytes


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_inference_memory_does_not_grow_with_sequence_length(kind):
    rnnkit.manual_seed(0)
    layer = getattr(nn, kind)(8, 32, dtype=np.float64)
    # both past the one-call stack (whose small calls allocate nothing beyond their
    # outputs: test_small_stack), so that one route is compared with itself
    short = np.zeros((1024, 4, 8))
    long = np.zeros((4096, 4, 8))
    layer(short)  # warm caches (kernel compilation etc.) outside the measurement; the
    layer(long)   # long call runs on both cores, through functions of its own
    extra_short, extra_long = _extra_peak(layer, short), _extra_peak(layer, long)
    out_long = 4096 * 4 * 32 * 8
    # a history of gates would cost several outputs' worth; allow only small noise
    assert extra_long < extra_short + 0.05 * out_long, (extra_short, extra_long)
    with rnnkit.no_grad():
        assert _extra_peak(layer, long) < extra_short + 0.05 * out_long


def test_dropout_between_layers_is_seeded_and_routes_gradients(rng):
    p = 0.4
    rnnkit.manual_seed(7)
    lstm = nn.LSTM(3, 5, num_layers=2, dropout=p, dtype=np.float64)
    x = rng.standard_normal((6, 2, 3))

    rnnkit.manual_seed(11)
    loss_a, grads_a = rnnkit.value_and_grad(_loss)(lstm, x)
    rnnkit.manual_seed(11)
    loss_b, grads_b = rnnkit.value_and_grad(_loss)(lstm, x)
    assert loss_a == loss_b
    for name in grads_a:
        np.testing.assert_array_equal(grads_a[name], grads_b[name])

    # the same computation by hand: layer 0, an explicit inverted-dropout mask, layer 1
    bottom = nn.LSTM(3, 5, dtype=np.float64)
    top = nn.LSTM(5, 5, dtype=np.float64)
    state = lstm.state_dict()
    bottom.load_state_dict({k: v for k, v in state.items() if k.endswith("_l0")})
    top.load_state_dict({k.replace("_l1", "_l0"): v for k, v in state.items()
                         if k.endswith("_l1")})
    rnnkit.manual_seed(11)
    keep = rnnkit.default_generator().random((6, 2, 5)) >= p
    mask = keep / (1 - p)

    def by_hand(bottom, x):
        out0, _ = bottom(x)
        out1, _ = top(out0 * mask)
        return (out1**2).sum()

    loss_c, grads_c = rnnkit.value_and_grad(by_hand)(bottom, x)
    assert_close(loss_a, loss_c, 1e-13, 0)
    for name in grads_c:
        assert_close(grads_a[name], grads_c[name], 1e-12, 1e-14, name)
    assert 0 < keep.mean() < 1

    # dropped units pass no gradient: d loss / d out0 is zero exactly where the mask is
    def wrt_out0(_, out0):
        out1, _ = top(out0 * mask)
        return (out1**2).sum()

    d_out0 = rnnkit.grad(wrt_out0, argnums=1)(None, bottom(x)[0])
    assert np.all(d_out0[~keep] == 0) and np.all(d_out0[keep] != 0)

    # eval mode: no dropout at all, deterministic
    lstm.eval()
    out_1, _ = lstm(x)
    out_2, _ = lstm(x)
    np.testing.assert_array_equal(out_1, out_2)
    lstm.train()
    rnnkit.manual_seed(1)
    out_3, _ = lstm(x)
    assert not np.allclose(out_1, out_3)


def test_gradient_flows_through_packing_indexing_and_methods(rng):
    lstm = nn.LSTM(2, 3, num_layers=2, bidirectional=True, dtype=np.float64)
    x = rng.standard_normal((3, 5, 2))  # batch_first
    lengths = [2, 5, 3]

    def f(model, x):
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        _, (h_n, c_n) = model(packed)
        last = h_n[-1].reshape(3, 3).transpose()  # (3, 3)
        return last.mean() + c_n[0].sum() * 0.5

    grads, dx = rnnkit.grad(f, argnums=(0, 1))(lstm, x)
    assert all(np.all(np.isfinite(g)) for g in grads.values())
    # steps past a sequence's length do not influence anything
    assert np.all(dx[0, 2:] == 0) and np.all(dx[2, 3:] == 0)
    assert np.all(dx[1] != 0)


def _graph(step, *args):
    """``(primitives, reached)`` of ``step(*args)``: the primitives autograd records while it
    runs, by name, and the kinds of the nodes the backward pass walks (a primitive by its
    name; the stack's hand-built node "stack", each of its outputs "stack output")."""
    import collections
    import functools

    import autograd.core as core
    from autograd.util import toposort

    primitives, recorded, walked = collections.Counter(), {}, []
    original_init, original_backward = core.VJPNode.__init__, _autodiff.backward_pass

    def record(self, value, fun, *rest):
        original_init(self, value, fun, *rest)
        primitives[fun.__name__] += 1
        recorded[id(self)] = fun.__name__

    def backward(g, end_node):
        walked.extend(toposort(end_node))
        return original_backward(g, end_node)

    def kind(node):
        if id(node) in recorded:
            return recorded[id(node)]
        if not node.parents:
            return "root"
        vjp = node.vjp
        if isinstance(vjp, functools.partial) and vjp.func is _autodiff._output_vjp:
            return "stack output"
        return "stack"

    core.VJPNode.__init__, _autodiff.backward_pass = record, backward
    try:
        step(*args)
    finally:
        core.VJPNode.__init__, _autodiff.backward_pass = original_init, original_backward
    return primitives, collections.Counter(map(kind, walked))


def test_training_step_graph_is_small():
    """A layer's training step records the stack (one node, reading its weights straight
    from the traced parameter dict), the output the loss reads and the loss: no node per
    weight, none for the outputs nobody reads (h_n, c_n)."""
    lstm = nn.LSTM(10, 20, num_layers=2, bidirectional=True)
    x = np.ones((5, 3, 10), np.float32)
    primitives, reached = _graph(rnnkit.value_and_grad(lambda m: m(x)[0].sum()), lstm)
    assert primitives == {"sum": 1}
    assert reached == {"root": 1, "stack": 1, "stack output": 1, "sum": 1}
    # reading h_n as well adds its output node and the loss's sum: still one stack
    primitives, reached = _graph(
        rnnkit.value_and_grad(lambda m: (lambda o, s: o.sum() + s[0].sum())(*m(x))), lstm)
    assert reached["stack"] == 1 and reached["stack output"] == 2


def test_partial_gradients_add_key_by_key(rng):
    """The stack's partial gradient dict and a second use of one of its weights (a lookup
    of its own) add up; a parameter nothing reads gets zeros, keyed like
    named_parameters."""
    class Model(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 4, dtype=np.float64)
            self.unused = nn.Linear(2, 2, dtype=np.float64)

    model = Model()
    x = rng.standard_normal((5, 2, 3))
    only_stack = rnnkit.grad(lambda m: m.gru(x)[0].sum())(model)
    both = rnnkit.grad(lambda m: m.gru(x)[0].sum() + (m.gru.weight_hh_l0 ** 2).sum())(model)
    assert list(both) == [name for name, _ in model.named_parameters()]
    w = np.asarray(model.gru.weight_hh_l0)
    assert_close(both["gru.weight_hh_l0"], only_stack["gru.weight_hh_l0"] + 2 * w)
    for name in ("gru.weight_ih_l0", "gru.bias_hh_l0"):
        np.testing.assert_array_equal(both[name], only_stack[name])
    for name in ("unused.weight", "unused.bias"):
        p = dict(model.named_parameters())[name]
        assert both[name].shape == p.shape and both[name].dtype == p.dtype
        assert not both[name].any()


def test_a_parameter_held_twice_gets_both_uses_gradient(rng, torch):
    """Weight tying: a parameter assigned to two modules is listed once (under its first
    name, as torch's named_parameters) and its gradient sums both uses, as torch's."""
    class Tied(nn.Module):
        def __init__(self, lib):
            super().__init__()
            self.a = lib.nn.GRU(3, 3, dtype=np.float64) if lib is rnnkit else \
                lib.nn.GRU(3, 3, dtype=torch.float64)
            self.b = lib.nn.GRU(3, 3, dtype=np.float64) if lib is rnnkit else \
                lib.nn.GRU(3, 3, dtype=torch.float64)
            self.b.weight_hh_l0 = self.a.weight_hh_l0

        def forward(self, x):
            return (self.b(self.a(x)[0])[0] ** 2).sum()

    ours = Tied(rnnkit)
    assert [n for n, _ in ours.named_parameters()].count("a.weight_hh_l0") == 1
    assert "b.weight_hh_l0" not in dict(ours.named_parameters())

    class TorchTied(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.a = torch.nn.GRU(3, 3, dtype=torch.float64)
            self.b = torch.nn.GRU(3, 3, dtype=torch.float64)
            self.b.weight_hh_l0 = self.a.weight_hh_l0

        def forward(self, x):
            return (self.b(self.a(x)[0])[0] ** 2).sum()

    theirs = TorchTied()
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in
                            ours.state_dict().items()}, strict=False)
    assert set(dict(theirs.named_parameters())) == set(dict(ours.named_parameters()))
    x = rng.standard_normal((4, 2, 3))
    loss, grads = rnnkit.value_and_grad(lambda m: m(x))(ours)
    expected = theirs(torch.from_numpy(x))
    expected.backward()
    assert_close(loss, expected.item(), 1e-12, 0)
    for name, p in theirs.named_parameters():
        assert_close(grads[name], p.grad.numpy(), 1e-10, 1e-12)


def test_grad_of_grad_through_a_layer_is_refused(rng):
    """The layers' backward is a fused kernel, not traced code: a second derivative
    through one is a clear NotImplementedError, not a silently wrong number."""
    gru = nn.GRU(2, 3, dtype=np.float64)
    x = rng.standard_normal((4, 2, 2))

    def inner(x):
        return rnnkit.grad(lambda x: gru(x)[0].sum())(x).sum()

    with pytest.raises(NotImplementedError, match="differentiated twice"):
        rnnkit.grad(inner)(x)


def test_forward_mode_through_a_layer_is_refused(rng):
    """Only reverse mode reaches the layers' fused backward: autograd's forward mode
    (make_jvp) through one is a clear NotImplementedError."""
    import autograd

    gru = nn.GRU(2, 3, dtype=np.float64)
    x = rng.standard_normal((4, 2, 2))
    with pytest.raises(NotImplementedError, match="reverse-mode derivatives only"):
        autograd.make_jvp(lambda x: gru(x)[0].sum())(x)(np.ones_like(x))


def test_a_training_step_reads_the_module_weights_in_place(rng, monkeypatch):
    """A small module's training steps run on its own compiled stack over its flat buffer
    (made once, never a copy of the weights per step), and see in-place updates."""
    from rnnkit import _ops

    made = []
    original = _ops.SmallStack.__init__

    def counting(self, *args, **kwargs):
        made.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(_ops.SmallStack, "__init__", counting)
    lstm = nn.LSTM(4, 5, num_layers=2, dtype=np.float64)
    x = rng.standard_normal((3, 2, 4))
    step = rnnkit.value_and_grad(lambda m: (m(x)[0] ** 2).sum())
    first, _ = step(lstm)
    for _ in range(3):
        step(lstm)
    assert len(made) == 1
    lstm.weight_hh_l1[...] *= 0.5
    assert step(lstm)[0] != first and len(made) == 1
    # a replaced parameter leaves the buffer: the steps copy, and still train it
    lstm.weight_ih_l0 = nn.Parameter(np.ones((20, 4)))
    lstm.zero_grad()
    _, grads = step(lstm)
    assert len(made) == 2
    assert lstm.weight_ih_l0.grad is not None and grads["weight_ih_l0"].any()


def test_parameter_list_follows_every_change(rng):
    """named_parameters (kept between calls) follows assignment, deletion, direct edits of
    _parameters and submodules, and each copy lists its own parameters."""
    import copy
    import pickle

    model = nn.Sequential(nn.Linear(2, 3), nn.Linear(3, 1))
    names = [n for n, _ in model.named_parameters()]
    assert names == ["0.weight", "0.bias", "1.weight", "1.bias"]
    new = nn.Parameter(np.zeros((3, 2), np.float32))
    model[0].weight = new
    assert dict(model.named_parameters())["0.weight"] is new
    del model[1].bias
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "1.weight"]
    other = nn.Parameter(np.ones(1, np.float32))
    model[1]._parameters["bias"] = other
    assert dict(model.named_parameters())["1.bias"] is other
    model[1] = nn.Linear(3, 4)
    assert dict(model.named_parameters())["1.weight"].shape == (4, 3)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        mine, theirs = dict(model.named_parameters()), dict(clone.named_parameters())
        assert list(mine) == list(theirs)
        for name in mine:
            assert theirs[name] is not mine[name]
            np.testing.assert_array_equal(theirs[name], mine[name])
        grads = rnnkit.grad(lambda m: m(np.ones((2, 2), np.float32)).sum())(clone)
        assert all(dict(clone.named_parameters())[n].grad is not None for n in grads)
        assert all(p.grad is None for p in model.parameters())
