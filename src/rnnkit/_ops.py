"""The compiled recurrences behind the layers, with ``_reference``'s signatures.

Each function here has exactly the arguments and results of its slow twin in
``rnnkit._reference`` (see there for shapes and conventions): it computes the
input projection of all steps in one GEMM, allocates outputs, histories and
scratch, and calls the numba kernel of ``_kernels/`` for the step loop, which
runs one small ``(N, H) x (H, G)`` GEMM per step plus the gate math (writing the
gates over the projection, in place). The weight gradients of the backward are
again one GEMM over all steps. Every GEMM outside the kernels goes through
``_kernels/blas.py``, on the same OpenBLAS as the backward kernels' ``np.dot``.

Kernels compile lazily on first use, once per dtype, and are cached on disk.

The per-step product runs in ``_kernels/_gemm.py``'s micro-kernel on weights packed
once per call. Inference splits the batch over the two cores when the work is large
enough (``_row_groups``): each thread runs its rows through every step of a chunk, so
the threads never meet inside the step loop (a barrier per step, measured in
``benchmarks/step_gemm.py``, costs as much as the second core gives). Splitting rows
with OpenBLAS doing the step products lost at every size (LSTM T50 B64 H1024 inference
269 ms unsplit vs 436 ms split): its own two threads already took both cores.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from ._kernels import _gemm
from ._kernels import gru as _gru
from ._kernels import lstm as _lstm
from ._kernels import rnn as _rnn
from ._kernels.blas import matmul as _matmul  # SciPy's OpenBLAS, as the step kernels

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward"]

# ---------------------------------------------------------------- shared pieces

_EMPTY = {}


def _empty(ndim, dtype):
    """A (0, ..., 0) placeholder for an absent kernel argument (e.g. no projection)."""
    key = (ndim, dtype)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype=dtype)
    return _EMPTY[key]


def _batch_sizes(batch_sizes, L, N):
    """Rows active at each time step, as the kernels take them: int64, contiguous."""
    if batch_sizes is None:
        return _every_row(L, N)
    return np.ascontiguousarray(batch_sizes, dtype=np.int64)


@functools.lru_cache(maxsize=64)
def _every_row(L, N):
    """``[N] * L`` for padded input, every row active every step; shared between calls
    (the kernels only read it; left writable so numba sees one array type)."""
    return np.full(L, N, dtype=np.int64)


def _step_product(w_hh, N):
    """``(gemm, w_hh_panels, hw)``: the step product's micro-kernel, ``W_hh^T`` packed
    once for it (``_kernels/_gemm.py``), and its output buffer, ``(N, G)`` widened to
    whole panels."""
    panels = _gemm.pack(w_hh, transpose=True)
    return _gemm.address(w_hh.dtype), panels, _step_buffer(panels, N)


def _step_buffer(panels, n):
    """``hw``, the step product of ``n`` rows: ``(n, G)`` widened to whole panels."""
    return np.empty((n, panels.shape[0] * panels.shape[2]), panels.dtype)


# ---------------------------------------------------------------- inference over row groups

_SPLIT_FLOPS = 2e7  # step products of a call worth two cores (~200 µs at 100 GFLOP/s)
_pool = None
_pool_lock = threading.Lock()


def _row_groups(batch_sizes, N, flops):
    """The batch rows each core runs: ``[(0, N)]``, or two groups holding about half of
    the active row-steps each (packed rows come sorted by decreasing length)."""
    if N < 2 or flops < _SPLIT_FLOPS:
        return [(0, N)]
    steps_of_row = (batch_sizes[None, :] > np.arange(N)[:, None]).sum(axis=1)
    first = np.cumsum(steps_of_row)[:-1]  # row-steps of the first group, split after row k
    split = int(np.argmin(np.abs(first - steps_of_row.sum() / 2))) + 1
    return [(0, split), (split, N)]


def _in_parallel(jobs):
    """Run ``jobs`` (callables that release the GIL): the first on this thread, the
    second on rnnkit's one helper thread."""
    global _pool
    if len(jobs) == 1:
        jobs[0]()
        return
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rnnkit")
    future = _pool.submit(jobs[1])
    jobs[0]()
    future.result()


def _group_batch_sizes(batch_sizes, r0, r1):
    """The active rows of group ``[r0, r1)`` at each step, as the kernels take them."""
    return np.ascontiguousarray(np.clip(batch_sizes - r0, 0, r1 - r0), dtype=np.int64)


def _inference(x, w_ih, b, w_hh, batch_sizes, reverse, states, width, group):
    """The inference forward of one layer-direction, memory flat in ``L``.

    The input projection runs in chunks of steps (``_chunks``); the step loop of each
    chunk runs on one or two row groups (``_row_groups``), in parallel, each with
    its own two state slots taking turns. ``states`` are the initial states ``(N, *)``
    (h_0, and c_0 for the LSTM); ``width`` the output's last axis; ``group(n, slots,
    gemm, panels, hw)`` binds a mode's kernel to a group of ``n`` rows and returns
    ``run(xw, batch_sizes, output)`` for one chunk. Returns the output ``(L, N, width)``
    and the final states ``(N, *)``.
    """
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    gemm, panels = _gemm.address(dt), _gemm.pack(w_hh, transpose=True)
    groups = _row_groups(batch_sizes, N, 2.0 * L * N * G * w_hh.shape[1])
    output = np.empty((L, N, width), dt)
    if len(groups) == 1:  # the common small call: this thread, no copies
        slots = [_two_slots(state) for state in states]
        run = group(N, slots, gemm, panels, _step_buffer(panels, N))
        for t0, t1 in _chunks(x, G, reverse):
            run(_project(x[t0:t1], w_ih, b, reverse), batch_sizes[t0:t1], output[t0:t1])
            _hand_over(t0, t1, *slots)
        return output, [slot[0].copy() for slot in slots]

    # Two row groups, one per core. Each projects its own rows with the micro-kernel:
    # OpenBLAS serializes concurrent callers, and after a call of its own its idle
    # threads spin on the core the other group needs. A chunk holds, per group, its
    # input rows, projections and outputs (copied into place after it): memory flat in L.
    chunks = _chunks(x, G + width + x.shape[2], reverse, min_steps=16)
    steps = max(t1 - t0 for t0, t1 in chunks)
    own = G % _gemm.panel_width(dt) == 0
    w_ih_panels = _gemm.pack(w_ih, transpose=True) if own else None
    bias = _empty(1, dt) if b is None else np.ascontiguousarray(b)
    bound = []
    for r0, r1 in groups:
        slots = [_two_slots(state[r0:r1]) for state in states]
        out = np.empty((steps, r1 - r0, width), dt)
        bound.append((slots, out, group(r1 - r0, slots, gemm, panels,
                                        _step_buffer(panels, r1 - r0))))

    def job(r0, r1, run, out, t0, t1, xw):  # a group's projection, then its steps
        if xw is None:
            part = x[t0:t1, r0:r1]
            part = np.ascontiguousarray(part[::-1] if reverse else part)
            xw = np.empty((t1 - t0, r1 - r0, G), dt)
            _gemm.project(gemm, part.reshape(-1, part.shape[2]), w_ih_panels, bias,
                          xw.reshape(-1, G))
        run(xw, _group_batch_sizes(batch_sizes[t0:t1], r0, r1), out[:t1 - t0])
        output[t0:t1, r0:r1] = out[:t1 - t0]

    for t0, t1 in chunks:
        _in_parallel([functools.partial(
            job, r0, r1, run, out, t0, t1,
            None if own else _project(x[t0:t1, r0:r1], w_ih, b, reverse))
            for (r0, r1), (_, out, run) in zip(groups, bound, strict=True)])
        for slots, _, _ in bound:
            _hand_over(t0, t1, *slots)
    finals = [np.concatenate([slots[k][0] for slots, _, _ in bound])
              for k in range(len(states))]
    return output, finals


def _two_slots(state):
    """Two state slots taking turns, the first holding ``state``."""
    slots = np.empty((2,) + state.shape, state.dtype)
    slots[0] = state
    return slots


def _state(a, dtype):
    """A fresh C-contiguous copy the kernel may overwrite."""
    return np.array(a, dtype=dtype, order="C", copy=True)


def _project(x, w_ih, b, reverse=False):
    """x W_ih^T + b for every step at once, one GEMM: (L, N, G), contiguous, in
    processing order (last step first when ``reverse``)."""
    L, N, H_in = x.shape
    x = np.ascontiguousarray(x[::-1] if reverse else x)
    xw = _matmul(x.reshape(L * N, H_in), w_ih.T)  # (L*N, G)
    if b is not None:
        xw += b
    return xw.reshape(L, N, -1)


_CHUNK_BYTES = 1 << 18  # inference: input projections held at once (at least 64 steps)


def _chunks(x, G, reverse, min_steps=64):
    """Step ranges ``(t0, t1)`` in processing order for the inference projections, so
    that memory beyond the output does not grow with ``L``: chunks of at least
    ``min_steps`` steps (64 for OpenBLAS's GEMMs to run at speed) and about
    ``_CHUNK_BYTES`` each."""
    L, N, _ = x.shape
    step = max(min_steps, _CHUNK_BYTES // max(1, N * G * x.dtype.itemsize))
    if step >= L:
        return ((0, L),)
    bounds = [(t0, min(t0 + step, L)) for t0 in range(0, L, step)]
    return bounds[::-1] if reverse else bounds


def _hand_over(t0, t1, *states):
    """After a chunk of an odd number of steps the two-slot states ended in slot 1: the
    next chunk starts from slot 0."""
    if (t1 - t0) % 2:
        for state in states:
            state[0] = state[1]


def _input_grads(dz_proc, x, w_ih, reverse):
    """dx, dW_ih and the bias gradient from the stacked pre-activation gradients."""
    L, N, G = dz_proc.shape
    dz = np.ascontiguousarray(dz_proc[::-1] if reverse else dz_proc).reshape(L * N, G)
    dx = _matmul(dz, w_ih).reshape(L, N, -1)  # (L, N, H_in)
    dw_ih = _matmul(dz.T, np.ascontiguousarray(x).reshape(L * N, -1))  # one GEMM: (G, H_in)
    return dx, dw_ih, dz.sum(axis=0)


# ---------------------------------------------------------------- LSTM


def lstm_forward(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes=None, reverse=False, keep=False):
    """Compiled ``_reference.lstm_forward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 4
    w_hh = np.ascontiguousarray(w_hh)
    P = w_hh.shape[1]
    proj = w_hr is not None
    w_hr_k = np.ascontiguousarray(w_hr) if proj else _empty(2, dt)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    if not keep:
        def group(n, slots, gemm, panels, hw):
            h_unproj = np.empty((n, H), dt) if proj else _empty(2, dt)
            return lambda xw, rows, out: _lstm.lstm_forward(
                xw, gemm, panels, w_hr_k, rows, reverse, slots[0], slots[1], hw, out, h_unproj)

        output, (h_n, c_n) = _inference(x, w_ih, b, w_hh, batch_sizes, reverse, [h_0, c_0], P,
                                        group)
        return output, h_n, c_n, None
    gates = _project(x, w_ih, b, reverse)  # (L, N, G), one GEMM; the kernel turns it into
    hs = np.empty((L + 1, N, P), dt)       # the gates in place
    cs = np.empty((L + 1, N, H), dt)
    hs[0], cs[0] = h_0, c_0
    output = np.empty((L, N, P), dt)
    gemm, w_hh_panels, hw = _step_product(w_hh, N)  # hw: h W_hh^T of a step
    h_unproj = np.empty((N, H), dt) if proj else _empty(2, dt)  # o ⊙ tanh c', before W_hr
    _lstm.lstm_forward(gates, gemm, w_hh_panels, w_hr_k, batch_sizes, reverse, hs, cs, hw,
                       output, h_unproj)
    return output, hs[L].copy(), cs[L].copy(), {"h": hs, "c": cs, "gates": gates}


def lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes=None,
                  reverse=False):
    """Compiled ``_reference.lstm_backward``: same arguments, same results."""
    hs, cs, gates = saved["h"], saved["c"], saved["gates"]
    L, N, _ = x.shape
    dt = x.dtype
    G = gates.shape[2]
    H = G // 4
    P = hs.shape[2]
    proj = w_hr is not None
    w_hh = np.ascontiguousarray(w_hh)
    w_hr_k = np.ascontiguousarray(w_hr) if proj else _empty(2, dt)
    dh, dc = _state(dh_n, dt), _state(dc_n, dt)
    d_output = np.ascontiguousarray(d_output, dtype=dt)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    dz = np.empty((L, N, G), dt)  # dL/d(pre-activations), processing order
    dh_steps = np.empty((L, N, P), dt) if proj else _empty(3, dt)
    dh_unproj = np.empty((N, H), dt) if proj else _empty(2, dt)
    tanh_c = np.empty((N, H), dt)
    _lstm.lstm_backward(w_hh, w_hr_k, batch_sizes, bool(reverse), cs, gates, d_output, dh, dc,
                        dz, dh_steps, dh_unproj, tanh_c)
    dw_hh = _matmul(dz.reshape(-1, G).T, hs[:L].reshape(-1, P))  # one GEMM over all steps
    dw_hr = None
    if proj:
        h_unproj = gates[:, :, 3 * H:] * np.tanh(cs[1:])  # o ⊙ tanh c', before W_hr
        dw_hr = _matmul(dh_steps.reshape(-1, P).T, h_unproj.reshape(-1, H))
    dx, dw_ih, db = _input_grads(dz, x, w_ih, reverse)
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr


# ---------------------------------------------------------------- GRU


def gru_forward(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, reverse=False, keep=False):
    """Compiled ``_reference.gru_forward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 3
    w_hh = np.ascontiguousarray(w_hh)
    b_hh_k = np.zeros(G, dt) if b_hh is None else np.ascontiguousarray(b_hh)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    if not keep:
        def group(n, slots, gemm, panels, hw):
            w_hn_h = np.empty((1, n, H), dt)  # W_hn h + b_hn of a step
            return lambda xw, rows, out: _gru.gru_forward(
                xw, gemm, panels, b_hh_k, rows, reverse, slots[0], hw, w_hn_h, out)

        output, (h_n,) = _inference(x, w_ih, b_ih, w_hh, batch_sizes, reverse, [h_0], H, group)
        return output, h_n, None
    output = np.empty((L, N, H), dt)
    gemm, w_hh_panels, hw = _step_product(w_hh, N)  # hw: h W_hh^T of a step
    gates = _project(x, w_ih, b_ih, reverse)  # (L, N, 3H), one GEMM; the kernel turns it
    hs = np.empty((L + 1, N, H), dt)          # into the gates in place
    w_hn_h = np.empty((L, N, H), dt)  # W_hn h + b_hn of every step, what r scales
    hs[0] = h_0
    _gru.gru_forward(gates, gemm, w_hh_panels, b_hh_k, batch_sizes, reverse, hs, hw, w_hn_h,
                     output)
    return output, hs[L].copy(), {"h": hs, "gates": gates, "w_hn_h": w_hn_h}


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False):
    """Compiled ``_reference.gru_backward``: same arguments, same results."""
    hs, gates, w_hn_h = saved["h"], saved["gates"], saved["w_hn_h"]
    L, N, _ = x.shape
    dt = x.dtype
    G = gates.shape[2]
    H = G // 3
    w_hh = np.ascontiguousarray(w_hh)
    dh = _state(dh_n, dt)
    d_output = np.ascontiguousarray(d_output, dtype=dt)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    dxw = np.empty((L, N, G), dt)  # d(x W_ih^T + b_ih), processing order
    dhw_step = np.empty((N, G), dt)  # d(h W_hh^T + b_hh) of a step
    dh_new = np.empty((N, H), dt)  # dL/dh' of a step
    _gru.gru_backward(w_hh, batch_sizes, bool(reverse), hs, gates, w_hn_h, d_output, dh, dxw,
                      dhw_step, dh_new)
    dx, dw_ih, db_ih = _input_grads(dxw, x, w_ih, reverse)
    # d(h W_hh^T + b_hh) is d(x W_ih^T + b_ih) but for its n rows, r ⊙ that: derived in
    # place once dxw has served, so no second (L, N, 3H) stack is ever allocated
    dxw[:, :, 2 * H:] *= gates[:, :, :H]
    dw_hh = _matmul(dxw.reshape(-1, G).T, hs[:L].reshape(-1, H))  # one GEMM over all steps
    db_hh = dxw.reshape(-1, G).sum(axis=0)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# ---------------------------------------------------------------- Elman RNN


def rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=False):
    """Compiled ``_reference.rnn_forward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    H = w_ih.shape[0]
    w_hh = np.ascontiguousarray(w_hh)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse, relu = bool(reverse), nonlinearity == "relu"
    if not keep:
        def group(n, slots, gemm, panels, hw):
            return lambda xw, rows, out: _rnn.rnn_forward(
                xw, gemm, panels, rows, reverse, relu, slots[0], hw, out)

        output, (h_n,) = _inference(x, w_ih, b, w_hh, batch_sizes, reverse, [h_0], H, group)
        return output, h_n, None
    output = np.empty((L, N, H), dt)
    gemm, w_hh_panels, hw = _step_product(w_hh, N)  # hw: h W_hh^T of a step
    xw = _project(x, w_ih, b, reverse)  # (L, N, H): every step in one GEMM
    hs = np.empty((L + 1, N, H), dt)
    hs[0] = h_0
    _rnn.rnn_forward(xw, gemm, w_hh_panels, batch_sizes, reverse, relu, hs, hw, output)
    return output, hs[L].copy(), {"h": hs}


def rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity="tanh", batch_sizes=None,
                 reverse=False):
    """Compiled ``_reference.rnn_backward``: same arguments, same results."""
    hs = saved["h"]
    L, N, _ = x.shape
    dt = x.dtype
    H = hs.shape[2]
    w_hh = np.ascontiguousarray(w_hh)
    dh = _state(dh_n, dt)
    d_output = np.ascontiguousarray(d_output, dtype=dt)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    da = np.empty((L, N, H), dt)
    _rnn.rnn_backward(w_hh, batch_sizes, bool(reverse), nonlinearity == "relu", hs, d_output,
                      dh, da)
    dw_hh = _matmul(da.reshape(-1, H).T, hs[:L].reshape(-1, H))
    dx, dw_ih, db = _input_grads(da, x, w_ih, reverse)
    return dx, dh, dw_ih, dw_hh, db
