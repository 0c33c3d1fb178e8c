"""One GEMM through numba's BLAS (SciPy's OpenBLAS), the library the step kernels use.

Why not NumPy's ``@``: NumPy ships its own OpenBLAS with its own thread pool. After a
NumPy GEMM its threads keep spinning for a while, and on a 2-core machine they steal
the cores the step kernels' BLAS calls need right after (measured: the LSTM step loop
ran 3x slower following a NumPy projection). Keeping every GEMM of a layer on one
BLAS keeps one thread pool busy, not two.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def gemm(a, b, out):
    """out = a @ b.   a (M, K), b (K, N), out (M, N) C-contiguous; a, b any layout."""
    np.dot(a, b, out)
