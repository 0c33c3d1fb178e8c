r"""LSTM kernels: one layer, one direction, all L steps. Rows i, f, g, o of
https://pytorch.org/docs/stable/generated/torch.nn.LSTM.html::

    i_t = σ(W_ii x_t + b_ii + W_hi h_{t-1} + b_hi)     c_t = f_t ⊙ c_{t-1} + i_t ⊙ g_t
    f_t = σ(W_if x_t + b_if + W_hf h_{t-1} + b_hf)     h_t = o_t ⊙ tanh(c_t)
    g_t = tanh(W_ig x_t + b_ig + W_hg h_{t-1} + b_hg)  h_t = W_hr h_t   (proj_size > 0)
    o_t = σ(W_io x_t + b_io + W_ho h_{t-1} + b_ho)

The slow twins are ``rnnkit._reference.lstm_forward`` / ``lstm_backward``; the
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
    # Cephes exp: e^x = 2^k e^r, |r| <= ln2/2, e^r = 1 + 2 P(r²) r / (Q(r²) - P(r²) r);
    # k = round(x log2 e) by the magic-number add (see _pow2), kept as the float k
    x = min(max(x, -708.0), 709.0)  # selects, no branch: 2^k stays a normal number
    m = x * 1.4426950408889634 + 6755399441055744.0  # 1.5·2^52
    k = m - 6755399441055744.0
    r = x - k * 6.93145751953125e-1 - k * 1.42860682030941723212e-6  # ln2 split hi + lo
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
    return (1.0 + 2.0 * (p / (q - p))) * _pow2(m)  # × 2^k


@njit(error_model="numpy")
def _exp32(x):
    # Cephes expf: the same reduction, e^r by a degree-7 polynomial
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    magic = np.float32(12582912.0)  # 1.5·2^23
    m = x * np.float32(1.44269504088896341) + magic
    k = m - magic
    r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
    # Horner by fused multiply-adds: ~25% faster, same max error (0.67 ulp, measured)
    p = _fma(np.float32(1.9875691500e-4), r, np.float32(1.3981999507e-3))
    p = _fma(p, r, np.float32(8.3334519073e-3))
    p = _fma(p, r, np.float32(4.1665795894e-2))
    p = _fma(p, r, np.float32(1.6666665459e-1))
    p = _fma(p, r, np.float32(5.0000001201e-1))
    return (_fma(p, r * r, r) + np.float32(1.0)) * _pow2(m)


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
    z = a * a
    p = (-9.64399179425052238628e-1 * z - 9.92877231001918586564e1) * z \
        - 1.61468768441708447952e3
    q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z \
        + 4.84406305325125486048e3
    small = a + a * z * (p / q)
    large = 1.0 - 2.0 / (_exp64(a + a) + 1.0)
    t = small if a < 0.625 else large
    return t if x >= 0.0 else -t


@njit(error_model="numpy")
def _tanh32(x):
    one = np.float32(1.0)
    a = abs(x)
    z = a * a
    p = np.float32(-5.70498872745e-3) * z + np.float32(2.06390887954e-2)
    p = p * z - np.float32(5.37397155531e-2)
    p = p * z + np.float32(1.33314422036e-1)
    p = p * z - np.float32(3.33332819422e-1)
    small = p * z * a + a
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
# At processing step s (time t = s, or L-1-s reversed) rows [0, bs[t]) are
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
def _lstm_gates(z, g, n, H):
    """g[m] = σ or tanh of (z[m] + g[m]), in place in g, rows [0, n): g holds the step's
    input projection on entry, the gates i, f, g, o on exit (σ on i, f, o; tanh on g)."""
    for m in range(n):
        zm, gm = z[m], g[m]
        # counted loops from 0 with offset indices: LLVM vectorizes these, not
        # `range(2 * H, 3 * H)` (measured: 4x slower gate math); gm is read and written
        # at the same index, so no alias check stands in the way
        for k in range(2 * H):
            gm[k] = _sigmoid(zm[k] + gm[k])
        for k in range(H):
            gm[2 * H + k] = _tanh(zm[2 * H + k] + gm[2 * H + k])
        for k in range(H):
            gm[3 * H + k] = _sigmoid(zm[3 * H + k] + gm[3 * H + k])


@njit(**_OPTS)
def _lstm_cell(gm, c_prev, c_new, h_new, H):
    """One row: c' = f ⊙ c + i ⊙ g, h' = o ⊙ tanh(c'). One written array per loop."""
    for j in range(H):
        c_new[j] = gm[H + j] * c_prev[j] + gm[j] * gm[2 * H + j]
    for j in range(H):
        h_new[j] = gm[3 * H + j] * _tanh(c_new[j])


@njit(**_OPTS)
def lstm_forward(xw, w_hh, w_hr, bs, reverse, hs, cs, z, output, r):
    """The forward of training and of inference: one kernel, two kinds of state buffer.

    xw      (L, N, G)    in/out    in: x W_ih^T + b_ih + b_hh in processing order (one GEMM
                                   by the caller; G = 4H). out: the gates i, f, g, o after
                                   their nonlinearity, zeros if inactive, in place: the
                                   history the backward reads needs no second buffer
    w_hh    (G, P)       read      P = proj_size, or H
    w_hr    (P, H)       read      projection; (0, 0) without
    bs      (L,) int64   read      active rows per time step
    hs      (S, N, P)    written   hs[0] holds h_0 on entry. Training: S = L + 1 and hs[s]
                                   enters step s (the history the backward reads).
                                   Inference: S = 2, slots s % 2 and (s + 1) % 2 take
                                   turns (no history); h_n ends in hs[L % 2]
    cs      (S, N, H)    written   likewise for c
    z       (N, G)       scratch   h W_hh^T of the step
    output  (L, N, P)    written   time order; zeros where a row is inactive
    r       (N, H)       scratch   o ⊙ tanh(c') before the projection; (0, 0) without
    """
    L, N, G = xw.shape
    H = G // 4
    S = hs.shape[0]
    proj = w_hr.shape[0] > 0
    for s in range(L):
        t = L - 1 - s if reverse else s
        n = min(bs[t], N)
        h_in, h_out = hs[s % S], hs[(s + 1) % S]
        c_in, c_out = cs[s % S], cs[(s + 1) % S]
        g = xw[s]
        if n > 0:
            np.dot(h_in[:n], w_hh.T, z[:n])  # (n, G): the one GEMM of the step
            _lstm_gates(z, g, n, H)
            for m in range(n):
                _lstm_cell(g[m], c_in[m], c_out[m], r[m] if proj else h_out[m], H)
            if proj:
                np.dot(r[:n], w_hr.T, h_out[:n])  # h' = W_hr (o ⊙ tanh c')
        for m in range(n):
            _copy(output[t, m], h_out[m])
        for m in range(n, N):  # inactive: the state carries over
            _copy(h_out[m], h_in[m])
            _copy(c_out[m], c_in[m])
            g[m, :] = 0.0
            output[t, m, :] = 0.0


@njit(**_OPTS)
def lstm_backward(w_hh, w_hr, bs, reverse, cs, gates, d_output, dh, dc, dz,
                  dh_steps, dr, tc):
    """The fused BPTT of ``lstm_forward`` (training), from the last processing step down.

    w_hh, w_hr, bs       read     as the forward
    cs, gates            read     the forward's histories
    d_output (L, N, P)   read     dL/d output, time order
    dh, dc   (N, P), (N, H)       dh_n, dc_n on entry; dh_0, dc_0 on exit
    dz       (L, N, G)   written  dL/d pre-activations, processing order; zeros if inactive
    dh_steps (L, N, P)   written  dL/dh' of every step (for dW_hr); (0, 0, 0) without
    dr       (N, H)      scratch  dL/d(o ⊙ tanh c'); (0, 0) without projection
    tc       (N, H)      scratch  tanh(c'), a row per batch row
    """
    L, N, G = dz.shape
    H = G // 4
    proj = w_hr.shape[0] > 0
    one = dz.dtype.type(1)  # not the literal 1: int64 - float32 is float64 in numba
    for s in range(L - 1, -1, -1):
        t = L - 1 - s if reverse else s
        n = min(bs[t], N)
        for m in range(n, N):
            dz[s, m, :] = 0.0
            if proj:
                dh_steps[s, m, :] = 0.0
        if n == 0:
            continue
        P = dh.shape[1]
        for m in range(n):
            for p in range(P):
                dh[m, p] += d_output[t, m, p]  # from the next step and from the output
        if proj:
            for m in range(n):
                _copy(dh_steps[s, m], dh[m])
            np.dot(dh[:n], w_hr, dr[:n])  # back through h' = W_hr (o ⊙ tanh c')
        dhs = dr if proj else dh
        for m in range(n):
            gm, dzm, dcm, dhm, tcm = gates[s, m], dz[s, m], dc[m], dhs[m], tc[m]
            c_new, c_old = cs[s + 1, m], cs[s, m]
            for j in range(H):
                tcm[j] = _tanh(c_new[j])
            for j in range(H):  # dc' = dc + dh ⊙ o ⊙ tanh'(c'),  tanh' = 1 - tanh²
                dcm[j] = dcm[j] + dhm[j] * gm[3 * H + j] * (one - tcm[j] * tcm[j])
            # σ' = σ(1 - σ), tanh' = 1 - tanh²; one written array per loop (vectorizes)
            for j in range(H):  # di = dc' ⊙ g
                i = gm[j]
                dzm[j] = dcm[j] * gm[2 * H + j] * i * (one - i)
            for j in range(H):  # df = dc' ⊙ c
                f = gm[H + j]
                dzm[H + j] = dcm[j] * c_old[j] * f * (one - f)
            for j in range(H):  # dg = dc' ⊙ i
                g = gm[2 * H + j]
                dzm[2 * H + j] = dcm[j] * gm[j] * (one - g * g)
            for j in range(H):  # do = dh ⊙ tanh c'
                o = gm[3 * H + j]
                dzm[3 * H + j] = dhm[j] * tcm[j] * o * (one - o)
            for j in range(H):
                dcm[j] = dcm[j] * gm[H + j]  # c' = f ⊙ c + i ⊙ g
        np.dot(dz[s, :n], w_hh, dh[:n])  # (n, P)
