"""The compiled recurrences behind the layers, with ``_reference``'s signatures.

Each function here has exactly the arguments and results of its slow twin in
``rnnkit._reference`` (see there for shapes and conventions): it computes the
input projection of all steps in one GEMM, allocates outputs, histories and
scratch, and calls the numba kernel of ``_kernels/`` for the step loop, which
runs one small ``(N, H) x (H, G)`` GEMM per step plus the gate math. The
weight gradients of the backward are again one GEMM over all steps, in NumPy.

When the batch is large enough, the rows are split in two halves run by two
threads (the kernels release the GIL): rows are independent, and on a small
machine two single-threaded GEMMs beat one two-threaded GEMM of a small matrix.
Kernels compile lazily on first use, once per dtype, and are cached on disk.
"""

from __future__ import annotations

import contextlib
import threading

import numpy as np

from ._kernels import gru as _gru
from ._kernels import lstm as _lstm
from ._kernels import rnn as _rnn
from ._kernels.blas import gemm as _gemm

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward"]

# ---------------------------------------------------------------- threads

# Split the rows over two threads when a step's GEMM has at least this many
# multiply-adds (N * G * H_out). Measured after every GEMM moved onto numba's BLAS
# (_kernels/blas.py): one thread with a 2-thread BLAS beat the split at every size
# of the bench (e.g. LSTM T50 B64 H1024 inference 269 ms unsplit vs 436 ms split),
# so the split is off by default; tests still exercise it by lowering this.
_SPLIT_MIN = 1 << 62
_pool = None
_blas = None  # the threadpoolctl controller of numba's BLAS (SciPy's OpenBLAS), or False
_lock = threading.Lock()


def _executor():
    global _pool
    if _pool is None:
        from concurrent.futures import ThreadPoolExecutor

        with _lock:
            if _pool is None:
                _pool = ThreadPoolExecutor(1, thread_name_prefix="rnnkit")
    return _pool


def _numba_blas():
    """threadpoolctl's handle on the BLAS numba calls (SciPy's), or None."""
    global _blas
    if _blas is None:
        _blas = False
        try:
            import scipy.linalg.cython_blas  # noqa: F401  (load it, so it is listed)
            from threadpoolctl import ThreadpoolController

            libs = [c for c in ThreadpoolController().lib_controllers
                    if c.user_api == "blas" and "scipy" in c.filepath
                    and "numpy" not in c.filepath]
            _blas = libs[0] if libs else False
        except Exception:  # no threadpoolctl: the split still runs, BLAS may oversubscribe
            _blas = False
    return _blas or None


@contextlib.contextmanager
def _one_blas_thread():
    blas = _numba_blas()
    if blas is None:
        yield
        return
    before = blas.get_num_threads()
    if before != 1:
        blas.set_num_threads(1)
    try:
        yield
    finally:
        if before != 1:
            blas.set_num_threads(before)


def _split_row(bs, N):
    """The row that halves the work: rows are sorted by decreasing length."""
    if bs[-1] == N:  # every row every step
        return (N + 1) // 2
    lengths = (bs[None, :] > np.arange(N)[:, None]).sum(axis=1)  # (N,)
    half = np.searchsorted(np.cumsum(lengths), lengths.sum() / 2)
    return int(min(max(half, 1), N - 1))


def _rows(kernel, head, tail, N, step_macs, bs):
    """``kernel(*head, lo, hi, *tail)`` over all rows: at once, or two halves on two threads."""
    if N < 2 or step_macs < _SPLIT_MIN:
        kernel(*head, 0, N, *tail)
        return
    mid = _split_row(bs, N)
    with _one_blas_thread():
        other = _executor().submit(kernel, *head, mid, N, *tail)
        try:
            kernel(*head, 0, mid, *tail)
        finally:
            other.result()


# ---------------------------------------------------------------- shared pieces

_EMPTY = {}


def _empty(ndim, dtype):
    """A (0, ..., 0) placeholder for an absent kernel argument (e.g. no projection)."""
    key = (ndim, dtype)
    if key not in _EMPTY:
        _EMPTY[key] = np.empty((0,) * ndim, dtype=dtype)
    return _EMPTY[key]


def _batch_sizes(batch_sizes, L, N):
    if batch_sizes is None:
        return np.full(L, N, dtype=np.int64)
    return np.ascontiguousarray(batch_sizes, dtype=np.int64)


def _state(a, dtype):
    """A fresh C-contiguous copy the kernel may overwrite."""
    return np.array(a, dtype=dtype, order="C", copy=True)


def _matmul(a, b):
    """a @ b on numba's BLAS (see ``_kernels/blas.py``), a fresh C-contiguous result."""
    out = np.empty((a.shape[0], b.shape[1]), dtype=a.dtype)
    _gemm(a, b, out)
    return out


def _project(x, w_ih, b):
    """x W_ih^T + b for every step at once: one GEMM. (L, N, G), contiguous."""
    L, N, H_in = x.shape
    xw = _matmul(np.ascontiguousarray(x).reshape(L * N, H_in), w_ih.T)  # (L*N, G)
    if b is not None:
        xw += b
    return xw.reshape(L, N, -1)


_CHUNK_BYTES = 1 << 18  # inference: input projections held at once (at least 64 steps)


def _projections(x, w_ih, b, reverse):
    """``(t0, t1, xw)`` in processing order, ``xw = x[t0:t1] W_ih^T + b`` (one GEMM per
    chunk, all into one buffer), so that inference memory beyond the output does not
    grow with ``L``: chunks of at least 64 steps and about ``_CHUNK_BYTES``."""
    L, N, H_in = x.shape
    G = w_ih.shape[0]
    step = min(L, max(64, _CHUNK_BYTES // max(1, N * G * x.dtype.itemsize)))
    buffer = np.empty((step * N, G), dtype=x.dtype)
    bounds = [(t0, min(t0 + step, L)) for t0 in range(0, L, step)]
    for t0, t1 in bounds[::-1] if reverse else bounds:
        xw = buffer[: (t1 - t0) * N]
        _gemm(np.ascontiguousarray(x[t0:t1]).reshape(-1, H_in), w_ih.T, xw)
        if b is not None:
            xw += b
        yield t0, t1, xw.reshape(t1 - t0, N, G)


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
    r = np.empty((N, H), dt) if proj else _empty(2, dt)
    bs = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    output = np.empty((L, N, P), dt)
    macs = G * P + (P * H if proj else 0)
    if not keep:
        h, c = _state(h_0, dt), _state(c_0, dt)
        z = np.empty((N, G), dt)
        for t0, t1, xw in _projections(x, w_ih, b, reverse):
            bs_c, out_c = bs[t0:t1], output[t0:t1]
            _rows(_lstm.lstm_forward_infer, (xw, w_hh, w_hr_k, bs_c, reverse), (h, c, out_c, z, r),
          N, N * macs, bs_c)
        return output, h, c, None
    xw = _project(x, w_ih, b)  # (L, N, G): every step in one GEMM
    hs = np.empty((L + 1, N, P), dt)
    cs = np.empty((L + 1, N, H), dt)
    gates = np.empty((L, N, G), dt)
    hs[0], cs[0] = h_0, c_0
    _rows(_lstm.lstm_forward_train, (xw, w_hh, w_hr_k, bs, reverse), (hs, cs, gates, output, r),
          N, N * macs, bs)
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
    bs = _batch_sizes(batch_sizes, L, N)
    dz = np.empty((L, N, G), dt)  # dL/d(pre-activations), processing order
    dh_steps = np.empty((L, N, P), dt) if proj else _empty(3, dt)
    dr = np.empty((N, H), dt) if proj else _empty(2, dt)
    tc = np.empty((N, H), dt)
    macs = G * P + (P * H if proj else 0)
    _rows(_lstm.lstm_backward, (w_hh, w_hr_k, bs, bool(reverse)),
          (cs, gates, d_output, dh, dc, dz, dh_steps, dr, tc),
          N, N * macs, bs)
    dw_hh = _matmul(dz.reshape(-1, G).T, hs[:L].reshape(-1, P))  # one GEMM over all steps
    dw_hr = None
    if proj:
        r = gates[:, :, 3 * H:] * np.tanh(cs[1:])  # o ⊙ tanh c', the unprojected h'
        dw_hr = _matmul(dh_steps.reshape(-1, P).T, r.reshape(-1, H))
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
    bs = _batch_sizes(batch_sizes, L, N)
    reverse = bool(reverse)
    output = np.empty((L, N, H), dt)
    if not keep:
        h = _state(h_0, dt)
        z, hn = np.empty((N, G), dt), np.empty((N, H), dt)
        for t0, t1, xw in _projections(x, w_ih, b_ih, reverse):
            bs_c, out_c = bs[t0:t1], output[t0:t1]
            _rows(_gru.gru_forward_infer, (xw, w_hh, b_hh_k, bs_c, reverse), (h, out_c, z, hn),
          N, N * G * H, bs_c)
        return output, h, None
    xw = _project(x, w_ih, b_ih)  # (L, N, 3H): every step in one GEMM
    hs = np.empty((L + 1, N, H), dt)
    gates = np.empty((L, N, G), dt)
    hn = np.empty((L, N, H), dt)
    hs[0] = h_0
    _rows(_gru.gru_forward_train, (xw, w_hh, b_hh_k, bs, reverse), (hs, gates, hn, output),
          N, N * G * H, bs)
    return output, hs[L].copy(), {"h": hs, "gates": gates, "hn": hn}


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False):
    """Compiled ``_reference.gru_backward``: same arguments, same results."""
    hs, gates, hn = saved["h"], saved["gates"], saved["hn"]
    L, N, _ = x.shape
    dt = x.dtype
    G = gates.shape[2]
    H = G // 3
    w_hh = np.ascontiguousarray(w_hh)
    dh = _state(dh_n, dt)
    d_output = np.ascontiguousarray(d_output, dtype=dt)
    bs = _batch_sizes(batch_sizes, L, N)
    dxw = np.empty((L, N, G), dt)  # d(x W_ih^T + b_ih)
    dhw = np.empty((L, N, G), dt)  # d(h W_hh^T + b_hh)
    dhs = np.empty((N, H), dt)
    _rows(_gru.gru_backward, (w_hh, bs, bool(reverse)),
          (hs, gates, hn, d_output, dh, dxw, dhw, dhs),
          N, N * G * H, bs)
    dw_hh = _matmul(dhw.reshape(-1, G).T, hs[:L].reshape(-1, H))  # one GEMM over all steps
    db_hh = dhw.reshape(-1, G).sum(axis=0)
    dx, dw_ih, db_ih = _input_grads(dxw, x, w_ih, reverse)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# ---------------------------------------------------------------- Elman RNN


def rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=False):
    """Compiled ``_reference.rnn_forward``: same arguments, same results."""
    L, N, _ = x.shape
    dt = x.dtype
    H = w_ih.shape[0]
    w_hh = np.ascontiguousarray(w_hh)
    bs = _batch_sizes(batch_sizes, L, N)
    reverse, relu = bool(reverse), nonlinearity == "relu"
    output = np.empty((L, N, H), dt)
    a = np.empty((N, H), dt)
    if not keep:
        h = _state(h_0, dt)
        for t0, t1, xw in _projections(x, w_ih, b, reverse):
            bs_c, out_c = bs[t0:t1], output[t0:t1]
            _rows(_rnn.rnn_forward_infer, (xw, w_hh, bs_c, reverse, relu), (h, out_c, a),
          N, N * H * H, bs_c)
        return output, h, None
    xw = _project(x, w_ih, b)  # (L, N, H): every step in one GEMM
    hs = np.empty((L + 1, N, H), dt)
    hs[0] = h_0
    _rows(_rnn.rnn_forward_train, (xw, w_hh, bs, reverse, relu), (hs, output, a),
          N, N * H * H, bs)
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
    bs = _batch_sizes(batch_sizes, L, N)
    da = np.empty((L, N, H), dt)
    _rows(_rnn.rnn_backward, (w_hh, bs, bool(reverse), nonlinearity == "relu"),
          (hs, d_output, dh, da),
          N, N * H * H, bs)
    dw_hh = _matmul(da.reshape(-1, H).T, hs[:L].reshape(-1, H))
    dx, dw_ih, db = _input_grads(da, x, w_ih, reverse)
    return dx, dh, dw_ih, dw_hh, db
