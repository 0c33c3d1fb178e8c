"""The recurrent step's product, standalone: a register-blocked SIMD micro-kernel built
from LLVM IR with llvmlite (installed with numba), against OpenBLAS in the same run.

Computes C (M, N) = A (M, K) @ W (K, N), float32, the step product h W_hh^T of an LSTM
layer, default the bench's medium shape (64, 256) x (256, 1024). W is packed once into
panels (N / NR, K, NR), as a recurrent layer would pack W_hh once per call. A block is
MR rows x NR columns (NR = NV vectors): MR * NV accumulators stay in registers across
the k loop, A[r, k] is broadcast, llvm.fma does the work. The vector width is the
host's, chosen at run time: 16 floats with AVX-512, 8 with AVX2, 4 otherwise.

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

This is a measurement to decide the design of the step engine (issue "Speed at real
sizes"), not product code.
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import threading
import time

import llvmlite.binding as llvm
import llvmlite.ir as ir
import numpy as np
from threadpoolctl import threadpool_limits

I64 = ir.IntType(64)
F32 = ir.FloatType()


def host_vector_width() -> int:
    """Floats per SIMD register on this CPU: 16 (AVX-512F), 8 (AVX2 + FMA) or 4."""
    features = llvm.get_host_cpu_features()
    if features.get("avx512f"):
        return 16
    if features.get("avx2") and features.get("fma"):
        return 8
    return 4


def build_gemm(mr: int, nv: int, vw: int):
    """IR for gemm(A, Wp, C, M, K, N, p0, p1): C[:, panels p0..p1) = A @ W, W packed into
    panels (N / NR, K, NR), NR = nv * vw. Rows in blocks of ``mr``, the last block of
    M % mr rows by a smaller copy of the same code."""
    vec = ir.VectorType(F32, vw)
    pf = F32.as_pointer()
    nr = nv * vw
    mod = ir.Module(name="step_gemm")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [pf, pf, pf] + [I64] * 5), name="gemm")
    A, Wp, C, M, K, N, p0, p1 = fn.args
    for arg in (A, Wp, C):
        arg.add_attribute("noalias")
    fma = ir.Function(mod, ir.FunctionType(vec, [vec, vec, vec]), name=f"llvm.fma.v{vw}f32")
    zero, one = ir.Constant(I64, 0), ir.Constant(I64, 1)
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def loop(start, stop, step, name, body):
        pre = b.block
        head, bod, end = (b.append_basic_block(f"{name}.{s}") for s in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(I64, name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), bod, end)
        b.position_at_end(bod)
        body(i)
        i.add_incoming(b.add(i, step), b.block)
        b.branch(head)
        b.position_at_end(end)

    def block(p, i0, rows):
        """C[i0:i0+rows, panel p] = A[i0:i0+rows] @ W[:, panel p]."""
        wbase = b.mul(b.mul(p, K), ir.Constant(I64, nr))
        pre = b.block
        head, body, end = (b.append_basic_block(f"k{rows}.{s}") for s in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(I64, "k")
        k.add_incoming(zero, pre)
        accs = []
        for _ in range(rows * nv):
            acc = b.phi(vec)
            acc.add_incoming(ir.Constant(vec, [0.0] * vw), pre)
            accs.append(acc)
        b.cbranch(b.icmp_signed("<", k, K), body, end)
        b.position_at_end(body)
        wrow = b.add(wbase, b.mul(k, ir.Constant(I64, nr)))
        ws = [b.load(b.bitcast(b.gep(Wp, [b.add(wrow, ir.Constant(I64, v * vw))]),
                               vec.as_pointer()), align=4) for v in range(nv)]
        new = []
        for r in range(rows):
            a = b.load(b.gep(A, [b.add(b.mul(b.add(i0, ir.Constant(I64, r)), K), k)]))
            av = b.insert_element(ir.Constant(vec, ir.Undefined), a, ir.Constant(ir.IntType(32), 0))
            av = b.shuffle_vector(av, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw))
            new += [b.call(fma, [av, ws[v], accs[r * nv + v]]) for v in range(nv)]
        k.add_incoming(b.add(k, one), b.block)
        for acc, value in zip(accs, new, strict=True):
            acc.add_incoming(value, b.block)
        b.branch(head)
        b.position_at_end(end)
        for r in range(rows):
            crow = b.add(b.mul(b.add(i0, ir.Constant(I64, r)), N), b.mul(p, ir.Constant(I64, nr)))
            for v in range(nv):
                ptr = b.gep(C, [b.add(crow, ir.Constant(I64, v * vw))])
                b.store(accs[r * nv + v], b.bitcast(ptr, vec.as_pointer()), align=4)

    full = b.mul(b.sdiv(M, ir.Constant(I64, mr)), ir.Constant(I64, mr))  # rows in full blocks
    tail = b.sub(M, full)

    def panel(p):
        loop(zero, full, ir.Constant(I64, mr), "i0", lambda i0: block(p, i0, mr))
        if mr > 1:  # the last M % mr rows: a switch to a block of exactly that many
            done = b.append_basic_block("tail.done")
            switch = b.switch(tail, done)
            for rows in range(1, mr):
                case = b.append_basic_block(f"tail{rows}")
                switch.add_case(ir.Constant(I64, rows), case)
                b.position_at_end(case)
                block(p, full, rows)
                b.branch(done)
            b.position_at_end(done)

    loop(p0, p1, one, "p", panel)
    b.ret_void()
    return mod


def compile_gemm(mod):
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_default_triple()
    tm = target.create_target_machine(cpu=llvm.get_host_cpu_name(),
                                      features=llvm.get_host_cpu_features().flatten(), opt=3)
    m = llvm.parse_assembly(str(mod))
    m.verify()
    try:  # llvmlite >= 0.44: the new pass manager
        pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(3, 0))
        pb.getModulePassManager().run(m, pb)
    except (AttributeError, TypeError):
        pass
    engine = llvm.create_mcjit_compiler(m, tm)
    engine.finalize_object()
    proto = ctypes.CFUNCTYPE(None, *[ctypes.c_void_p] * 3, *[ctypes.c_int64] * 5)
    return engine, proto(engine.get_function_address("gemm"))


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
    vw = host_vector_width()
    # registers: 32 zmm with AVX-512, 16 ymm with AVX2; accumulators + W vectors + 1
    mr = args.mr or (8 if vw == 16 else 6 if vw == 8 else 4)
    nv = args.nv or 2
    nr = nv * vw
    if N % nr:
        raise SystemExit(f"N = {N} must be a multiple of NR = {nr}")
    flop = 2 * M * K * N
    rng = np.random.default_rng(0)
    A = rng.standard_normal((M, K)).astype(np.float32)
    W = rng.standard_normal((K, N)).astype(np.float32)
    Wp, C = pack(W, nr), np.zeros((M, N), np.float32)
    engine, gemm = compile_gemm(build_gemm(mr, nv, vw))
    P = N // nr

    def product(p0, p1, a=A, c=C):
        return lambda: gemm(a.ctypes.data, Wp.ctypes.data, c.ctypes.data, len(a), K, N, p0, p1)

    product(0, P)()
    err = float(np.abs(C - A @ W).max() / np.abs(A @ W).max())
    big = rng.standard_normal((2048, 2048)).astype(np.float32)
    print(f"host {llvm.get_host_cpu_name()}: {vw} floats per vector; block {mr} x {nr}; "
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
    for name, t, f in rows:
        print(f"{name:38s} {t * 1e6:10.1f} us  {f / t / 1e9:7.1f} GFLOP/s")


if __name__ == "__main__":
    main()
