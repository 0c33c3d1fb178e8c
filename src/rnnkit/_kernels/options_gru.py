r"""GRU kernels with the cell options: one layer, one direction, all L steps.

The slow twins are ``rnnkit._reference_options.gru_forward`` / ``gru_backward``
(derivation: docs/equations.md, "Cell options"); the wrappers are in
``rnnkit._ops_options``. One step (``q`` the recurrent-dropout mask, ``d`` the step's
zoneout mask or the eval probability p; the two sides stay apart, as torch's GRU)::

    h̄ = q ⊙ h,   u = W_ih x,   v = W_hh h̄
    a = LN(u) ⊙ γ_ih + b_ih,   b = LN(v) ⊙ γ_hh + b_hh    (without layer norm: u + b_ih, v + b_hh)
    r = σ(a_r + b_r)   z = σ(a_z + b_z)   n = tanh(a_n + r ⊙ b_n)
    h̃ = (1 - z) ⊙ n + z ⊙ h                              (the state h, not h̄)
    h' = d ⊙ h + (1 - d) ⊙ h̃

The input side ``a`` is made for all steps before the loop and taken back through its
norm after it (``options_lstm.normalize_input`` / ``normalize_input_backward``); the step
loop fuses the rest.

Buffers (G = 3H; "processing" order: index s, time t = s, or L-1-s when ``reverse``; an
absent option's array is empty, its first axis 0)::

    name             shape          order       meaning
    xw, gates        (L, N, G)      processing  a, which the forward turns into r, z, n in place
    w_hh_panels      (G', H, NR)    -           forward: W_hh^T packed, G' = ceil(G / NR)
                     (H', G, NR)                backward: W_hh packed, H' = ceil(H / NR)
    b_hh             (G,)           -           zeros without bias
    w_ln_hh          (G,)           -           γ_hh; (0,) without layer norm
    recurrent_mask   (N0, H)        -           q, already scaled; (0, 0) off
    zoneout_mask     (L0, N0, H)    processing  d; (0, 0, 0) off
    zoneout_p        scalar         -           eval zoneout p; negative: off
    rows0, steps0    int            -           where this call's rows and steps start in
                                                the masks (inference splits rows, chunks steps)
    batch_sizes      (L,) int64     time        rows active at time t
    hs               (S, N, H)      processing  h entering step s: S = L + 1, or 2 slots
    ln_hh, rstd_hh   (K, N, G), (K, N)          LN(v) and 1 / sqrt(var(v) + ε): K = L
                                                (training) or 1 slot (inference)
    w_hn_h           (K, N, H)      processing  b_n, what r scales
    output           (L, N, H)      time        h' of every step
    hw               (N, G'NR)      -           h̄ W_hh^T of the step (past G: zero); with
                                                layer norm LN(v) γ_hh, in place
    h_rec            (N, H)         -           h̄ = q ⊙ h of the step; (0, 0) without q
    d_output         (L, N, H)      time        dL/d output
    dh               (N, H)         -           dL/dh carried from step to step
    dxw              (L, N, G)      processing  δa = [δa_r | δa_z | δa_n]
    dv               (L, N, G)      processing  δv = LN backward of δb ⊙ γ_hh; (0, 0, 0)
                                                without layer norm (δv = δb, which equals
                                                δa but for its n block, r ⊙ δa_n: the caller
                                                derives it afterwards)
    dhw_step         (N, G)         -           δb = [δa_r | δa_z | r ⊙ δa_n] of the step
    dh_tilde         (N, H)         -           δh̃ of the step
    dhw              (N, H'NR)      -           δv W_hh of the step (W_hh packed untransposed)
    dw_ln_hh, db_hh  (G,)           -           with layer norm: Σ δb ⊙ LN(v), Σ δb, summed in
"""

from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _sigmoid, _tanh
from ._options_math import (
    _masked,
    _recurrent_backward,
    _row_stats,
    _zone_row,
    _zone_row_backward,
)

# ---------------------------------------------------------------- one row of a step
# The step loops call these per row: small functions keep each loop simple enough for
# LLVM to vectorize (zoneout's and the masks' are in _options_math.py)


@njit(**_OPTS)
def _normalize_scaled(hwm, v_hat, w_ln_hh, G):
    """v̂ = LN(v) into v_hat, hw ← v̂ γ_hh in place; returns r."""
    mu, rstd = _row_stats(hwm, G)
    for k in range(G):
        v = (hwm[k] - mu) * rstd
        v_hat[k] = v
        hwm[k] = v * w_ln_hh[k]
    return rstd


@njit(**_OPTS)
def _gru_cell_backward(gm, dh_tm, h_prev, b_n, dxwm, dbm, H):
    """δa (dxwm) and δb = [δa_r | δa_z | r ⊙ δa_n] (dbm) from δh̃; one written array
    region per loop, so that each vectorizes."""
    one = gm.dtype.type(1)
    for j in range(H):  # h̃ = (1-z) n + z h; n = tanh(·), tanh' = 1 - n²
        z, n_gate = gm[H + j], gm[2 * H + j]
        dxwm[2 * H + j] = dh_tm[j] * (one - z) * (one - n_gate * n_gate)  # δa_n
    for j in range(H):  # a_n + r ⊙ b_n; σ' = σ(1 - σ)
        r = gm[j]
        dxwm[j] = dxwm[2 * H + j] * b_n[j] * r * (one - r)  # δa_r
    for j in range(H):
        z = gm[H + j]
        dxwm[H + j] = dh_tm[j] * (h_prev[j] - gm[2 * H + j]) * z * (one - z)  # δa_z
    for k in range(2 * H):
        dbm[k] = dxwm[k]
    for j in range(H):
        dbm[2 * H + j] = dxwm[2 * H + j] * gm[j]


@njit(**_OPTS)
def _to_previous_h(dhm, dhwm, q, drop, dh_tm, gm, zoned, H):
    """δh = q ⊙ (δv W_hh) + z ⊙ δh̃, added to dhm (zoneout's straight part) or set."""
    if drop:
        for j in range(H):
            dhwm[j] = q[j] * dhwm[j]
    if zoned:
        for j in range(H):
            dhm[j] += dhwm[j] + dh_tm[j] * gm[H + j]
    else:
        for j in range(H):
            dhm[j] = dhwm[j] + dh_tm[j] * gm[H + j]


@njit(**_OPTS)
def _gru_cell(gm, hwm, b_hh, b_n, h_prev, h_new, H):
    """One row: the gates r, z, n over gm in place (a on entry), b_n (what r scales) and
    h̃ = (1 - z) ⊙ n + z ⊙ h, from hwm = v (or LN(v) γ_hh) without b_hh."""
    one = gm.dtype.type(1)
    for j in range(H):  # b_n = v_n + b_hn
        b_n[j] = hwm[2 * H + j] + b_hh[2 * H + j]
    for k in range(2 * H):  # r = σ(a_r + b_r), z = σ(a_z + b_z)
        gm[k] = _sigmoid(gm[k] + (hwm[k] + b_hh[k]))
    for j in range(H):  # n = tanh(a_n + r ⊙ b_n)
        gm[2 * H + j] = _tanh(gm[2 * H + j] + gm[j] * b_n[j])
    for j in range(H):  # h̃ = (1 - z) ⊙ n + z ⊙ h
        z = gm[H + j]
        h_new[j] = (one - z) * gm[2 * H + j] + z * h_prev[j]


# ---------------------------------------------------------------- the step loops


@njit(**_OPTS)
def gru_forward(xw, gemm, w_hh_panels, b_hh, w_ln_hh, recurrent_mask, zoneout_mask, zoneout_p,
                rows0, steps0, batch_sizes, reverse, hs, ln_hh, rstd_hh, w_hn_h, output, hw,
                h_rec):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      w_hh_panels (by gemm), b_hh, the options, batch_sizes
    in/out    xw: a (module docstring) becomes the gates r, z, n in place, zeros where a
              row is inactive
    written   hs: hs[0] holds h_0 on entry. Training: S = L + 1, hs[s] enters step s;
              inference: S = 2 slots taking turns, h_n ends in hs[L % 2]
              ln_hh, rstd_hh, w_hn_h (K = L: the backward's; K = 1: scratch), zeros where
              a row is inactive; output: zeros where a row is inactive
    scratch   hw, h_rec
    """
    L, N, G = xw.shape
    H = G // 3
    S, K = hs.shape[0], w_hn_h.shape[0]
    ln, drop = w_ln_hh.shape[0] > 0, recurrent_mask.shape[0] > 0
    p = xw.dtype.type(zoneout_p)
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        gates_s = xw[s]
        if n > 0:
            if drop:  # h̄ = q ⊙ h
                for m in range(n):
                    _masked(recurrent_mask[rows0 + m], h_in[m], h_rec[m], H)
                step_product(gemm, h_rec, n, w_hh_panels, hw)  # v = h̄ W_hh^T: (n, G)
            else:
                step_product(gemm, h_in, n, w_hh_panels, hw)
            for m in range(n):
                if ln:  # b = LN(v) γ_hh + b_hh: hw ← LN(v) γ_hh in place, b_hh below
                    rstd_hh[s % K, m] = _normalize_scaled(hw[m], ln_hh[s % K, m], w_ln_hh, G)
                _gru_cell(gates_s[m], hw[m], b_hh, w_hn_h[s % K, m], h_in[m], h_out[m], H)
                # h' = d ⊙ h + (1 - d) ⊙ h̃
                _zone_row(zoneout_mask, steps0 + s, rows0 + m, p, h_in[m], h_out[m], H)
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            gates_s[m, :] = 0.0
            w_hn_h[s % K, m, :] = 0.0
            output[t, m, :] = 0.0
            if ln:
                ln_hh[s % K, m, :] = 0.0
                rstd_hh[s % K, m] = 0.0


@njit(**_OPTS)
def gru_backward(gemm, w_hh_panels, w_ln_hh, recurrent_mask, zoneout_mask, zoneout_p,
                 batch_sizes, reverse, hs, gates, w_hn_h, ln_hh, rstd_hh, d_output, dh, dxw, dv,
                 dhw_step, dh_tilde, dhw, dw_ln_hh, db_hh):
    """The fused BPTT of ``gru_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh packed untransposed: δh̄ = δv W_hh by gemm), the options,
              batch_sizes; hs, gates, w_hn_h, ln_hh, rstd_hh (the forward's histories);
              d_output
    in/out    dh: dh_n on entry, dh_0 on exit; dw_ln_hh, db_hh: summed into
    written   dxw, dv: zeros where a row is inactive
    scratch   dhw_step, dh_tilde, dhw
    """
    L, N, G = dxw.shape
    H = G // 3
    ln, drop = w_ln_hh.shape[0] > 0, recurrent_mask.shape[0] > 0
    zoned = zoneout_mask.shape[0] > 0 or zoneout_p >= 0  # a drawn mask, or eval's p
    p = dxw.dtype.type(zoneout_p)
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            dxw[s, m, :] = 0.0
            if ln:
                dv[s, m, :] = 0.0
        if n == 0:
            continue
        for m in range(n):
            # δh̃ = (1 - d) ⊙ δh'; dh keeps d ⊙ δh' (zoneout's straight path to h)
            _zone_row_backward(zoneout_mask, s, m, p, dh[m], d_output[t, m], dh_tilde[m], H)
            _gru_cell_backward(gates[s, m], dh_tilde[m], hs[s, m], w_hn_h[s, m], dxw[s, m],
                               dhw_step[m], H)
            if ln:  # δv = LN backward of δb ⊙ γ_hh; δγ_hh = Σ δb ⊙ LN(v), δb_hh = Σ δb
                _recurrent_backward(dhw_step[m], ln_hh[s, m], rstd_hh[s, m], w_ln_hh, dv[s, m],
                                    dw_ln_hh, db_hh, G)
        step_product(gemm, dv[s] if ln else dhw_step, n, w_hh_panels, dhw)  # δv W_hh: (n, H)
        # δh = q ⊙ (δv W_hh) + z ⊙ δh̃ (straight, unmasked) + d ⊙ δh' (kept in dh)
        for m in range(n):
            _to_previous_h(dh[m], dhw[m], recurrent_mask[m] if drop else dhw[m], drop,
                           dh_tilde[m], gates[s, m], zoned, H)
