"""One GEMM on SciPy's OpenBLAS, the library numba's ``np.dot`` in the step kernels calls.

Why not NumPy's ``@``: NumPy ships its own OpenBLAS with its own thread pool. After a
NumPy GEMM its threads keep spinning for a while, and on a 2-core machine they steal
the cores the step kernels' BLAS calls need right after (measured: the LSTM step loop
ran 3x slower following a NumPy projection). Keeping every GEMM of a layer on one
BLAS keeps one thread pool busy, not two.

Why not a numba function around ``np.dot``: each layout combination (C or F
operands) is one more compilation, about half a second each, cold; SciPy's wrapper
takes the transposition flags at run time.
"""

import numpy as np
from scipy.linalg import blas as _blas

_GEMM = {np.dtype(np.float32): _blas.sgemm, np.dtype(np.float64): _blas.dgemm}


def _fortran(m):
    """``(array, trans)`` such that ``op(array)`` is ``m`` and ``array`` is Fortran-ordered."""
    if m.flags.f_contiguous:
        return m, 0
    if m.flags.c_contiguous:
        return m.T, 1
    return np.asfortranarray(m), 0


def matmul(a, b):
    """``a @ b`` for 2-D ``a (M, K)``, ``b (K, N)`` of one float dtype: a fresh
    C-contiguous ``(M, N)``. BLAS is Fortran-ordered, so it computes the transpose
    ``(a b)^T = b^T a^T`` in its order, which is the product in C order; operands are
    passed with transposition flags, never copied, when either order is contiguous.

    >>> a, b = np.arange(6.0).reshape(2, 3), np.arange(12.0).reshape(4, 3)
    >>> bool(np.array_equal(matmul(a, b.T), a @ b.T)), matmul(a, b.T).flags.c_contiguous
    (True, True)
    """
    x, trans_x = _fortran(b.T)
    y, trans_y = _fortran(a.T)
    return _GEMM[a.dtype](1.0, x, y, trans_a=trans_x, trans_b=trans_y).T
