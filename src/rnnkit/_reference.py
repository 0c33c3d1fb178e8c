r"""Plain-NumPy recurrences: one layer, one direction, all ``L`` steps. Slow, obviously right.

These loops are the readable statement of the math and the oracle the compiled
kernels in ``_kernels/`` are tested against. Each step is the equation of torch's
docs (https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html, ``GRU``, ``RNN``)
applied to the whole batch at once::

    LSTM  i = σ(W_ii x + b_ii + W_hi h + b_hi)     c' = f ⊙ c + i ⊙ g
          f = σ(W_if x + b_if + W_hf h + b_hf)     h' = o ⊙ tanh(c')
          g = tanh(W_ig x + b_ig + W_hg h + b_hg)  h' = W_hr h'   (proj_size > 0)
          o = σ(W_io x + b_io + W_ho h + b_ho)
    GRU   r = σ(W_ir x + b_ir + W_hr h + b_hr)
          z = σ(W_iz x + b_iz + W_hz h + b_hz)
          n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))
          h' = (1 - z) ⊙ n + z ⊙ h
    RNN   h' = tanh(W_ih x + b_ih + W_hh h + b_hh)      (or relu)

Conventions shared by every function here:

- ``x`` is ``(L, N, H_in)`` in time order. ``reverse=True`` walks ``t = L-1 .. 0``.
- ``batch_sizes`` (``(L,)`` int, or None for "all rows every step") says how many
  rows are active at time ``t``; rows are sorted by decreasing length, so the
  active ones are always ``[:batch_sizes[t]]``. An inactive row keeps its state
  and outputs zeros. Reversed, a row is inactive until ``t`` reaches its own last
  step, so the reverse direction starts at each sequence's end::

      lengths [3, 2, 1] -> batch_sizes [3, 2, 1]:   t0: a b c | t1: a b | t2: a

- Histories are kept in processing order ``s`` (``t = s``, or ``L-1-s`` reversed):
  ``h[s]``, ``c[s]`` are the states entering step ``s``, so ``h[0] = h_0`` (Haste).
- Weight gradients are one GEMM over all steps (``dz`` stacked for all ``L``),
  never per-step outer products.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit as _sigmoid  # σ(x) = 1 / (1 + e^-x), no overflow at ±1e4


def _time(s: int, L: int, reverse: bool) -> int:
    return L - 1 - s if reverse else s


def _active(batch_sizes, t: int, N: int) -> int:
    return N if batch_sizes is None else int(batch_sizes[t])


class _Projection:
    """``x_t W_ih^T + b`` by step ``t``, computed ``chunk`` steps per GEMM.

    Training keeps the whole ``(L, N, G)`` block (``chunk = L``: one GEMM); inference
    uses a bounded chunk, so its memory beyond the output does not grow with ``L``.
    """

    def __init__(self, x, w_ih, b, chunk):
        self.x, self.w_ih, self.b, self.chunk = x, w_ih, b, max(1, chunk)
        self.k, self.block = -1, None

    def __getitem__(self, t):
        k = t // self.chunk
        if k != self.k:
            block = self.x[k * self.chunk : (k + 1) * self.chunk] @ self.w_ih.T  # (chunk, N, G)
            if self.b is not None:
                block += self.b
            self.k, self.block = k, block
        return self.block[t - k * self.chunk]


_INFERENCE_CHUNK = 64  # steps per input-projection GEMM when no history is kept


def _projection(x, w_ih, b, keep):
    return _Projection(x, w_ih, b, x.shape[0] if keep else _INFERENCE_CHUNK)


def _in_time_order(a: np.ndarray, reverse: bool) -> np.ndarray:
    """A history kept in processing order, laid out in time order."""
    return a[::-1] if reverse else a


def _input_grads(dz_proc, x, w_ih, reverse):
    """dx, dW_ih and the bias gradient from the stacked pre-activation gradients."""
    dz = _in_time_order(dz_proc, reverse)  # (L, N, G)
    G = dz.shape[2]
    dx = dz @ w_ih  # (L, N, H_in)
    dw_ih = dz.reshape(-1, G).T @ x.reshape(-1, x.shape[2])  # one GEMM: (G, H_in)
    return dx, dw_ih, dz.sum(axis=(0, 1))


# ---------------------------------------------------------------- LSTM


def lstm_forward(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes=None, reverse=False, keep=False):
    """
    x        (L, N, H_in)
    h_0      (N, P)       P = proj_size, or H without projection
    c_0      (N, H)
    w_ih     (4H, H_in)   rows i, f, g, o
    w_hh     (4H, P)
    b        (4H,)        b_ih + b_hh, or None
    w_hr     (P, H)       or None
    Returns ``output (L, N, P), h_n (N, P), c_n (N, H), saved`` where ``saved`` is
    None unless ``keep``: then ``{"h": (L+1, N, P), "c": (L+1, N, H), "gates": (L, N, 4H)}``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0] // 4
    xw = _projection(x, w_ih, b, keep)  # xw[t]: (N, 4H), the input part of every gate
    h, c = h_0.copy(), c_0.copy()
    output = np.zeros((L, N, h.shape[1]), dtype=x.dtype)
    if keep:
        hs = np.zeros((L + 1, N, h.shape[1]), dtype=x.dtype)
        cs = np.zeros((L + 1, N, H), dtype=x.dtype)
        gates = np.zeros((L, N, 4 * H), dtype=x.dtype)
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s], cs[s] = h, c
        z = xw[t][:n] + h[:n] @ w_hh.T  # (n, 4H)
        i = _sigmoid(z[:, :H])
        f = _sigmoid(z[:, H : 2 * H])
        g = np.tanh(z[:, 2 * H : 3 * H])
        o = _sigmoid(z[:, 3 * H :])
        c_new = f * c[:n] + i * g
        h_new = o * np.tanh(c_new)  # (n, H)
        if w_hr is not None:
            h_new = h_new @ w_hr.T  # (n, P)
        c[:n], h[:n], output[t, :n] = c_new, h_new, h_new
        if keep:
            gates[s, :n] = np.concatenate([i, f, g, o], axis=1)
    saved = None
    if keep:
        hs[L], cs[L] = h, c
        saved = {"h": hs, "c": cs, "gates": gates}
    return output, h, c, saved


def lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes=None,
                  reverse=False):
    """The fused BPTT of ``lstm_forward`` (derivation: docs/equations.md).

    Returns ``dx, dh_0, dc_0, dw_ih, dw_hh, db, dw_hr`` (``dw_hr`` None without projection).
    """
    hs, cs, gates = saved["h"], saved["c"], saved["gates"]
    L, N, _ = x.shape
    H = w_hh.shape[0] // 4
    dh, dc = dh_n.copy(), dc_n.copy()
    dz = np.zeros((L, N, 4 * H), dtype=x.dtype)  # dL/d(pre-activations), processing order
    dh_steps = np.zeros_like(hs[1:]) if w_hr is not None else None  # dL/dh' per step
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]  # from the next step and from the output
        i, f = gates[s, :n, :H], gates[s, :n, H : 2 * H]
        g, o = gates[s, :n, 2 * H : 3 * H], gates[s, :n, 3 * H :]
        tanh_c = np.tanh(cs[s + 1, :n])
        if w_hr is not None:
            dh_steps[s, :n] = dh_s
            dh_s = dh_s @ w_hr  # h' = W_hr (o ⊙ tanh c'): back through the projection
        do = dh_s * tanh_c
        dc_s = dc[:n] + dh_s * o * (1 - tanh_c * tanh_c)  # tanh' = 1 - tanh²
        di, df, dg = dc_s * g, dc_s * cs[s, :n], dc_s * i
        dc[:n] = dc_s * f  # c' = f ⊙ c + i ⊙ g
        dz[s, :n, :H] = di * i * (1 - i)  # σ' = σ(1 - σ)
        dz[s, :n, H : 2 * H] = df * f * (1 - f)
        dz[s, :n, 2 * H : 3 * H] = dg * (1 - g * g)
        dz[s, :n, 3 * H :] = do * o * (1 - o)
        dh[:n] = dz[s, :n] @ w_hh
    G, P = 4 * H, hs.shape[2]
    dw_hh = dz.reshape(-1, G).T @ hs[:L].reshape(-1, P)  # one GEMM over all steps
    dw_hr = None
    if w_hr is not None:
        h_unproj = gates[:, :, 3 * H :] * np.tanh(cs[1:])  # o ⊙ tanh c', before W_hr
        dw_hr = dh_steps.reshape(-1, P).T @ h_unproj.reshape(-1, H)
    dx, dw_ih, db = _input_grads(dz, x, w_ih, reverse)
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr


# ---------------------------------------------------------------- GRU


def gru_forward(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, reverse=False, keep=False):
    """
    x        (L, N, H_in)
    h_0      (N, H)
    w_ih     (3H, H_in)   rows r, z, n
    w_hh     (3H, H)
    b_ih     (3H,) or None;  b_hh (3H,) or None: kept apart, b_hn sits inside r ⊙ (...)
    Returns ``output (L, N, H), h_n (N, H), saved`` where ``saved`` is None unless
    ``keep``: ``{"h": (L+1, N, H), "gates": (L, N, 3H) r, z, n,
    "w_hn_h": (L, N, H) W_hn h + b_hn}``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0] // 3
    xw = _projection(x, w_ih, b_ih, keep)  # xw[t]: (N, 3H)
    h = h_0.copy()
    output = np.zeros((L, N, H), dtype=x.dtype)
    if keep:
        hs = np.zeros((L + 1, N, H), dtype=x.dtype)
        gates = np.zeros((L, N, 3 * H), dtype=x.dtype)
        w_hn_h = np.zeros((L, N, H), dtype=x.dtype)
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s] = h
        hw = h[:n] @ w_hh.T  # (n, 3H)
        if b_hh is not None:
            hw += b_hh
        xw_t = xw[t][:n]  # (n, 3H)
        r = _sigmoid(xw_t[:, :H] + hw[:, :H])
        z = _sigmoid(xw_t[:, H : 2 * H] + hw[:, H : 2 * H])
        n_gate = np.tanh(xw_t[:, 2 * H :] + r * hw[:, 2 * H :])  # torch: r scales W_hn h + b_hn
        h_new = (1 - z) * n_gate + z * h[:n]
        h[:n], output[t, :n] = h_new, h_new
        if keep:
            gates[s, :n] = np.concatenate([r, z, n_gate], axis=1)
            w_hn_h[s, :n] = hw[:, 2 * H :]
    saved = None
    if keep:
        hs[L] = h
        saved = {"h": hs, "gates": gates, "w_hn_h": w_hn_h}
    return output, h, saved


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False):
    """The fused BPTT of ``gru_forward``. Returns ``dx, dh_0, dw_ih, dw_hh, db_ih, db_hh``."""
    hs, gates, w_hn_h = saved["h"], saved["gates"], saved["w_hn_h"]
    L, N, _ = x.shape
    H = w_hh.shape[0] // 3
    dh = dh_n.copy()
    dxw = np.zeros((L, N, 3 * H), dtype=x.dtype)  # d(x W_ih^T + b_ih)
    dhw = np.zeros((L, N, 3 * H), dtype=x.dtype)  # d(h W_hh^T + b_hh)
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]
        r, z, n_gate = gates[s, :n, :H], gates[s, :n, H : 2 * H], gates[s, :n, 2 * H :]
        h_prev = hs[s, :n]
        da_n = dh_s * (1 - z) * (1 - n_gate * n_gate)  # h' = (1-z) n + z h; tanh' = 1 - n²
        da_z = dh_s * (h_prev - n_gate) * z * (1 - z)
        da_r = da_n * w_hn_h[s, :n] * r * (1 - r)  # n = tanh(... + r ⊙ (W_hn h + b_hn))
        dxw[s, :n, :H], dxw[s, :n, H : 2 * H], dxw[s, :n, 2 * H :] = da_r, da_z, da_n
        dhw[s, :n, :H], dhw[s, :n, H : 2 * H], dhw[s, :n, 2 * H :] = da_r, da_z, da_n * r
        dh[:n] = dh_s * z + dhw[s, :n] @ w_hh
    dw_hh = dhw.reshape(-1, 3 * H).T @ hs[:L].reshape(-1, H)  # one GEMM over all steps
    db_hh = dhw.sum(axis=(0, 1))
    dx, dw_ih, db_ih = _input_grads(dxw, x, w_ih, reverse)
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh


# ---------------------------------------------------------------- Elman RNN


def rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=False):
    """
    x        (L, N, H_in)
    h_0      (N, H)
    w_ih     (H, H_in);  w_hh (H, H);  b (H,) = b_ih + b_hh, or None
    Returns ``output (L, N, H), h_n (N, H), saved``: ``{"h": (L+1, N, H)}`` if ``keep``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0]
    xw = _projection(x, w_ih, b, keep)  # xw[t]: (N, H)
    h = h_0.copy()
    output = np.zeros((L, N, H), dtype=x.dtype)
    hs = np.zeros((L + 1, N, H), dtype=x.dtype) if keep else None
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s] = h
        a = xw[t][:n] + h[:n] @ w_hh.T
        h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
        h[:n], output[t, :n] = h_new, h_new
    if keep:
        hs[L] = h
    return output, h, ({"h": hs} if keep else None)


def rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity="tanh", batch_sizes=None,
                 reverse=False):
    """The fused BPTT of ``rnn_forward``. Returns ``dx, dh_0, dw_ih, dw_hh, db``."""
    hs = saved["h"]
    L, N, _ = x.shape
    H = w_hh.shape[0]
    dh = dh_n.copy()
    da = np.zeros((L, N, H), dtype=x.dtype)
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]
        h_new = hs[s + 1, :n]
        if nonlinearity == "tanh":
            da[s, :n] = dh_s * (1 - h_new * h_new)  # tanh' = 1 - tanh²
        else:
            da[s, :n] = dh_s * (h_new > 0)  # relu' = 1 where the output is positive
        dh[:n] = da[s, :n] @ w_hh
    dw_hh = da.reshape(-1, H).T @ hs[:L].reshape(-1, H)
    dx, dw_ih, db = _input_grads(da, x, w_ih, reverse)
    return dx, dh, dw_ih, dw_hh, db
