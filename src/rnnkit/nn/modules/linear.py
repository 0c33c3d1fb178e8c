"""Linear layers: ``Linear`` and ``Identity``, with torch's arguments, init and math."""

from __future__ import annotations

import math

import numpy as np

from ..._random import default_generator
from ..._validate import float_array, float_dtype, int_arg
from .. import functional as F
from .module import Module, Parameter

__all__ = ["Identity", "Linear"]


class Identity(Module):
    r"""Returns its input unchanged, like ``torch.nn.Identity``; any arguments are ignored.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> nn.Identity(54, unused="x")(np.arange(3))
        array([0, 1, 2])
    """

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input

    def config(self) -> dict:
        """The constructor arguments that rebuild this module (used by ``rnnkit.save``)."""
        return {}


class Linear(Module):
    r"""Affine map ``y = x W^T + b``, exactly as ``torch.nn.Linear``.

    Weight and bias start as torch's (Kaiming-uniform with ``a = sqrt(5)``), that is
    ``U(-1/sqrt(in_features), 1/sqrt(in_features))``, drawn from rnnkit's generator.

    Args:
        in_features: features in each input sample.
        out_features: features in each output sample.
        bias: whether to add the learned bias ``b``. Default: True
        dtype: ``np.float32`` (default) or ``np.float64``.

    Shape:
        input: ``(*, in_features)``. output: ``(*, out_features)``.
        weight: ``(out_features, in_features)``; bias: ``(out_features,)``.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> fc = nn.Linear(20, 30)
        >>> fc(np.zeros((128, 20), np.float32)).shape
        (128, 30)
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype=None):
        super().__init__()
        self.in_features = int_arg("in_features", in_features)
        self.out_features = int_arg("out_features", out_features)
        self.dtype = float_dtype(dtype)
        bound = 1.0 / math.sqrt(self.in_features) if self.in_features > 0 else 0.0
        shape = (self.out_features, self.in_features)
        # torch: kaiming_uniform_(weight, a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in))
        w = default_generator().uniform(-bound, bound, shape)
        self.weight = Parameter(w.astype(self.dtype))
        if bias:
            b = default_generator().uniform(-bound, bound, (self.out_features,))
            self.bias = Parameter(b.astype(self.dtype))
        else:
            self.register_parameter("bias", None)

    def forward(self, input):
        float_array("input", input, self.dtype, owner="Linear")  # never a silent cast
        return F.linear(input, self._param("weight"), self._param("bias"))

    def extra_repr(self) -> str:
        s = f"in_features={self.in_features}, out_features={self.out_features}, "
        s += f"bias={self.bias is not None}"
        return s + (", dtype=float64" if self.dtype != np.float32 else "")

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer (used by ``rnnkit.save``)."""
        return {
            "in_features": self.in_features,
            "out_features": self.out_features,
            "bias": self.bias is not None,
            "dtype": self.dtype.name,
        }
