"""The recurrent step's product, standalone: rnnkit's register-blocked SIMD micro-kernel
(``src/rnnkit/_kernels/_gemm.py``: LLVM IR via llvmlite) against OpenBLAS, one run.

Computes C (M, N) = A (M, K) @ W (K, N), float32, the step product h W_hh^T of an LSTM
layer, default the bench's medium shape (64, 256) x (256, 1024). W is packed once into
panels (N / NR, K, NR), as a recurrent layer packs W_hh once per call. A block is
MR rows x NR columns (NR = NV vectors): MR * NV accumulators stay in registers across
the k loop, A[r, k] is broadcast, llvm.fma does the work. The vector width is the
host's, chosen at run time: 16 floats with AVX-512, 8 with AVX2, 4 otherwise; --mr and
--nv try other blocks than rnnkit's.

Prints GFLOP/s for: numpy's sgemm at 2048^3 (the machine's rate today), OpenBLAS on
the step shape, and the micro-kernel on one thread and on two:
- panel split, a Python barrier per product: what a step loop synchronizing through
  Python would get;
- panel split and row split with no synchronization: each thread repeats its half of
  the panels (a share of the hidden units), or its half of the rows (a share of the
  batch, which could run through all the steps without meeting the other thread).
The ctypes call is included in every micro-kernel time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/step_gemm.py
    ... step_gemm.py --shape 16,128,512 --mr 4 --nv 2        (small LSTM: B16 H128)
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from rnnkit._kernels import _gemm

# gemm(A, lda, B, C, ldc, M, K, P): rnnkit's step product (src/rnnkit/_kernels/_gemm.py)
_PROTO = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                          ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                          ctypes.c_int64)


def pack(W: np.ndarray, nr: int) -> np.ndarray:
    """W (K, N) -> panels (N / nr, K, nr), contiguous."""
    K, N = W.shape
    return np.ascontiguousarray(W.reshape(K, N // nr, nr).transpose(1, 0, 2))


def timed(call, seconds: float = 1.0) -> float:
    """Median seconds per call over blocks of calls filling about ``seconds``."""
    call()
    t0, n = time.perf_counter(), 0
    while time.perf_counter() - t0 < 0.05:
        call()
        n += 1
    per_block = max(1, n // 5)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t = time.perf_counter()
        for _ in range(per_block):
            call()
        times.append((time.perf_counter() - t) / per_block)
    return statistics.median(times)


class TwoThreads:
    """Two threads started once, each running its half of the panels per product: the
    second half on a helper thread (ctypes releases the GIL), the first on the caller;
    a barrier on each side of the product, as a per-step loop would have."""

    def __init__(self, work_a, work_b):
        self.work_a, self.work_b = work_a, work_b
        self.start, self.done = threading.Barrier(2), threading.Barrier(2)
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            self.start.wait()
            if self.stop:
                return
            self.work_b()
            self.done.wait()

    def __call__(self):
        self.start.wait()
        self.work_a()
        self.done.wait()

    def close(self):
        self.stop = True
        self.start.wait()
        self.thread.join()


def free_running(works, seconds: float) -> float:
    """Seconds per product when each of ``works`` runs on its own thread, repeatedly, with no
    synchronization between them: the median over a few runs of ``n`` products each."""
    n = max(1, int(0.2 / max(timed(works[0], 0.05), 1e-7)))

    def run(work):
        for _ in range(n):
            work()

    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        threads = [threading.Thread(target=run, args=(w,)) for w in works]
        t = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        times.append((time.perf_counter() - t) / n)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="64,256,1024", help="M,K,N (default: medium LSTM)")
    parser.add_argument("--mr", type=int, default=None, help="rows per block")
    parser.add_argument("--nv", type=int, default=None, help="vectors per block row")
    parser.add_argument("--seconds", type=float, default=1.0, help="per measurement")
    args = parser.parse_args()
    M, K, N = map(int, args.shape.split(","))
    default_mr, default_nv, vw = _gemm._block(np.dtype(np.float32))
    mr, nv = args.mr or default_mr, args.nv or default_nv
    nr = nv * vw
    if N % nr:
        raise SystemExit(f"N = {N} must be a multiple of NR = {nr}")
    flop = 2 * M * K * N
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((K, N)).astype(np.float32)
    Wp, C = pack(W, nr), np.zeros((M, N), np.float32)
    gemm = _PROTO(_gemm.compile_block(np.dtype(np.float32), mr, nv))
    P = N // nr
    item = A.itemsize

    def product(p0, p1, a=A, c=C):  # panels p0..p1: B and C from panel p0 on
        return lambda: gemm(a.ctypes.data, K, Wp.ctypes.data + p0 * K * nr * item,
                            c.ctypes.data + p0 * nr * item, N, len(a), K, p1 - p0)

    product(0, P)()
    err = float(np.abs(C - A @ W).max() / np.abs(A @ W).max())
    big = rng.standard_normal((2048, 2048)).astype(np.float32)
    print(f"host {_gemm._host()[0]}: {vw} floats per vector; block {mr} x {nr}; "
          f"shape ({M}, {K}) x ({K}, {N}); relative error {err:.1e}")
    rows = []
    for threads in (1, 2):
        with threadpool_limits(threads):
            t_big = timed(lambda: big @ big, args.seconds)
            rows.append((f"numpy sgemm 2048^3, {threads} thread(s)", t_big, 2 * 2048 ** 3))
            rows.append((f"OpenBLAS step shape, {threads} thread(s)", timed(lambda: A @ W,
                                                                             args.seconds), flop))
    rows.append(("micro-kernel, 1 thread", timed(product(0, P), args.seconds), flop))
    pair = TwoThreads(product(0, P // 2), product(P // 2, P))
    try:
        rows.append(("micro-kernel, 2 threads, barrier", timed(pair, args.seconds), flop))
    finally:
        pair.close()
    rows.append(("micro-kernel, 2 threads, panels, no sync",
                 free_running([product(0, P // 2), product(P // 2, P)], args.seconds), flop))
    half = M // 2
    A0, A1, C1 = A[:half].copy(), A[half:].copy(), np.zeros((M - half, N), np.float32)
    rows.append(("micro-kernel, 2 threads, rows, no sync",
                 free_running([product(0, P, A0), product(0, P, A1, C1)], args.seconds), flop))
    if N % 4 == 0 and K == N // 4:  # an LSTM's step: also inside rnnkit's step loops
        rows += step_loops(M, K, args.seconds)
    for name, t, f in rows:
        print(f"{name:38s} {t * 1e6:10.1f} us  {f / t / 1e9:7.1f} GFLOP/s")


def step_loops(N, H, seconds, L=100):
    """The micro-kernel inside rnnkit's LSTM step loops (``_kernels/lstm.py``), one thread,
    per step: the forward (h W_hh^T, then the gate math and the cell) and the backward
    (the gate gradients, then dz W_hh). GFLOP/s count the step product alone, so the
    gap to the bare micro-kernel above is what the rest of the step costs."""
    from rnnkit import _ops
    from rnnkit._kernels import lstm

    rng = np.random.default_rng(1)
    G, dt = 4 * H, np.float32
    w_hh = (rng.standard_normal((G, H)) / np.sqrt(H)).astype(dt)
    x = rng.standard_normal((L, N, H)).astype(dt)
    w_ih = (rng.standard_normal((G, H)) / np.sqrt(H)).astype(dt)
    zeros = np.zeros((N, H), dt)
    _, _, _, saved = _ops.lstm_forward(x, zeros, zeros, w_ih, w_hh, None, None, keep=True)
    gemm, rows, none2 = _gemm.address(dt), _ops._every_row(L, N), np.empty((0, 0), dt)
    fw_panels, bw_panels = _gemm.pack(w_hh, True), _gemm.pack(w_hh, False)
    xw = _ops._project(x, w_ih, None)
    hs, cs, out = np.zeros((2, N, H), dt), np.zeros((2, N, H), dt), np.empty((L, N, H), dt)
    hw = _ops._step_buffer(fw_panels, N)

    def forward():
        lstm.lstm_forward(xw.copy(), gemm, fw_panels, none2, rows, False, hs, cs, hw, out,
                          none2)

    d_out = rng.standard_normal((L, N, H)).astype(dt)
    dz = np.empty((L, N, G), dt)

    def backward():
        lstm.lstm_backward(gemm, bw_panels, none2, rows, False, saved["c"], saved["gates"],
                           d_out, zeros.copy(), zeros.copy(), dz, np.empty((0, 0, 0), dt),
                           none2, np.empty((N, H), dt), _ops._step_buffer(bw_panels, N))

    flop = 2 * N * H * G
    copy = timed(lambda: xw.copy(), seconds)  # the forward's fresh input, not its work
    return [("LSTM forward step loop, 1 thread", (timed(forward, seconds) - copy) / L, flop),
            ("LSTM backward step loop, 1 thread", timed(backward, seconds) / L, flop)]


if __name__ == "__main__":
    main()
