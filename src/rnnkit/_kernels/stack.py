r"""A whole stack's inference in one compiled call: every layer and direction of an
LSTM, GRU or RNN, for calls so small that Python's work around each layer's kernel
(allocating, packing, one dispatch per step loop) would cost more than the
arithmetic. Each layer-direction runs exactly the kernel the layer-by-layer path
runs (``lstm.py``, ``gru.py``, ``rnn.py``, inference slots); only its input
projection differs: the micro-kernel, step by step, instead of one OpenBLAS GEMM.

Buffers (G = gates * H; P = proj_size, or H; K = num_layers * D layer-directions;
NR the micro-kernel's panel width)::

    name         shape           meaning
    x            (L, N, I)       the input, time-major
    h_0, c_0     (K, N, P|H)     initial states; c_0 (0, 0, 0) but for the LSTM
    weights      (W,)            every weight, flat, in the order of ``layout``
    layout       (K, 7)          per layer-direction: offsets into weights of W_ih
                                 (G, I_k), W_hh (G, P), b_ih, b_hh (G,), W_hr (P, H)
                                 (-1 where absent), the offset into panels, and I_k
    panels       (Q,)            per layer-direction: W_ih^T then W_hh^T packed for the
                                 micro-kernel (ceil(G / NR) panels each)
    weight_bytes (B,) uint32     ``weights`` seen as 4-byte words
    packed_bytes (B,) uint32     the words ``panels`` were last packed from
    batch_sizes  (L,) int64      rows active at time t (packed input: sorted rows)
    output       (L, N, D*P)     the last layer's h' of every step
    h_n, c_n     (K, N, P|H)     final states; c_n (0, 0, 0) but for the LSTM
    work         (S,)            scratch, ``work_size`` elements: the layers' outputs
                                 between layers and each layer-direction's projections,
                                 step buffers and states (a call allocates nothing else)

``pack`` says when the panels are filled from ``weights`` first: ``PACK_ALWAYS``;
``PACK_IF_CHANGED``, when ``weights`` differ, bit for bit, from ``packed_bytes`` (a
module's call: its weights may have been updated in place since the last call, and
comparing them costs a fraction of packing them); ``PACK_NEVER`` (a stream's later
chunks: its weights are its own copy).
"""

import numpy as np
from numba import njit

from ._gemm import pack_rows_into, step_product
from ._math import _OPTS
from .gru import gru_forward
from .lstm import lstm_forward
from .rnn import rnn_forward

LSTM, GRU, RNN_TANH, RNN_RELU = 0, 1, 2, 3  # the `mode` argument
PACK_NEVER, PACK_ALWAYS, PACK_IF_CHANGED = 0, 1, 2  # the `pack` argument
GATES = (4, 3, 1, 1)
W_IH, W_HH, B_IH, B_HH, W_HR, PANELS, IN = range(7)  # columns of `layout`


@njit(**_OPTS)
def layer_weights(weights, layout, k, G, P):
    """``W_ih (G, I_k)``, ``W_hh (G, P)`` of layer-direction ``k``: views of ``weights``."""
    o = layout[k]
    I_k = o[IN]
    return (weights[o[W_IH]:o[W_IH] + G * I_k].reshape((G, I_k)),
            weights[o[W_HH]:o[W_HH] + G * P].reshape((G, P)))


@njit(**_OPTS)
def layer_panels(panels, layout, k, Gp, P, nr):
    """Layer-direction ``k``'s panels of ``W_ih^T`` and of ``W_hh^T``: views of ``panels``."""
    o = layout[k]
    I_k = o[IN]
    q = o[PANELS] + Gp * I_k * nr
    return (panels[o[PANELS]:q].reshape((Gp, I_k, nr)),
            panels[q:q + Gp * P * nr].reshape((Gp, P, nr)))


@njit(**_OPTS)
def projection_weight(weights, o, P, H, dt):
    """The LSTM's ``W_hr (P, H)`` of a layer-direction (``o`` its row of ``layout``): a view
    of ``weights``, or ``(0, 0)`` without projection."""
    if o[W_HR] >= 0:
        return weights[o[W_HR]:o[W_HR] + P * H].reshape((P, H))
    return weights[:0].reshape((0, 0))  # a view: nothing allocated


@njit(**_OPTS)
def hidden_bias(weights, o, b_hh):
    """``b_hh`` = the GRU's ``b_hh (G,)`` (it keeps ``b_hn`` apart from ``b_ih``), zeros
    without bias."""
    b_hh[:] = 0.0
    if o[B_HH] >= 0:
        b_hh[:] = weights[o[B_HH]:o[B_HH] + b_hh.shape[0]]
    return b_hh


@njit(**_OPTS)
def project_input(mode, gemm, layer_in, ih_panels, weights, o, batch_sizes, reverse, xw,
                  projected, bias):
    """The input projection in processing order: ``xw[s] = x_t W_ih^T + bias`` for the
    active rows, the bias ``b_ih + b_hh`` (LSTM, RNN: one sum, as the layer path) or
    ``b_ih`` (GRU); ``o`` the layer-direction's row of ``layout``. One product over all
    ``L N`` rows (padding rows too: never read), whose full row blocks run at the
    micro-kernel's speed, where a product per step of a batch of one would wait on
    each FMA's latency. Scratch: ``projected (L N, G' NR)``, ``bias (G,)``."""
    L, N, I_k = layer_in.shape
    G = xw.shape[2]
    bias[:] = 0.0
    if o[B_IH] >= 0:
        for g in range(G):
            bias[g] = weights[o[B_IH] + g]
            if mode != GRU:
                bias[g] += weights[o[B_HH] + g]
    step_product(gemm, layer_in.reshape((L * N, I_k)), L * N, ih_panels, projected)
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n):
            row = projected[t * N + m]
            for g in range(G):
                xw[s, m, g] = row[g] + bias[g]


@njit(**_OPTS)
def differ(a, b):
    """Whether the word arrays ``a`` and ``b`` (one length) differ: XORs OR-ed over blocks
    (a loop LLVM vectorizes; a loop that stops at the first difference it does not)."""
    n = a.shape[0]
    for start in range(0, n, 4096):
        stop = min(start + 4096, n)
        seen = np.uint32(0)
        for i in range(start, stop):
            seen |= a[i] ^ b[i]
        if seen != 0:
            return True
    return False


@njit(**_OPTS)
def work_size(L, N, G, Gp, nr, P, H, D, num_layers):
    """Elements of ``stack_inference``'s ``work`` (its layout is ``_carve``'s)."""
    between = 2 * L * N * D * P if num_layers > 1 else 0  # two layers' outputs, in turn
    per = (L * N * G + L * N * Gp * nr + N * Gp * nr  # xw, projected, hw
           + 2 * N * P + 2 * N * H + N * H + 2 * G)    # hs, cs, h_unproj, bias, b_hh
    return between + per + (L * N * P if D > 1 else 0)  # step_out of one direction


@njit(**_OPTS)
def _carve(work, at, size):
    """``work[at:at + size]`` and the offset after it."""
    return work[at:at + size], at + size


@njit(**_OPTS)
def stack_inference(mode, x, h_0, c_0, weights, layout, panels, pack, weight_bytes,
                    packed_bytes, gemm, nr, num_layers, D, H, batch_sizes, output, h_n, c_n,
                    work):
    """The inference forward of a stack (see the module's table); writes ``output``,
    ``h_n`` and ``c_n``, and ``panels`` (then ``packed_bytes``) as ``pack`` says."""
    if pack == PACK_IF_CHANGED:
        pack = PACK_ALWAYS if differ(weight_bytes, packed_bytes) else PACK_NEVER
    L, N, _ = x.shape
    G = GATES[mode] * H
    P = h_0.shape[2]
    Gp = (G + nr - 1) // nr  # panels of G columns
    lstm = mode == LSTM
    inner = L * N * D * P if num_layers > 1 else 0
    between_a, at = _carve(work, 0, inner)
    between_b, start = _carve(work, at, inner)
    layer_in = x
    for layer in range(num_layers):
        last = layer == num_layers - 1
        out = output if last else (between_a if layer % 2 == 0 else between_b).reshape(
            (L, N, D * P))
        for d in range(D):
            k = D * layer + d
            w_ih, w_hh = layer_weights(weights, layout, k, G, P)
            ih_panels, hh_panels = layer_panels(panels, layout, k, Gp, P, nr)
            if pack == PACK_ALWAYS:
                pack_rows_into(w_ih, ih_panels)
                pack_rows_into(w_hh, hh_panels)
            reverse = d == 1
            o = layout[k]
            # this layer-direction's scratch, the same for each
            xw, at = _carve(work, start, L * N * G)
            xw = xw.reshape((L, N, G))
            projected, at = _carve(work, at, L * N * Gp * nr)
            hw, at = _carve(work, at, N * Gp * nr)
            hs, at = _carve(work, at, 2 * N * P)  # two state slots taking turns
            cs, at = _carve(work, at, 2 * N * H)
            h_unproj, at = _carve(work, at, N * H)
            bias, at = _carve(work, at, G)
            b_hh, at = _carve(work, at, G)
            step_out = out
            if D > 1:
                step_out = _carve(work, at, L * N * P)[0].reshape((L, N, P))
            project_input(mode, gemm, layer_in, ih_panels, weights, o, batch_sizes, reverse,
                          xw, projected.reshape((L * N, Gp * nr)), bias)
            hw, hs = hw.reshape((N, Gp * nr)), hs.reshape((2, N, P))
            hs[0] = h_0[k]
            if lstm:
                cs = cs.reshape((2, N, H))
                cs[0] = c_0[k]
                lstm_forward(xw, gemm, hh_panels, projection_weight(weights, o, P, H, x.dtype),
                             batch_sizes, reverse, hs, cs, hw, step_out,
                             h_unproj.reshape((N, H)) if o[W_HR] >= 0
                             else h_unproj[:0].reshape((0, 0)))
                c_n[k] = cs[L % 2]
            elif mode == GRU:
                gru_forward(xw, gemm, hh_panels, hidden_bias(weights, o, b_hh), batch_sizes,
                            reverse, hs, hw, h_unproj.reshape((1, N, H)), step_out)
            else:
                rnn_forward(xw, gemm, hh_panels, batch_sizes, reverse, mode == RNN_RELU, hs,
                            hw, step_out)
            h_n[k] = hs[L % 2]
            if D > 1:
                out[:, :, d * P:(d + 1) * P] = step_out
        layer_in = out
    if pack == PACK_ALWAYS:  # after the panels: see SmallStack
        packed_bytes[:] = weight_bytes
