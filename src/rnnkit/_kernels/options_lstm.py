r"""LSTM kernels with the cell options: one layer, one direction, all L steps.

The slow twins are ``rnnkit._reference_options.lstm_forward`` / ``lstm_backward``
(derivation: docs/equations.md, "Cell options"); the wrappers that allocate and pick
the options are in ``rnnkit._ops_options``. One step, ``q`` the recurrent-dropout mask,
``d`` the step's zoneout mask (or the eval probability p)::

    h̄ = q ⊙ h,   u = W_ih x,   v = W_hh h̄
    a = LN(u) ⊙ γ_ih + b + LN(v) ⊙ γ_hh          (without layer norm: u + b + v)
    i = σ(a_i + p_i ⊙ c)    f = σ(a_f + p_f ⊙ c)    g = tanh(a_g)
    c' = f ⊙ c + i ⊙ g
    o = σ(a_o + p_o ⊙ c')
    h̃ = o ⊙ tanh(LN(c') ⊙ γ_c + β_c)             (without layer norm: o ⊙ tanh(c'))
    h̃ = W_hr h̃                                   (proj_size > 0)
    h' = d ⊙ h + (1 - d) ⊙ h̃

The input side ``LN(u) ⊙ γ_ih + b`` is one pass over all steps before the step loop
(``normalize_input``), and its backward one pass after it (``normalize_input_backward``);
both are plain row kernels any mode calls. The step loop fuses the rest: the product
``h̄ W_hh^T`` (``step_product`` on panels packed once per call), LN(v) and LN(c') with
their statistics per row, peepholes, masks and zoneout.

Buffers (G = 4H; P = proj_size, or H). "processing" order: index s, time t = s, or
L-1-s when ``reverse``; an absent option's array is empty (its first axis 0)::

    name             shape          order       meaning
    xw, gates        (L, N, G)      processing  LN(u) γ_ih + b (or u + b), which the forward
                                                turns into i, f, g, o in place
    w_hh_panels      (G', P, NR)    -           forward: W_hh^T packed, G' = ceil(G / NR)
                     (P', G, NR)                backward: W_hh packed, P' = ceil(P / NR)
    w_hr             (P, H)         -           (0, 0) without projection
    w_ln_hh          (G,)           -           γ_hh; (0,) without layer norm (then w_ln_c,
    w_ln_c, b_ln_c   (H,)           -           b_ln_c are (0,) too) γ_c, β_c
    w_ph             (3H,)          -           p_i | p_f | p_o; (0,) without peepholes
    recurrent_mask   (N0, P)        -           q, already scaled; (0, 0) off
    zoneout_mask     (L0, N0, P)    processing  d; (0, 0, 0) off
    zoneout_p        scalar         -           eval zoneout p; negative: off
    rows0, steps0    int            -           where this call's rows and steps start in
                                                the masks (inference splits rows, chunks steps)
    batch_sizes      (L,) int64     time        rows active at time t
    hs, cs           (S, N, P|H)    processing  h, c entering step s: S = L + 1, or 2 slots
    ln_hh            (K, N, G)      processing  LN(v), K = L (training) or 1 slot (inference)
    rstd_hh          (K, N)         processing  1 / sqrt(var(v) + ε)
    ln_c, rstd_c     (K, N, H), (K, N)          LN(c') and its 1 / sqrt(var + ε)
    output           (L, N, P)      time        h' of every step
    hw               (N, G'NR)      -           h̄ W_hh^T of the step (columns past G: zero)
    h_rec            (N, P)         -           h̄ = q ⊙ h of the step; (0, 0) without q
    h_unproj         (N, H)         -           h̃ before W_hr; (0, 0) without projection
    d_output         (L, N, P)      time        dL/d output
    dh, dc           (N, P), (N, H) -           dL/dh, dL/dc carried from step to step
    dz               (L, N, G)      processing  δa, the gate inputs' gradient
    dv               (L, N, G)      processing  δv = LN backward of δa ⊙ γ_hh; (0, 0, 0)
                                                without layer norm (δv = δa)
    dh_steps         (L, N, P)      processing  δh̃ of every step; (0, 0, 0) without W_hr
    dm               (N, H)         -           δ(o ⊙ tanh ĉ) of the step
    tanh_c, dc_hat   (N, H)         -           tanh ĉ and δĉ of the step (dc_hat: (0, 0)
                                                without layer norm)
    dhw              (N, P'NR)      -           δv W_hh of the step (W_hh packed untransposed)
    dw_ln_hh (G,), dw_ln_c, db_ln_c (H,), dw_ph (3H,): the option gradients, summed in
    ((0,) when their option is off)
"""

import numpy as np
from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _sigmoid, _tanh
from ._options_math import (
    _SUM_OPTS,
    _add_to,
    _masked,
    _masked_add_to,
    _recurrent_backward,
    _row_dot,
    _row_dot3,
    _row_stats,
    _zone_row,
    _zone_row_backward,
)

# ---------------------------------------------------------------- the input side, all steps


@njit(**_OPTS)
def _normalize_input_row(u, gamma, bias, has_bias, u_hat, keep, G):
    """a = LN(u) γ + b over u in place (LN(u) into u_hat too, with ``keep``); returns r.
    One pass for μ, one for var, one writing (the row stays in L1 between them)."""
    mu, rstd = _row_stats(u, G)
    if keep:
        for k in range(G):
            v = (u[k] - mu) * rstd
            u_hat[k] = v
            u[k] = v * gamma[k] + bias[k] if has_bias else v * gamma[k]
    else:
        for k in range(G):
            v = (u[k] - mu) * rstd
            u[k] = v * gamma[k] + bias[k] if has_bias else v * gamma[k]
    return rstd


@njit(**_OPTS)
def normalize_input(xw, gamma, bias, batch_sizes, reverse, u_hat, rstd):
    """xw ← LN(u) ⊙ γ_ih + b in place, for every active row of every step (any mode).

    read      gamma (G,), bias (G,) or (0,), batch_sizes
    in/out    xw (L, N, G) processing order: u = x W_ih^T on entry
    written   u_hat (L, N, G), rstd (L, N): LN(u) and r for the backward, zeros on inactive
              rows; both (0, 0, *) in inference (not kept)
    """
    L, N, G = xw.shape
    keep = u_hat.shape[0] > 0
    has_bias = bias.shape[0] > 0
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n):
            r = _normalize_input_row(xw[s, m], gamma, bias, has_bias,
                                     u_hat[s, m] if keep else xw[s, m], keep, G)
            if keep:
                rstd[s, m] = r
        if keep:
            for m in range(n, N):
                u_hat[s, m, :] = 0.0
                rstd[s, m] = 0.0


@njit(**_SUM_OPTS)
def _input_row_backward(dam, gamma, u_hat_m, rstd, dgamma, dbias, G):
    """One row of ``normalize_input_backward``: the sums in one pass, then δu over δa."""
    mean_g = dam.dtype.type(0)  # mean(g), g = δa ⊙ γ: through μ
    mean_g_u_hat = dam.dtype.type(0)  # mean(g ⊙ û): through var
    for k in range(G):
        dgamma[k] += dam[k] * u_hat_m[k]
        dbias[k] += dam[k]
        mean_g += dam[k] * gamma[k]
        mean_g_u_hat += dam[k] * gamma[k] * u_hat_m[k]
    count = dam.dtype.type(G)  # typed: /= G alone would make the sums float64
    mean_g /= count
    mean_g_u_hat /= count
    for k in range(G):
        dam[k] = rstd * (dam[k] * gamma[k] - mean_g - u_hat_m[k] * mean_g_u_hat)


@njit(**_OPTS)
def normalize_input_backward(da, gamma, u_hat, rstd, dgamma, dbias):
    """δu from δa through a = LN(u) γ_ih + b, in place over ``da``, rows (M, G) (any mode:
    the steps' rows flattened; inactive rows have δa = 0, û = 0, so δu = 0).

    written   dgamma += Σ δa ⊙ û, dbias += Σ δa (both (G,))
    """
    M, G = da.shape
    for m in range(M):
        _input_row_backward(da[m], gamma, u_hat[m], rstd[m], dgamma, dbias, G)


# ---------------------------------------------------------------- one row of a step
# The step loops call these per row: small functions keep each loop simple enough for
# LLVM to vectorize (written inline in the big step loop, the same loops measured up to
# 1.5x slower)


@njit(**_OPTS)
def _add_recurrent(gm, hwm, v_hat, w_ln_hh, ln, G):
    """a += LN(v) γ_hh (v̂ into v_hat; returns r), or a += v (returns 0)."""
    if ln:
        mu, rstd = _row_stats(hwm, G)
        for k in range(G):
            v = (hwm[k] - mu) * rstd
            v_hat[k] = v
            gm[k] += v * w_ln_hh[k]
        return rstd
    for k in range(G):
        gm[k] += hwm[k]
    return gm.dtype.type(0)


@njit(**_OPTS)
def _lstm_cell(gm, c_prev, c_new, w_ph, peep, H):
    """gm: a on entry, i, f, g, o on exit; c' = f ⊙ c + i ⊙ g. Peepholes: i, f read
    p_i ⊙ c, p_f ⊙ c; o reads p_o ⊙ c'. Counted loops from 0 (see _kernels/lstm.py)."""
    if peep:  # i = σ(a_i + p_i ⊙ c), f = σ(a_f + p_f ⊙ c)
        for j in range(H):
            gm[j] += w_ph[j] * c_prev[j]
        for j in range(H):
            gm[H + j] += w_ph[H + j] * c_prev[j]
    for k in range(2 * H):
        gm[k] = _sigmoid(gm[k])
    for j in range(H):
        gm[2 * H + j] = _tanh(gm[2 * H + j])
    for j in range(H):  # c' = f ⊙ c + i ⊙ g
        c_new[j] = gm[H + j] * c_prev[j] + gm[j] * gm[2 * H + j]
    if peep:  # o = σ(a_o + p_o ⊙ c'), the raw c'
        for j in range(H):
            gm[3 * H + j] = _sigmoid(gm[3 * H + j] + w_ph[2 * H + j] * c_new[j])
    else:
        for j in range(H):
            gm[3 * H + j] = _sigmoid(gm[3 * H + j])


@njit(**_OPTS)
def _lstm_output(gm, c_new, c_hat, w_ln_c, b_ln_c, ln, h_new, H):
    """h̃ = o ⊙ tanh(LN(c') γ_c + β_c) (LN(c') into c_hat; returns r), or o ⊙ tanh(c')."""
    if ln:
        mu, rstd = _row_stats(c_new, H)
        for j in range(H):
            c_hat[j] = (c_new[j] - mu) * rstd
        for j in range(H):
            h_new[j] = gm[3 * H + j] * _tanh(c_hat[j] * w_ln_c[j] + b_ln_c[j])
        return rstd
    for j in range(H):
        h_new[j] = gm[3 * H + j] * _tanh(c_new[j])
    return c_new.dtype.type(0)


@njit(**_OPTS)
def _output_backward(gm, dmm, tcm, dcm_hat, dcm, c_new, c_norm, rstd, w_ln_c, b_ln_c, ln,
                     dw_ln_c, db_ln_c, H):
    """From δm (m = o ⊙ tanh ĉ): tanh ĉ into tcm, δc' += the path through ĉ. With layer
    norm (ĉ = LN(c') γ_c + β_c) δĉ into dcm_hat, δγ_c, δβ_c summed."""
    one = gm.dtype.type(1)
    if ln:
        for j in range(H):
            tcm[j] = _tanh(c_norm[j] * w_ln_c[j] + b_ln_c[j])
        for j in range(H):  # δĉ = δm ⊙ o ⊙ (1 - tanh² ĉ)
            dcm_hat[j] = dmm[j] * gm[3 * H + j] * (one - tcm[j] * tcm[j])
        for j in range(H):
            dw_ln_c[j] += dcm_hat[j] * c_norm[j]  # δγ_c = Σ δĉ ⊙ LN(c')
        for j in range(H):
            db_ln_c[j] += dcm_hat[j]  # δβ_c = Σ δĉ
        # δc' += LN backward of δĉ ⊙ γ_c: r (g - mean g - LN(c') mean(g LN(c')))
        count = dmm.dtype.type(H)
        mean_g = _row_dot(dcm_hat, w_ln_c, H) / count
        mean_g_c = _row_dot3(dcm_hat, w_ln_c, c_norm, H) / count
        for j in range(H):
            dcm[j] += rstd * (dcm_hat[j] * w_ln_c[j] - mean_g - c_norm[j] * mean_g_c)
    else:
        for j in range(H):
            tcm[j] = _tanh(c_new[j])
        for j in range(H):  # δc' = δc + δm ⊙ o ⊙ tanh'(c'),  tanh' = 1 - tanh²
            dcm[j] += dmm[j] * gm[3 * H + j] * (one - tcm[j] * tcm[j])


@njit(**_OPTS)
def _cell_backward(gm, dmm, tcm, dzm, dcm, c_new, c_old, w_ph, peep, dw_ph, H):
    """δa (into dzm) from δm and δc', then δc carried to the step before."""
    one = gm.dtype.type(1)
    for j in range(H):  # δa_o = δm ⊙ tanh ĉ ⊙ σ'(a_o),  σ' = σ(1 - σ)
        o = gm[3 * H + j]
        dzm[3 * H + j] = dmm[j] * tcm[j] * o * (one - o)
    if peep:  # o = σ(a_o + p_o ⊙ c'): δc' += δa_o ⊙ p_o; δp_o = Σ δa_o ⊙ c'
        for j in range(H):
            dcm[j] += dzm[3 * H + j] * w_ph[2 * H + j]
        for j in range(H):
            dw_ph[2 * H + j] += dzm[3 * H + j] * c_new[j]
    for j in range(H):  # δa_i = δc' ⊙ g ⊙ σ'
        i = gm[j]
        dzm[j] = dcm[j] * gm[2 * H + j] * i * (one - i)
    for j in range(H):  # δa_f = δc' ⊙ c ⊙ σ'
        f = gm[H + j]
        dzm[H + j] = dcm[j] * c_old[j] * f * (one - f)
    for j in range(H):  # δa_g = δc' ⊙ i ⊙ tanh'
        g = gm[2 * H + j]
        dzm[2 * H + j] = dcm[j] * gm[j] * (one - g * g)
    for j in range(H):  # c' = f ⊙ c + i ⊙ g
        dcm[j] = dcm[j] * gm[H + j]
    if peep:  # i, f read c: δc += δa_i ⊙ p_i + δa_f ⊙ p_f; δp_i, δp_f = Σ δa_i,f ⊙ c
        for j in range(H):
            dcm[j] += dzm[j] * w_ph[j] + dzm[H + j] * w_ph[H + j]
        for j in range(H):
            dw_ph[j] += dzm[j] * c_old[j]
        for j in range(H):
            dw_ph[H + j] += dzm[H + j] * c_old[j]


# ---------------------------------------------------------------- the step loops


@njit(**_OPTS)
def lstm_forward(xw, gemm, w_hh_panels, w_hr, w_ln_hh, w_ln_c, b_ln_c, w_ph, recurrent_mask,
                 zoneout_mask, zoneout_p, rows0, steps0, batch_sizes, reverse, hs, cs, ln_hh,
                 rstd_hh, ln_c, rstd_c, output, hw, h_rec, h_unproj):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      w_hh_panels (by gemm), w_hr, the options, batch_sizes
    in/out    xw: the input side (module docstring) becomes the gates i, f, g, o in place,
              zeros where a row is inactive
    written   hs, cs: hs[0], cs[0] hold h_0, c_0 on entry. Training: S = L + 1, hs[s]
              enters step s; inference: S = 2 slots taking turns, h_n ends in hs[L % 2]
              ln_hh, rstd_hh, ln_c, rstd_c (K = L: the backward's; K = 1: scratch),
              zeros where a row is inactive; output: zeros where a row is inactive
    scratch   hw, h_rec, h_unproj
    """
    L, N, G = xw.shape
    H = G // 4
    P = hs.shape[2]
    S = hs.shape[0]
    proj = w_hr.shape[0] > 0
    ln, peep = w_ln_hh.shape[0] > 0, w_ph.shape[0] > 0
    drop = recurrent_mask.shape[0] > 0
    p = xw.dtype.type(zoneout_p)
    K = ln_hh.shape[0] if ln else 1
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        c_in, c_out = cs[s % S], cs[(s + 1) % S]
        gates_s = xw[s]
        if n > 0:
            if drop:  # h̄ = q ⊙ h
                for m in range(n):
                    _masked(recurrent_mask[rows0 + m], h_in[m], h_rec[m], P)
                step_product(gemm, h_rec, n, w_hh_panels, hw)  # v = h̄ W_hh^T: (n, G)
            else:
                step_product(gemm, h_in, n, w_hh_panels, hw)
            for m in range(n):
                gm = gates_s[m]
                # a = (LN(u) γ_ih + b) + LN(v) γ_hh, or (u + b) + v
                r = _add_recurrent(gm, hw[m], ln_hh[s % K, m] if ln else hw[m], w_ln_hh, ln, G)
                _lstm_cell(gm, c_in[m], c_out[m], w_ph, peep, H)
                r_c = _lstm_output(gm, c_out[m], ln_c[s % K, m] if ln else c_out[m], w_ln_c,
                                   b_ln_c, ln, h_unproj[m] if proj else h_out[m], H)
                if ln:
                    rstd_hh[s % K, m] = r
                    rstd_c[s % K, m] = r_c
            if proj:
                np.dot(h_unproj[:n], w_hr.T, h_out[:n])  # h̃ = W_hr (o ⊙ tanh ĉ)
            for m in range(n):  # h' = d ⊙ h + (1 - d) ⊙ h̃
                _zone_row(zoneout_mask, steps0 + s, rows0 + m, p, h_in[m], h_out[m], P)
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            _copy(c_out[m], c_in[m])
            gates_s[m, :] = 0.0
            output[t, m, :] = 0.0
            if ln:
                ln_hh[s % K, m, :] = 0.0
                ln_c[s % K, m, :] = 0.0
                rstd_hh[s % K, m] = 0.0
                rstd_c[s % K, m] = 0.0


@njit(**_OPTS)
def lstm_backward(gemm, w_hh_panels, w_hr, w_ln_hh, w_ln_c, b_ln_c, w_ph, recurrent_mask,
                  zoneout_mask, zoneout_p, batch_sizes, reverse, cs, gates, ln_hh, rstd_hh,
                  ln_c, rstd_c, d_output, dh, dc, dz, dv, dh_steps, dm, tanh_c, dc_hat, dhw,
                  dw_ln_hh, dw_ln_c, db_ln_c, dw_ph):
    """The fused BPTT of ``lstm_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh packed untransposed: dh = δv W_hh by gemm), w_hr, the
              options, batch_sizes; cs, gates, ln_hh, rstd_hh, ln_c, rstd_c (the
              forward's histories); d_output
    in/out    dh, dc: dh_n, dc_n on entry; dh_0, dc_0 on exit
              dw_ln_hh, dw_ln_c, db_ln_c, dw_ph: summed into (zeros on entry)
    written   dz, dv, dh_steps: zeros where a row is inactive
    scratch   dm, tanh_c, dc_hat, dhw
    """
    L, N, G = dz.shape
    H = G // 4
    P = dh.shape[1]
    proj = w_hr.shape[0] > 0
    ln, peep = w_ln_hh.shape[0] > 0, w_ph.shape[0] > 0
    drop = recurrent_mask.shape[0] > 0
    zoned = zoneout_mask.shape[0] > 0 or zoneout_p >= 0  # a drawn mask, or eval's p
    p = dz.dtype.type(zoneout_p)
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            dz[s, m, :] = 0.0
            if ln:
                dv[s, m, :] = 0.0
            if proj:
                dh_steps[s, m, :] = 0.0
        if n == 0:
            continue
        # δh' = δh + δoutput; zoneout: δh̃ = (1 - d) ⊙ δh', dh keeps d ⊙ δh'
        for m in range(n):
            dh_tilde = dh_steps[s, m] if proj else (dm[m] if zoned else dh[m])
            _zone_row_backward(zoneout_mask, s, m, p, dh[m], d_output[t, m], dh_tilde, P)
        if proj:
            np.dot(dh_steps[s, :n], w_hr, dm[:n])  # back through h̃ = W_hr m
        for m in range(n):
            dmm = dm[m] if (proj or zoned) else dh[m]  # δm, m = o ⊙ tanh ĉ
            _output_backward(gates[s, m], dmm, tanh_c[m], dc_hat[m] if ln else tanh_c[m],
                             dc[m], cs[s + 1, m], ln_c[s, m] if ln else tanh_c[m],
                             rstd_c[s, m] if ln else dz.dtype.type(0), w_ln_c, b_ln_c, ln,
                             dw_ln_c, db_ln_c, H)
            _cell_backward(gates[s, m], dmm, tanh_c[m], dz[s, m], dc[m], cs[s + 1, m], cs[s, m],
                           w_ph, peep, dw_ph, H)
            if ln:  # δv = LN backward of δa ⊙ γ_hh; δγ_hh = Σ δa ⊙ LN(v)
                _recurrent_backward(dz[s, m], ln_hh[s, m], rstd_hh[s, m], w_ln_hh, dv[s, m],
                                    dw_ln_hh, dw_ln_hh[:0], G)
        step_product(gemm, dv[s] if ln else dz[s], n, w_hh_panels, dhw)  # δv W_hh: (n, P)
        # δh = q ⊙ (δv W_hh) + d ⊙ δh' (the straight part, kept in dh above)
        for m in range(n):
            if zoned:
                if drop:
                    _masked_add_to(dh[m], recurrent_mask[m], dhw[m], P)
                else:
                    _add_to(dh[m], dhw[m], P)
            elif drop:
                _masked(recurrent_mask[m], dhw[m], dh[m], P)
            else:
                _copy(dh[m], dhw[m, :P])
