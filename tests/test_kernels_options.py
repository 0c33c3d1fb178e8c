"""The compiled cell options (``rnnkit._ops_options``, kernels ``_kernels/options_*.py``)
against their plain-NumPy oracle ``rnnkit._reference_options``.

Forward (output, h_n, c_n), inference (``keep=False``) and every gradient, the options'
own (``doptions``) included, for LSTM (with and without projection), GRU, RNN tanh/relu;
each option alone and combined (``test_reference_options``'s option sets); padded and
packed, forward and reverse; float64 to ~1e-10, float32 against the float64 oracle to
~1e-4; without biases; N = 1, L = 1, H = 1; hypothesis-drawn shapes; inference over
chunks of steps and two row groups; and the kernels run as Python under
``NUMBA_DISABLE_JIT`` in a subprocess.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings

from rnnkit import _ops, _ops_options, _reference, _reference_options
from test_reference_options import (
    COMMON_OPTIONS,
    LAYOUTS,
    LSTM_OPTIONS,
    MODES,
    _bias_sum,
    _drawn_cases,
    _make_case,
)

from helpers import run_python

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-4)}


def _run(impl, case, reverse, keep=True, x=None):
    """Forward (keep) then backward of ``impl``: ``(forward results without saved,
    backward results, saved)``; with ``keep=False`` the forward only."""
    c, bs, opts = case, case["batch_sizes"], case["options"]
    x = c["x"] if x is None else x
    if c["kind"] == "LSTM":
        *fwd, saved = impl.lstm_forward(x, c["h_0"], c["c_0"], c["w_ih"], c["w_hh"],
                                        _bias_sum(c), c["w_hr"], bs, reverse, keep=keep, **opts)
        if keep:
            back = impl.lstm_backward(x, c["w_ih"], c["w_hh"], c["w_hr"], saved, c["d_output"],
                                      c["dh_n"], c["dc_n"], bs, reverse, **opts)
    elif c["kind"] == "GRU":
        *fwd, saved = impl.gru_forward(x, c["h_0"], c["w_ih"], c["w_hh"], c["b_ih"], c["b_hh"],
                                       bs, reverse, keep=keep, **opts)
        if keep:
            back = impl.gru_backward(x, c["w_ih"], c["w_hh"], saved, c["d_output"], c["dh_n"],
                                     bs, reverse, **opts)
    else:
        *fwd, saved = impl.rnn_forward(x, c["h_0"], c["w_ih"], c["w_hh"], _bias_sum(c),
                                       c["nonlinearity"], bs, reverse, keep=keep, **opts)
        if keep:
            back = impl.rnn_backward(x, c["w_ih"], c["w_hh"], saved, c["d_output"], c["dh_n"],
                                     c["nonlinearity"], bs, reverse, **opts)
    if not keep:
        assert saved is None  # inference keeps nothing
        return fwd, None, None
    return fwd, back, saved


def _close(actual, expected, dtype, what):
    if expected is None:
        assert actual is None, what
        return
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == dtype, f"{what}: dtype {actual.dtype}"
    np.testing.assert_allclose(actual, expected, err_msg=what, **TOL[dtype])


def _compare(case, reverse, dtype=np.float64, oracle=None):
    """The compiled forward, inference and backward against the oracle's (``oracle``: the
    case the oracle runs, by default ``case`` itself)."""
    fwd, back, _ = _run(_ops_options, case, reverse)
    r_fwd, r_back, _ = _run(_reference_options, oracle or case, reverse)
    inf, _, _ = _run(_ops_options, case, reverse, keep=False)
    for i, (a, b, c) in enumerate(zip(fwd, r_fwd, inf, strict=True)):
        _close(a, b, dtype, f"forward result {i}")
        _close(c, b, dtype, f"inference result {i}")
    assert len(back) == len(r_back)
    for i, (a, b) in enumerate(zip(back[:-1], r_back[:-1], strict=True)):
        _close(a, b, dtype, f"backward result {i}")
    doptions, r_doptions = back[-1], r_back[-1]
    assert sorted(doptions) == sorted(r_doptions), "an option's gradient is missing or extra"
    for name in r_doptions:
        _close(doptions[name], r_doptions[name], dtype, f"d{name}")
    return fwd, back


def _option_sets(mode):
    return COMMON_OPTIONS + (LSTM_OPTIONS if MODES[mode][0] == "LSTM" else [])


def _all_options(mode, zoneout="zoneout"):
    """Every option of ``mode`` on, with training (``zoneout``) or eval (``zoneout_eval``)
    zoneout."""
    options = ("layer_norm", "recurrent_dropout", zoneout)
    return options + (("peepholes",) if MODES[mode][0] == "LSTM" else ())


def _cases():
    for mode in MODES:
        for options in _option_sets(mode):
            for layout in LAYOUTS:
                yield pytest.param(mode, options, layout, id=f"{mode}-{'+'.join(options)}-{layout}")


@pytest.mark.parametrize(("mode", "options", "layout"), list(_cases()))
def test_matches_reference(mode, options, layout):
    packed, reverse = LAYOUTS[layout]
    case = _make_case(mode, 5, 4, 3, 3, options, [5, 3, 3, 1] if packed else None, proj=2)
    inputs = {k: v.copy() for k, v in case.items() if isinstance(v, np.ndarray)}
    _compare(case, reverse)
    for k, v in inputs.items():  # nothing the caller passed is written
        np.testing.assert_array_equal(case[k], v, err_msg=f"{k} was modified")


@pytest.mark.parametrize("mode", list(MODES))
def test_without_bias(mode):
    """``bias=False``: the kernels add no bias; layer norm's γ (and β_c) stay."""
    case = _make_case(mode, 4, 3, 2, 3, _all_options(mode), [4, 2, 1], bias=False, seed=1)
    _compare(case, reverse=True)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("zoneout", ["zoneout", "zoneout_eval"])
def test_float32_against_float64_reference(mode, zoneout):
    options = _all_options(mode, zoneout)
    narrow, wide = (_make_case(mode, 6, 4, 3, 5, options, [6, 4, 4, 2], seed=2, dtype=d)
                    for d in (np.float32, np.float64))
    fwd, back = _compare(narrow, True, np.float32, oracle=wide)
    assert all(a is None or a.dtype == np.float32 for a in [*fwd, *back[:-1]])


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize(("L", "N", "H"), [(1, 3, 4), (4, 1, 4), (4, 3, 1)],
                         ids=["L1", "N1", "H1"])
def test_edge_shapes(mode, L, N, H):
    """One step, one row, one unit (H = 1: the RNN's layer norm of one entry is 0)."""
    case = _make_case(mode, L, N, 2, H, _all_options(mode), None, proj=1, seed=3)
    _compare(case, reverse=False)


@pytest.mark.parametrize("mode", list(MODES))
def test_every_option_off_is_the_plain_kernel(mode):
    """All options None: ``_ops``'s results, an empty ``doptions``, and the plain
    reference's values."""
    case = _make_case(mode, 5, 3, 2, 4, (), [5, 4, 2], seed=4)
    fwd, back = _compare(case, reverse=False)
    assert back[-1] == {}
    plain_fwd, plain_back, _ = _run(_ops, case, False)
    for a, b in zip([*fwd, *back[:-1]], [*plain_fwd, *plain_back], strict=True):
        if b is not None:
            np.testing.assert_array_equal(a, b)
    r_fwd, _, _ = _run(_reference, case, False)
    _close(fwd[0], r_fwd[0], np.float64, "output against _reference")


@pytest.mark.parametrize("mode", list(MODES))
def test_non_contiguous_input(mode):
    """``x`` as a transposed view (batch-first data): the same results as a copy."""
    case = _make_case(mode, 5, 3, 4, 3, _all_options(mode), [5, 3, 2], seed=5)
    x_view = np.ascontiguousarray(case["x"].transpose(1, 0, 2)).transpose(1, 0, 2)
    assert not x_view.flags.c_contiguous
    fwd, back, _ = _run(_ops_options, case, True, x=x_view)
    r_fwd, r_back, _ = _run(_reference_options, case, True)
    _close(fwd[0], r_fwd[0], np.float64, "output")
    _close(back[0], r_back[0], np.float64, "dx")
    _close(back[3], r_back[3], np.float64, "dw_ih")


@pytest.mark.parametrize("mode", ["LSTM-proj", "GRU", "RNN-relu"])
@pytest.mark.parametrize("split", [False, True], ids=["one-group", "two-row-groups"])
@pytest.mark.parametrize("zoneout", ["zoneout", "zoneout_eval"])
def test_inference_in_chunks_and_row_groups(mode, split, zoneout, monkeypatch):
    """``keep=False`` projects the input a chunk of steps at a time (an odd last chunk) and,
    for a large call, runs two row groups in parallel: the masks must be read at the
    chunk's steps and the group's rows."""
    monkeypatch.setattr(_ops, "_CHUNK_BYTES", 1)  # chunks of the minimum steps
    monkeypatch.setattr(_ops, "_SPLIT_FLOPS", 0.0 if split else float("inf"))
    groups = []
    row_groups = _ops._row_groups
    monkeypatch.setattr(_ops, "_row_groups",
                        lambda *a, **k: groups.append(row_groups(*a, **k)) or groups[-1])
    options = ("layer_norm", "recurrent_dropout", zoneout)
    L, N = 67, 6
    lengths = [67, 60, 40, 33, 17, 1]
    case = _make_case(mode, L, N, 3, 4, options, lengths, proj=3, seed=6)
    for reverse in (False, True):
        inf, _, _ = _run(_ops_options, case, reverse, keep=False)
        r_fwd, _, _ = _run(_reference_options, case, reverse)
        for i, (a, b) in enumerate(zip(inf, r_fwd, strict=True)):
            _close(a, b, np.float64, f"inference result {i}, reverse={reverse}")
    assert groups and all(len(g) == (2 if split else 1) for g in groups)


def test_inference_memory_does_not_grow_with_steps():
    """``keep=False`` keeps no per-step history: beyond the output, the peak memory of a
    long call is that of a short one (the input projection goes in bounded chunks)."""
    def peak_beyond_output(L):
        case = _make_case("LSTM", L, 8, 4, 16, _all_options("LSTM"), None, seed=7,
                          dtype=np.float32)
        _run(_ops_options, case, False, keep=False)  # compiled, warm
        tracemalloc.start()
        fwd, _, _ = _run(_ops_options, case, False, keep=False)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak - fwd[0].nbytes

    short, long = peak_beyond_output(256), peak_beyond_output(2048)  # 8x the steps
    assert long < 1.5 * short + 65536, (short, long)


@settings(max_examples=15, deadline=None)
@given(drawn=_drawn_cases())  # test_reference_options' shapes and option sets
def test_matches_reference_drawn_shapes(drawn):
    case, reverse = drawn
    _compare(case, reverse)


_SLOW_TWIN = """
import numba
import numpy as np
from test_kernels_options import _all_options, _compare
from test_reference_options import MODES, _make_case

assert numba.config.DISABLE_JIT
for mode in MODES:
    for packed, reverse in ((True, True), (False, False)):
        for zoneout in ("zoneout", "zoneout_eval"):
            case = _make_case(mode, 3, 3, 2, 4, _all_options(mode, zoneout),
                              [3, 2, 1] if packed else None)
            _compare(case, reverse)
print("ok")
"""


def test_kernels_as_python_under_disable_jit():
    stdout = run_python(_SLOW_TWIN, 300, NUMBA_DISABLE_JIT="1")
    assert stdout.strip().endswith("ok")
