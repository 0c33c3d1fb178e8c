"""NumPy for code that rnnkit differentiates: HIPS autograd's wrapper, re-exported.

Inside a function given to ``rnnkit.grad`` / ``rnnkit.value_and_grad``, values that
depend on the parameters are traced; plain ``numpy`` functions cannot see through
them (rnnkit refuses them with a clear error rather than return a wrong gradient).
Traced code must call these functions instead, which mirror NumPy's names::

    import rnnkit.numpy as rnp

    def loss_fn(model, x, y):
        out, _ = model.gru(x)
        logits = rnp.concatenate([out[-1], out.mean(axis=0)], axis=1)
        return nn.functional.cross_entropy(model.fc(logits), y)

Operators, array methods (``.sum()``, ``.reshape``, ``.T``) and indexing work on
traced values directly. ``linalg``, ``fft`` and ``random`` are here too.

Example:
    >>> import numpy as np, rnnkit
    >>> import rnnkit.numpy as rnp
    >>> lin = rnnkit.nn.Linear(2, 1, bias=False, dtype=np.float64)
    >>> loss_fn = lambda m, x: rnp.sum(rnp.stack([m(x), 3 * m(x)]))
    >>> rnnkit.grad(loss_fn)(lin, np.array([[1.0, 2.0]]))["weight"]
    array([[4., 8.]])
"""

from autograd.numpy import *  # noqa: F403
from autograd.numpy import fft, linalg, random  # noqa: F401

del test  # noqa: F821  numpy's own test runner, not an array function
