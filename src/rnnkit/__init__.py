"""rnnkit: PyTorch-exact LSTM, GRU and RNN layers on NumPy.

Example:
    >>> import numpy as np, rnnkit
    >>> lstm = rnnkit.nn.LSTM(10, 20, 2)
    >>> output, (h_n, c_n) = lstm(np.zeros((5, 3, 10), np.float32))
    >>> output.shape, h_n.shape
    ((5, 3, 20), (2, 3, 20))
"""

from importlib.metadata import PackageNotFoundError, version

from . import nn, numpy, optim
from ._autodiff import grad, no_grad, value_and_grad
from ._random import default_generator, manual_seed
from .io import UnsafeFileError, load, load_module, save

try:
    __version__ = version("rnnkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.0.0+unknown"


def __getattr__(name: str):
    # rnnkit.onnx is imported on first access, like torch.onnx: `import rnnkit` stays
    # free of it, and it imports the onnx package only when used
    if name == "onnx":
        import importlib

        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), "onnx"})


__all__ = [
    "nn",
    "optim",
    "numpy",
    "onnx",
    "grad",
    "value_and_grad",
    "no_grad",
    "manual_seed",
    "default_generator",
    "save",
    "load",
    "load_module",
    "UnsafeFileError",
    "__version__",
]
