r"""LSTM kernels: one layer, one direction, all L steps. Rows i, f, g, o of
https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     h_t = o_t ⊙ tanh(c_t)
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)  h_t = W_hr h_t   (proj_size > 0)
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)

Buffers (G = 4H; P = proj_size, or H). Order is what the first index of an L-long
buffer counts: "time" t, as ``x`` and ``output``; "processing" s, the place in the
walk, t = s, or t = L-1-s when ``reverse`` (the last step first)::

    name         shape           order        meaning
    xw, gates    (L, N, G)       processing   x W_ih^T + b_ih + b_hh, which the forward
                                              turns into the gates i, f, g, o in place
    w_hr         (P, H)          -            (0, 0) without projection
    gemm         int64           -            address of the step product (_gemm.py)
    w_hh_panels  (G', P, NR)     -            forward: W_hh^T packed for it, G' = ceil(G / NR)
                 (P', G, NR)                  backward: W_hh packed, P' = ceil(P / NR)
    batch_sizes  (L,) int64      time         rows active at time t
    hs, cs       (S, N, P|H)     processing   h, c entering step s: S = L + 1, or 2 slots
    output       (L, N, P)       time         h' of every step
    hw           (N, G'NR)       -            h W_hh^T of the step (columns past G: zero)
    h_unproj     (N, H)          -            o ⊙ tanh(c'), h' before W_hr; (0, 0) without
    tanh_c       (N, H)          -            tanh(c') of the step
    d_output     (L, N, P)       time         dL/d output
    dh, dc       (N, P), (N, H)  -            dL/dh, dL/dc carried from step to step
    dz           (L, N, G)       processing   dL/d(xw + hw), the pre-activations
    dh_steps     (L, N, P)       processing   dL/dh' of every step; (0, 0, 0) without W_hr
    dhw          (N, P'NR)       -            dz W_hh of the step (W_hh packed untransposed)
    dh_unproj    (N, H)          -            dL/d h_unproj; (0, 0) without projection

The slow twins are ``rnnkit._reference.lstm_forward`` / ``lstm_backward``; the
wrappers that allocate and choose a kernel are in ``rnnkit._ops``.
"""

import numpy as np
from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _sigmoid, _tanh

# ---------------------------------------------------------------- kernels
# At processing step s (time t = s, or L-1-s reversed) rows [0, batch_sizes[t]) are
# active; the others keep their state and output zeros (packed input: rows sorted
# by decreasing length).


@njit(**_OPTS)
def _lstm_gates(hw, gates_s, n, H):
    """gates_s[m] = σ or tanh of (hw[m] + gates_s[m]), in place, rows [0, n): gates_s
    holds the step's input projection on entry, the gates i, f, g, o on exit (σ on i,
    f, o; tanh on g)."""
    for m in range(n):
        hwm, gm = hw[m], gates_s[m]
        # counted loops from 0 with offset indices: LLVM vectorizes these, not
        # `range(2 * H, 3 * H)` (measured: 4x slower gate math); gm is read and written
        # at the same index, so no alias check stands in the way
        for k in range(2 * H):
            gm[k] = _sigmoid(hwm[k] + gm[k])
        for k in range(H):
            gm[2 * H + k] = _tanh(hwm[2 * H + k] + gm[2 * H + k])
        for k in range(H):
            gm[3 * H + k] = _sigmoid(hwm[3 * H + k] + gm[3 * H + k])


@njit(**_OPTS)
def _lstm_cell(gm, c_prev, c_new, h_new, H):
    """One row: c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'). One written array per loop."""
    for j in range(H):
        c_new[j] = gm[H + j] * c_prev[j] + gm[j] * gm[2 * H + j]
    for j in range(H):
        h_new[j] = gm[3 * H + j] * _tanh(c_new[j])


@njit(**_OPTS)
def lstm_forward(xw, gemm, w_hh_panels, w_hr, batch_sizes, reverse, hs, cs, hw, output,
                 h_unproj):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      w_hh_panels (by gemm), w_hr, batch_sizes
    in/out    xw: the input projection (one GEMM by the caller) becomes the gates, in
              place, zeros where a row is inactive: the history the backward reads
              needs no second buffer
    written   hs, cs: hs[0], cs[0] hold h_0, c_0 on entry. Training: S = L + 1 and
              hs[s] enters step s (the backward's history). Inference: S = 2, slots
              s % 2 and (s + 1) % 2 take turns (no history); h_n ends in hs[L % 2]
              output: zeros where a row is inactive
    scratch   hw, h_unproj
    """
    L, N, G = xw.shape
    H = G // 4
    S = hs.shape[0]
    proj = w_hr.shape[0] > 0
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        c_in, c_out = cs[s % S], cs[(s + 1) % S]
        gates_s = xw[s]
        if n > 0:
            step_product(gemm, h_in, n, w_hh_panels, hw)  # (n, G): the step's product
            _lstm_gates(hw, gates_s, n, H)
            for m in range(n):
                _lstm_cell(gates_s[m], c_in[m], c_out[m], h_unproj[m] if proj else h_out[m], H)
            if proj:
                np.dot(h_unproj[:n], w_hr.T, h_out[:n])  # h' = W_hr (o ⊙ tanh c')
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            _copy(c_out[m], c_in[m])
            gates_s[m, :] = 0.0
            output[t, m, :] = 0.0


@njit(**_OPTS)
def lstm_backward(gemm, w_hh_panels, w_hr, batch_sizes, reverse, cs, gates, d_output, dh, dc,
                  dz, dh_steps, dh_unproj, tanh_c, dhw):
    """The fused BPTT of ``lstm_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh, not transposed, packed: dh = dz W_hh by gemm), w_hr,
              batch_sizes; cs, gates (the forward's histories); d_output
    in/out    dh, dc: dh_n, dc_n on entry; dh_0, dc_0 on exit
    written   dz: zeros where a row is inactive; dh_steps (for dW_hr)
    scratch   dh_unproj, tanh_c, dhw (the step product dz W_hh, widened to whole panels)
    """
    L, N, G = dz.shape
    H = G // 4
    proj = w_hr.shape[0] > 0
    one = dz.dtype.type(1)  # not the literal 1: int64 - float32 is float64 in numba
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            dz[s, m, :] = 0.0
            if proj:
                dh_steps[s, m, :] = 0.0
        if n == 0:
            continue
        P = dh.shape[1]
        for m in range(n):
            for p in range(P):
                dh[m, p] += d_output[t, m, p]  # from the next step and from the output
        if proj:
            for m in range(n):
                _copy(dh_steps[s, m], dh[m])
            np.dot(dh[:n], w_hr, dh_unproj[:n])  # back through h' = W_hr (o ⊙ tanh c')
        for m in range(n):
            gm, dzm, dcm, tanh_cm = gates[s, m], dz[s, m], dc[m], tanh_c[m]
            dhm = dh_unproj[m] if proj else dh[m]  # dL/d(o ⊙ tanh c')
            c_new, c_old = cs[s + 1, m], cs[s, m]
            for j in range(H):
                tanh_cm[j] = _tanh(c_new[j])
            for j in range(H):  # dc' = dc + dh ⊙ o ⊙ tanh'(c'),  tanh' = 1 - tanh²
                dcm[j] = dcm[j] + dhm[j] * gm[3 * H + j] * (one - tanh_cm[j] * tanh_cm[j])
            # σ' = σ(1 - σ), tanh' = 1 - tanh²; one written array per loop (vectorizes)
            for j in range(H):  # di = dc' ⊙ g
                i = gm[j]
                dzm[j] = dcm[j] * gm[2 * H + j] * i * (one - i)
            for j in range(H):  # df = dc' ⊙ c
                f = gm[H + j]
                dzm[H + j] = dcm[j] * c_old[j] * f * (one - f)
            for j in range(H):  # dg = dc' ⊙ i
                g = gm[2 * H + j]
                dzm[2 * H + j] = dcm[j] * gm[j] * (one - g * g)
            for j in range(H):  # do = dh ⊙ tanh c'
                o = gm[3 * H + j]
                dzm[3 * H + j] = dhm[j] * tanh_cm[j] * o * (one - o)
            for j in range(H):
                dcm[j] = dcm[j] * gm[H + j]  # c' = f ⊙ c + i ⊙ g
        step_product(gemm, dz[s], n, w_hh_panels, dhw)  # dh = dz W_hh: (n, P)
        for m in range(n):
            _copy(dh[m], dhw[m, :P])
