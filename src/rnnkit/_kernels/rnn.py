r"""Elman RNN kernels: one layer, one direction, all L steps, as
https://pytorch.org/docs/stable/generated/torch.nn.RNN.html::

    h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)     (or relu)

Buffers. Order is what the first index of an L-long buffer counts: "time" t, as
``x`` and ``output``; "processing" s, the place in the walk, t = s, or t = L-1-s
when ``reverse`` (the last step first)::

    name         shape           order        meaning
    xw           (L, N, H)       processing   x W_ih^T + b_ih + b_hh
    gemm         int64           -            address of the step product (_gemm.py)
    w_hh_panels  (H', H, NR)     -            W_hh^T packed for it (forward), W_hh (backward):
                                              H' = ceil(H / NR)
    batch_sizes  (L,) int64      time         rows active at time t
    hs           (S, N, H)       processing   h entering step s: S = L + 1, or 2 slots
    output       (L, N, H)       time         h' of every step
    hw           (N, H'NR)       -            h W_hh^T of the step (columns past H: zero)
    d_output     (L, N, H)       time         dL/d output
    dh           (N, H)          -            dL/dh carried from step to step
    da           (L, N, H)       processing   dL/d(xw + hw), the pre-activation
    dhw          (N, H'NR)       -            da W_hh of the step (past H: zero)

The slow twins are ``rnnkit._reference.rnn_forward`` / ``rnn_backward``; the
wrappers that allocate and choose a kernel are in ``rnnkit._ops``.
"""

from numba import njit

from ._gemm import step_product
from ._math import _OPTS, _copy, _tanh

# ---------------------------------------------------------------- kernels
# At processing step s (time t = s, or L-1-s reversed) rows [0, batch_sizes[t]) are
# active; the others keep their state and output zeros (packed input: rows sorted
# by decreasing length).


@njit(**_OPTS)
def _rnn_act(hwm, xwm, h_new, relu, H):
    """One row: h' = tanh(xw + h W_hh^T), or relu."""
    if relu:
        zero = hwm.dtype.type(0)  # a typed zero: the literal 0.0 is float64 in numba
        for j in range(H):
            v = xwm[j] + hwm[j]
            h_new[j] = v if v > zero else zero
    else:
        for j in range(H):
            h_new[j] = _tanh(xwm[j] + hwm[j])


@njit(**_OPTS)
def rnn_forward(xw, gemm, w_hh_panels, batch_sizes, reverse, relu, hs, hw, output):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      xw (one GEMM by the caller), w_hh_panels (by gemm), batch_sizes; relu: relu
              instead of tanh
    written   hs: hs[0] holds h_0 on entry. Training: S = L + 1 and hs[s] enters step
              s (the backward's history). Inference: S = 2, slots s % 2 and
              (s + 1) % 2 take turns (no history); h_n ends in hs[L % 2]
              output: zeros where a row is inactive
    scratch   hw
    """
    L, N, H = xw.shape
    S = hs.shape[0]
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        if n > 0:
            step_product(gemm, h_in, n, w_hh_panels, hw)  # (n, H): the step's product
            for m in range(n):
                _rnn_act(hw[m], xw[s, m], h_out[m], relu, H)
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            output[t, m, :] = 0.0


@njit(**_OPTS)
def rnn_backward(gemm, w_hh_panels, batch_sizes, reverse, relu, hs, d_output, dh, da, dhw):
    """The fused BPTT of ``rnn_forward`` (training), from the last processing step down.

    read      w_hh_panels (W_hh, not transposed, packed: dh = da W_hh by gemm),
              batch_sizes, relu; hs (the forward's history); d_output
    in/out    dh: dh_n on entry, dh_0 on exit
    written   da: zeros where a row is inactive
    scratch   dhw (the step product da W_hh, widened to whole panels)
    """
    L, N, H = da.shape
    one, zero = da.dtype.type(1), da.dtype.type(0)  # typed: literals are int64/float64
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(batch_sizes[t], N)
        for m in range(n, N):
            da[s, m, :] = 0.0
        if n == 0:
            continue
        for m in range(n):
            dam, dhm, dom, h_new = da[s, m], dh[m], d_output[t, m], hs[s + 1, m]
            if relu:
                for j in range(H):  # relu' = 1 where the output is positive
                    dam[j] = (dhm[j] + dom[j]) if h_new[j] > zero else zero
            else:
                for j in range(H):  # tanh' = 1 - tanh²
                    dam[j] = (dhm[j] + dom[j]) * (one - h_new[j] * h_new[j])
        step_product(gemm, da[s], n, w_hh_panels, dhw)  # dh = da W_hh: (n, H)
        for m in range(n):
            _copy(dh[m], dhw[m, :H])
