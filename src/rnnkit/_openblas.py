"""OpenBLAS's idle threads, told to sleep soon: imported first, before SciPy loads its
OpenBLAS (the one every big GEMM of rnnkit runs on, ``_kernels/blas.py``).

After each call OpenBLAS's worker threads spin, waiting for the next one, for 2^28
cycles by default (~0.1 s): on a 2-core machine they hold the core that rnnkit's
second row group (``_ops._row_groups``) needs right after a GEMM. Measured here on a
training step (forward and backward of one LSTM layer, float32, in one process):
splitting the batch over the two cores lost to one core with the default spin (large
T50 B64 H1024: 1876 vs 1579 ms) and won with ``OPENBLAS_THREAD_TIMEOUT=4`` (2^4
cycles: medium T100 B64 H256 187 ms vs 233 unsplit; the main job's T26 B32 H64 2.2 vs
3.1 ms). OpenBLAS reads the variable once, when the library loads; a value the user
set is kept.

``SHORT_SPIN`` says whether SciPy's OpenBLAS spins briefly in this process: rnnkit
set the variable before SciPy's linear algebra was loaded, or the user set it to 8 or
less. Without it, training runs its step loop on one core (``_ops``).
"""

from __future__ import annotations

import os
import sys

_VARIABLE = "OPENBLAS_THREAD_TIMEOUT"
_SHORT = 4  # 2^4 cycles of spinning before an idle thread sleeps


def _short_spin() -> bool:
    chosen = os.environ.get(_VARIABLE)
    if chosen is not None:  # the user's: kept
        try:
            return int(chosen) <= 8
        except ValueError:
            return False
    if "scipy.linalg" in sys.modules:  # its OpenBLAS is loaded: too late to tell it
        return False
    os.environ[_VARIABLE] = str(_SHORT)
    return True


SHORT_SPIN = _short_spin()
