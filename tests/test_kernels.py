"""The compiled kernels (``rnnkit._ops``) equal the plain-NumPy loops (``rnnkit._reference``).

Forward (inference and training), saved histories and the fused backward, for
LSTM (with and without projection), GRU and RNN tanh/relu; padded and packed
(``batch_sizes``), both directions, with and without bias, float32 and float64,
and a batch wide enough for BLAS's blocked paths. A subset reruns in a
subprocess with ``NUMBA_DISABLE_JIT=1``, where the kernels run as Python.
"""

from __future__ import annotations

import ctypes
import importlib
import inspect
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnkit import _ops, _reference
from rnnkit._kernels import _gemm

from helpers import run_python

TOL = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-11, atol=1e-13)}


def _close(a, b, dtype, what):
    if b is None:
        assert a is None, what
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape, f"{what}: shape {a.shape} != {b.shape}"
    assert a.dtype == b.dtype, f"{what}: dtype {a.dtype} != {b.dtype}"
    np.testing.assert_allclose(a, b, err_msg=what, **TOL[dtype])


def _case(mode, dtype, L, N, H_in, H, packed, bias, proj=0, seed=0):
    rng = np.random.default_rng(seed)
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[mode] * H
    P = proj or H

    def u(*shape, scale=1.0):
        return (rng.uniform(-1, 1, shape) * scale).astype(dtype)

    k = 1 / np.sqrt(H)
    args = dict(x=u(L, N, H_in, scale=2), h_0=u(N, P), c_0=u(N, H), w_ih=u(G, H_in, scale=k),
                w_hh=u(G, P, scale=k), b_ih=u(G, scale=k) if bias else None,
                b_hh=u(G, scale=k) if bias else None, w_hr=u(P, H, scale=k) if proj else None)
    batch_sizes = None
    if packed:
        lengths = np.sort(rng.integers(1, L + 1, N))[::-1]
        lengths[0] = L
        batch_sizes = (lengths[None, :] > np.arange(L)[:, None]).sum(axis=1).astype(np.int64)
        mask = np.arange(L)[:, None] < lengths[None, :]
        args["x"] = args["x"] * mask[:, :, None].astype(dtype)
    d_out = u(L, N, P)
    if packed:
        d_out = d_out * mask[:, :, None].astype(dtype)
    return args, batch_sizes, d_out, u(N, P), u(N, H)


def _run(impl, mode, args, batch_sizes, reverse, keep, nonlinearity="tanh"):
    a = args
    if mode == "LSTM":
        b = None if a["b_ih"] is None else a["b_ih"] + a["b_hh"]
        return impl.lstm_forward(a["x"], a["h_0"], a["c_0"], a["w_ih"], a["w_hh"], b, a["w_hr"],
                                 batch_sizes, reverse, keep=keep)
    if mode == "GRU":
        return impl.gru_forward(a["x"], a["h_0"], a["w_ih"], a["w_hh"], a["b_ih"], a["b_hh"],
                                batch_sizes, reverse, keep=keep)
    b = None if a["b_ih"] is None else a["b_ih"] + a["b_hh"]
    return impl.rnn_forward(a["x"], a["h_0"], a["w_ih"], a["w_hh"], b, nonlinearity,
                            batch_sizes, reverse, keep=keep)


def _backward(impl, mode, args, saved, batch_sizes, reverse, d_out, dh_n, dc_n, nonlinearity):
    a = args
    if mode == "LSTM":
        return impl.lstm_backward(a["x"], a["w_ih"], a["w_hh"], a["w_hr"], saved, d_out, dh_n,
                                  dc_n, batch_sizes, reverse)
    if mode == "GRU":
        return impl.gru_backward(a["x"], a["w_ih"], a["w_hh"], saved, d_out, dh_n, batch_sizes,
                                 reverse)
    return impl.rnn_backward(a["x"], a["w_ih"], a["w_hh"], saved, d_out, dh_n, nonlinearity,
                             batch_sizes, reverse)


def _backward_equal(mode, args, ours, theirs, batch_sizes, reverse, d_out, dh_n, dc_n,
                    nonlinearity, dtype, what):
    """The compiled backward of ``ours`` (a forward's results) equals the reference's of
    ``theirs``, result by result."""
    dh_n = dh_n[:, : ours[1].shape[1]]
    g_ours = _backward(_ops, mode, args, ours[-1], batch_sizes, reverse, d_out, dh_n, dc_n,
                       nonlinearity)
    g_theirs = _backward(_reference, mode, args, theirs[-1], batch_sizes, reverse, d_out, dh_n,
                         dc_n, nonlinearity)
    for i, (o, t) in enumerate(zip(g_ours, g_theirs, strict=True)):
        _close(o, t, dtype, f"{what} backward result {i}")


def check(mode, dtype, L, N, H_in, H, packed, reverse, bias=True, proj=0, nonlinearity="tanh"):
    args, batch_sizes, d_out, dh_n, dc_n = _case(mode, dtype, L, N, H_in, H, packed, bias, proj)
    inputs = {k: (None if v is None else v.copy()) for k, v in args.items()}
    for keep in (False, True):
        ours = _run(_ops, mode, args, batch_sizes, reverse, keep, nonlinearity)
        theirs = _run(_reference, mode, args, batch_sizes, reverse, keep, nonlinearity)
        for i, (o, t) in enumerate(zip(ours[:-1], theirs[:-1], strict=True)):
            _close(o, t, dtype, f"{mode} forward keep={keep} result {i}")
        if keep:
            assert ours[-1].keys() == theirs[-1].keys()
            for k in theirs[-1]:
                _close(ours[-1][k], theirs[-1][k], dtype, f"{mode} saved {k!r}")
        else:
            assert ours[-1] is None
    _backward_equal(mode, args, ours, theirs, batch_sizes, reverse, d_out, dh_n, dc_n,
                    nonlinearity, dtype, mode)
    for k, v in inputs.items():  # nothing the caller passed is written
        if v is not None:
            np.testing.assert_array_equal(args[k], v, err_msg=f"{k} was modified")


MODES = [("LSTM", 0, "tanh"), ("LSTM", 3, "tanh"), ("GRU", 0, "tanh"), ("RNN", 0, "tanh"),
         ("RNN", 0, "relu")]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,proj,nonlinearity", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_kernels_equal_reference(dtype, mode, proj, nonlinearity, packed, reverse):
    check(mode, dtype, L=7, N=5, H_in=4, H=6, packed=packed, reverse=reverse, proj=proj,
          nonlinearity=nonlinearity)


@pytest.mark.parametrize("mode,proj,nonlinearity", MODES)
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_wide_batch_equals_reference(mode, proj, nonlinearity, packed):
    # a batch and width where BLAS takes its blocked, threaded paths
    check(mode, np.float64, L=6, N=24, H_in=8, H=64, packed=packed, reverse=packed,
          proj=proj * 8, nonlinearity=nonlinearity)


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
def test_no_bias_and_one_row(mode):
    check(mode, np.float64, L=3, N=1, H_in=2, H=3, packed=False, reverse=True, bias=False)


def test_gate_math_extremes():
    # saturating pre-activations: no overflow, no NaN, σ and tanh at their limits
    for dtype in (np.float32, np.float64):
        args, batch_sizes, _, _, _ = _case("LSTM", dtype, 4, 3, 2, 5, False, True)
        args["x"] = (args["x"] * 1e4).astype(dtype)
        ours = _run(_ops, "LSTM", args, batch_sizes, False, True)
        theirs = _run(_reference, "LSTM", args, batch_sizes, False, True)
        for o, t in zip(ours[:3], theirs[:3], strict=True):
            _close(o, t, dtype, "saturated")


_SLOW_TWIN = """
from test_kernels import check
import numpy as np
import numba
assert numba.config.DISABLE_JIT
for dtype in (np.float32, np.float64):
    check("LSTM", dtype, 3, 3, 2, 4, packed=True, reverse=True, proj=2)
    check("GRU", dtype, 3, 3, 2, 4, packed=True, reverse=False)
    check("RNN", dtype, 3, 2, 2, 4, packed=False, reverse=True, nonlinearity="relu")
check("LSTM", np.float64, 2, 24, 2, 64, packed=True, reverse=False)  # a wide batch

from test_kernels import test_training_split_over_two_cores_equals_reference as split
from test_small_stack import _compare


class Patch:  # pytest's monkeypatch, as far as the split test uses it
    setattr = staticmethod(setattr)


split(np.float32, "LSTM", 3, "tanh", True, True, 8, Patch())  # two row groups, training
split(np.float64, "GRU", 0, "tanh", False, False, 8, Patch())
_compare("LSTM", 2, 2, 3, 4, 2, True, 3, 3, [3, 2, 1], np.float64)  # one compiled stack
_compare("GRU", 1, 1, 3, 4, 4, True, 3, 2, None, np.float32)
print("ok")
"""


def test_kernels_as_python_under_disable_jit():
    stdout = run_python(_SLOW_TWIN, 300, NUMBA_DISABLE_JIT="1")
    assert stdout.strip().endswith("ok")


@pytest.mark.parametrize("mode", ["LSTM", "GRU", "RNN"])
@pytest.mark.parametrize("steps", [64, 65], ids=["even-chunks", "odd-chunks"])
def test_inference_in_chunks_of_steps(mode, steps, monkeypatch):
    # inference projects the input a bounded number of steps at a time; its state
    # lives in two slots taking turns, so odd chunk lengths must hand it over right
    N, H = 3, 4
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[mode] * H
    monkeypatch.setattr(_ops, "_CHUNK_BYTES", steps * N * G * 8)  # float64: `steps` a chunk
    assert _ops._chunks(np.empty((150, N, 2)), G, False)[0] == (0, steps)
    for packed, reverse in [(False, False), (True, True)]:
        args, batch_sizes, _, _, _ = _case(mode, np.float64, 150, N, 2, H, packed, True)
        ours = _run(_ops, mode, args, batch_sizes, reverse, False)
        theirs = _run(_reference, mode, args, batch_sizes, reverse, False)
        for o, t in zip(ours[:-1], theirs[:-1], strict=True):
            _close(o, t, np.float64, f"{mode} chunked")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,proj,nonlinearity", MODES)
@pytest.mark.parametrize("packed,reverse", [(False, False), (True, True), (True, False)],
                         ids=["padded", "packed-reverse", "packed"])
def test_inference_split_over_two_cores_equals_reference(dtype, mode, proj, nonlinearity,
                                                         packed, reverse, monkeypatch):
    # large calls run two row groups in parallel, each through every step of a chunk:
    # forced here on small shapes, with odd chunks of steps and an odd batch
    N, H, H_in = 7, 6, 4
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[mode] * H
    width = G + (proj or H) + H_in  # a split chunk holds projections, outputs, inputs
    monkeypatch.setattr(_ops, "_SPLIT_FLOPS", 0)
    monkeypatch.setattr(_ops, "_CHUNK_BYTES", 65 * N * width * np.dtype(dtype).itemsize)
    assert _ops._chunks(np.empty((150, N, H_in), dtype), width, False)[0] == (0, 65)
    args, batch_sizes, _, _, _ = _case(mode, dtype, 150, N, H_in, H, packed, True, proj)
    rows = _ops._batch_sizes(batch_sizes, 150, N)
    groups = _ops._row_groups(rows, N, 1.0)
    assert len(groups) == 2 and groups[0][0] == 0 and groups[1][1] == N
    ours = _run(_ops, mode, args, batch_sizes, reverse, False, nonlinearity)
    theirs = _run(_reference, mode, args, batch_sizes, reverse, False, nonlinearity)
    for i, (o, t) in enumerate(zip(ours[:-1], theirs[:-1], strict=True)):
        _close(o, t, dtype, f"{mode} split result {i}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("mode,proj,nonlinearity", MODES)
@pytest.mark.parametrize("packed,reverse", [(False, False), (True, True), (True, False)],
                         ids=["padded", "packed-reverse", "packed"])
@pytest.mark.parametrize("H", [6, 8])
def test_training_split_over_two_cores_equals_reference(dtype, mode, proj, nonlinearity, packed,
                                                        reverse, H, monkeypatch):
    # a training step of a large call runs two row groups in parallel, forward and
    # backward, then sums their weight gradients: forced here on small shapes, with an
    # odd batch. Where G is a whole number of panels (the LSTM's 32 with H = 8; float64's
    # 8-wide panels also take the GRU's 24 and the RNN's 8) each group projects its own
    # rows with the micro-kernel; elsewhere (every H = 6) OpenBLAS projects. Off by
    # default (_TRAIN_SPLIT_FLOPS: it measured no faster here), forced on
    monkeypatch.setattr(_ops, "_TRAIN_SPLIT_FLOPS", 0)
    args, batch_sizes, d_out, dh_n, dc_n = _case(mode, dtype, 9, 7, 5, H, packed, True, proj)
    rows = _ops._batch_sizes(batch_sizes, 9, 7)
    assert len(_ops._row_groups(rows, 7, 1.0, 0)) == 2
    ours = _run(_ops, mode, args, batch_sizes, reverse, True, nonlinearity)
    theirs = _run(_reference, mode, args, batch_sizes, reverse, True, nonlinearity)
    assert set(ours[-1]) == {"groups"}  # the split ran
    for i, (o, t) in enumerate(zip(ours[:-1], theirs[:-1], strict=True)):
        _close(o, t, dtype, f"{mode} split training result {i}")
    _backward_equal(mode, args, ours, theirs, batch_sizes, reverse, d_out, dh_n, dc_n,
                    nonlinearity, dtype, f"{mode} split")


_GEMM_CALL = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                              ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                              ctypes.c_int64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("isa", list(_gemm.ISAS))
def test_micro_kernel_of_every_instruction_set_equals_numpy(dtype, isa):
    # the micro-kernel is chosen at run time by the host's features; every ISA this
    # machine can run is compiled and checked, so one without AVX-512 (or AVX2) still
    # has its path tested. Rows cover whole blocks and every tail; K and the panels odd
    if isa not in _gemm.runnable_isas():
        pytest.skip(f"this CPU cannot run {isa} code (it runs {_gemm.runnable_isas()})")
    mr, nv, vw = _gemm._block(np.dtype(dtype), isa)
    nr = nv * vw
    assert nr == _gemm.ISAS[isa][0] // np.dtype(dtype).itemsize * nv
    gemm = _GEMM_CALL(_gemm.compile_block(np.dtype(dtype), mr, nv, isa))
    rng = np.random.default_rng(1)
    K, N = 13, 2 * nr + 3
    b = rng.standard_normal((K, N)).astype(dtype)  # B, packed from W_hh^T or W_hh alike
    for transpose in (True, False):
        panels = _gemm.pack(np.ascontiguousarray(b.T) if transpose else b, transpose, isa)
        assert panels.shape == (3, K, nr)
        for M in range(1, 2 * mr + 1):
            a = rng.standard_normal((M, K)).astype(dtype)
            out = np.full((M, 3 * nr), np.nan, dtype)
            gemm(a.ctypes.data, K, panels.ctypes.data, out.ctypes.data, 3 * nr, M, K, 3)
            np.testing.assert_allclose(out[:, :N], a @ b, **TOL[dtype],
                                       err_msg=f"{isa} M={M} transpose={transpose}")
            assert not out[:, N:].any()  # the panels' padding columns are zero


@pytest.mark.parametrize("isa", list(_gemm.ISAS))
def test_each_instruction_set_compiles_to_its_own_instructions(isa):
    # compiling needs no CPU that runs the code: AVX-512 is checked here too. The
    # portable build must run on any x86-64 (SSE2 registers, no VEX/AVX, no FMA)
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        pytest.skip(f"the instruction names checked are x86-64's, not {platform.machine()}'s")
    machine, module = _gemm.optimized(np.dtype(np.float32), *_gemm._block(np.float32, isa)[:2],
                                      isa)
    asm = machine.emit_assembly(module)
    registers = {"avx512": "zmm", "avx2": "ymm", "portable": "xmm"}
    assert registers[isa] in asm
    for wider in ("zmm", "ymm")[("avx512", "avx2", "portable").index(isa):]:
        assert wider not in asm.replace(registers[isa], ""), f"{isa} uses {wider}"
    assert ("vfmadd" in asm) == (isa != "portable")


def test_host_runs_its_widest_instruction_set():
    cpu, features, isa = _gemm._host()
    assert _gemm.runnable_isas()[0] == isa and _gemm.runnable_isas()[-1] == "portable"
    for name in _gemm.runnable_isas()[:-1]:
        assert all(f"+{f}" in features.split(",") for f in _gemm.ISAS[name][1]), name
    assert _gemm._block(np.dtype(np.float32)) == _gemm._block(np.dtype(np.float32), isa)


@pytest.mark.parametrize("mode,proj,nonlinearity", MODES)
@pytest.mark.parametrize("padding", [0.05, 0.5])
def test_gemms_over_all_steps_skip_the_padding_of_packed_input(mode, proj, nonlinearity,
                                                               padding):
    # with more than 10% padding the projection and the input gradients run on the
    # real rows only; with less, on every row: both equal the reference
    L, N = 20, 6
    lengths = np.full(N, L)
    lengths[1:] = L - round(padding * L * N / (N - 1))
    rows = (lengths[None, :] > np.arange(L)[:, None]).sum(axis=1).astype(np.int64)
    assert (_ops._real_rows(rows, N) is None) == (padding < 0.1)
    for reverse in (False, True):
        args, _, d_out, dh_n, dc_n = _case(mode, np.float64, L, N, 4, 6, False, True, proj)
        mask = (np.arange(L)[:, None] < lengths[None, :])[:, :, None]
        args["x"], d_out = args["x"] * mask, d_out * mask
        ours = _run(_ops, mode, args, rows, reverse, True, nonlinearity)
        theirs = _run(_reference, mode, args, rows, reverse, True, nonlinearity)
        for i, (o, t) in enumerate(zip(ours[:-1], theirs[:-1], strict=True)):
            _close(o, t, np.float64, f"{mode} padding {padding} result {i}")
        _backward_equal(mode, args, ours, theirs, rows, reverse, d_out, dh_n, dc_n,
                        nonlinearity, np.float64, f"{mode} padding {padding}")


def test_row_groups_halve_the_work_of_packed_rows():
    # rows sorted by decreasing length: the first group takes fewer, longer rows
    lengths = np.array([100, 90, 20, 10, 10, 5])
    batch_sizes = (lengths[None, :] > np.arange(100)[:, None]).sum(axis=1)
    assert _ops._row_groups(batch_sizes, 6, 1e12) == [(0, 1), (1, 6)]
    assert _ops._row_groups(_ops._every_row(10, 8), 8, 1e12) == [(0, 4), (4, 8)]
    assert _ops._row_groups(_ops._every_row(10, 8), 8, 1.0) == [(0, 8)]  # too little work
    assert _ops._row_groups(_ops._every_row(10, 1), 1, 1e12) == [(0, 1)]


def _buffer_table(doc):
    """{name: (shape, order)} from the table of a kernel module's docstring."""
    lines = doc.split("\n    name         shape           order        meaning\n")[1]
    table = {}
    for line in lines.split("\n\n")[0].split("\n"):
        if line.startswith(" " * 5):  # a meaning that runs on
            continue
        names, shape, order = line[4:17].strip(), line[17:33].strip(), line[33:46].strip()
        for name in names.split(", "):
            table[name] = (shape, order)
    return table


@pytest.mark.parametrize("mode", ["lstm", "gru", "rnn"])
def test_each_kernel_argument_is_in_its_module_buffer_table(mode):
    # the table names every buffer once, with the order of its steps; the kernels read
    # their input projection in processing order (last step first when reversed), alike
    module = importlib.import_module(f"rnnkit._kernels.{mode}")
    table = _buffer_table(module.__doc__)
    assert {order for _, order in table.values()} <= {"time", "processing", "-"}
    assert table["xw"][1] == table["hs"][1] == "processing"
    assert table["output"][1] == table["d_output"][1] == table["batch_sizes"][1] == "time"
    for kernel in (f"{mode}_forward", f"{mode}_backward"):
        fn = getattr(module, kernel)
        params = inspect.signature(getattr(fn, "py_func", fn)).parameters
        assert set(params) - {"reverse", "relu"} <= set(table), kernel


# ---------------------------------------------------------------- the kernels' cache

_CALL_RNN_KERNEL = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from _kernels import _gemm, rnn  # a copy of rnnkit/_kernels, imported as its own package

    L, N, H = 3, 2, 4
    f = np.float32
    panels = _gemm.pack(np.ones((H, H), f), transpose=True)
    rnn.rnn_forward(np.ones((L, N, H), f), _gemm.address(f), panels, np.full(L, N), False,
                    False, np.zeros((L + 1, N, H), f),
                    np.empty((N, panels.shape[0] * panels.shape[2]), f), np.empty((L, N, H), f))
    stats = rnn.rnn_forward.stats
    print(sum(stats.cache_hits.values()), sum(stats.cache_misses.values()))
""")


def test_editing_a_shared_helper_recompiles_the_kernels_that_use_it(tmp_path):
    # numba stamps a kernel's cache with the kernel's own file; rnnkit's locator adds the
    # shared helpers' contents, so an edit of _math.py alone must not leave a stale kernel
    import shutil

    import rnnkit._kernels

    folder = os.path.dirname(rnnkit._kernels.__file__)
    copy = tmp_path / "_kernels"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__"))

    def run():
        env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
        result = subprocess.run([sys.executable, "-c", _CALL_RNN_KERNEL, str(tmp_path)],
                                capture_output=True, text=True, timeout=600, env=env)
        assert result.returncode == 0, result.stderr
        hits, misses = map(int, result.stdout.split())
        return hits, misses

    assert run() == (0, 1)  # compiled and cached
    assert run() == (1, 0)  # loaded from the cache
    kernel_stamp = os.stat(copy / "rnn.py")
    math_py = copy / "_math.py"
    math_py.write_text(math_py.read_text().replace(
        "return np.tanh(x)", "return np.tanh(x)  # an edit"))
    assert run() == (0, 1)  # the edit is seen: recompiled
    assert run() == (1, 0)
    after = os.stat(copy / "rnn.py")  # the kernel's own file never changed
    assert (after.st_mtime_ns, after.st_size) == (kernel_stamp.st_mtime_ns, kernel_stamp.st_size)
