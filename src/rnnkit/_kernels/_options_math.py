"""The row helpers the cell-option kernels share (``options_lstm.py``, ``options_gru.py``,
``options_rnn.py``): layer norm's row statistics and its backward, recurrent dropout's
mask, zoneout forward and backward, small row sums. One row of one step each; the step
loops call them per active row (LLVM vectorizes these small loops better than the same
code inline in a loop over rows). Listed in ``_cache.SHARED``: an edit here recompiles
the kernels that inline them.
"""

import numpy as np
from numba import njit

from ._math import _OPTS

LN_EPS = 1e-5  # as _reference_options.LN_EPS
# the row sums of layer norm: reassociation lets LLVM vectorize them (the order of a
# sum of K terms changes, not its value beyond rounding); nothing else uses fastmath
_SUM_OPTS = dict(_OPTS, fastmath={"reassoc"})


@njit(**_SUM_OPTS)
def _row_sum(v, K):
    total = v.dtype.type(0)
    for k in range(K):
        total += v[k]
    return total


@njit(**_SUM_OPTS)
def _row_centred_square_sum(v, mu, K):
    total = v.dtype.type(0)
    for k in range(K):
        total += (v[k] - mu) * (v[k] - mu)
    return total


@njit(**_SUM_OPTS)
def _row_dot(a, b, K):
    total = a.dtype.type(0)
    for k in range(K):
        total += a[k] * b[k]
    return total


@njit(**_SUM_OPTS)
def _row_dot3(a, b, c, K):
    total = a.dtype.type(0)
    for k in range(K):
        total += a[k] * b[k] * c[k]
    return total


@njit(**_OPTS)
def _row_stats(v, K):
    """μ and r = 1 / sqrt(var + ε) of v's K entries (biased var): LN(v) = (v - μ) r."""
    one, count = v.dtype.type(1), v.dtype.type(K)  # typed: / K alone would be float64
    mu = _row_sum(v, K) / count
    return mu, one / np.sqrt(_row_centred_square_sum(v, mu, K) / count + v.dtype.type(LN_EPS))


@njit(**_OPTS)
def _masked(q, h, h_rec, P):
    """h̄ = q ⊙ h."""
    for j in range(P):
        h_rec[j] = q[j] * h[j]


@njit(**_OPTS)
def _zoneout(d, h_prev, h_new, P):
    """h' = d ⊙ h + (1 - d) ⊙ h̃, over h_new in place."""
    one = h_new.dtype.type(1)
    for j in range(P):
        h_new[j] = d[j] * h_prev[j] + (one - d[j]) * h_new[j]


@njit(**_OPTS)
def _zoneout_eval(p, h_prev, h_new, P):
    """h' = p h + (1 - p) h̃, over h_new in place."""
    one = h_new.dtype.type(1)
    for j in range(P):
        h_new[j] = p * h_prev[j] + (one - p) * h_new[j]


@njit(**_OPTS)
def _split_zoneout(dhm, dom, d, dh_tilde, P):
    """δh' = δh + δoutput; δh̃ = (1 - d) ⊙ δh', and d ⊙ δh' (the straight path to h)
    left in dhm."""
    one = dhm.dtype.type(1)
    for j in range(P):
        total = dhm[j] + dom[j]
        dh_tilde[j] = (one - d[j]) * total
        dhm[j] = d[j] * total


@njit(**_OPTS)
def _split_zoneout_eval(dhm, dom, p, dh_tilde, P):
    """``_split_zoneout`` with d = p."""
    one = dhm.dtype.type(1)
    for j in range(P):
        total = dhm[j] + dom[j]
        dh_tilde[j] = (one - p) * total
        dhm[j] = p * total


@njit(**_OPTS)
def _sum_into(dst, a, b, P):
    """dst = a + b (dst may be a)."""
    for j in range(P):
        dst[j] = a[j] + b[j]


@njit(**_OPTS)
def _add_to(dst, src, P):
    for j in range(P):
        dst[j] += src[j]


@njit(**_OPTS)
def _masked_add_to(dst, q, src, P):
    """dst += q ⊙ src."""
    for j in range(P):
        dst[j] += q[j] * src[j]


@njit(**_SUM_OPTS)
def _recurrent_backward(dy, v_hat, rstd, gamma, dv, dgamma, dbias, G):
    """δv through y = LN(v) γ (+ b): r (g - mean(g) - v̂ mean(g ⊙ v̂)), g = δy ⊙ γ (dv may be
    dy); δγ += δy ⊙ v̂ and, when dbias is not empty, δb += δy. The sums in one pass."""
    mean_g = dy.dtype.type(0)  # through μ
    mean_g_v_hat = dy.dtype.type(0)  # through var
    for k in range(G):
        dgamma[k] += dy[k] * v_hat[k]
        mean_g += dy[k] * gamma[k]
        mean_g_v_hat += dy[k] * gamma[k] * v_hat[k]
    if dbias.shape[0] > 0:
        for k in range(G):
            dbias[k] += dy[k]
    count = dy.dtype.type(G)  # typed: /= G alone would make the sums float64
    mean_g /= count
    mean_g_v_hat /= count
    for k in range(G):
        dv[k] = rstd * (dy[k] * gamma[k] - mean_g - v_hat[k] * mean_g_v_hat)


@njit(**_OPTS)
def _zone_row(zoneout_mask, s, m, p, h_prev, h_new, P):
    """Zoneout of row ``m`` at step ``s``, over ``h_new`` in place: ``d`` the drawn mask's
    row ``zoneout_mask[s, m]`` when there is a mask (``(0, 0, 0)`` when not), else the eval
    probability ``p`` (``p < 0``: zoneout is off)."""
    if zoneout_mask.shape[0] > 0:
        _zoneout(zoneout_mask[s, m], h_prev, h_new, P)
    elif p >= 0:
        _zoneout_eval(p, h_prev, h_new, P)


@njit(**_OPTS)
def _zone_row_backward(zoneout_mask, s, m, p, dhm, dom, dh_tilde, P):
    """``δh' = δh + δoutput`` of row ``m`` at step ``s``, through zoneout (as ``_zone_row``
    picks ``d``): ``δh̃ = (1 - d) ⊙ δh'`` into ``dh_tilde``, ``d ⊙ δh'`` left in ``dhm``;
    without zoneout ``dh_tilde = δh'`` (``dh_tilde`` may be ``dhm`` itself)."""
    if zoneout_mask.shape[0] > 0:
        _split_zoneout(dhm, dom, zoneout_mask[s, m], dh_tilde, P)
    elif p >= 0:
        _split_zoneout_eval(dhm, dom, p, dh_tilde, P)
    else:
        _sum_into(dh_tilde, dhm, dom, P)
