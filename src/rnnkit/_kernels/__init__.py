"""numba kernels of the recurrences (``lstm.py``, ``gru.py``, ``rnn.py``): one layer,
one direction, all steps. No classes, autograd or checks; ``rnnkit._ops`` wraps them
with the signatures of ``rnnkit._reference``. Their shared helpers are in ``_math.py``;
``_cache.py`` makes numba's cache of every kernel here depend on those helpers too."""

from ._cache import install as _install_cache

_install_cache()  # before any kernel module is imported: numba picks a locator per kernel
