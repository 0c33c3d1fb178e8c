r"""GRU kernels: one layer, one direction, all L steps. Rows r, z, n of
https://pytorch.org/docs/stable/generated/torch.nn.GRU.html::

    r_t = σ(W_ir x_t + b_ir + W_hr h_{t-1} + b_hr)
    z_t = σ(W_iz x_t + b_iz + W_hz h_{t-1} + b_hz)
    n_t = tanh(W_in x_t + b_in + r_t ⊙ (W_hn h_{t-1} + b_hn))
    h_t = (1 - z_t) ⊙ n_t + z_t ⊙ h_{t-1}

Buffers (G = 3H). Order is what the first index of an L-long buffer counts: "time"
t, as ``x`` and ``output``; "processing" s, the place in the walk, t = s, or
t = L-1-s when ``reverse`` (the last step first)::

    name         shape           order        meaning
    xw, gates    (L, N, G)       processing   x W_ih^T + b_ih, which the forward turns into
                                              the gates r, z, n in place
    b_hh         (G,)            -            zeros without bias
    gemm         int64           -            address of the step product (_gemm.py)
    w_hh_panels  (G', H, NR)     -            forward: W_hh^T packed for it, G' = ceil(G / NR)
                 (H', G, NR)                  backward: W_hh packed, H' = ceil(H / NR)
    batch_sizes  (L,) int64      time         rows active at time t
    hs           (S, N, H)       processing   h entering step s: S = L + 1, or 2 slots
    output       (L, N, H)       time         h' of every step
    hw           (N, G'NR)       -            h W_hh^T of the step, b_hh not added (past G: 0)
    w_hn_h       (K, N, H)       processing   W_hn h + b_hn, what r scales: K = L, or 1 slot
    d_output     (L, N, H)       time         dL/d output
    dh           (N, H)          -            dL/dh carried from step to step
    dh_new       (N, H)          -            dL/dh' of the step: dh + d_output
    dxw          (L, N, G)       processing   dL/d xw
    dhw_step     (N, G)          -            dL/d(hw + b_hh) of the step
    dhw          (N, H'NR)       -            dhw_step W_hh (past H: zero)

The slow twins are ``rnnkit._reference.gru_forward`` / ``gru_backward``; the
wrappers that allocate and choose a kernel are in ``rnnkit._ops``.
"""

from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _sigmoid, _tanh

# ---------------------------------------------------------------- kernels
# At processing step s (time t = s, or L-1-s reversed) rows [0, batch_sizes[t]) are
# active; the others keep their state and output zeros (packed input: rows sorted
# by decreasing length).


@njit(**_OPTS)
def _gru_gates(hwm, gm, b_hh, w_hn_hm, H):
    """One row, in place in gm: x W_ih^T + b_ih on entry, r, z, n on exit; hwm holds
    h W_hh^T; w_hn_hm gets W_hn h + b_hn."""
    for j in range(H):
        w_hn_hm[j] = hwm[2 * H + j] + b_hh[2 * H + j]
    for k in range(2 * H):
        gm[k] = _sigmoid(gm[k] + (hwm[k] + b_hh[k]))
    for j in range(H):  # torch's GRU: r scales (W_hn h + b_hn)
        gm[2 * H + j] = _tanh(gm[2 * H + j] + gm[j] * w_hn_hm[j])


@njit(**_OPTS)
def _gru_cell(gm, h_prev, h_new, H):
    """One row: h' = (1 - z) ⊙ n + z ⊙ h."""
    one = gm.dtype.type(1)  # not the literal 1: int64 - float32 is float64 in numba
    for j in range(H):
        z = gm[H + j]
        h_new[j] = (one - z) * gm[2 * H + j] + z * h_prev[j]


@njit(**_OPTS)
def gru_forward(xw, gemm, w_hh_panels, b_hh, batch_sizes, reverse, hs, hw, w_hn_h, output):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      w_hh_panels (by gemm), b_hh, batch_sizes
    in/out    xw: the input projection (one GEMM by the caller) becomes the gates, in
              place, zeros where a row is inactive (the history the backward reads)
    written   hs: hs[0] holds h_0 on entry. Training: S = L + 1 and hs[s] enters step
              s (the backward's history). Inference: S = 2, slots s % 2 and
              (s + 1) % 2 take turns (no history); h_n ends in hs[L % 2]
              w_hn_h: zeros where a row is inactive. Training: K = L, every step;
              inference: K = 1, scratch
              output: zeros where a row is inactive
    scratch   hw
    """
    L, N, G = xw.shape
    H = G // 3
    S, K = hs.shape[0], w_hn_h.shape[0]
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        gates_s, w_hn_h_s = xw[s], w_hn_h[s % K]
        if n > 0:
            step_product(gemm, h_in, n, w_hh_panels, hw)  # (n, G): the step's product
            for m in range(n):
                _gru_gates(hw[m], gates_s[m], b_hh, w_hn_h_s[m], H)
                _gru_cell(gates_s[m], h_in[m], h_out[m], H)
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            gates_s[m, :] = 0.0
            w_hn_h_s[m, :] = 0.0
            output[t, m, :] = 0.0


@njit(**_OPTS)
def gru_backward(gemm, w_hh_panels, batch_sizes, reverse, hs, gates, w_hn_h, d_output, dh, dxw,
                 dhw_step, dh_new, dhw):
    """The fused BPTT of ``gru_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh, not transposed, packed: dh = d(h W_hh^T) W_hh by gemm),
              batch_sizes; hs, gates, w_hn_h (the forward's histories); d_output
    in/out    dh: dh_n on entry, dh_0 on exit
    written   dxw: zeros where a row is inactive. dL/d(h W_hh^T + b_hh) equals it but
              for the n rows, which are r ⊙ dxw_n: the caller derives it in place afterwards
    scratch   dhw_step (for dh), dh_new, dhw (dhw_step W_hh, widened to whole panels)
    """
    L, N, G = dxw.shape
    H = G // 3
    one = dxw.dtype.type(1)  # not the literal 1: int64 - float32 is float64 in numba
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            dxw[s, m, :] = 0.0
        if n == 0:
            continue
        for m in range(n):
            gm, dxwm, dhwm, h_prev = gates[s, m], dxw[s, m], dhw_step[m], hs[s, m]
            w_hn_hm, dhm, dom, dh_newm = w_hn_h[s, m], dh[m], d_output[t, m], dh_new[m]
            for j in range(H):
                dh_newm[j] = dhm[j] + dom[j]  # from the next step and from the output
            # one written array region per loop, so that each vectorizes
            for j in range(H):  # h' = (1-z) n + z h; n = tanh(a_n), tanh' = 1 - n²
                z, n_gate = gm[H + j], gm[2 * H + j]
                dxwm[2 * H + j] = dh_newm[j] * (one - z) * (one - n_gate * n_gate)  # da_n
            for j in range(H):  # a_n = ... + r ⊙ (W_hn h + b_hn); σ' = σ(1 - σ)
                r = gm[j]
                dxwm[j] = dxwm[2 * H + j] * w_hn_hm[j] * r * (one - r)
            for j in range(H):
                z = gm[H + j]
                dxwm[H + j] = dh_newm[j] * (h_prev[j] - gm[2 * H + j]) * z * (one - z)
            for k in range(2 * H):
                dhwm[k] = dxwm[k]
            for j in range(H):
                dhwm[2 * H + j] = dxwm[2 * H + j] * gm[j]  # d(W_hn h + b_hn) = r ⊙ da_n
        step_product(gemm, dhw_step, n, w_hh_panels, dhw)  # (n, H)
        for m in range(n):
            gm, dhm, dh_newm, dhwm = gates[s, m], dh[m], dh_new[m], dhw[m]
            for j in range(H):
                dhm[j] = dh_newm[j] * gm[H + j] + dhwm[j]  # + z ⊙ dh' directly
