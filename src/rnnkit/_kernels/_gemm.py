"""The recurrent step's product ``x[:n] @ B`` in a register-blocked SIMD micro-kernel.

OpenBLAS re-packs the recurrent weights on every call, once per step, and reaches
about 60% of its own large-GEMM rate on these shapes (``benchmarks/step_gemm.py``).
Here ``B`` is packed once per layer call into panels ``(P, K, NR)`` (``pack``), and
each step runs a micro-kernel written as LLVM IR with llvmlite (installed with
numba), compiled at run time for the host CPU:

- a block of MR rows x NR = NV vectors of columns keeps MR x NV accumulators in
  registers across the k loop; ``x[r, k]`` is broadcast, ``llvm.fma`` multiplies
  and adds (one rounding);
- the instruction set is chosen at run time from LLVM's host features (``ISAS``):
  AVX-512 (16 floats per vector), AVX2 with FMA (8), else the target's portable
  baseline (4, no FMA assumed); doubles half as many. The tests run every one the
  test machine can (``runnable_isas``);
- the last ``n % MR`` rows run a copy of the block with fewer rows; ``B``'s columns
  are padded with zeros to whole panels, so the output is ``(N, P * NR)`` wide.

The step kernels call it through ``step_product``, which under numba is a call to
the compiled code's address (an argument, never a global: numba's cache stays
valid) and in plain Python (``NUMBA_DISABLE_JIT``) its slow twin, a NumPy product.
"""

from __future__ import annotations

import functools

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["pack", "pack_rows_into", "panel_width", "address", "step_product", "project"]

_I64 = ir.IntType(64)
_ENGINES = []  # the compiled micro-kernels' engines live as long as the process


# The instruction sets the micro-kernel is built for, widest first: vector bytes, the
# host features each needs, and the CPU LLVM compiles for when it is not the host's
# own (the tests compile each). "portable" is LLVM's baseline for the target (SSE2 on
# x86-64, NEON on aarch64), with no FMA assumed.
ISAS = {"avx512": (64, ("avx512f", "fma"), "skylake-avx512"),
        "avx2": (32, ("avx2", "fma"), "haswell"),
        "portable": (16, (), "")}


@functools.lru_cache(maxsize=1)
def _host():
    """``(cpu name, its features string, the widest ISA of ISAS it has)``, read from
    LLVM at run time."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    features = llvm.get_host_cpu_features()
    isa = next(name for name, (_, needs, _) in ISAS.items()
               if all(features.get(f) for f in needs))
    return llvm.get_host_cpu_name(), features.flatten(), isa


def runnable_isas() -> list[str]:
    """The ISAs this machine runs: its widest and every narrower one (the tests run
    each)."""
    names = list(ISAS)
    return names[names.index(_host()[2]):]


@functools.lru_cache(maxsize=16)
def _block(dtype, isa=None) -> tuple[int, int, int]:
    """``(MR, NV, VW)``: rows per block, vectors per block row, elements per vector, for
    ``isa`` (the host's by default). With 32 registers (AVX-512) 8 x 2 accumulators,
    else 6 x 2 (12 of 16 registers; 6 x 16 floats measured best of 4x16, 4x24, 8x8,
    3x32 on AVX2)."""
    vector_bytes = ISAS[isa or _host()[2]][0]
    vw = vector_bytes // np.dtype(dtype).itemsize
    return (8 if vector_bytes == 64 else 6), 2, vw


@functools.lru_cache(maxsize=16)
def panel_width(dtype, isa=None) -> int:
    """NR: the columns of one panel of ``B`` (for ``isa``, the host's by default)."""
    _, nv, vw = _block(dtype, isa)
    return nv * vw


def pack(w: np.ndarray, transpose: bool, isa: str | None = None) -> np.ndarray:
    """``B = w.T`` (``transpose``) or ``w``, ``(K, N)``, as contiguous panels
    ``(ceil(N / NR), K, NR)``, the columns past N zero: one compiled pass either way
    (numpy's reshapes cost µs)."""
    nr = panel_width(w.dtype, isa)
    return (_pack_rows if transpose else _pack_cols)(np.ascontiguousarray(w), nr)


@njit(cache=True, nogil=True)
def _pack_rows(w, nr):
    """Panels of ``w.T`` for ``w (N, K)``, newly allocated (``pack_rows_into``)."""
    panels = np.empty(((w.shape[0] + nr - 1) // nr, w.shape[1], nr), w.dtype)
    pack_rows_into(w, panels)
    return panels


@njit(cache=True, nogil=True)
def _pack_cols(w, nr):
    """Panels of ``w`` itself for ``w (K, M)``, newly allocated (``pack_cols_into``)."""
    panels = np.empty(((w.shape[1] + nr - 1) // nr, w.shape[0], nr), w.dtype)
    pack_cols_into(w, panels)
    return panels


@njit(cache=True, nogil=True)
def pack_cols_into(w, panels):
    """Panels of ``w (K, M)`` itself (not transposed) into ``panels (ceil(M / NR), K, NR)``:
    column m of w is column m of B; the columns past M zero (a backward's dz W_hh)."""
    K, M = w.shape
    nr = panels.shape[2]
    for p in range(panels.shape[0]):
        width = min(nr, M - p * nr)
        for k in range(K):
            for j in range(width):
                panels[p, k, j] = w[k, p * nr + j]
            for j in range(width, nr):
                panels[p, k, j] = 0.0


@njit(cache=True, nogil=True)
def pack_rows_into(w, panels):
    """Panels of ``w.T`` for ``w (N, K)`` into ``panels (ceil(N / NR), K, NR)``: row n
    of w is column n of B; the columns past N zero."""
    N, K = w.shape
    nr = panels.shape[2]
    panels[:] = 0.0
    for n in range(N):
        p, j = n // nr, n % nr
        for k in range(K):
            panels[p, k, j] = w[n, k]


def _build(dtype, mr: int, nv: int, vw: int, fused: bool) -> ir.Module:
    """gemm(A, lda, B, C, ldc, M, K, P): C[m, p NR + j] = sum_k A[m, k] B[p, k, j] for
    m < M, every panel p < P; A and C by rows of lda and ldc elements. ``vw`` elements
    per vector; ``fused``: ``llvm.fma`` (one rounding), else ``llvm.fmuladd`` (LLVM
    fuses where the target can, multiplies then adds where it cannot)."""
    nr = nv * vw
    fty = ir.FloatType() if np.dtype(dtype) == np.float32 else ir.DoubleType()
    vec = ir.VectorType(fty, vw)
    ptr = fty.as_pointer()
    mod = ir.Module(name=f"rnnkit_step_gemm_{np.dtype(dtype).name}")
    fn = ir.Function(mod, ir.FunctionType(ir.VoidType(), [ptr, _I64, ptr, ptr, _I64, _I64,
                                                          _I64, _I64]), name="gemm")
    A, lda, B, C, ldc, M, K, P = fn.args
    for arg in (A, B, C):
        arg.add_attribute("noalias")
    fma = ir.Function(mod, ir.FunctionType(vec, [vec, vec, vec]),
                      name=f"llvm.{'fma' if fused else 'fmuladd'}.v{vw}"
                           f"{'f32' if fty == ir.FloatType() else 'f64'}")
    zero, one = ir.Constant(_I64, 0), ir.Constant(_I64, 1)
    b = ir.IRBuilder(fn.append_basic_block("entry"))

    def const(v):
        return ir.Constant(_I64, v)

    def loop(start, stop, step, name, body):
        pre = b.block
        head, bod, end = (b.append_basic_block(f"{name}.{s}") for s in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        i = b.phi(_I64, name)
        i.add_incoming(start, pre)
        b.cbranch(b.icmp_signed("<", i, stop), bod, end)
        b.position_at_end(bod)
        body(i)
        i.add_incoming(b.add(i, step), b.block)
        b.branch(head)
        b.position_at_end(end)

    def block(p, i0, rows, panels=1):
        """C[i0:i0 + rows, panels p .. p + panels - 1]: rows x NV x panels accumulators
        live across the k loop."""
        bases = [b.mul(b.mul(b.add(p, const(j)), K), const(nr)) for j in range(panels)]
        pre = b.block
        head, body, end = (b.append_basic_block(f"k{rows}x{panels}.{s}")
                           for s in ("head", "body", "end"))
        b.branch(head)
        b.position_at_end(head)
        k = b.phi(_I64, "k")
        k.add_incoming(zero, pre)
        accs = []
        for _ in range(rows * nv * panels):
            acc = b.phi(vec)
            acc.add_incoming(ir.Constant(vec, [0.0] * vw), pre)
            accs.append(acc)
        b.cbranch(b.icmp_signed("<", k, K), body, end)
        b.position_at_end(body)
        bs = []
        for base in bases:
            row = b.add(base, b.mul(k, const(nr)))
            bs += [b.load(b.bitcast(b.gep(B, [b.add(row, const(v * vw))]), vec.as_pointer()),
                          align=4) for v in range(nv)]
        new = []
        for r in range(rows):
            a = b.load(b.gep(A, [b.add(b.mul(b.add(i0, const(r)), lda), k)]))
            av = b.insert_element(ir.Constant(vec, ir.Undefined), a, ir.Constant(ir.IntType(32), 0))
            av = b.shuffle_vector(av, ir.Constant(vec, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), vw), [0] * vw))
            new += [b.call(fma, [av, bv, accs[len(new) + i]]) for i, bv in enumerate(bs)]
        k.add_incoming(b.add(k, one), b.block)
        for acc, value in zip(accs, new, strict=True):
            acc.add_incoming(value, b.block)
        b.branch(head)
        b.position_at_end(end)
        for r in range(rows):
            for j in range(panels):
                c_row = b.add(b.mul(b.add(i0, const(r)), ldc), b.mul(b.add(p, const(j)),
                                                                     const(nr)))
                for v in range(nv):
                    at = b.gep(C, [b.add(c_row, const(v * vw))])
                    b.store(accs[(r * panels + j) * nv + v], b.bitcast(at, vec.as_pointer()),
                            align=4)

    full = b.mul(b.sdiv(M, const(mr)), const(mr))  # rows in whole blocks
    tail = b.sub(M, full)

    def panel(p):
        loop(zero, full, const(mr), "i0", lambda i0: block(p, i0, mr))

    loop(zero, P, one, "p", panel)
    # The last M % MR rows: a block of exactly that many, over several panels at once
    # when the rows are few (a batch of one at each step): a block's accumulators are its
    # FMA chains, and fewer than ~8 of them wait on each FMA's latency instead of issuing
    # two a cycle.
    done = b.append_basic_block("tail.done")
    switch = b.switch(tail, done)
    for rows in range(1, mr):
        case = b.append_basic_block(f"tail{rows}")
        switch.add_case(const(rows), case)
        b.position_at_end(case)
        group = max(1, 8 // (rows * nv))  # panels per block: ~8 accumulators
        grouped = zero  # panels done in groups
        if group > 1:
            grouped = b.mul(b.sdiv(P, const(group)), const(group))
            loop(zero, grouped, const(group), f"pg{rows}",
                 lambda p, rows=rows, group=group: block(p, full, rows, group))
        loop(grouped, P, one, f"pr{rows}", lambda p, rows=rows: block(p, full, rows))
        b.branch(done)
    b.position_at_end(done)
    b.ret_void()
    return mod


@functools.lru_cache(maxsize=4)
def address(dtype) -> int:
    """The compiled micro-kernel for ``dtype`` (float32 or float64), built on first use."""
    mr, nv, _ = _block(np.dtype(dtype))
    return compile_block(np.dtype(dtype), mr, nv)


def compile_block(dtype, mr: int, nv: int, isa: str | None = None) -> int:
    """The micro-kernel with blocks of ``mr`` rows x ``nv`` vectors, compiled for ``isa``
    (the host's widest by default; "portable" for the target's baseline CPU): its
    address (``benchmarks/step_gemm.py`` tries other blocks with it, the tests every
    ISA of ``runnable_isas``)."""
    machine, module = optimized(dtype, mr, nv, isa)
    engine = llvm.create_mcjit_compiler(module, machine)
    engine.finalize_object()
    _ENGINES.append(engine)
    return engine.get_function_address("gemm")


def optimized(dtype, mr: int, nv: int, isa: str | None = None):
    """``(target machine, optimized LLVM module)`` of ``compile_block``: what it compiles
    (``machine.emit_assembly(module)`` shows the instructions)."""
    cpu, features, host_isa = _host()
    isa = isa or host_isa
    if isa != host_isa:  # a narrower (or, compiled only, wider) ISA than the host's
        cpu, features = ISAS[isa][2], ""
    target = llvm.Target.from_default_triple()
    machine = target.create_target_machine(cpu=cpu, features=features, opt=3)
    vw = _block(np.dtype(dtype), isa)[2]
    module = llvm.parse_assembly(str(_build(np.dtype(dtype), mr, nv, vw,
                                            fused=isa != "portable")))
    module.verify()
    if hasattr(llvm, "create_pass_builder"):  # llvmlite >= 0.44: the new pass manager
        builder = llvm.create_pass_builder(machine, llvm.create_pipeline_tuning_options(3, 0))
        builder.getModulePassManager().run(module, builder)
    else:
        pmb = llvm.create_pass_manager_builder()
        pmb.opt_level = 3
        passes = llvm.create_module_pass_manager()
        pmb.populate(passes)
        passes.run(module)
    return machine, module


# ---------------------------------------------------------------- the kernels' call


def step_product(gemm, x, n, panels, out):
    """``out[:n, :P NR] = x[:n] @ B``, ``B`` packed in ``panels (P, K, NR)``; ``gemm`` is
    ``address(dtype)``. The slow twin (plain Python): a NumPy product."""
    P, K, nr = panels.shape
    if n > 0:
        out[:n, :P * nr] = x[:n, :K] @ panels.transpose(1, 0, 2).reshape(K, P * nr)


@intrinsic
def _call(typingctx, gemm, x, lda, panels, out, ldc, n, K, P):
    """A call of the micro-kernel at address ``gemm`` on the arrays' data."""
    if not (isinstance(x, types.Array) and x.dtype == panels.dtype == out.dtype):
        return None
    float_type = x.dtype

    def codegen(context, builder, signature, args):
        gemm_, x_, lda_, panels_, out_, ldc_, n_, K_, P_ = args
        data = [context.make_array(t)(context, builder, v).data
                for t, v in ((x, x_), (panels, panels_), (out, out_))]
        fty = context.get_value_type(float_type).as_pointer()
        i64 = ir.IntType(64)
        fnty = ir.FunctionType(ir.VoidType(), [fty, i64, fty, fty, i64, i64, i64, i64])
        fn = builder.inttoptr(gemm_, fnty.as_pointer())
        builder.call(fn, [data[0], lda_, data[1], data[2], ldc_, n_, K_, P_])
        return context.get_dummy_value()

    sig = types.none(types.int64, x, types.int64, panels, out, types.int64, types.int64,
                     types.int64, types.int64)
    return sig, codegen


@overload(step_product, inline="always")
def _step_product(gemm, x, n, panels, out):
    def impl(gemm, x, n, panels, out):
        if n > 0:
            _call(gemm, x, x.shape[1], panels, out, out.shape[1], n, panels.shape[1],
                  panels.shape[0])

    return impl


@njit(cache=True, nogil=True)
def project(gemm, x, panels, b, out):
    """``out = x @ B + b`` for every row of ``x (M, K)``, ``out (M, P NR)``: an input
    projection on one core, for a group of rows that runs beside another (OpenBLAS
    serializes concurrent callers). ``b`` has ``P NR`` entries, or none."""
    step_product(gemm, x, x.shape[0], panels, out)
    if b.shape[0] > 0:
        for m in range(out.shape[0]):
            for j in range(out.shape[1]):
                out[m, j] += b[j]
