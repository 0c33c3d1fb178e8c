"""Collection of the package's doctests (``--doctest-modules`` over ``src/rnnkit``):
``rnnkit.estimators`` subclasses aeon's estimators, so without aeon (the ``[data]``
extra) the module cannot be imported and its doctest is left out; its tests in
``tests/test_estimators.py`` then skip, or fail under CI, saying what to install."""

import importlib.util


def _installed(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a finder that refuses it (as the suite's own tests hide packages)
        return False


collect_ignore = [] if _installed("aeon") else ["src/rnnkit/estimators.py"]
