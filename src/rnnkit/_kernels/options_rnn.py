r"""Elman RNN kernels with the cell options: one layer, one direction, all L steps.

The slow twins are ``rnnkit._reference_options.rnn_forward`` / ``rnn_backward``
(derivation: docs/equations.md, "Cell options"); the wrappers are in
``rnnkit._ops_options``. One step (``q`` the recurrent-dropout mask, ``d`` the step's
zoneout mask or the eval probability p)::

    h̄ = q ⊙ h,   u = W_ih x,   v = W_hh h̄
    a = LN(u) ⊙ γ_ih + b + LN(v) ⊙ γ_hh          (without layer norm: u + b + v)
    h̃ = tanh(a)  (or relu)
    h' = d ⊙ h + (1 - d) ⊙ h̃

The input side ``LN(u) γ_ih + b`` is made for all steps before the loop and taken back
through its norm after it (``options_lstm.normalize_input`` /
``normalize_input_backward``); the step loop fuses the rest.

Buffers ("processing" order: index s, time t = s, or L-1-s when ``reverse``; an absent
option's array is empty, its first axis 0)::

    name             shape          order       meaning
    xw               (L, N, H)      processing  LN(u) γ_ih + b, or u + b
    w_hh_panels      (H', H, NR)    -           W_hh^T packed (forward), W_hh (backward):
                                                H' = ceil(H / NR)
    w_ln_hh          (H,)           -           γ_hh; (0,) without layer norm
    recurrent_mask   (N0, H)        -           q, already scaled; (0, 0) off
    zoneout_mask     (L0, N0, H)    processing  d; (0, 0, 0) off
    zoneout_p        scalar         -           eval zoneout p; negative: off
    rows0, steps0    int            -           where this call's rows and steps start in
                                                the masks (inference splits rows, chunks steps)
    batch_sizes      (L,) int64     time        rows active at time t
    hs               (S, N, H)      processing  h entering step s: S = L + 1, or 2 slots
    ln_hh, rstd_hh   (K, N, H), (K, N)          LN(v) and 1 / sqrt(var(v) + ε): K = L
                                                (training) or 1 slot (inference)
    h_tilde          (L, N, H)      processing  h̃ = act(a) before zoneout: training with
                                                zoneout only, else (0, 0, 0)
    output           (L, N, H)      time        h' of every step
    hw               (N, H'NR)      -           h̄ W_hh^T of the step (columns past H: zero)
    h_rec            (N, H)         -           h̄ = q ⊙ h of the step; (0, 0) without q
    d_output         (L, N, H)      time        dL/d output
    dh               (N, H)         -           dL/dh carried from step to step
    da               (L, N, H)      processing  δa, the pre-activation's gradient
    dv               (L, N, H)      processing  δv = LN backward of δa ⊙ γ_hh; (0, 0, 0)
                                                without layer norm (δv = δa)
    dhw              (N, H'NR)      -           δv W_hh of the step (past H: zero)
    dw_ln_hh         (H,)           -           with layer norm: Σ δa ⊙ LN(v), summed in
"""

from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _tanh
from ._options_math import (
    _add_to,
    _masked,
    _masked_add_to,
    _recurrent_backward,
    _row_stats,
    _zone_row,
    _zone_row_backward,
)

# ---------------------------------------------------------------- one row of a step
# The step loops call these per row: small functions keep each loop simple enough for
# LLVM to vectorize (zoneout's and the masks' are in _options_math.py)


@njit(**_OPTS)
def _rnn_cell(xwm, hwm, v_hat, w_ln_hh, ln, relu, h_new, H):
    """h̃ = act(a), a = xw + LN(v) γ_hh (v̂ into v_hat; returns r) or xw + v (returns 0)."""
    zero = xwm.dtype.type(0)
    rstd = zero
    if ln:
        mu, rstd = _row_stats(hwm, H)
        for j in range(H):
            v = (hwm[j] - mu) * rstd
            v_hat[j] = v
            hwm[j] = xwm[j] + v * w_ln_hh[j]
    else:
        for j in range(H):
            hwm[j] += xwm[j]
    if relu:
        for j in range(H):
            h_new[j] = hwm[j] if hwm[j] > zero else zero
    else:
        for j in range(H):
            h_new[j] = _tanh(hwm[j])
    return rstd


@njit(**_OPTS)
def _activation_backward(dam, h_new, relu, H):
    """δa = δh̃ ⊙ act'(a), over dam in place: relu' = 1 where h̃ > 0, tanh' = 1 - h̃²."""
    one, zero = dam.dtype.type(1), dam.dtype.type(0)
    if relu:
        for j in range(H):
            dam[j] = dam[j] if h_new[j] > zero else zero
    else:
        for j in range(H):
            dam[j] = dam[j] * (one - h_new[j] * h_new[j])


# ---------------------------------------------------------------- the step loops


@njit(**_OPTS)
def rnn_forward(xw, gemm, w_hh_panels, w_ln_hh, recurrent_mask, zoneout_mask, zoneout_p, rows0,
                steps0, batch_sizes, reverse, relu, hs, ln_hh, rstd_hh, h_tilde, output, hw,
                h_rec):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      xw, w_hh_panels (by gemm), the options, batch_sizes; relu: relu, not tanh
    written   hs: hs[0] holds h_0 on entry. Training: S = L + 1, hs[s] enters step s;
              inference: S = 2 slots taking turns, h_n ends in hs[L % 2]
              ln_hh, rstd_hh (K = L: the backward's; K = 1: scratch), h_tilde: zeros where
              a row is inactive; output: zeros where a row is inactive
    scratch   hw, h_rec
    """
    L, N, H = xw.shape
    S = hs.shape[0]
    ln, drop = w_ln_hh.shape[0] > 0, recurrent_mask.shape[0] > 0
    keep_tilde = h_tilde.shape[0] > 0
    p = xw.dtype.type(zoneout_p)
    K = ln_hh.shape[0] if ln else 1
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        if n > 0:
            if drop:  # h̄ = q ⊙ h
                for m in range(n):
                    _masked(recurrent_mask[rows0 + m], h_in[m], h_rec[m], H)
                step_product(gemm, h_rec, n, w_hh_panels, hw)  # v = h̄ W_hh^T: (n, H)
            else:
                step_product(gemm, h_in, n, w_hh_panels, hw)
            for m in range(n):
                r = _rnn_cell(xw[s, m], hw[m], ln_hh[s % K, m] if ln else hw[m], w_ln_hh, ln,
                              relu, h_out[m], H)
                if ln:
                    rstd_hh[s % K, m] = r
                if keep_tilde:
                    _copy(h_tilde[s, m], h_out[m])
                # h' = d ⊙ h + (1 - d) ⊙ h̃
                _zone_row(zoneout_mask, steps0 + s, rows0 + m, p, h_in[m], h_out[m], H)
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            output[t, m, :] = 0.0
            if keep_tilde:
                h_tilde[s, m, :] = 0.0
            if ln:
                ln_hh[s % K, m, :] = 0.0
                rstd_hh[s % K, m] = 0.0


@njit(**_OPTS)
def rnn_backward(gemm, w_hh_panels, w_ln_hh, recurrent_mask, zoneout_mask, zoneout_p,
                 batch_sizes, reverse, relu, hs, h_tilde, ln_hh, rstd_hh, d_output, dh, da, dv,
                 dhw, dw_ln_hh):
    """The fused BPTT of ``rnn_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh packed untransposed: δh̄ = δv W_hh by gemm), the options,
              batch_sizes, relu; hs, h_tilde, ln_hh, rstd_hh (the forward's histories);
              d_output
    in/out    dh: dh_n on entry, dh_0 on exit; dw_ln_hh: summed into
    written   da, dv: zeros where a row is inactive
    scratch   dhw
    """
    L, N, H = da.shape
    ln, drop = w_ln_hh.shape[0] > 0, recurrent_mask.shape[0] > 0
    zoned = zoneout_mask.shape[0] > 0 or zoneout_p >= 0  # a drawn mask, or eval's p
    p = da.dtype.type(zoneout_p)
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            da[s, m, :] = 0.0
            if ln:
                dv[s, m, :] = 0.0
        if n == 0:
            continue
        for m in range(n):
            # δh̃ = (1 - d) ⊙ δh' (into da for now); dh keeps d ⊙ δh' (the straight path)
            _zone_row_backward(zoneout_mask, s, m, p, dh[m], d_output[t, m], da[s, m], H)
            # δa = δh̃ ⊙ act'(a), read off h̃
            _activation_backward(da[s, m], h_tilde[s, m] if zoned else hs[s + 1, m], relu, H)
            if ln:  # δv = LN backward of δa ⊙ γ_hh; δγ_hh = Σ δa ⊙ LN(v)
                _recurrent_backward(da[s, m], ln_hh[s, m], rstd_hh[s, m], w_ln_hh, dv[s, m],
                                    dw_ln_hh, dw_ln_hh[:0], H)
        step_product(gemm, dv[s] if ln else da[s], n, w_hh_panels, dhw)  # δv W_hh: (n, H)
        # δh = q ⊙ (δv W_hh) + d ⊙ δh' (the straight part, kept in dh above)
        for m in range(n):
            if zoned:
                if drop:
                    _masked_add_to(dh[m], recurrent_mask[m], dhw[m], H)
                else:
                    _add_to(dh[m], dhw[m], H)
            elif drop:
                _masked(recurrent_mask[m], dhw[m], dh[m], H)
            else:
                _copy(dh[m], dhw[m, :H])
