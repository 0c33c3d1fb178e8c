"""The compiled recurrences behind the layers, with ``_reference``'s signatures.

Each function here has exactly the arguments and results of its slow twin in
``rnnkit._reference`` (see there for shapes and conventions): it computes the
input projection of all steps in one GEMM, allocates outputs, histories and
scratch, and calls the numba kernel of ``_kernels/`` for the step loop, which
runs one small ``(N, H) x (H, G)`` product per step plus the gate math (writing the
gates over the projection, in place). The weight gradients of the backward are
again one GEMM over all steps. Every big GEMM goes through ``_kernels/blas.py``
(SciPy's OpenBLAS).

Kernels compile lazily on first use, once per dtype, and are cached on disk.

Every per-step product, forward (``h W_hh^T``) and backward (``dz W_hh``), runs in
``_kernels/_gemm.py``'s micro-kernel on weights packed once per call. A call large
enough (``_row_groups``) splits the batch over the two cores in inference (training can,
but measured no faster: ``_TRAIN_SPLIT_FLOPS``): rows are independent through the
recurrence, so each thread runs its rows through every step, forward and backward, and
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
from ._kernels import stack as _stack
from ._kernels import stack_train as _stack_train
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


def _step_buffer(panels, n):
    """``hw``, the step product of ``n`` rows: ``(n, G)`` widened to whole panels."""
    return np.empty((n, panels.shape[0] * panels.shape[2]), panels.dtype)


# ---------------------------------------------------------------- inference over row groups

_SPLIT_FLOPS = 2e7  # step products of a call worth two cores (~200 µs at 100 GFLOP/s)
# Training: off. The split is built and tested (forced in tests/test_kernels.py), but
# measured on this 2-core machine, one process, interleaved, it never won: a training
# step of one LSTM layer took 0.83-0.85x the unsplit time at T50 B64 H1024, 0.97-0.99x
# at T100 B64 H256, 0.90-0.99x at T100 B16 H128 (docs/benchmarks.md). Its GEMMs over
# all steps, on OpenBLAS's two threads, are most of a step, and run per group.
_TRAIN_SPLIT_FLOPS = float("inf")
_pool = None
_pool_lock = threading.Lock()


def _row_groups(batch_sizes, N, flops, minimum=None):
    """The batch rows each core runs: ``[(0, N)]``, or, for a call of at least
    ``minimum`` step FLOPs (``_SPLIT_FLOPS``), two groups holding about half of the
    active row-steps each (packed rows come sorted by decreasing length)."""
    if N < 2 or flops < (_SPLIT_FLOPS if minimum is None else minimum):
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
            run(_project(x[t0:t1], w_ih, b, reverse, batch_sizes[t0:t1]), batch_sizes[t0:t1],
                output[t0:t1])
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
    bound = []
    for r0, r1 in groups:
        slots = [_two_slots(state[r0:r1]) for state in states]
        out = np.empty((steps, r1 - r0, width), dt)
        bound.append((slots, out, group(r1 - r0, slots, gemm, panels,
                                        _step_buffer(panels, r1 - r0))))

    def job(r0, r1, run, out, t0, t1, xw):  # a group's projection, then its steps
        if xw is None:
            xw = _group_projection(x[t0:t1, r0:r1], w_ih, b, reverse, w_ih_panels, None)
        run(xw, _group_batch_sizes(batch_sizes[t0:t1], r0, r1), out[:t1 - t0])
        output[t0:t1, r0:r1] = out[:t1 - t0]

    for t0, t1 in chunks:
        _in_parallel([functools.partial(
            job, r0, r1, run, out, t0, t1,
            None if own else _project(x[t0:t1, r0:r1], w_ih, b, reverse,
                                      _group_batch_sizes(batch_sizes[t0:t1], r0, r1)))
            for (r0, r1), (_, out, run) in zip(groups, bound, strict=True)])
        for slots, _, _ in bound:
            _hand_over(t0, t1, *slots)
    finals = [np.concatenate([slots[k][0] for slots, _, _ in bound])
              for k in range(len(states))]
    return output, finals


# ---------------------------------------------------------------- training over row groups
# Rows are independent through the recurrence, forward and backward, so the training
# step splits the batch as inference does: each row group runs its projection and its
# step loop (then, backward, its step loop) on its own core. The weight gradients are
# big GEMMs over all steps, on OpenBLAS's two threads, one group after the other (the
# sum over rows is linear). Saved for the backward: one group's history as the kernels
# write it, or ``{"groups": [(r0, r1, x_g, saved_g), ...]}``.


def _train_forward(x, w_ih, batch_sizes, states, flops, run):
    """The training forward of one layer-direction over one or two row groups.

    ``run(x_g, rows_g, states_g, w_ih_panels)`` is a mode's forward of a group of rows
    (``_group_projection`` makes its input projection, with the micro-kernel when
    ``w_ih_panels`` are given); it returns
    ``(output_g, finals_g, saved_g)``. Returns the same for the whole batch."""
    N = x.shape[1]
    groups = _row_groups(batch_sizes, N, flops, _TRAIN_SPLIT_FLOPS)
    if len(groups) == 1:
        return run(x, batch_sizes, states, None)
    G = w_ih.shape[0]
    own = G % _gemm.panel_width(x.dtype) == 0
    w_ih_panels = _gemm.pack(w_ih, transpose=True) if own else None
    parts = [None] * len(groups)

    def job(i, r0, r1):
        x_g = np.ascontiguousarray(x[:, r0:r1])
        parts[i] = (r0, r1, x_g, run(x_g, _group_batch_sizes(batch_sizes, r0, r1),
                                     [state[r0:r1] for state in states], w_ih_panels))

    _in_parallel([functools.partial(job, i, r0, r1) for i, (r0, r1) in enumerate(groups)])
    output = np.concatenate([part[3][0] for part in parts], axis=1)
    finals = [np.concatenate([part[3][1][k] for part in parts]) for k in range(len(states))]
    return output, finals, {"groups": [(r0, r1, x_g, res[2]) for r0, r1, x_g, res in parts]}


def _group_projection(x, w_ih, b, reverse, w_ih_panels, rows):
    """A group's input projection, ``(L, n, G)`` in processing order: the micro-kernel on
    this thread when ``w_ih_panels`` are given (the other group runs beside it), else
    OpenBLAS (``_project``, which skips the padding of ``rows``)."""
    if w_ih_panels is None:
        return _project(x, w_ih, b, reverse, rows)
    L, n, H_in = x.shape
    G = w_ih.shape[0]
    part = np.ascontiguousarray(x[::-1] if reverse else x)
    xw = np.empty((L, n, G), x.dtype)
    bias = _empty(1, x.dtype) if b is None else np.ascontiguousarray(b)
    _gemm.project(_gemm.address(x.dtype), part.reshape(-1, H_in), w_ih_panels, bias,
                  xw.reshape(-1, G))
    return xw


def _train_backward(x, batch_sizes, saved, grads_in, recursion, weight_grads):
    """The backward of one layer-direction over the forward's row groups.

    ``grads_in``: d_output ``(L, N, *)`` and the final states' gradients ``(N, *)``.
    ``recursion(saved_g, rows_g, grads_g)`` runs a group's step loop (the two groups in
    parallel) and returns ``(state_grads_g, rest)``; ``weight_grads(x_g, rows_g,
    saved_g, rest)`` then returns ``(dx_g, weight_grads_g)`` (one group at a time, on OpenBLAS's
    threads). Returns dx, the initial states' gradients and the weight gradients,
    summed over the groups."""
    L, N, _ = x.shape
    groups = saved["groups"] if "groups" in saved else [(0, N, x, saved)]
    out = [None] * len(groups)
    rows = [batch_sizes if len(groups) == 1 else _group_batch_sizes(batch_sizes, r0, r1)
            for r0, r1, _, _ in groups]

    def job(i, r0, r1, saved_g):
        grads_g = [np.ascontiguousarray(g[:, r0:r1] if g.ndim == 3 else g[r0:r1])
                   for g in grads_in]
        out[i] = recursion(saved_g, rows[i], grads_g)

    _in_parallel([functools.partial(job, i, r0, r1, saved_g)
                  for i, (r0, r1, _, saved_g) in enumerate(groups)])
    if len(groups) == 1:
        dx, weights = weight_grads(x, batch_sizes, saved, out[0][1])
        return dx, out[0][0], weights
    dx = np.empty(x.shape, x.dtype)
    total = None
    for (r0, r1, x_g, saved_g), rows_g, (_, rest) in zip(groups, rows, out, strict=True):
        dx[:, r0:r1], weights = weight_grads(x_g, rows_g, saved_g, rest)
        total = weights if total is None else [
            None if a is None else a + b for a, b in zip(total, weights, strict=True)]
    states = [np.concatenate([o[0][k] for o in out]) for k in range(len(out[0][0]))]
    return dx, states, total


def _two_slots(state):
    """Two state slots taking turns, the first holding ``state``."""
    slots = np.empty((2,) + state.shape, state.dtype)
    slots[0] = state
    return slots


def _state(a, dtype):
    """A fresh C-contiguous copy the kernel may overwrite."""
    return np.array(a, dtype=dtype, order="C", copy=True)


_PADDING_SHARE = 0.1  # packed input with more padding than this: GEMMs skip the padding


def _real_rows(batch_sizes, N):
    """The ``(L, N)`` mask of the rows each step really has (time order), for the GEMMs
    over all steps to skip the padding of packed input; None when there is (almost)
    none to skip."""
    if batch_sizes is None or batch_sizes[-1] >= N:  # padded input: every step full
        return None
    if batch_sizes.sum() >= (1 - _PADDING_SHARE) * len(batch_sizes) * N:
        return None
    return np.arange(N)[None, :] < batch_sizes[:, None]


def _project(x, w_ih, b, reverse=False, batch_sizes=None):
    """x W_ih^T + b for every step at once, one GEMM: (L, N, G), contiguous, in
    processing order (last step first when ``reverse``). With ``batch_sizes`` of packed
    input only the real rows are projected: the padding rows are left unset (the
    kernels never read them, and write zeros where they keep a history)."""
    L, N, H_in = x.shape
    real = _real_rows(batch_sizes, N)
    if real is not None:
        xw = np.empty((L, N, w_ih.shape[0]), x.dtype)
        part = _matmul(x[real], w_ih.T)  # (real rows, G), in time order
        if b is not None:
            part += b
        (xw[::-1] if reverse else xw)[real] = part
        return xw
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


def _input_grads(dz_proc, x, w_ih, reverse, batch_sizes=None):
    """dx, dW_ih and the bias gradient from the stacked pre-activation gradients (zero
    on the padding of packed input, whose rows the GEMMs skip: ``_real_rows``)."""
    L, N, G = dz_proc.shape
    real = _real_rows(batch_sizes, N)
    if real is not None:
        dz = (dz_proc[::-1] if reverse else dz_proc)[real]  # (real rows, G), time order
        dx = np.zeros(x.shape, x.dtype)
        dx[real] = _matmul(dz, w_ih)
        return dx, _matmul(dz.T, x[real]), dz.sum(axis=0)
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
    fw_panels = _gemm.pack(w_hh, transpose=True)  # the step product h W_hh^T

    def run(x, rows, states, w_ih_panels):  # a group of rows: its projection, its steps
        L, n, _ = x.shape
        gates = _group_projection(x, w_ih, b, reverse, w_ih_panels, rows)  # (L, n, G); the
        hs = np.empty((L + 1, n, P), dt)  # kernel turns it into the gates in place
        cs = np.empty((L + 1, n, H), dt)
        hs[0], cs[0] = states
        output = np.empty((L, n, P), dt)
        h_unproj = np.empty((n, H), dt) if proj else _empty(2, dt)  # o ⊙ tanh c', before W_hr
        _lstm.lstm_forward(gates, _gemm.address(dt), fw_panels, w_hr_k, rows, reverse, hs, cs,
                           _step_buffer(fw_panels, n), output, h_unproj)
        return output, [hs[L].copy(), cs[L].copy()], {"h": hs, "c": cs, "gates": gates}

    output, (h_n, c_n), saved = _train_forward(x, w_ih, batch_sizes, [h_0, c_0],
                                               2.0 * L * N * G * P, run)
    return output, h_n, c_n, saved


def lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes=None,
                  reverse=False):
    """Compiled ``_reference.lstm_backward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 4
    P = w_hh.shape[1]
    proj = w_hr is not None
    w_hr_k = np.ascontiguousarray(w_hr) if proj else _empty(2, dt)
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    bw_panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # dh = dz W_hh

    def recursion(saved, rows, grads):
        d_output, dh, dc = grads[0], _state(grads[1], dt), _state(grads[2], dt)
        cs, gates = saved["c"], saved["gates"]
        n = d_output.shape[1]
        dz = np.empty((L, n, G), dt)  # dL/d(pre-activations), processing order
        dh_steps = np.empty((L, n, P), dt) if proj else _empty(3, dt)
        _lstm.lstm_backward(_gemm.address(dt), bw_panels, w_hr_k, rows, reverse, cs, gates,
                            d_output, dh, dc, dz, dh_steps,
                            np.empty((n, H), dt) if proj else _empty(2, dt),
                            np.empty((n, H), dt), _step_buffer(bw_panels, n))
        return [dh, dc], (dz, dh_steps)

    def weight_grads(x, rows, saved, rest):
        dz, dh_steps = rest
        hs, cs, gates = saved["h"], saved["c"], saved["gates"]
        dw_hh = _matmul(dz.reshape(-1, G).T, hs[:L].reshape(-1, P))  # one GEMM over all steps
        dw_hr = None
        if proj:
            h_unproj = gates[:, :, 3 * H:] * np.tanh(cs[1:])  # o ⊙ tanh c', before W_hr
            dw_hr = _matmul(dh_steps.reshape(-1, P).T, h_unproj.reshape(-1, H))
        dx, dw_ih, db = _input_grads(dz, x, w_ih, reverse, rows)
        return dx, [dw_ih, dw_hh, db, dw_hr]

    grads_in = [np.ascontiguousarray(d_output, dtype=dt), dh_n, dc_n]
    dx, (dh, dc), (dw_ih, dw_hh, db, dw_hr) = _train_backward(
        x, batch_sizes, saved, grads_in, recursion, weight_grads)
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
    fw_panels = _gemm.pack(w_hh, transpose=True)  # the step product h W_hh^T

    def run(x, rows, states, w_ih_panels):  # a group of rows: its projection, its steps
        L, n, _ = x.shape
        gates = _group_projection(x, w_ih, b_ih, reverse, w_ih_panels, rows)  # (L, n, 3H)
        hs = np.empty((L + 1, n, H), dt)  # kernel turns it into the gates in place
        w_hn_h = np.empty((L, n, H), dt)  # W_hn h + b_hn of every step, what r scales
        hs[0] = states[0]
        output = np.empty((L, n, H), dt)
        _gru.gru_forward(gates, _gemm.address(dt), fw_panels, b_hh_k, rows, reverse, hs,
                         _step_buffer(fw_panels, n), w_hn_h, output)
        return output, [hs[L].copy()], {"h": hs, "gates": gates, "w_hn_h": w_hn_h}

    output, (h_n,), saved = _train_forward(x, w_ih, batch_sizes, [h_0], 2.0 * L * N * G * H,
                                           run)
    return output, h_n, saved


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False):
    """Compiled ``_reference.gru_backward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 3
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    bw_panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # dh = dhw W_hh

    def recursion(saved, rows, grads):
        d_output, dh = grads[0], _state(grads[1], dt)
        n = d_output.shape[1]
        dxw = np.empty((L, n, G), dt)  # d(x W_ih^T + b_ih), processing order
        _gru.gru_backward(_gemm.address(dt), bw_panels, rows, reverse, saved["h"],
                          saved["gates"], saved["w_hn_h"], d_output, dh, dxw,
                          np.empty((n, G), dt),  # d(h W_hh^T + b_hh) of a step
                          np.empty((n, H), dt),  # dL/dh' of a step
                          _step_buffer(bw_panels, n))
        return [dh], dxw

    def weight_grads(x, rows, saved, dxw):
        dx, dw_ih, db_ih = _input_grads(dxw, x, w_ih, reverse, rows)
        # d(h W_hh^T + b_hh) is d(x W_ih^T + b_ih) but for its n rows, r ⊙ that: derived
        # in place once dxw has served, so no second (L, n, 3H) stack is ever allocated
        dxw[:, :, 2 * H:] *= saved["gates"][:, :, :H]
        dw_hh = _matmul(dxw.reshape(-1, G).T, saved["h"][:L].reshape(-1, H))  # one GEMM
        return dx, [dw_ih, dw_hh, db_ih, dxw.reshape(-1, G).sum(axis=0)]

    grads_in = [np.ascontiguousarray(d_output, dtype=dt), dh_n]
    dx, (dh,), (dw_ih, dw_hh, db_ih, db_hh) = _train_backward(
        x, batch_sizes, saved, grads_in, recursion, weight_grads)
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
    fw_panels = _gemm.pack(w_hh, transpose=True)  # the step product h W_hh^T

    def run(x, rows, states, w_ih_panels):  # a group of rows: its projection, its steps
        L, n, _ = x.shape
        xw = _group_projection(x, w_ih, b, reverse, w_ih_panels, rows)  # (L, n, H)
        hs = np.empty((L + 1, n, H), dt)
        hs[0] = states[0]
        output = np.empty((L, n, H), dt)
        _rnn.rnn_forward(xw, _gemm.address(dt), fw_panels, rows, reverse, relu, hs,
                         _step_buffer(fw_panels, n), output)
        return output, [hs[L].copy()], {"h": hs}

    output, (h_n,), saved = _train_forward(x, w_ih, batch_sizes, [h_0], 2.0 * L * N * H * H,
                                           run)
    return output, h_n, saved


def rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity="tanh", batch_sizes=None,
                 reverse=False):
    """Compiled ``_reference.rnn_backward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    H = w_ih.shape[0]
    batch_sizes = _batch_sizes(batch_sizes, L, N)
    reverse, relu = bool(reverse), nonlinearity == "relu"
    bw_panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # dh = da W_hh

    def recursion(saved, rows, grads):
        d_output, dh = grads[0], _state(grads[1], dt)
        n = d_output.shape[1]
        da = np.empty((L, n, H), dt)  # dL/d(pre-activation), processing order
        _rnn.rnn_backward(_gemm.address(dt), bw_panels, rows, reverse, relu, saved["h"],
                          d_output, dh, da, _step_buffer(bw_panels, n))
        return [dh], da

    def weight_grads(x, rows, saved, da):
        dw_hh = _matmul(da.reshape(-1, H).T, saved["h"][:L].reshape(-1, H))
        dx, dw_ih, db = _input_grads(da, x, w_ih, reverse, rows)
        return dx, [dw_ih, dw_hh, db]

    grads_in = [np.ascontiguousarray(d_output, dtype=dt), dh_n]
    dx, (dh,), (dw_ih, dw_hh, db) = _train_backward(x, batch_sizes, saved, grads_in, recursion,
                                                    weight_grads)
    return dx, dh, dw_ih, dw_hh, db


# ---------------------------------------------------------------- small calls: one compiled stack

_SMALL_FLOPS = 4e6  # a whole stack's step products below this: one compiled call
_STACK_MODES = {"LSTM": _stack.LSTM, "GRU": _stack.GRU, "RNN_TANH": _stack.RNN_TANH,
                "RNN_RELU": _stack.RNN_RELU}


def is_small(mode, x, num_layers, D, H, P):
    """Whether a stack's inference is small enough for ``stack_inference``."""
    L, N, _ = x.shape
    G = _stack.GATES[_STACK_MODES[mode]] * H
    return 2.0 * L * N * G * P * num_layers * D < _SMALL_FLOPS


class SmallStack:
    """A stack's weights laid out for ``_kernels/stack.py``: one flat buffer, the layout
    table and the packed panels, which live as long as the stack. A module's call
    (``run``) repacks them when the weights changed since they were packed (in-place
    updates: an optimizer step, ``load_state_dict``); a stream packs once and runs with
    ``pack=False``.

    Two threads may call one module's stack at once: both see changed weights, both
    pack the same values, and the bytes the panels were packed from are recorded after
    the panels are written, so no call reads half-packed panels as current.
    """

    def __init__(self, mode, flat, num_layers, D, bias, proj, buffer=None):
        self.mode = _STACK_MODES[mode]
        self.num_layers, self.D = num_layers, D
        dt = flat[0].dtype
        self.nr = nr = _gemm.panel_width(dt)
        # flat, flattened: a module's own buffer, which its parameters are views of (no
        # copy; in-place updates show through), or a copy
        self.weights = np.concatenate(flat, axis=None) if buffer is None else buffer
        self.shapes = tuple(w.shape for w in flat)
        self.layout, size = _layout(self.shapes, num_layers * D, bias, proj, nr)
        self.H = flat[1].shape[0] // _stack.GATES[self.mode]
        self.panel_size = size
        self.panels = np.empty(size, dt)
        self.packed = False  # panels filled at least once (the first run packs)
        self.weight_bytes = self.weights.view(np.uint32)  # 4-byte words: floats and doubles
        self.packed_bytes = np.empty_like(self.weight_bytes)  # what the panels hold
        self.gemm = _gemm.address(dt)
        self._local = threading.local()  # per thread: the scratch of recent call shapes

    def run(self, x, h_0, c_0, batch_sizes, pack=True):
        """``(output, h_n, c_n)`` of the stack on ``x (L, N, I)`` from ``h_0``, ``c_0``
        ``(K, N, *)``; ``c_n`` None but for the LSTM. ``pack``: repack the panels if the
        weights changed since they were packed; ``pack=False`` runs on the panels as they
        are (the first run packs either way). Allocates its three results and nothing
        else once a call of the same shape has run in this thread (``_scratch``)."""
        L, N, I = x.shape
        dt = x.dtype
        P = h_0.shape[2]
        lstm = self.mode == _stack.LSTM
        output = np.empty((L, N, self.D * P), dt)
        h_n = np.empty(h_0.shape, dt)
        c_n = np.empty(c_0.shape, dt) if lstm else _empty(3, dt)
        work, x_copy = self._scratch(L, N, I, P, dt)
        if not x.flags.c_contiguous:  # batch_first: time-major, in the scratch
            np.copyto(x_copy, x)
            x = x_copy
        mode = (_stack.PACK_ALWAYS if not self.packed else
                _stack.PACK_IF_CHANGED if pack else _stack.PACK_NEVER)
        _stack.stack_inference(self.mode, x, np.ascontiguousarray(h_0),
                               np.ascontiguousarray(c_0) if lstm else _empty(3, dt),
                               self.weights, self.layout, self.panels, mode, self.weight_bytes,
                               self.packed_bytes, self.gemm, self.nr, self.num_layers, self.D,
                               self.H, _batch_sizes(batch_sizes, L, N), output, h_n, c_n, work)
        self.packed = True
        return output, h_n, (c_n if lstm else None)

    def _scratch(self, L, N, I, P, dt):
        """``(work, x_copy (L, N, I))``: the kernel's scratch for calls of this shape, kept
        per thread (two threads never share one) for the last few shapes."""
        kept = self._local.__dict__.setdefault("scratch", {})
        key = (L, N, I, P)
        found = kept.get(key)
        if found is None:
            G = _stack.GATES[self.mode] * self.H
            size = _stack.work_size(L, N, G, -(-G // self.nr), self.nr, P, self.H, self.D,
                                    self.num_layers)
            block = np.empty(size + L * N * I, dt)
            if len(kept) >= 8:
                kept.clear()
            found = kept[key] = (block[:size], block[size:].reshape(L, N, I))
        return found

    def train_forward(self, x, h_0, c_0, batch_sizes):
        """The training forward (``_kernels/stack_train.py``): ``(output, h_n, c_n,
        saved)`` as ``run``'s, ``saved`` what ``backward`` takes (opaque). Packs the
        panels anew (training changes the weights between calls)."""
        L, N, _ = x.shape
        dt = x.dtype
        K, P, H, D = self.num_layers * self.D, h_0.shape[2], self.H, self.D
        G = _stack.GATES[self.mode] * H
        lstm, gru = self.mode == _stack.LSTM, self.mode == _stack.GRU
        x = _writable(x)
        rows = _batch_sizes(batch_sizes, L, N)
        # the histories, flat, one block per layer-direction (stack_train.py's table), and
        # the panels: one allocation, cut in five
        outs = np.empty(self.num_layers * L * N * D * P, dt)
        sizes = (K * L * N * G, K * (L + 1) * N * P, K * (L + 1) * N * H if lstm else 0,
                 K * L * N * H if gru else 0, self.panel_size)
        block = np.empty(sum(sizes), dt)
        gates, hs, cs, w_hn_h, panels = _cut(block, sizes)
        h_n = np.empty(h_0.shape, dt)
        c_n = np.empty(c_0.shape, dt) if lstm else _empty(3, dt)
        _stack_train.stack_train_forward(
            self.mode, x, _writable(h_0), _writable(c_0) if lstm else _empty(3, dt),
            self.weights, self.layout, panels, self.gemm, self.nr,
            self.num_layers, D, H, rows, outs, gates, hs, cs, w_hn_h, h_n, c_n)
        output = outs[(self.num_layers - 1) * L * N * D * P:].reshape(L, N, D * P)
        saved = (x, rows, outs, gates, hs, cs, w_hn_h)
        return output, h_n, (c_n if lstm else None), saved

    def backward(self, saved, d_output, dh_n, dc_n):
        """The backward of ``train_forward``: ``(dx, dh_0, dc_0, grad)``, ``dc_0`` None but
        for the LSTM, ``grad`` every weight's gradient in one flat buffer laid out as
        ``weights`` (``grad_views`` cuts it into the weights' shapes)."""
        x, rows, outs, gates, hs, cs, w_hn_h = saved
        dt = x.dtype
        lstm = self.mode == _stack.LSTM
        dh_n = _writable(dh_n, dt)
        dc_n = _writable(dc_n, dt) if lstm else _empty(3, dt)
        grad = np.empty(self.weights.shape[0], dt)
        dx = np.empty(x.shape, dt)
        dh_0 = np.empty(dh_n.shape, dt)
        dc_0 = np.empty(dc_n.shape, dt) if lstm else _empty(3, dt)
        _stack_train.stack_backward(
            self.mode, x, self.weights, self.layout, self.gemm, self.nr, self.num_layers,
            self.D, self.H, rows, outs, gates, hs, cs, w_hn_h, _writable(d_output, dt), dh_n,
            dc_n, grad, dx, dh_0, dc_0)
        return dx, dh_0, (dc_0 if lstm else None), grad

    @property
    def spans(self):
        """``(start, stop, shape)`` of each weight in ``weights``, in the flat order."""
        return _spans(self.shapes)

    def grad_views(self, grad):
        """The flat gradient buffer of ``backward`` as one view per weight, in the flat
        order (``_modes.weight_names`` per layer-direction), shaped as the weights."""
        return [grad[a:b].reshape(shape) for a, b, shape in _spans(self.shapes)]


def _cut(block, sizes):
    """``block`` cut into consecutive 1-D pieces of ``sizes``."""
    pieces, start = [], 0
    for size in sizes:
        pieces.append(block[start:start + size])
        start += size
    return pieces


@functools.lru_cache(maxsize=64)
def _spans(shapes):
    """``(start, stop, shape)`` of each weight in the flat buffer, in the flat order."""
    spans, offset = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        spans.append((offset, offset + size, shape))
        offset += size
    return tuple(spans)


def _writable(a, dtype=None):
    """``a`` as a C-contiguous, writable array of ``dtype`` (the compiled stack's argument
    types: one specialization), copied only when it is not one already."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


@functools.lru_cache(maxsize=64)
def _layout(shapes, K, bias, proj, nr):
    """``(layout (K, 7) int64, panel buffer size)`` for the flat weights of these shapes
    (the order of ``_modes.weight_names``)."""
    per = 2 + 2 * bias + proj
    layout = np.full((K, 7), -1, dtype=np.int64)
    offset = panel = 0
    for k in range(K):
        names = [_stack.W_IH, _stack.W_HH] + ([_stack.B_IH, _stack.B_HH] if bias else []) \
            + ([_stack.W_HR] if proj else [])
        for column, shape in zip(names, shapes[k * per:(k + 1) * per], strict=True):
            layout[k, column] = offset
            offset += int(np.prod(shape))
        G, I_k = shapes[k * per]
        P = shapes[k * per + 1][1]
        layout[k, _stack.PANELS] = panel
        layout[k, _stack.IN] = I_k
        panel += -(-G // nr) * (I_k + P) * nr
    layout.flags.writeable = False
    return layout, panel
