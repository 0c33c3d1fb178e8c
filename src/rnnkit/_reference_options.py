r"""Plain-NumPy recurrences with the cell options of API.md ("Cell options (beyond torch)").

``_reference.py``'s loops, one layer and one direction, with layer norm, recurrent dropout,
zoneout and (LSTM) peepholes, alone or combined. The readable statement of the options'
math (derivation: docs/equations.md, "Cell options") and the oracle their compiled kernels
are tested against. One step, in the order the options are applied (``h``, ``c`` the
state entering the step; ``q`` the recurrent-dropout mask, API.md's ``m``; ``d`` the
step's zoneout mask)::

    h̄  = q ⊙ h                                  recurrent dropout (q = 1 when off)
    u  = W_ih x,   v = W_hh h̄                   the two projections, without biases
    a  = LN(u) ⊙ γ_ih + b_ih + LN(v) ⊙ γ_hh + b_hh    (without layer norm: u + b_ih + v + b_hh)
    LSTM  i = σ(a_i + p_i ⊙ c)    f = σ(a_f + p_f ⊙ c)    g = tanh(a_g)      peepholes p
          c' = f ⊙ c + i ⊙ g
          o = σ(a_o + p_o ⊙ c')                  the raw c', not its layer norm
          h̃ = o ⊙ tanh(LN(c') ⊙ γ_c + β_c)      (without layer norm: o ⊙ tanh(c'))
          h̃ = W_hr h̃                            (proj_size > 0)
    GRU   r = σ(a_r + b_r)   z = σ(a_z + b_z)   n = tanh(a_n + r ⊙ b_n)
          (a = LN(u) ⊙ γ_ih + b_ih and b = LN(v) ⊙ γ_hh + b_hh kept apart)
          h̃ = (1 - z) ⊙ n + z ⊙ h               the state h, not h̄
    RNN   h̃ = act(a)
    h' = d ⊙ h + (1 - d) ⊙ h̃                    zoneout (eval: d = the probability p)

``LN(v) = (v - mean(v)) / sqrt(var(v) + 1e-5)`` over the last axis (one sequence at one
step: the ``G`` gate entries of a projection, the ``H`` of the cell state), biased variance.

Conventions: exactly ``_reference.py``'s (time-ordered ``x``, ``reverse``, ``batch_sizes``,
histories in processing order), and each function takes ``_reference``'s arguments in
their order, then keyword options, each ``None`` when off:

- ``w_ln_ih`` ``(G,)`` = γ_ih, ``w_ln_hh`` ``(G,)`` = γ_hh (``weight_ln_ih/hh_l{k}``),
  and for the LSTM ``w_ln_c`` ``(H,)`` = γ_c, ``b_ln_c`` ``(H,)`` = β_c: layer norm
  (all of a mode's gains at once).
- ``w_ph`` ``(3H,)``, rows ``p_i | p_f | p_o`` (``weight_ph_l{k}``): LSTM peepholes.
- ``recurrent_mask`` ``(N, H_out)``: the keep-mask ``q`` of recurrent dropout, already
  scaled by ``1 / (1 - p)``, one per call.
- ``zoneout_mask`` ``(L, N, H_out)`` in processing order (``d_s`` for step ``s``; 1 keeps
  the previous state), or ``zoneout_eval=p``: the eval-mode interpolation, ``d = p``.

The caller draws the masks, so every function is deterministic. Pass the same options to
the backward as to the forward. With every option off the results equal ``_reference``'s
bit for bit: the off paths run the same operations in the same order.

An inactive row (packed input) keeps its state and outputs zeros; its mask entries are
never read.
"""

from __future__ import annotations

import numpy as np

from rnnkit._reference import (
    _active,
    _input_grads,
    _projection,
    _sigmoid,
    _time,
)

LN_EPS = 1e-5  # API.md's ε in LN: the same as torch.nn.LayerNorm's default


def _layer_norm(v):
    """``v̂ = (v - μ) r`` over the last axis, ``r = 1 / sqrt(var + ε)``. Returns ``v̂, r``."""
    mu = v.mean(axis=-1, keepdims=True)
    centred = v - mu
    var = (centred * centred).mean(axis=-1, keepdims=True)  # biased: divides by K
    rstd = 1 / np.sqrt(var + LN_EPS)  # (n, 1)
    return centred * rstd, rstd[:, 0]


def _through_zoneout(dh_s, d):
    """``h_t = d ⊙ h_{t-1} + (1 - d) ⊙ h̃_t``, backward: ``(δh̃_t, the straight part to
    h_{t-1})`` from ``δh_t``; without zoneout (``d`` None) ``(δh_t, None)``."""
    if d is None:
        return dh_s, None
    return (1 - d) * dh_s, d * dh_s


def _to_previous_h(s, n, d_in, d_rec, saved, w_ln_ih, w_ln_hh, du, dv, w_hh, recurrent_mask,
                   dh, dh_skip):
    """Step ``s``'s gradients into its two projections and on to ``h_{t-1}``: with layer
    norm (``a = LN(u) γ_ih + b_ih + LN(v) γ_hh + b_hh``) through each LN, from the
    gradients ``d_in`` of the input side and ``d_rec`` of the recurrent side; without,
    ``du``/``dv`` are those gradients already. Then ``dh = δv W_hh`` (masked: ``v = W_hh
    (q ⊙ h_{t-1})``), plus zoneout's straight path ``dh_skip`` when given."""
    if w_ln_ih is not None:
        du[s, :n] = _layer_norm_backward(d_in[s, :n] * w_ln_ih, saved["ln_ih"][s, :n],
                                         saved["rstd_ih"][s, :n])
        dv[s, :n] = _layer_norm_backward(d_rec[s, :n] * w_ln_hh, saved["ln_hh"][s, :n],
                                         saved["rstd_hh"][s, :n])
    dh[:n] = dv[s, :n] @ w_hh
    if recurrent_mask is not None:
        dh[:n] *= recurrent_mask[:n]
    if dh_skip is not None:
        dh[:n] += dh_skip


def _layer_norm_backward(dv_hat, v_hat, rstd):
    """δv from δv̂ through ``v̂ = (v - μ) r``: μ and the variance both depend on every entry.

    ``δv = r ⊙ (δv̂ - mean(δv̂) - v̂ ⊙ mean(δv̂ ⊙ v̂))`` (docs/equations.md derives it).
    """
    mean_dv_hat = dv_hat.mean(axis=-1, keepdims=True)  # through μ
    mean_dv_hat_v_hat = (dv_hat * v_hat).mean(axis=-1, keepdims=True)  # through var
    return rstd[:, None] * (dv_hat - mean_dv_hat - v_hat * mean_dv_hat_v_hat)


def _zoneout_gate(zoneout_mask, zoneout_eval, s, n):
    """The step's ``d``: the drawn mask's active rows, the eval probability, or None (off)."""
    if zoneout_mask is not None:
        return zoneout_mask[s, :n]  # (n, H_out)
    return zoneout_eval


def _recurrent_input(h, recurrent_mask, n):
    """``h̄ = q ⊙ h`` for the active rows: what ``W_hh`` reads (recurrent dropout)."""
    return h[:n] if recurrent_mask is None else recurrent_mask[:n] * h[:n]


def _masked_history(hs, recurrent_mask):
    """``H̄_prev``: every step's ``h̄ = q ⊙ h`` (the mask is per call, so one broadcast)."""
    return hs if recurrent_mask is None else hs * recurrent_mask


def _new_buffers(L, N, dtype, **widths):
    return {name: np.zeros((L, N, w) if w else (L, N), dtype=dtype) for name, w in widths.items()}


# ---------------------------------------------------------------- LSTM


def lstm_forward(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes=None, reverse=False, keep=False,
                 *, w_ln_ih=None, w_ln_hh=None, w_ln_c=None, b_ln_c=None, w_ph=None,
                 recurrent_mask=None, zoneout_mask=None, zoneout_eval=None):
    """``_reference.lstm_forward`` with the options (module docstring).

    Returns ``output (L, N, P), h_n (N, P), c_n (N, H), saved``. ``saved`` (with ``keep``)
    holds ``_reference``'s ``h``, ``c``, ``gates`` (i, f, g, o after their nonlinearities,
    peepholes included; ``h`` the zoned states), and with layer norm ``ln_ih``, ``ln_hh``
    ``(L, N, 4H)`` = LN(u), LN(v), ``ln_c`` ``(L, N, H)`` = LN(c') and their ``rstd_*``
    ``(L, N)``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0] // 4
    ln = w_ln_ih is not None
    xw = _projection(x, w_ih, None if ln else b, keep)  # layer norm: u = W_ih x, no bias yet
    h, c = h_0.copy(), c_0.copy()
    output = np.zeros((L, N, h.shape[1]), dtype=x.dtype)
    if keep:
        hs = np.zeros((L + 1, N, h.shape[1]), dtype=x.dtype)
        cs = np.zeros((L + 1, N, H), dtype=x.dtype)
        gates = np.zeros((L, N, 4 * H), dtype=x.dtype)
        if ln:
            lns = _new_buffers(L, N, x.dtype, ln_ih=4 * H, ln_hh=4 * H, ln_c=H,
                               rstd_ih=0, rstd_hh=0, rstd_c=0)
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s], cs[s] = h, c
        h_prev, c_prev = h[:n].copy(), c[:n].copy()
        h_rec = _recurrent_input(h, recurrent_mask, n)  # h̄ = q ⊙ h_{t-1}
        if ln:
            u_hat, rstd_ih = _layer_norm(xw[t][:n])
            v_hat, rstd_hh = _layer_norm(h_rec @ w_hh.T)
            z = u_hat * w_ln_ih + v_hat * w_ln_hh  # a = LN(u) γ_ih + LN(v) γ_hh + b
            if b is not None:
                z += b
        else:
            z = xw[t][:n] + h_rec @ w_hh.T  # (n, 4H)
        if w_ph is not None:  # i = σ(a_i + p_i ⊙ c_{t-1}), f = σ(a_f + p_f ⊙ c_{t-1})
            z[:, :H] += w_ph[:H] * c_prev
            z[:, H : 2 * H] += w_ph[H : 2 * H] * c_prev
        i = _sigmoid(z[:, :H])
        f = _sigmoid(z[:, H : 2 * H])
        g = np.tanh(z[:, 2 * H : 3 * H])
        c_new = f * c[:n] + i * g
        if w_ph is not None:
            o = _sigmoid(z[:, 3 * H :] + w_ph[2 * H :] * c_new)  # o = σ(a_o + p_o ⊙ c_t), raw c_t
        else:
            o = _sigmoid(z[:, 3 * H :])
        if ln:
            c_hat, rstd_c = _layer_norm(c_new)
            h_new = o * np.tanh(c_hat * w_ln_c + b_ln_c)  # h̃ = o ⊙ tanh(LN(c_t) γ_c + β_c)
        else:
            h_new = o * np.tanh(c_new)  # (n, H)
        if w_hr is not None:
            h_new = h_new @ w_hr.T  # (n, P)
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        if d is not None:
            h_new = d * h_prev + (1 - d) * h_new  # zoneout on h only: c_t is not zoned
        c[:n], h[:n], output[t, :n] = c_new, h_new, h_new
        if keep:
            gates[s, :n] = np.concatenate([i, f, g, o], axis=1)
            if ln:
                lns["ln_ih"][s, :n], lns["ln_hh"][s, :n], lns["ln_c"][s, :n] = u_hat, v_hat, c_hat
                lns["rstd_ih"][s, :n], lns["rstd_hh"][s, :n] = rstd_ih, rstd_hh
                lns["rstd_c"][s, :n] = rstd_c
    saved = None
    if keep:
        hs[L], cs[L] = h, c
        saved = {"h": hs, "c": cs, "gates": gates}
        if ln:
            saved.update(lns)
    return output, h, c, saved


def lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes=None,
                  reverse=False, *, w_ln_ih=None, w_ln_hh=None, w_ln_c=None, b_ln_c=None,
                  w_ph=None, recurrent_mask=None, zoneout_mask=None, zoneout_eval=None):
    """The fused BPTT of ``lstm_forward`` (derivation: docs/equations.md).

    Returns ``dx, dh_0, dc_0, dw_ih, dw_hh, db, dw_hr, doptions``: ``_reference``'s seven,
    then a dict of the parameter options' gradients by keyword (``w_ln_ih``, ``w_ln_hh``,
    ``w_ln_c``, ``b_ln_c``, ``w_ph``; only those given, so ``{}`` with none).
    """
    hs, cs, gates = saved["h"], saved["c"], saved["gates"]
    L, N, _ = x.shape
    H = w_hh.shape[0] // 4
    G, P = 4 * H, hs.shape[2]
    ln = w_ln_ih is not None
    dh, dc = dh_n.copy(), dc_n.copy()
    dz = np.zeros((L, N, G), dtype=x.dtype)  # δa: dL/d(pre-activations), processing order
    if ln:
        du = np.zeros_like(dz)  # δu = δ(W_ih x), δv = δ(W_hh h̄): through LN
        dv = np.zeros_like(dz)
        dc_hat = np.zeros_like(cs[1:])  # δ(LN(c_t) γ_c + β_c)
    else:
        du = dv = dz  # u + v + b: all three see δa
    dh_steps = np.zeros_like(hs[1:]) if w_hr is not None else None  # dL/dh̃ per step
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]  # from the next step and from the output
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        dh_s, dh_skip = _through_zoneout(dh_s, d)
        i, f = gates[s, :n, :H], gates[s, :n, H : 2 * H]
        g, o = gates[s, :n, 2 * H : 3 * H], gates[s, :n, 3 * H :]
        if ln:
            tanh_c = np.tanh(saved["ln_c"][s, :n] * w_ln_c + b_ln_c)
        else:
            tanh_c = np.tanh(cs[s + 1, :n])
        if w_hr is not None:
            dh_steps[s, :n] = dh_s
            dh_s = dh_s @ w_hr  # h̃ = W_hr (o ⊙ tanh ĉ): back through the projection
        do = dh_s * tanh_c
        if ln:  # ĉ = LN(c_t) γ_c + β_c
            dc_hat[s, :n] = dh_s * o * (1 - tanh_c * tanh_c)
            dc_s = dc[:n] + _layer_norm_backward(dc_hat[s, :n] * w_ln_c, saved["ln_c"][s, :n],
                                                 saved["rstd_c"][s, :n])
        else:
            dc_s = dc[:n] + dh_s * o * (1 - tanh_c * tanh_c)  # tanh' = 1 - tanh²
        dz[s, :n, 3 * H :] = do * o * (1 - o)  # σ' = σ(1 - σ)
        if w_ph is not None:
            dc_s = dc_s + dz[s, :n, 3 * H :] * w_ph[2 * H :]  # o = σ(a_o + p_o ⊙ c_t)
        di, df, dg = dc_s * g, dc_s * cs[s, :n], dc_s * i
        dc[:n] = dc_s * f  # c' = f ⊙ c + i ⊙ g
        dz[s, :n, :H] = di * i * (1 - i)
        dz[s, :n, H : 2 * H] = df * f * (1 - f)
        dz[s, :n, 2 * H : 3 * H] = dg * (1 - g * g)
        if w_ph is not None:  # i = σ(a_i + p_i ⊙ c_{t-1}), f = σ(a_f + p_f ⊙ c_{t-1})
            dc[:n] += dz[s, :n, :H] * w_ph[:H] + dz[s, :n, H : 2 * H] * w_ph[H : 2 * H]
        _to_previous_h(s, n, dz, dz, saved, w_ln_ih, w_ln_hh, du, dv, w_hh, recurrent_mask,
                       dh, dh_skip)
    h_rec = _masked_history(hs[:L], recurrent_mask)  # the h̄ each step's W_hh read
    dw_hh = dv.reshape(-1, G).T @ h_rec.reshape(-1, P)  # one GEMM over all steps
    dw_hr = None
    if w_hr is not None:
        c_out = saved["ln_c"] * w_ln_c + b_ln_c if ln else cs[1:]
        h_unproj = gates[:, :, 3 * H :] * np.tanh(c_out)  # o ⊙ tanh ĉ, before W_hr
        dw_hr = dh_steps.reshape(-1, P).T @ h_unproj.reshape(-1, H)
    dx, dw_ih, db = _input_grads(du, x, w_ih, reverse)
    doptions = {}
    if ln:
        db = dz.sum(axis=(0, 1))  # the biases sit after the norm: they see δa, not δu
        doptions["w_ln_ih"] = (dz * saved["ln_ih"]).sum(axis=(0, 1))  # δγ = Σ δa ⊙ LN(u)
        doptions["w_ln_hh"] = (dz * saved["ln_hh"]).sum(axis=(0, 1))
        doptions["w_ln_c"] = (dc_hat * saved["ln_c"]).sum(axis=(0, 1))
        doptions["b_ln_c"] = dc_hat.sum(axis=(0, 1))
    if w_ph is not None:  # δp = Σ δa ⊙ the c it multiplied (inactive rows: δa = 0)
        doptions["w_ph"] = np.concatenate([
            (dz[:, :, :H] * cs[:L]).sum(axis=(0, 1)),
            (dz[:, :, H : 2 * H] * cs[:L]).sum(axis=(0, 1)),
            (dz[:, :, 3 * H :] * cs[1:]).sum(axis=(0, 1)),
        ])
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr, doptions


# ---------------------------------------------------------------- GRU


def gru_forward(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, reverse=False, keep=False,
                *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None, zoneout_mask=None,
                zoneout_eval=None):
    """``_reference.gru_forward`` with the options (module docstring; no peepholes).

    Returns ``output (L, N, H), h_n (N, H), saved``: ``_reference``'s ``h`` (zoned states),
    ``gates`` (r, z, n), ``w_hn_h`` (the n block of ``b = LN(v) γ_hh + b_hh``, or of
    ``W_hh h̄ + b_hh``), and with layer norm ``ln_ih``, ``ln_hh`` ``(L, N, 3H)``,
    ``rstd_ih``, ``rstd_hh`` ``(L, N)``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0] // 3
    ln = w_ln_ih is not None
    xw = _projection(x, w_ih, None if ln else b_ih, keep)  # xw[t]: (N, 3H)
    h = h_0.copy()
    output = np.zeros((L, N, H), dtype=x.dtype)
    if keep:
        hs = np.zeros((L + 1, N, H), dtype=x.dtype)
        gates = np.zeros((L, N, 3 * H), dtype=x.dtype)
        w_hn_h = np.zeros((L, N, H), dtype=x.dtype)
        if ln:
            lns = _new_buffers(L, N, x.dtype, ln_ih=3 * H, ln_hh=3 * H, rstd_ih=0, rstd_hh=0)
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s] = h
        h_prev = h[:n].copy()
        hw = _recurrent_input(h, recurrent_mask, n) @ w_hh.T  # v = W_hh (q ⊙ h): (n, 3H)
        if ln:
            v_hat, rstd_hh = _layer_norm(hw)
            hw = v_hat * w_ln_hh  # b = LN(v) γ_hh + b_hh
            u_hat, rstd_ih = _layer_norm(xw[t][:n])
            xw_t = u_hat * w_ln_ih  # a = LN(u) γ_ih + b_ih
            if b_ih is not None:
                xw_t += b_ih
        else:
            xw_t = xw[t][:n]  # (n, 3H)
        if b_hh is not None:
            hw += b_hh
        r = _sigmoid(xw_t[:, :H] + hw[:, :H])
        z = _sigmoid(xw_t[:, H : 2 * H] + hw[:, H : 2 * H])
        n_gate = np.tanh(xw_t[:, 2 * H :] + r * hw[:, 2 * H :])  # torch: r scales W_hn h + b_hn
        h_new = (1 - z) * n_gate + z * h_prev  # the state h_{t-1}, never dropped
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        if d is not None:
            h_new = d * h_prev + (1 - d) * h_new
        h[:n], output[t, :n] = h_new, h_new
        if keep:
            gates[s, :n] = np.concatenate([r, z, n_gate], axis=1)
            w_hn_h[s, :n] = hw[:, 2 * H :]
            if ln:
                lns["ln_ih"][s, :n], lns["ln_hh"][s, :n] = u_hat, v_hat
                lns["rstd_ih"][s, :n], lns["rstd_hh"][s, :n] = rstd_ih, rstd_hh
    saved = None
    if keep:
        hs[L] = h
        saved = {"h": hs, "gates": gates, "w_hn_h": w_hn_h}
        if ln:
            saved.update(lns)
    return output, h, saved


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False, *,
                 w_ln_ih=None, w_ln_hh=None, recurrent_mask=None, zoneout_mask=None,
                 zoneout_eval=None):
    """The fused BPTT of ``gru_forward``.

    Returns ``dx, dh_0, dw_ih, dw_hh, db_ih, db_hh, doptions`` (``doptions``: ``w_ln_ih``,
    ``w_ln_hh`` with layer norm, else ``{}``).
    """
    hs, gates, w_hn_h = saved["h"], saved["gates"], saved["w_hn_h"]
    L, N, _ = x.shape
    H = w_hh.shape[0] // 3
    ln = w_ln_ih is not None
    dh = dh_n.copy()
    dxw = np.zeros((L, N, 3 * H), dtype=x.dtype)  # δa = δ(LN(u) γ_ih + b_ih), or δ(u + b_ih)
    dhw = np.zeros((L, N, 3 * H), dtype=x.dtype)  # δb = δ(LN(v) γ_hh + b_hh), or δ(v + b_hh)
    if ln:
        du, dv = np.zeros_like(dxw), np.zeros_like(dhw)
    else:
        du, dv = dxw, dhw
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        dh_s, dh_skip = _through_zoneout(dh_s, d)
        r, z, n_gate = gates[s, :n, :H], gates[s, :n, H : 2 * H], gates[s, :n, 2 * H :]
        h_prev = hs[s, :n]
        da_n = dh_s * (1 - z) * (1 - n_gate * n_gate)  # h̃ = (1-z) n + z h; tanh' = 1 - n²
        da_z = dh_s * (h_prev - n_gate) * z * (1 - z)
        da_r = da_n * w_hn_h[s, :n] * r * (1 - r)  # n = tanh(a_n + r ⊙ b_n)
        dxw[s, :n, :H], dxw[s, :n, H : 2 * H], dxw[s, :n, 2 * H :] = da_r, da_z, da_n
        dhw[s, :n, :H], dhw[s, :n, H : 2 * H], dhw[s, :n, 2 * H :] = da_r, da_z, da_n * r
        _to_previous_h(s, n, dxw, dhw, saved, w_ln_ih, w_ln_hh, du, dv, w_hh, recurrent_mask,
                       dh, dh_skip)
        dh[:n] += dh_s * z  # h̃ = ... + z ⊙ h_{t-1}: unmasked, straight
    h_rec = _masked_history(hs[:L], recurrent_mask)
    dw_hh = dv.reshape(-1, 3 * H).T @ h_rec.reshape(-1, H)  # one GEMM over all steps
    db_hh = dhw.sum(axis=(0, 1))
    dx, dw_ih, db_ih = _input_grads(du, x, w_ih, reverse)
    doptions = {}
    if ln:
        db_ih = dxw.sum(axis=(0, 1))  # b_ih sits after the norm: δa, not δu
        doptions["w_ln_ih"] = (dxw * saved["ln_ih"]).sum(axis=(0, 1))
        doptions["w_ln_hh"] = (dhw * saved["ln_hh"]).sum(axis=(0, 1))
    return dx, dh, dw_ih, dw_hh, db_ih, db_hh, doptions


# ---------------------------------------------------------------- Elman RNN


def rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=False, *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None,
                zoneout_mask=None, zoneout_eval=None):
    """``_reference.rnn_forward`` with the options (module docstring; no peepholes).

    Returns ``output (L, N, H), h_n (N, H), saved``: ``{"h": (L+1, N, H)}`` (zoned states),
    with zoneout also ``h_tilde`` ``(L, N, H)`` = act(a) before it, and with layer norm
    ``ln_ih``, ``ln_hh`` ``(L, N, H)``, ``rstd_ih``, ``rstd_hh`` ``(L, N)``.
    """
    L, N, _ = x.shape
    H = w_hh.shape[0]
    ln = w_ln_ih is not None
    zoned = zoneout_mask is not None or zoneout_eval is not None
    xw = _projection(x, w_ih, None if ln else b, keep)  # xw[t]: (N, H)
    h = h_0.copy()
    output = np.zeros((L, N, H), dtype=x.dtype)
    hs = np.zeros((L + 1, N, H), dtype=x.dtype) if keep else None
    extra = {}
    if keep and zoned:
        extra["h_tilde"] = np.zeros((L, N, H), dtype=x.dtype)
    if keep and ln:
        extra.update(_new_buffers(L, N, x.dtype, ln_ih=H, ln_hh=H, rstd_ih=0, rstd_hh=0))
    for s in range(L):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        if keep:
            hs[s] = h
        h_prev = h[:n].copy()
        h_rec = _recurrent_input(h, recurrent_mask, n)  # h̄ = q ⊙ h_{t-1}
        if ln:
            u_hat, rstd_ih = _layer_norm(xw[t][:n])
            v_hat, rstd_hh = _layer_norm(h_rec @ w_hh.T)
            a = u_hat * w_ln_ih + v_hat * w_ln_hh  # LN(u) γ_ih + LN(v) γ_hh + b
            if b is not None:
                a += b
        else:
            a = xw[t][:n] + h_rec @ w_hh.T
        h_new = np.tanh(a) if nonlinearity == "tanh" else np.maximum(a, 0)
        if keep and zoned:
            extra["h_tilde"][s, :n] = h_new
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        if d is not None:
            h_new = d * h_prev + (1 - d) * h_new
        h[:n], output[t, :n] = h_new, h_new
        if keep and ln:
            extra["ln_ih"][s, :n], extra["ln_hh"][s, :n] = u_hat, v_hat
            extra["rstd_ih"][s, :n], extra["rstd_hh"][s, :n] = rstd_ih, rstd_hh
    if keep:
        hs[L] = h
    return output, h, ({"h": hs, **extra} if keep else None)


def rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity="tanh", batch_sizes=None,
                 reverse=False, *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None,
                 zoneout_mask=None, zoneout_eval=None):
    """The fused BPTT of ``rnn_forward``.

    Returns ``dx, dh_0, dw_ih, dw_hh, db, doptions`` (``doptions``: ``w_ln_ih``,
    ``w_ln_hh`` with layer norm, else ``{}``).
    """
    hs = saved["h"]
    L, N, _ = x.shape
    H = w_hh.shape[0]
    ln = w_ln_ih is not None
    dh = dh_n.copy()
    da = np.zeros((L, N, H), dtype=x.dtype)
    du, dv = (np.zeros_like(da), np.zeros_like(da)) if ln else (da, da)
    for s in range(L - 1, -1, -1):
        t = _time(s, L, reverse)
        n = _active(batch_sizes, t, N)
        dh_s = dh[:n] + d_output[t, :n]
        d = _zoneout_gate(zoneout_mask, zoneout_eval, s, n)
        dh_s, dh_skip = _through_zoneout(dh_s, d)
        h_new = hs[s + 1, :n] if d is None else saved["h_tilde"][s, :n]
        if nonlinearity == "tanh":
            da[s, :n] = dh_s * (1 - h_new * h_new)  # tanh' = 1 - tanh²
        else:
            da[s, :n] = dh_s * (h_new > 0)  # relu' = 1 where the output is positive
        _to_previous_h(s, n, da, da, saved, w_ln_ih, w_ln_hh, du, dv, w_hh, recurrent_mask,
                       dh, dh_skip)
    h_rec = _masked_history(hs[:L], recurrent_mask)
    dw_hh = dv.reshape(-1, H).T @ h_rec.reshape(-1, H)
    dx, dw_ih, db = _input_grads(du, x, w_ih, reverse)
    doptions = {}
    if ln:
        db = da.sum(axis=(0, 1))  # the biases sit after the norm: δa, not δu
        doptions["w_ln_ih"] = (da * saved["ln_ih"]).sum(axis=(0, 1))
        doptions["w_ln_hh"] = (da * saved["ln_hh"]).sum(axis=(0, 1))
    return dx, dh, dw_ih, dw_hh, db, doptions
