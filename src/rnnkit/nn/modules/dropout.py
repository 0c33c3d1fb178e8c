"""``Dropout``, with torch's argument and training-mode behaviour."""

from __future__ import annotations

import numbers

from .. import functional as F
from .module import Module

__all__ = ["Dropout"]


class Dropout(Module):
    r"""During training, zero each element with probability ``p`` and scale the others by
    ``1 / (1 - p)``, like ``torch.nn.Dropout``; the identity in eval mode.

    Masks are drawn from rnnkit's generator, so ``rnnkit.manual_seed`` repeats them.

    Args:
        p: probability of an element being zeroed. Default: 0.5

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> drop = nn.Dropout(p=0.25)
        >>> y = drop(np.ones((4, 5)))
        >>> sorted(set(y.ravel().tolist())) in ([0.0, 4 / 3], [4 / 3], [0.0])
        True
        >>> drop.eval()(np.ones(3))
        array([1., 1., 1.])
    """

    def __init__(self, p: float = 0.5):
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= p <= 1.0:
            raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = float(p)

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace=False"

    def config(self) -> dict:
        """The constructor arguments that rebuild this module (used by ``rnnkit.save``)."""
        return {"p": self.p}
