r"""A whole small stack's training step in two compiled calls: ``stack_train_forward``
runs every layer and direction of an LSTM, GRU or RNN keeping what the backward needs,
``stack_backward`` runs the backward of all of them, top layer down, with the weight
gradients. For calls so small that Python's work around each layer's kernels
(allocating, packing, the GEMMs over all steps, one dispatch per step loop) would cost
more than the arithmetic (``_ops.is_small``). Each layer-direction runs exactly the
step kernels the layer-by-layer training path runs (``lstm.py``, ``gru.py``,
``rnn.py``: histories of S = L + 1 slots); the input projection is the micro-kernel,
step by step, as in ``stack.py``, and the products over all steps of the backward (the
weight gradients, the input's gradient) run on the micro-kernel too: at these sizes a
BLAS call costs more than its arithmetic.

Buffers (G = gates * H; P = proj_size, or H; K = num_layers * D layer-directions;
I_k layer-direction k's input width; NR the micro-kernel's panel width). The
histories are flat, one block per layer-direction (per layer for ``outs``), each
block C-ordered with the shape given::

    name         shape / block       order        meaning
    x            (L, N, I)           time         the input
    h_0, c_0     (K, N, P|H)         -            initial states; c_0 (0, 0, 0) but
                                                  for the LSTM
    weights      (W,)                -            every weight, flat, in the order of
                                                  ``layout`` (``stack.py``)
    layout       (K, 7)              -            offsets of W_ih, W_hh, b_ih, b_hh, W_hr
                                                  (-1 if absent), of the panels, and I_k
    panels       (Q,)                -            forward: W_ih^T, W_hh^T packed
                                                  (``stack.py``), written here
    batch_sizes  (L,) int64          time         rows active at time t
    outs         (num_layers, L, N, D*P)  time    each layer's output: the next layer's
                                                  input; the last is the stack's output
    gates        (K, L, N, G)        processing   the gates (LSTM i f g o, GRU r z n);
                                                  the RNN: x W_ih^T + b, unused after
    hs           (K, L + 1, N, P)    processing   h entering step s (slot L: h_n)
    cs           (K, L + 1, N, H)    processing   the LSTM's c entering step s; else empty
    w_hn_h       (K, L, N, H)        processing   the GRU's W_hn h + b_hn; else empty
    h_n, c_n     (K, N, P|H)         -            final states; c_n (0, 0, 0) but LSTM
    d_output     (L, N, D*P)         time         dL/d output
    dh_n, dc_n   (K, N, P|H)         -            dL/d h_n, dL/d c_n (LSTM; else empty)
    grad         (W,)                -            dL/d weights, laid out as ``weights``
    dx           (L, N, I)           time         dL/dx
    dh_0, dc_0   (K, N, P|H)         -            dL/d h_0, dL/d c_0 (LSTM; else empty)

Weight gradients of layer-direction k, with dz (L, N, G) its pre-activations'
gradient (processing order) and x_k its layer's input in processing order::

    dW_ih = dz^T x_k          dW_hh = dz_h^T h_{s-1}       db_ih = sum dz
    db_hh = sum dz_h          dW_hr = dh'^T (o ⊙ tanh c')  dx_k += dz W_ih

where dz_h = dz but for the GRU's n rows, r ⊙ dz_n (r scales W_hn h + b_hn), and the
LSTM and RNN have one bias sum, so db_hh = db_ih.
"""

import numpy as np
from numba import njit

from ._gemm import pack_cols_into, pack_rows_into, step_product
from ._math import _OPTS
from .gru import gru_backward, gru_forward
from .lstm import lstm_backward, lstm_forward
from .rnn import rnn_backward, rnn_forward
from .stack import (
    B_HH,
    B_IH,
    GATES,
    GRU,
    IN,
    LSTM,
    RNN_RELU,
    W_HH,
    W_HR,
    W_IH,
    hidden_bias,
    layer_panels,
    layer_weights,
    project_input,
    projection_weight,
)


@njit(**_OPTS)
def _write_transposed(wide, rows, cols, out):
    """out (cols, rows) = wide[:rows, :cols]^T: a weight gradient from its transpose."""
    for i in range(rows):
        for g in range(cols):
            out[g, i] = wide[i, g]


@njit(**_OPTS)
def _column_sums(a, out):
    """out = a's column sums, a (R, G): a bias gradient, the sum over rows."""
    out[:] = 0.0
    for r in range(a.shape[0]):
        for g in range(a.shape[1]):
            out[g] += a[r, g]


@njit(**_OPTS)
def stack_train_forward(mode, x, h_0, c_0, weights, layout, panels, gemm, nr, num_layers, D,
                        H, batch_sizes, outs, gates, hs, cs, w_hn_h, h_n, c_n):
    """The training forward of a stack (see the module's table): writes ``outs``, the
    histories ``gates``, ``hs``, ``cs``, ``w_hn_h``, the final states and ``panels``."""
    L, N, _ = x.shape
    dt = x.dtype
    G = GATES[mode] * H
    P = h_0.shape[2]
    Gp = (G + nr - 1) // nr  # panels of G columns
    lstm = mode == LSTM
    out_size = L * N * D * P
    layer_in = x
    for layer in range(num_layers):
        out = outs[layer * out_size:(layer + 1) * out_size].reshape((L, N, D * P))
        for d in range(D):
            k = D * layer + d
            o = layout[k]
            w_ih, w_hh = layer_weights(weights, layout, k, G, P)
            ih_panels, hh_panels = layer_panels(panels, layout, k, Gp, P, nr)
            pack_rows_into(w_ih, ih_panels)  # W_ih^T
            pack_rows_into(w_hh, hh_panels)  # W_hh^T: the step product h W_hh^T
            reverse = d == 1
            xw = gates[k * L * N * G:(k + 1) * L * N * G].reshape((L, N, G))
            hw = np.empty((N, Gp * nr), dt)
            project_input(mode, gemm, layer_in, ih_panels, weights, o, batch_sizes, reverse, xw,
                          np.empty((L * N, Gp * nr), dt), np.empty(G, dt))
            step_out = out if D == 1 else np.empty((L, N, P), dt)
            h_k = hs[k * (L + 1) * N * P:(k + 1) * (L + 1) * N * P].reshape((L + 1, N, P))
            h_k[0] = h_0[k]
            if lstm:  # the step kernels exactly as _ops.lstm_forward(keep=True) calls them
                c_k = cs[k * (L + 1) * N * H:(k + 1) * (L + 1) * N * H].reshape((L + 1, N, H))
                c_k[0] = c_0[k]
                h_unproj = np.empty((N, H) if o[W_HR] >= 0 else (0, 0), dt)
                lstm_forward(xw, gemm, hh_panels, projection_weight(weights, o, P, H, dt),
                             batch_sizes, reverse, h_k, c_k, hw, step_out, h_unproj)
                c_n[k] = c_k[L]
            elif mode == GRU:
                whn_k = w_hn_h[k * L * N * H:(k + 1) * L * N * H].reshape((L, N, H))
                b_hh = hidden_bias(weights, o, np.empty(G, dt))
                gru_forward(xw, gemm, hh_panels, b_hh, batch_sizes,
                            reverse, h_k, hw, whn_k, step_out)
            else:
                rnn_forward(xw, gemm, hh_panels, batch_sizes, reverse, mode == RNN_RELU, h_k,
                            hw, step_out)
            h_n[k] = h_k[L]
            if D > 1:
                out[:, :, d * P:(d + 1) * P] = step_out
        layer_in = out


@njit(**_OPTS)
def stack_backward(mode, x, weights, layout, gemm, nr, num_layers, D, H, batch_sizes, outs,
                   gates, hs, cs, w_hn_h, d_output, dh_n, dc_n, grad, dx, dh_0, dc_0):
    """The backward of ``stack_train_forward`` (see the module's table), top layer down:
    per layer-direction its step kernel's BPTT, then its weight gradients into ``grad``
    and its share of the layer input's gradient (summed over the directions). Writes
    ``grad``, ``dx``, ``dh_0`` and ``dc_0``."""
    L, N, _ = x.shape
    dt = x.dtype
    G = GATES[mode] * H
    P = dh_n.shape[2]
    Pp = (P + nr - 1) // nr  # panels of P columns: dh = dz W_hh
    Gp = (G + nr - 1) // nr  # panels of G columns: the weight gradients' products
    lstm = mode == LSTM
    out_size = L * N * D * P
    d_layer = d_output  # dL/d(this layer's output), time order
    for layer in range(num_layers - 1, -1, -1):
        I_k = layout[D * layer, IN]
        layer_in = x if layer == 0 else outs[(layer - 1) * out_size:layer * out_size].reshape(
            (L, N, D * P))
        d_in = np.zeros((L, N, I_k), dt)  # dL/d(this layer's input), time order
        for d in range(D):
            k = D * layer + d
            o = layout[k]
            reverse = d == 1
            w_ih, w_hh = layer_weights(weights, layout, k, G, P)
            bw_panels = np.empty((Pp, G, nr), dt)
            pack_cols_into(w_hh, bw_panels)  # W_hh itself: dh = dz W_hh
            d_out = np.empty((L, N, P), dt)  # this direction's columns, contiguous
            d_out[:] = d_layer[:, :, d * P:(d + 1) * P]
            dh = dh_n[k].copy()
            dz = np.empty((L, N, G), dt)  # dL/d pre-activations, processing order
            dhw = np.empty((N, Pp * nr), dt)
            g_k = gates[k * L * N * G:(k + 1) * L * N * G].reshape((L, N, G))
            h_k = hs[k * (L + 1) * N * P:(k + 1) * (L + 1) * N * P].reshape((L + 1, N, P))
            proj = lstm and o[W_HR] >= 0
            dh_steps = np.empty((L, N, P) if proj else (0, 0, 0), dt)
            c_k = (cs[k * (L + 1) * N * H:(k + 1) * (L + 1) * N * H].reshape((L + 1, N, H))
                   if lstm else np.empty((0, 0, 0), dt))
            if lstm:  # the step kernels exactly as _ops.lstm_backward calls them
                dc = dc_n[k].copy()
                lstm_backward(gemm, bw_panels, projection_weight(weights, o, P, H, dt),
                              batch_sizes, reverse, c_k, g_k, d_out, dh, dc, dz, dh_steps,
                              np.empty((N, H) if proj else (0, 0), dt), np.empty((N, H), dt),
                              dhw)
                dc_0[k] = dc
            elif mode == GRU:
                whn_k = w_hn_h[k * L * N * H:(k + 1) * L * N * H].reshape((L, N, H))
                gru_backward(gemm, bw_panels, batch_sizes, reverse, h_k, g_k, whn_k, d_out, dh,
                             dz, np.empty((N, G), dt), np.empty((N, H), dt), dhw)
            else:
                rnn_backward(gemm, bw_panels, batch_sizes, reverse, mode == RNN_RELU, h_k,
                             d_out, dh, dz, dhw)
            dh_0[k] = dh

            # the products over all steps, rows r = (s, m) in processing order, on the
            # micro-kernel (calls of BLAS cost more than these small products): each
            # weight gradient as its transpose, A^T dz, with dz packed as B
            R = L * N
            dz2 = dz.reshape((R, G))
            dz_panels = np.empty((Gp, R, nr), dt)
            wide = np.empty((max(I_k, P), Gp * nr), dt)  # A^T dz, widened to whole panels
            a_t = np.empty((max(I_k, P), R), dt)  # A^T: x_k^T, then h^T
            for s in range(L):  # x_k^T, x_k the layer's input in processing order
                t = L - 1 - s if reverse else s
                for m in range(N):
                    for i in range(I_k):
                        a_t[i, s * N + m] = layer_in[t, m, i]
            pack_cols_into(dz2, dz_panels)
            step_product(gemm, a_t, I_k, dz_panels, wide)  # dW_ih^T = x_k^T dz
            _write_transposed(wide, I_k, G, grad[o[W_IH]:o[W_IH] + G * I_k].reshape((G, I_k)))
            ih_panels = np.empty(((I_k + nr - 1) // nr, G, nr), dt)
            pack_cols_into(w_ih, ih_panels)
            dx_k = np.empty((R, ih_panels.shape[0] * nr), dt)
            step_product(gemm, dz2, R, ih_panels, dx_k)  # dz W_ih, processing order
            for s in range(L):
                t = L - 1 - s if reverse else s
                for m in range(N):
                    for i in range(I_k):
                        d_in[t, m, i] += dx_k[s * N + m, i]
            if o[B_IH] >= 0:  # db_ih = sum over rows of dz
                _column_sums(dz2, grad[o[B_IH]:o[B_IH] + G])
            if mode == GRU:  # dz_h: the n rows scaled by r, in place now that dz has served
                for s in range(L):
                    for m in range(N):
                        for j in range(H):
                            dz[s, m, 2 * H + j] *= g_k[s, m, j]
                pack_cols_into(dz2, dz_panels)
            if o[B_HH] >= 0:  # db_hh = sum dz_h (LSTM, RNN: = db_ih, one bias sum)
                _column_sums(dz2, grad[o[B_HH]:o[B_HH] + G])
            for r in range(R):  # h^T: the states entering the steps
                for p in range(P):
                    a_t[p, r] = h_k[r // N, r % N, p]
            step_product(gemm, a_t, P, dz_panels, wide)  # dW_hh^T = h^T dz_h
            _write_transposed(wide, P, G, grad[o[W_HH]:o[W_HH] + G * P].reshape((G, P)))
            if proj:  # dW_hr = dh'^T (o ⊙ tanh c'): (dh'^T, P x R) times h_unproj packed
                u_panels = np.empty(((H + nr - 1) // nr, R, nr), dt)
                h_unproj = np.empty((R, H), dt)
                for r in range(R):
                    for j in range(H):
                        h_unproj[r, j] = g_k[r // N, r % N, 3 * H + j] * np.tanh(
                            c_k[r // N + 1, r % N, j])
                    for p in range(P):
                        a_t[p, r] = dh_steps[r // N, r % N, p]
                pack_cols_into(h_unproj, u_panels)
                dw_hr = np.empty((P, u_panels.shape[0] * nr), dt)
                step_product(gemm, a_t, P, u_panels, dw_hr)
                w = grad[o[W_HR]:o[W_HR] + P * H].reshape((P, H))
                for p in range(P):
                    for j in range(H):
                        w[p, j] = dw_hr[p, j]
        d_layer = d_in
    dx[:] = d_layer
