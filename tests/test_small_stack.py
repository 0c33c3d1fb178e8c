"""Small calls run every layer and direction in one compiled call (``_kernels/stack.py``):
the same results as the layer-by-layer path, on every mode and option; and the
layers and cells take it when a call is small and nothing is traced."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import rnnkit
from rnnkit import _autodiff, _ops, nn

from helpers import draw_lengths, run_python, stack_args

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}
MODES = ["LSTM", "GRU", "RNN_TANH", "RNN_RELU"]


def _compare(mode, num_layers, D, I, H, P, bias, L, N, lengths, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x, h_0, c_0, flat, batch_sizes = stack_args(rng, mode, num_layers, D, I, H, P, bias, L,
                                                N, lengths, dtype)
    spec = _autodiff.StackSpec(mode, num_layers, D, 0.0, False, batch_sizes, bias, P != H)
    expected = _autodiff._stack_forward(spec, x, h_0, c_0, flat, keep=False)[:3]
    stack = _ops.SmallStack(mode, flat, num_layers, D, bias, P != H)
    got = stack.run(x, h_0, c_0, batch_sizes)
    again = stack.run(x, h_0, c_0, batch_sizes, pack=False)  # a stream's later chunks
    for name, a, b, c in zip(("output", "h_n", "c_n"), got, expected, again, strict=True):
        if b is None:
            assert a is None and c is None, name
            continue
        assert a.shape == b.shape and a.dtype == b.dtype, name
        np.testing.assert_allclose(a, b, err_msg=f"{mode} {name}", **TOL[dtype])
        np.testing.assert_array_equal(c, a, err_msg=f"{mode} {name}, panels kept")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("D", [1, 2])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_small_stack_equals_layer_by_layer(dtype, mode, D, packed):
    lengths = [5, 5, 3, 1] if packed else None
    _compare(mode, 2, D, 7, 6, 6, True, 5, 4, lengths, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("D", [1, 2])
def test_small_stack_lstm_with_projection_and_no_bias(dtype, D):
    _compare("LSTM", 3, D, 5, 8, 3, False, 6, 3, None, dtype)


@settings(max_examples=25, deadline=None)
@given(mode=st.sampled_from(MODES), num_layers=st.integers(1, 3), D=st.integers(1, 2),
       I=st.integers(1, 9), H=st.integers(1, 19), L=st.integers(1, 7), N=st.integers(1, 8),
       bias=st.booleans(), proj=st.booleans(), data=st.data())
def test_small_stack_equals_layer_by_layer_everywhere(mode, num_layers, D, I, H, L, N, bias,
                                                      proj, data):
    P = data.draw(st.integers(1, H)) if proj and mode == "LSTM" and H > 1 else H
    lengths = draw_lengths(data, L, N)
    _compare(mode, num_layers, D, I, H, P, bias, L, N, lengths, np.float64,
             seed=data.draw(st.integers(0, 2**16)))


class _layer_by_layer:
    """Within it, ``module``'s calls take the layer-by-layer path (no compiled stack): no
    call is small, and the plans its calls made before are put aside until the end."""

    def __init__(self, module):
        self.module = module

    def __enter__(self):
        self.saved = _ops._SMALL_FLOPS
        _ops._SMALL_FLOPS = 0
        self.plans = self.module.__dict__.pop("_plans", None)

    def __exit__(self, *exc):
        _ops._SMALL_FLOPS = self.saved
        self.module.__dict__.pop("_plans", None)
        if self.plans is not None:
            self.module.__dict__["_plans"] = self.plans


def test_layers_and_cells_take_the_compiled_stack_when_small(monkeypatch):
    runs = []
    run = _ops.SmallStack.run
    monkeypatch.setattr(_ops.SmallStack, "run",
                        lambda self, *a, **k: runs.append(self.mode) or run(self, *a, **k))
    rng = np.random.default_rng(0)
    lstm = nn.LSTM(10, 20, num_layers=2)
    x = rng.standard_normal((5, 3, 10)).astype(np.float32)
    with rnnkit.no_grad():
        lstm(x)
        nn.GRUCell(10, 20)(x[0])
    assert len(runs) == 2
    lstm(x)  # nothing traced: inference, as under no_grad
    assert len(runs) == 3
    grads = rnnkit.grad(lambda m, x: m(x)[0].sum())(lstm, x)  # traced: stack_train, not run
    assert len(runs) == 3 and set(grads) == set(dict(lstm.named_parameters()))
    big = nn.LSTM(256, 256)
    with rnnkit.no_grad():
        big(rng.standard_normal((100, 64, 256)).astype(np.float32))
    assert len(runs) == 3  # too large: the row-split engine
    lstm.train()
    lstm.dropout = 0.5
    with rnnkit.no_grad():
        lstm(x)  # dropout between layers in training mode: the layer path draws it
    assert len(runs) == 3


@pytest.mark.parametrize("make", [lambda: nn.LSTM(4, 6, num_layers=2, proj_size=3),
                                  lambda: nn.GRU(4, 6, bidirectional=True),
                                  lambda: nn.RNNCell(4, 6)], ids=["lstm", "gru", "cell"])
def test_parameters_live_in_one_buffer_that_small_calls_read(make):
    # the module's parameters are views of one flat buffer (torch's flat weights): small
    # calls read it with no copy, so in-place updates must show; a replaced parameter
    # or a copy of the module leaves the buffer, and calls copy the weights instead
    import copy
    import pickle

    layer = make()
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    x = x[0] if isinstance(layer, nn.RNNCell) else x
    params = dict(layer.named_parameters())
    assert all(p.base is layer._buffer for p in params.values())
    stack = layer._small_stack()
    assert stack is not None and stack.weights is layer._buffer

    def run(module):
        with rnnkit.no_grad():
            out = module(x)
        return out if isinstance(out, np.ndarray) else out[0]

    def reference(module):  # the layer-by-layer path: no compiled stack
        with _layer_by_layer(module):
            return run(module)

    before = run(layer)
    np.testing.assert_allclose(before, reference(layer), rtol=2e-5, atol=2e-6)
    name = next(iter(params))
    params[name] -= 0.5  # in place, as optimizers update
    after = run(layer)
    assert not np.allclose(after, before)
    np.testing.assert_allclose(after, reference(layer), rtol=2e-5, atol=2e-6)
    for twin in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        assert twin._small_stack() is None
        np.testing.assert_allclose(run(twin), after, rtol=2e-5, atol=2e-6)
    setattr(layer, name, nn.Parameter(params[name] + 1.0))  # replaced: not in the buffer
    assert layer._small_stack() is None
    np.testing.assert_allclose(run(layer), reference(layer), rtol=2e-5, atol=2e-6)
    assert not np.allclose(run(layer), after)


def _call(module, x, hx=None):
    out = module(x, hx)
    return out if isinstance(out, tuple) else (out,)


def _flat(result):
    """A call's arrays, in order: output, h_n, c_n (nested tuples opened)."""
    out = []
    for r in result:
        out.extend(_flat(r) if isinstance(r, tuple) else [r])
    return out


def _same_as_layer_by_layer(module, x, hx=None):
    got = _flat(_call(module, x, hx))
    with _layer_by_layer(module):
        expected = _flat(_call(module, x, hx))
    assert len(got) == len(expected)
    for a, b in zip(got, expected, strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6)
    return got


@pytest.mark.parametrize("make,shape", [
    (lambda: nn.LSTM(4, 6, num_layers=2), (3, 2, 4)),
    (lambda: nn.GRU(4, 6, batch_first=True, bidirectional=True), (2, 3, 4)),
    (lambda: nn.RNN(4, 6, nonlinearity="relu"), (3, 2, 4)),
    (lambda: nn.LSTMCell(4, 6), (2, 4)),
    (lambda: nn.GRUCell(4, 6), (2, 4)),
], ids=["lstm", "gru-bf-bi", "rnn", "lstm-cell", "gru-cell"])
def test_planned_calls_check_once_and_follow_every_change(make, shape, monkeypatch):
    """A small call on plain arrays is checked once per (shapes, dtypes, flags); later calls
    with the same key skip the checks, and every change a call can see still shows:
    in-place updates, load_state_dict, a replaced parameter, given states, train/eval
    with dropout, and bad input after a plan exists still gets its error."""
    module = make()
    cls = type(module)
    checks = []
    check = cls._check_input
    monkeypatch.setattr(cls, "_check_input",
                        lambda self, *a: checks.append(1) or check(self, *a))
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    first = _same_as_layer_by_layer(module, x)
    n = len(checks)
    again = _flat(_call(module, x))
    assert len(checks) == n  # planned: no second check
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    # a new shape is a new plan, checked once
    x2 = rng.standard_normal((shape[0] + 1,) + shape[1:]).astype(np.float32)
    _same_as_layer_by_layer(module, x2)
    assert len(checks) > n
    # in-place updates (an optimizer's step) and load_state_dict
    p = next(iter(module.parameters()))
    p -= 0.25
    changed = _same_as_layer_by_layer(module, x)
    assert not np.allclose(changed[0], first[0])
    state = {k: v * 0.5 for k, v in module.state_dict().items()}
    module.load_state_dict(state)
    _same_as_layer_by_layer(module, x)
    # given states, then the zero states again (they were never written)
    cell = isinstance(module, nn.RNNCellBase)
    lstm = module.mode == "LSTM"
    if cell:
        h = rng.standard_normal((shape[0], 6)).astype(np.float32)
    else:
        D = 2 if module.bidirectional else 1
        h = rng.standard_normal((module.num_layers * D, x.shape[0 if module.batch_first
                                                              else 1], 6)).astype(np.float32)
    hx = (h, h * 0.5) if lstm else h
    _same_as_layer_by_layer(module, x, hx)
    _same_as_layer_by_layer(module, x)
    # bad input after the plans exist: the general route's errors
    with pytest.raises(TypeError, match="float32"):
        module(x.astype(np.float64))
    bad = (h[..., :5], h) if lstm else h[..., :5]
    with pytest.raises(ValueError, match="hidden_size|proj_size"):
        module(x, bad)
    # a replaced parameter leaves the buffer: the call still sees it
    name = next(iter(dict(module.named_parameters())))
    setattr(module, name, nn.Parameter(np.asarray(getattr(module, name)) + 0.5))
    _same_as_layer_by_layer(module, x)
    if not cell and module.num_layers > 1:  # dropout in training: the layer path draws it
        module.dropout = 0.5
        module.train()
        with rnnkit.no_grad():
            rnnkit.manual_seed(3)
            drawn = module(x)[0]
        module.eval()
        _same_as_layer_by_layer(module, x)
        assert not np.allclose(drawn, module(x)[0])


def test_threads_share_a_modules_stack():
    """Calls from several threads on one module, right after its weights changed in place,
    all see the new weights (each packs, or waits for nothing, never reads half-packed
    panels as current)."""
    from concurrent.futures import ThreadPoolExecutor

    lstm = nn.LSTM(8, 16, num_layers=2)
    x = np.random.default_rng(0).standard_normal((6, 3, 8)).astype(np.float32)
    for round_ in range(20):
        for p in lstm.parameters():
            p *= 0.99  # in place
        with _layer_by_layer(lstm):
            expected = lstm(x)[0]
        with ThreadPoolExecutor(4) as pool:
            outs = list(pool.map(lambda _: lstm(x)[0], range(16)))
        for out in outs:
            np.testing.assert_allclose(out, expected, rtol=2e-5, atol=2e-6,
                                       err_msg=f"round {round_}")


@pytest.mark.parametrize("options", [dict(layer_norm=True), dict(zoneout=0.1),
                                     dict(peepholes=True)], ids=["ln", "zoneout", "peep"])
def test_small_layers_with_cell_options_take_their_own_kernels(options):
    """A small layer with cell options has no compiled stack (its kernels are apart): its
    training steps and calls run, and every parameter gets a gradient."""
    lstm = nn.LSTM(4, 5, num_layers=2, **options)
    assert lstm._small_stack() is None
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(np.float32)
    grads = rnnkit.grad(lambda m: m(x)[0].sum())(lstm)
    assert set(grads) == set(dict(lstm.named_parameters()))
    assert all(np.isfinite(g).all() for g in grads.values())
    lstm.eval()
    assert lstm(x)[0].shape == (3, 2, 5)


_ALLOCATIONS = """
import json, tracemalloc
import numpy as np
from numba.core.runtime import rtsys
import rnnkit

counts, extra = {}, {}
for name, make, shape in [
        ("lstm-1", lambda: rnnkit.nn.LSTM(10, 20), (1, 3, 10)),
        ("lstm-3-bi-long", lambda: rnnkit.nn.LSTM(10, 20, 3, bidirectional=True), (40, 3, 10)),
        ("lstm-proj-bf", lambda: rnnkit.nn.LSTM(10, 20, 2, batch_first=True, proj_size=5),
         (3, 7, 10)),
        ("gru-2", lambda: rnnkit.nn.GRU(10, 20, 2), (5, 3, 10)),
        ("rnn-bi", lambda: rnnkit.nn.RNN(10, 20, bidirectional=True), (5, 3, 10)),
        ("lstm-cell", lambda: rnnkit.nn.LSTMCell(10, 20), (3, 10))]:
    module = make()
    x = np.ones(shape, np.float32)
    module(x), module(x)  # compiled, planned, scratch made
    for _ in range(2):  # the second: tracemalloc's own first-use costs are paid
        before = rtsys.get_allocation_stats().alloc
        tracemalloc.start()
        result = module(x)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        counts[name] = rtsys.get_allocation_stats().alloc - before
    arrays = [result[0], *result[1]] if isinstance(result[1], tuple) else list(result)
    extra[name] = peak - sum(a.nbytes for a in arrays)
print(json.dumps([counts, extra]))
"""


def test_small_calls_allocate_nothing_beyond_their_outputs():
    """Once a shape has been called, a small call allocates its results and nothing else:
    beyond the outputs' bytes tracemalloc sees only Python objects (array headers,
    tuples: under 4 KB, the same for one layer and one step as for three bidirectional
    layers and forty steps), and numba's runtime allocates no buffers: its count is the
    same constant for every mode, depth, direction, length and layout (the wrappers of
    the arrays handed to the compiled stack), where a buffer per layer-direction or per
    step would show."""
    import json

    stdout = run_python(_ALLOCATIONS, 600, NUMBA_NRT_STATS="1")
    counts, extra = json.loads(stdout.splitlines()[-1])
    assert len(set(counts.values())) == 1, counts
    assert max(extra.values()) < 4096, extra
    assert extra["lstm-1"] == extra["lstm-3-bi-long"], extra
