"""numba's on-disk cache for the kernels of this folder, made to notice the shared helpers.

numba keeps a compiled kernel until the kernel's own source file changes: it stamps
the cache with that file's modification time and size. The kernels inline the helpers
of ``_math.py``, so an edit there alone would leave every kernel running stale machine
code. Here numba's choice of cache location is kept as it is, and the stamp of each
kernel in this folder also carries a hash of the files in ``SHARED``: edit one, and the
next process recompiles every kernel that uses it.

numba picks a cache locator per function from ``CacheImpl._locator_classes``;
``install()`` puts ``_KernelCacheLocator`` first. It answers only for the files of this
folder, wrapping the locator numba would have chosen, and lets numba handle every
other function.
"""

from __future__ import annotations

import functools
import hashlib
import os

from numba.core import caching

_FOLDER = os.path.dirname(os.path.abspath(__file__))
# what the kernels of this folder compile in: the helpers (the cell options' too), and
# the step loops and the layer pieces of stack.py that stack.py and stack_train.py call
# (numba stamps a cache with its own file only)
SHARED = ("_math.py", "_gemm.py", "lstm.py", "gru.py", "rnn.py", "stack.py",
          "_options_math.py")


@functools.lru_cache(maxsize=1)
def shared_digest() -> str:
    """A hash of the shared helpers' contents (read once per process)."""
    h = hashlib.sha256()
    for name in SHARED:
        with open(os.path.join(_FOLDER, name), "rb") as f:
            h.update(name.encode() + b"\0" + f.read())
    return h.hexdigest()


class _KernelCacheLocator(caching._CacheLocator):
    """The locator numba would pick for a kernel of this folder, with the shared helpers'
    hash added to its source stamp."""

    def __init__(self, inner):
        self._inner = inner
        self._py_file = inner._py_file  # numba's cachability warning names it

    def ensure_cache_path(self):
        self._inner.ensure_cache_path()

    def get_cache_path(self):
        return self._inner.get_cache_path()

    def get_source_stamp(self):
        return self._inner.get_source_stamp(), shared_digest()

    def get_disambiguator(self):
        return self._inner.get_disambiguator()

    @classmethod
    def from_function(cls, py_func, py_file):
        if os.path.dirname(os.path.abspath(py_file)) != _FOLDER:
            return None
        for locator_class in _DEFAULT_LOCATORS:
            inner = locator_class.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner)
        return None


_DEFAULT_LOCATORS = list(caching.CacheImpl._locator_classes)


def install() -> None:
    """Make numba ask ``_KernelCacheLocator`` first (idempotent)."""
    if caching.CacheImpl._locator_classes[0] is not _KernelCacheLocator:
        caching.CacheImpl._locator_classes.insert(0, _KernelCacheLocator)
