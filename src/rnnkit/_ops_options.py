"""The compiled recurrences with the cell options, with ``_reference_options``'s signatures.

Each function has exactly the arguments, keyword options and results of its twin in
``rnnkit._reference_options`` (shapes, conventions, the math: see there and
docs/equations.md, "Cell options"). ``saved`` (``keep=True``) is this module's own dict,
read only by its backward. With every option off a call is ``rnnkit._ops``'s plain one
(faster), plus the empty ``doptions`` of the backward.

Per call, outside the step loop: the input projection ``u = x W_ih^T`` of all steps in
one GEMM and, with layer norm, ``LN(u) γ_ih + b`` in one pass over it
(``normalize_input``); backward, one pass back through that norm
(``normalize_input_backward``, with δγ_ih and δb) and the GEMMs over all steps for
dx, dW_ih, dW_hh (and dW_hr). The step loop (``_kernels/options_*.py``) fuses the rest.

Inference (``keep=False``) runs through ``_ops._inference``: input projections in
chunks of steps, two state slots, the batch split over two cores when large; memory
beyond the output does not grow with L. Its kernels take where their rows and steps
start in the (whole-call) masks, ``rows0`` and ``steps0``.
"""

from __future__ import annotations

import numpy as np

from . import _ops
from ._kernels import _gemm
from ._kernels import options_gru as _gru
from ._kernels import options_lstm as _lstm
from ._kernels import options_rnn as _rnn
from ._kernels.blas import matmul as _matmul
from ._ops import _batch_sizes, _empty, _input_grads, _project, _state, _step_buffer

__all__ = ["lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "rnn_forward",
           "rnn_backward"]


# ---------------------------------------------------------------- shared pieces


def _vector(a, dtype):
    """An option's parameter as the kernels take it: contiguous, or (0,) when off."""
    return _empty(1, dtype) if a is None else np.ascontiguousarray(a, dtype=dtype)


class _Masks:
    """The options the kernels take as masks, as arrays (empty when off) and a number."""

    def __init__(self, recurrent_mask, zoneout_mask, zoneout_eval, dtype):
        self.recurrent = (_empty(2, dtype) if recurrent_mask is None
                          else np.ascontiguousarray(recurrent_mask, dtype=dtype))
        self.zoneout = (_empty(3, dtype) if zoneout_mask is None
                        else np.ascontiguousarray(zoneout_mask, dtype=dtype))
        self.zoneout_p = -1.0 if zoneout_eval is None else float(zoneout_eval)
        self.dropped = recurrent_mask is not None

    def h_bar(self, hs):
        """Every step's h̄ = q ⊙ h (what W_hh read), for dW_hh."""
        return hs * self.recurrent if self.dropped else hs


def _step_options(x, batch_sizes, w_ln_ih, w_ln_hh, recurrent_mask, zoneout_mask,
                  zoneout_eval):
    """What every option kernel takes besides its weights: whether layer norm is on, its
    γ_hh ((0,) when off), the masks (``_Masks``) and the rows active at each step."""
    L, N, _ = x.shape
    dt = x.dtype
    ln = w_ln_ih is not None
    return (ln, _vector(w_ln_hh if ln else None, dt),
            _Masks(recurrent_mask, zoneout_mask, zoneout_eval, dt),
            _batch_sizes(batch_sizes, L, N))


def _input_side(x, w_ih, b, w_ln_ih, reverse, batch_sizes, keep):
    """The gate inputs' input side for all steps, (L, N, G) in processing order:
    ``LN(u) γ_ih + b`` with layer norm (and, with ``keep``, ``LN(u)``, ``r`` for the
    backward), else ``u + b``."""
    if w_ln_ih is None:
        return _project(x, w_ih, b, reverse, batch_sizes), None, None
    dt = x.dtype
    xw = _project(x, w_ih, None, reverse, batch_sizes)
    L, N, G = xw.shape
    u_hat = np.empty((L, N, G), dt) if keep else _empty(3, dt)
    rstd = np.empty((L, N), dt) if keep else _empty(2, dt)
    _lstm.normalize_input(xw, _vector(w_ln_ih, dt), _vector(b, dt), batch_sizes, reverse,
                          u_hat, rstd)
    return xw, u_hat, rstd


def _inference_input(w_ln_ih, b, dt):
    """For ``_ops._inference``: the bias its projection adds (None with layer norm, which
    adds it after the norm), and ``normalize(xw, rows)`` for a chunk, in place."""
    if w_ln_ih is None:
        return b, lambda xw, rows, reverse: None
    gamma, bias = _vector(w_ln_ih, dt), _vector(b, dt)

    def normalize(xw, rows, reverse):
        _lstm.normalize_input(xw, gamma, bias, rows, reverse, _empty(3, dt), _empty(2, dt))

    return None, normalize


def _run_inference(x, w_ih, b, w_hh, batch_sizes, reverse, states, width, w_ln_ih, step):
    """``_ops._inference`` with the options: ``step(xw, rows, out, slots, hw, rows0,
    steps0)`` runs a chunk of steps of a group of rows (``rows0`` its first row in the
    masks, ``steps0`` the chunk's first processing step)."""
    dt = x.dtype
    bias, normalize = _inference_input(w_ln_ih, b, dt)
    next_row = [0]

    def group(n, slots, gemm, panels, hw):  # called once per row group, in row order
        rows0, steps_done = next_row[0], [0]
        next_row[0] += n

        def run(xw, rows, out):  # called once per chunk, in processing order
            normalize(xw, rows, reverse)
            step(xw, rows, out, slots, gemm, panels, hw, n, rows0, steps_done[0])
            steps_done[0] += xw.shape[0]

        return run

    return _ops._inference(x, w_ih, bias, w_hh, batch_sizes, reverse, states, width, group)


def _no_options(options):
    return all(v is None for v in options.values())


def _input_side_backward(dz, x, w_ih, w_ln_ih, saved, reverse, batch_sizes, doptions):
    """dx, dW_ih, db from δa (L, N, G): through the input layer norm first (in place over
    ``dz``, adding δγ_ih to ``doptions``), else straight."""
    if w_ln_ih is None:
        return _input_grads(dz, x, w_ih, reverse, batch_sizes)
    dt = x.dtype
    G = dz.shape[2]
    dgamma, db = np.zeros(G, dt), np.zeros(G, dt)
    _lstm.normalize_input_backward(dz.reshape(-1, G), _vector(w_ln_ih, dt),
                                   saved["ln_ih"].reshape(-1, G),
                                   saved["rstd_ih"].reshape(-1), dgamma, db)
    doptions["w_ln_ih"] = dgamma
    dx, dw_ih, _ = _input_grads(dz, x, w_ih, reverse, batch_sizes)  # dz holds δu now
    return dx, dw_ih, db  # the bias sits after the norm: it sees δa, not δu


# ---------------------------------------------------------------- LSTM


def _lstm_vectors(w_hr, w_ln_c, b_ln_c, w_ph, ln, dt):
    """The LSTM kernels' own arguments beyond ``_step_options``: W_hr ((0, 0) without
    projection), γ_c and β_c of the cell's layer norm, the peepholes ((0,) when off)."""
    return ((_empty(2, dt) if w_hr is None else np.ascontiguousarray(w_hr)),
            _vector(w_ln_c if ln else None, dt), _vector(b_ln_c if ln else None, dt),
            _vector(w_ph, dt))


def lstm_forward(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes=None, reverse=False, keep=False,
                 *, w_ln_ih=None, w_ln_hh=None, w_ln_c=None, b_ln_c=None, w_ph=None,
                 recurrent_mask=None, zoneout_mask=None, zoneout_eval=None):
    """Compiled ``_reference_options.lstm_forward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, w_ln_c=w_ln_c, b_ln_c=b_ln_c, w_ph=w_ph,
                   recurrent_mask=recurrent_mask, zoneout_mask=zoneout_mask,
                   zoneout_eval=zoneout_eval)
    if _no_options(options):
        return _ops.lstm_forward(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes, reverse, keep)
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 4
    w_hh = np.ascontiguousarray(w_hh)
    P = w_hh.shape[1]
    proj = w_hr is not None
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    w_hr_k, gamma_c, beta_c, peepholes = _lstm_vectors(w_hr, w_ln_c, b_ln_c, w_ph, ln, dt)
    reverse = bool(reverse)

    def kernel(xw, rows, out, hs, cs, gemm, panels, hw, n, rows0, steps0, lns):
        h_rec = np.empty((n, P), dt) if masks.dropped else _empty(2, dt)
        h_unproj = np.empty((n, H), dt) if proj else _empty(2, dt)
        _lstm.lstm_forward(xw, gemm, panels, w_hr_k, gamma_hh, gamma_c, beta_c, peepholes,
                           masks.recurrent, masks.zoneout, masks.zoneout_p, rows0, steps0,
                           rows, reverse, hs, cs, *lns, out, hw, h_rec, h_unproj)

    def norm_buffers(K, n):
        if not ln:
            return _empty(3, dt), _empty(2, dt), _empty(3, dt), _empty(2, dt)
        return (np.empty((K, n, G), dt), np.empty((K, n), dt), np.empty((K, n, H), dt),
                np.empty((K, n), dt))

    if not keep:
        def step(xw, rows, out, slots, gemm, panels, hw, n, rows0, steps0):
            kernel(xw, rows, out, slots[0], slots[1], gemm, panels, hw, n, rows0, steps0,
                   norm_buffers(1, n))

        output, (h_n, c_n) = _run_inference(x, w_ih, b, w_hh, batch_sizes, reverse, [h_0, c_0],
                                            P, w_ln_ih, step)
        return output, h_n, c_n, None
    panels = _gemm.pack(w_hh, transpose=True)  # the step product h̄ W_hh^T
    gates, u_hat, rstd_ih = _input_side(x, w_ih, b, w_ln_ih, reverse, batch_sizes, keep)
    hs = np.empty((L + 1, N, P), dt)
    cs = np.empty((L + 1, N, H), dt)
    hs[0], cs[0] = h_0, c_0
    output = np.empty((L, N, P), dt)
    lns = norm_buffers(L, N)
    kernel(gates, batch_sizes, output, hs, cs, _gemm.address(dt), panels,
           _step_buffer(panels, N), N, 0, 0, lns)
    saved = {"h": hs, "c": cs, "gates": gates}
    if ln:
        saved.update(ln_ih=u_hat, rstd_ih=rstd_ih, ln_hh=lns[0], rstd_hh=lns[1], ln_c=lns[2],
                     rstd_c=lns[3])
    return output, hs[L].copy(), cs[L].copy(), saved


def lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes=None,
                  reverse=False, *, w_ln_ih=None, w_ln_hh=None, w_ln_c=None, b_ln_c=None,
                  w_ph=None, recurrent_mask=None, zoneout_mask=None, zoneout_eval=None):
    """Compiled ``_reference_options.lstm_backward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, w_ln_c=w_ln_c, b_ln_c=b_ln_c, w_ph=w_ph,
                   recurrent_mask=recurrent_mask, zoneout_mask=zoneout_mask,
                   zoneout_eval=zoneout_eval)
    if _no_options(options):
        return (*_ops.lstm_backward(x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n,
                                    batch_sizes, reverse), {})
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 4
    P = w_hh.shape[1]
    proj = w_hr is not None
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    w_hr_k, gamma_c, beta_c, peepholes = _lstm_vectors(w_hr, w_ln_c, b_ln_c, w_ph, ln, dt)
    reverse = bool(reverse)
    panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # δh̄ = δv W_hh
    hs, cs, gates = saved["h"], saved["c"], saved["gates"]
    dh, dc = _state(dh_n, dt), _state(dc_n, dt)
    dz = np.empty((L, N, G), dt)
    dv = np.empty((L, N, G), dt) if ln else _empty(3, dt)
    dh_steps = np.empty((L, N, P), dt) if proj else _empty(3, dt)
    dw_ln_hh = np.zeros(G if ln else 0, dt)
    dw_ln_c, db_ln_c = np.zeros(H if ln else 0, dt), np.zeros(H if ln else 0, dt)
    dw_ph = np.zeros(peepholes.shape[0], dt)
    e3, e2 = _empty(3, dt), _empty(2, dt)
    _lstm.lstm_backward(_gemm.address(dt), panels, w_hr_k, gamma_hh, gamma_c, beta_c, peepholes,
                        masks.recurrent, masks.zoneout, masks.zoneout_p, batch_sizes, reverse,
                        cs, gates, saved.get("ln_hh", e3), saved.get("rstd_hh", e2),
                        saved.get("ln_c", e3), saved.get("rstd_c", e2),
                        np.ascontiguousarray(d_output, dtype=dt), dh, dc, dz, dv, dh_steps,
                        np.empty((N, H), dt), np.empty((N, H), dt),
                        np.empty((N, H) if ln else (0, 0), dt), _step_buffer(panels, N),
                        dw_ln_hh, dw_ln_c, db_ln_c, dw_ph)
    dv_all = dv if ln else dz
    dw_hh = _matmul(dv_all.reshape(-1, G).T, masks.h_bar(hs[:L]).reshape(-1, P))  # δV^T H̄
    dw_hr = None
    if proj:  # δW_hr = Σ δh̃^T m, m = o ⊙ tanh ĉ
        c_out = saved["ln_c"] * gamma_c + beta_c if ln else cs[1:]
        m = gates[:, :, 3 * H:] * np.tanh(c_out)
        dw_hr = _matmul(dh_steps.reshape(-1, P).T, m.reshape(-1, H))
    doptions = {}
    dx, dw_ih, db = _input_side_backward(dz, x, w_ih, w_ln_ih, saved, reverse, batch_sizes,
                                         doptions)
    if ln:
        doptions.update(w_ln_hh=dw_ln_hh, w_ln_c=dw_ln_c, b_ln_c=db_ln_c)
    if w_ph is not None:
        doptions["w_ph"] = dw_ph
    return dx, dh, dc, dw_ih, dw_hh, db, dw_hr, doptions


# ---------------------------------------------------------------- GRU


def gru_forward(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, reverse=False, keep=False,
                *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None, zoneout_mask=None,
                zoneout_eval=None):
    """Compiled ``_reference_options.gru_forward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, recurrent_mask=recurrent_mask,
                   zoneout_mask=zoneout_mask, zoneout_eval=zoneout_eval)
    if _no_options(options):
        return _ops.gru_forward(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, keep)
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 3
    w_hh = np.ascontiguousarray(w_hh)
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    b_hh_k = np.zeros(G, dt) if b_hh is None else np.ascontiguousarray(b_hh, dtype=dt)
    reverse = bool(reverse)

    def kernel(xw, rows, out, hs, gemm, panels, hw, n, rows0, steps0, K):
        ln_hh = np.empty((K, n, G), dt) if ln else _empty(3, dt)
        rstd_hh = np.empty((K, n), dt) if ln else _empty(2, dt)
        w_hn_h = np.empty((K, n, H), dt)  # b_n of every step (K = L), or of one (K = 1)
        h_rec = np.empty((n, H), dt) if masks.dropped else _empty(2, dt)
        _gru.gru_forward(xw, gemm, panels, b_hh_k, gamma_hh, masks.recurrent, masks.zoneout,
                         masks.zoneout_p, rows0, steps0, rows, reverse, hs, ln_hh, rstd_hh,
                         w_hn_h, out, hw, h_rec)
        return ln_hh, rstd_hh, w_hn_h

    if not keep:
        def step(xw, rows, out, slots, gemm, panels, hw, n, rows0, steps0):
            kernel(xw, rows, out, slots[0], gemm, panels, hw, n, rows0, steps0, 1)

        output, (h_n,) = _run_inference(x, w_ih, b_ih, w_hh, batch_sizes, reverse, [h_0], H,
                                        w_ln_ih, step)
        return output, h_n, None
    panels = _gemm.pack(w_hh, transpose=True)  # the step product h̄ W_hh^T
    gates, u_hat, rstd_ih = _input_side(x, w_ih, b_ih, w_ln_ih, reverse, batch_sizes, keep)
    hs = np.empty((L + 1, N, H), dt)
    hs[0] = h_0
    output = np.empty((L, N, H), dt)
    ln_hh, rstd_hh, w_hn_h = kernel(gates, batch_sizes, output, hs, _gemm.address(dt), panels,
                                    _step_buffer(panels, N), N, 0, 0, L)
    saved = {"h": hs, "gates": gates, "w_hn_h": w_hn_h}
    if ln:
        saved.update(ln_ih=u_hat, rstd_ih=rstd_ih, ln_hh=ln_hh, rstd_hh=rstd_hh)
    return output, hs[L].copy(), saved


def gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes=None, reverse=False, *,
                 w_ln_ih=None, w_ln_hh=None, recurrent_mask=None, zoneout_mask=None,
                 zoneout_eval=None):
    """Compiled ``_reference_options.gru_backward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, recurrent_mask=recurrent_mask,
                   zoneout_mask=zoneout_mask, zoneout_eval=zoneout_eval)
    if _no_options(options):
        return (*_ops.gru_backward(x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes,
                                   reverse), {})
    L, N, _ = x.shape
    dt = x.dtype
    G = w_ih.shape[0]
    H = G // 3
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    reverse = bool(reverse)
    panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # δh̄ = δv W_hh
    hs, gates = saved["h"], saved["gates"]
    dh = _state(dh_n, dt)
    dxw = np.empty((L, N, G), dt)  # δa, processing order
    dv = np.empty((L, N, G), dt) if ln else _empty(3, dt)
    dw_ln_hh, db_hh = np.zeros(G if ln else 0, dt), np.zeros(G if ln else 0, dt)
    _gru.gru_backward(_gemm.address(dt), panels, gamma_hh, masks.recurrent, masks.zoneout,
                      masks.zoneout_p, batch_sizes, reverse, hs, gates, saved["w_hn_h"],
                      saved.get("ln_hh", _empty(3, dt)), saved.get("rstd_hh", _empty(2, dt)),
                      np.ascontiguousarray(d_output, dtype=dt), dh, dxw, dv,
                      np.empty((N, G), dt), np.empty((N, H), dt), _step_buffer(panels, N),
                      dw_ln_hh, db_hh)
    doptions = {}
    if ln:
        dw_hh = _matmul(dv.reshape(-1, G).T, masks.h_bar(hs[:L]).reshape(-1, H))  # δV^T H̄
        dx, dw_ih, db_ih = _input_side_backward(dxw, x, w_ih, w_ln_ih, saved, reverse,
                                                batch_sizes, doptions)
        doptions["w_ln_hh"] = dw_ln_hh
        return dx, dh, dw_ih, dw_hh, db_ih, db_hh, doptions
    dx, dw_ih, db_ih = _input_grads(dxw, x, w_ih, reverse, batch_sizes)
    # δb (= δv without layer norm) is δa but for its n block, r ⊙ δa_n: derived in place once
    # δa has served, as _ops does (no second (L, N, G) stack)
    dxw[:, :, 2 * H:] *= gates[:, :, :H]
    dw_hh = _matmul(dxw.reshape(-1, G).T, masks.h_bar(hs[:L]).reshape(-1, H))
    return dx, dh, dw_ih, dw_hh, db_ih, dxw.reshape(-1, G).sum(axis=0), doptions


# ---------------------------------------------------------------- Elman RNN


def rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False,
                keep=False, *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None,
                zoneout_mask=None, zoneout_eval=None):
    """Compiled ``_reference_options.rnn_forward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, recurrent_mask=recurrent_mask,
                   zoneout_mask=zoneout_mask, zoneout_eval=zoneout_eval)
    if _no_options(options):
        return _ops.rnn_forward(x, h_0, w_ih, w_hh, b, nonlinearity, batch_sizes, reverse, keep)
    L, N, _ = x.shape
    dt = x.dtype
    H = w_ih.shape[0]
    w_hh = np.ascontiguousarray(w_hh)
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    zoned = zoneout_mask is not None or zoneout_eval is not None
    reverse, relu = bool(reverse), nonlinearity == "relu"

    def kernel(xw, rows, out, hs, gemm, panels, hw, n, rows0, steps0, K, h_tilde):
        ln_hh = np.empty((K, n, H), dt) if ln else _empty(3, dt)
        rstd_hh = np.empty((K, n), dt) if ln else _empty(2, dt)
        h_rec = np.empty((n, H), dt) if masks.dropped else _empty(2, dt)
        _rnn.rnn_forward(xw, gemm, panels, gamma_hh, masks.recurrent, masks.zoneout,
                         masks.zoneout_p, rows0, steps0, rows, reverse, relu, hs, ln_hh,
                         rstd_hh, h_tilde, out, hw, h_rec)
        return ln_hh, rstd_hh

    if not keep:
        def step(xw, rows, out, slots, gemm, panels, hw, n, rows0, steps0):
            kernel(xw, rows, out, slots[0], gemm, panels, hw, n, rows0, steps0, 1,
                   _empty(3, dt))

        output, (h_n,) = _run_inference(x, w_ih, b, w_hh, batch_sizes, reverse, [h_0], H,
                                        w_ln_ih, step)
        return output, h_n, None
    panels = _gemm.pack(w_hh, transpose=True)  # the step product h̄ W_hh^T
    xw, u_hat, rstd_ih = _input_side(x, w_ih, b, w_ln_ih, reverse, batch_sizes, keep)
    hs = np.empty((L + 1, N, H), dt)
    hs[0] = h_0
    output = np.empty((L, N, H), dt)
    h_tilde = np.empty((L, N, H), dt) if zoned else _empty(3, dt)  # act(a), before zoneout
    ln_hh, rstd_hh = kernel(xw, batch_sizes, output, hs, _gemm.address(dt), panels,
                            _step_buffer(panels, N), N, 0, 0, L, h_tilde)
    saved = {"h": hs}
    if zoned:
        saved["h_tilde"] = h_tilde
    if ln:
        saved.update(ln_ih=u_hat, rstd_ih=rstd_ih, ln_hh=ln_hh, rstd_hh=rstd_hh)
    return output, hs[L].copy(), saved


def rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity="tanh", batch_sizes=None,
                 reverse=False, *, w_ln_ih=None, w_ln_hh=None, recurrent_mask=None,
                 zoneout_mask=None, zoneout_eval=None):
    """Compiled ``_reference_options.rnn_backward``: same arguments, same results."""
    options = dict(w_ln_ih=w_ln_ih, w_ln_hh=w_ln_hh, recurrent_mask=recurrent_mask,
                   zoneout_mask=zoneout_mask, zoneout_eval=zoneout_eval)
    if _no_options(options):
        return (*_ops.rnn_backward(x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity,
                                   batch_sizes, reverse), {})
    L, N, _ = x.shape
    dt = x.dtype
    H = w_ih.shape[0]
    ln, gamma_hh, masks, batch_sizes = _step_options(x, batch_sizes, w_ln_ih, w_ln_hh,
                                                     recurrent_mask, zoneout_mask,
                                                     zoneout_eval)
    reverse, relu = bool(reverse), nonlinearity == "relu"
    panels = _gemm.pack(np.ascontiguousarray(w_hh), transpose=False)  # δh̄ = δv W_hh
    hs = saved["h"]
    dh = _state(dh_n, dt)
    da = np.empty((L, N, H), dt)  # δa, processing order
    dv = np.empty((L, N, H), dt) if ln else _empty(3, dt)
    dw_ln_hh = np.zeros(H if ln else 0, dt)
    _rnn.rnn_backward(_gemm.address(dt), panels, gamma_hh, masks.recurrent, masks.zoneout,
                      masks.zoneout_p, batch_sizes, reverse, relu, hs,
                      saved.get("h_tilde", _empty(3, dt)), saved.get("ln_hh", _empty(3, dt)),
                      saved.get("rstd_hh", _empty(2, dt)),
                      np.ascontiguousarray(d_output, dtype=dt), dh, da, dv,
                      _step_buffer(panels, N), dw_ln_hh)
    dw_hh = _matmul((dv if ln else da).reshape(-1, H).T, masks.h_bar(hs[:L]).reshape(-1, H))
    doptions = {}
    dx, dw_ih, db = _input_side_backward(da, x, w_ih, w_ln_ih, saved, reverse, batch_sizes,
                                         doptions)
    if ln:
        doptions["w_ln_hh"] = dw_ln_hh
    return dx, dh, dw_ih, dw_hh, db, doptions
