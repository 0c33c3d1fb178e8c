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
    w_hh, b_hh   (G, H), (G,)    -            b_hh zeros without bias
    batch_sizes  (L,) int64      time         rows active at time t
    hs           (S, N, H)       processing   h entering step s: S = L + 1, or 2 slots
    output       (L, N, H)       time         h' of every step
    hw           (N, G)          -            h W_hh^T of the step (b_hh not added)
    w_hn_h       (K, N, H)       processing   W_hn h + b_hn, what r scales: K = L, or 1 slot
    d_output     (L, N, H)       time         dL/d output
    dh           (N, H)          -            dL/dh carried from step to step
    dh_new       (N, H)          -            dL/dh' of the step: dh + d_output
    dxw          (L, N, G)       processing   dL/d xw
    dhw_step     (N, G)          -            dL/d(hw + b_hh) of the step

The slow twins are ``rnnkit._reference.gru_forward`` / ``gru_backward``; the
wrappers that allocate and choose a kernel are in ``rnnkit._ops``.
"""

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

# ---------------------------------------------------------------- scalar math
# Inside numba, np.exp / np.tanh on a scalar are libm calls that LLVM cannot
# vectorize (no SVML). These forms are plain arithmetic plus bit tricks, so the
# gate loops below compile to SIMD code; float64 stays within ~2 ulp of libm
# (Cephes' approximations), float32 within ~1 ulp of float32. Each function is the
# slow twin (plain NumPy, used under NUMBA_DISABLE_JIT) plus an @overload per dtype.


@intrinsic
def _pow2(typingctx, m):
    """2^k, for m = k + 1.5·2^52 (float64) or k + 1.5·2^23 (float32), k an integer.

    Adding that magic number rounds x to the integer k and leaves k in the low bits
    of m's bit pattern, so (bits(m) + bias) << mantissa_bits is the pattern of 2^k
    (the magic's own bits shift out). Two bitcasts, an add and a shift, all of one
    width: no float -> int conversion, so LLVM vectorizes it even without AVX-512DQ.
    """
    if not isinstance(m, types.Float):
        return None
    if m.bitwidth == 64:
        ity, fty, bias, shift = ir.IntType(64), ir.DoubleType(), 1023, 52
    else:
        ity, fty, bias, shift = ir.IntType(32), ir.FloatType(), 127, 23

    def codegen(context, builder, signature, args):
        bits = builder.add(builder.bitcast(args[0], ity), ir.Constant(ity, bias))
        return builder.bitcast(builder.shl(bits, ir.Constant(ity, shift)), fty)

    return m(m), codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """a * b + c rounded once (llvm.fma): without fastmath LLVM never fuses on its own."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@njit(error_model="numpy")
def _exp64(x):
    # Cephes exp: e^x = 2^k e^u, |u| <= ln2/2, e^u = 1 + 2 P(u²) u / (Q(u²) - P(u²) u);
    # k = round(x log2 e) by the magic-number add (see _pow2), kept as the float k
    x = min(max(x, -708.0), 709.0)  # selects, no branch: 2^k stays a normal number
    m = x * 1.4426950408889634 + 6755399441055744.0  # 1.5·2^52
    k = m - 6755399441055744.0
    u = x - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6  # ln2 split hi + lo
    uu = u * u
    p = u * ((1.26177193074810590878e-4 * uu + 3.02994407707441961300e-2) * uu
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * uu + 2.52448340349684104192e-3) * uu
         + 2.27265548208155028766e-1) * uu + 2.00000000000000000009e0
    return (1.0 + 2.0 * (p / (q - p))) * _pow2(m)  # × 2^k


@njit(error_model="numpy")
def _exp32(x):
    # Cephes expf: the same reduction, e^u by a degree-7 polynomial
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    magic = np.float32(12582912.0)  # 1.5·2^23
    m = x * np.float32(1.44269504088896341) + magic
    k = m - magic
    u = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    # Horner by fused multiply-adds: ~25% faster, same max error (0.67 ulp, measured)
    p = _fma(np.float32(1.9875691500e-4), u, np.float32(1.3981999507e-3))
    p = _fma(p, u, np.float32(8.3334519073e-3))
    p = _fma(p, u, np.float32(4.1665795894e-2))
    p = _fma(p, u, np.float32(1.6666665459e-1))
    p = _fma(p, u, np.float32(5.0000001201e-1))
    return (_fma(p, u * u, u) + np.float32(1.0)) * _pow2(m)


@njit(error_model="numpy")
def _sigmoid64(x):
    return 1.0 / (1.0 + _exp64(-x))  # σ(x) = 1 / (1 + e^-x); e^-x saturates, never inf


@njit(error_model="numpy")
def _sigmoid32(x):
    one = np.float32(1.0)
    return one / (one + _exp32(-x))


@njit(error_model="numpy")
def _tanh64(x):
    # |x| < 0.625: Cephes' rational x + x³ P(x²)/Q(x²) (no cancellation near 0);
    # otherwise 1 - 2 / (e^{2|x|} + 1), then the sign back
    a = abs(x)
    aa = a * a
    p = (-9.64399179425052238628e-1 * aa - 9.92877231001918586564e1) * aa \
        - 1.61468768441708447952e3
    q = ((aa + 1.12811678491632931402e2) * aa + 2.23548839060100448583e3) * aa \
        + 4.84406305325125486048e3
    small = a + a * aa * (p / q)
    large = 1.0 - 2.0 / (_exp64(a + a) + 1.0)
    t = small if a < 0.625 else large
    return t if x >= 0.0 else -t


@njit(error_model="numpy")
def _tanh32(x):
    one = np.float32(1.0)
    a = abs(x)
    aa = a * a
    p = np.float32(-5.70498872745e-3) * aa + np.float32(2.06390887954e-2)
    p = p * aa - np.float32(5.37397155531e-2)
    p = p * aa + np.float32(1.33314422036e-1)
    p = p * aa - np.float32(3.33332819422e-1)
    small = p * aa * a + a
    large = one - np.float32(2.0) / (_exp32(a + a) + one)
    t = small if a < np.float32(0.625) else large
    return t if x >= np.float32(0.0) else -t


def _sigmoid(x):
    e = np.exp(-abs(x))  # slow twin: exact, never overflows
    return 1 / (1 + e) if x >= 0 else e / (1 + e)


def _tanh(x):
    return np.tanh(x)


def _by_dtype(f32, f64):
    """An @overload typer: the float32 or the float64 form, by the argument's type."""

    def typer(x):
        f = f32 if isinstance(x, types.Float) and x.bitwidth == 32 else f64
        return lambda x: f(x)

    return typer


overload(_sigmoid, inline="always")(_by_dtype(_sigmoid32, _sigmoid64))
overload(_tanh, inline="always")(_by_dtype(_tanh32, _tanh64))

# ---------------------------------------------------------------- kernels
# At processing step s (time t = s, or L-1-s reversed) rows [0, batch_sizes[t]) are
# active; the others keep their state and output zeros (packed input: rows sorted
# by decreasing length).
_OPTS = dict(cache=True, nogil=True, error_model="numpy")


@njit(**_OPTS)
def _copy(dst, src):
    """dst[:] = src for 1-D rows of one length. A loop, not slice assignment: that
    compiles numba's broadcast-error message machinery, about 2 s cold."""
    for j in range(dst.shape[0]):
        dst[j] = src[j]


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
def gru_forward(xw, w_hh, b_hh, batch_sizes, reverse, hs, hw, w_hn_h, output):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    read      w_hh, b_hh, batch_sizes
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
            np.dot(h_in[:n], w_hh.T, hw[:n])  # (n, G): the one GEMM of the step
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
def gru_backward(w_hh, batch_sizes, reverse, hs, gates, w_hn_h, d_output, dh, dxw, dhw_step,
                 dh_new):
    """The fused BPTT of ``gru_forward`` (training), from the last processing step down.

    read      w_hh, batch_sizes; hs, gates, w_hn_h (the forward's histories); d_output
    in/out    dh: dh_n on entry, dh_0 on exit
    written   dxw: zeros where a row is inactive. dL/d(h W_hh^T + b_hh) equals it but
              for the n rows, which are r ⊙ dxw_n: the caller derives it in place afterwards
    scratch   dhw_step (for dh), dh_new
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
        np.dot(dhw_step[:n], w_hh, dh[:n])  # (n, H)
        for m in range(n):
            gm, dhm, dh_newm = gates[s, m], dh[m], dh_new[m]
            for j in range(H):
                dhm[j] = dh_newm[j] * gm[H + j] + dhm[j]  # + z ⊙ dh' directly
