"""``Embedding``: a lookup table of learned vectors, with torch's arguments and init."""

from __future__ import annotations

import numbers

import numpy as np

from ..._random import default_generator
from ..._validate import float_dtype, int_arg
from .. import functional as F
from .module import Module, Parameter

__all__ = ["Embedding"]


class Embedding(Module):
    r"""A table of ``num_embeddings`` vectors of size ``embedding_dim``, exactly as
    ``torch.nn.Embedding``: ``output[...] = weight[input[...]]``.

    The weight starts as N(0, 1) draws from rnnkit's generator; the row
    ``padding_idx`` starts at zero and never receives a gradient.

    Args:
        num_embeddings: rows of the table.
        embedding_dim: size of each vector.
        padding_idx: a row that stays out of training (the padding token); negative
            counts from the end, as torch, and is stored as the positive index.
        dtype: ``np.float32`` (default) or ``np.float64``.

    Shape:
        input: integer array ``(*)``, entries in ``[0, num_embeddings)``.
        output: ``(*, embedding_dim)``. weight: ``(num_embeddings, embedding_dim)``.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> emb = nn.Embedding(10, 3, padding_idx=-1)
        >>> emb.padding_idx, emb(np.array([[1, 9], [4, 9]])).shape
        (9, (2, 2, 3))
        >>> emb(np.array([9]))
        array([[0., 0., 0.]], dtype=float32)
    """

    def __init__(
        self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, dtype=None
    ):
        super().__init__()
        self.num_embeddings = int_arg("num_embeddings", num_embeddings)
        self.embedding_dim = int_arg("embedding_dim", embedding_dim)
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, numbers.Integral):
                raise TypeError(
                    f"padding_idx must be an int or None, got {type(padding_idx).__name__}"
                )
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(
                    f"padding_idx must be within num_embeddings: [-{self.num_embeddings}, "
                    f"{self.num_embeddings}), got {padding_idx}"
                )
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self.dtype = float_dtype(dtype)
        shape = (self.num_embeddings, self.embedding_dim)
        weight = default_generator().standard_normal(shape).astype(self.dtype)  # torch: N(0, 1)
        if padding_idx is not None:
            weight[padding_idx] = 0
        self.weight = Parameter(weight)

    def forward(self, input):
        return F.embedding(input, self._param("weight"), self.padding_idx)

    def extra_repr(self) -> str:
        s = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            s += f", padding_idx={self.padding_idx}"
        return s + (", dtype=float64" if self.dtype != np.float32 else "")

    def config(self) -> dict:
        """The constructor arguments that rebuild this layer (used by ``rnnkit.save``)."""
        return {
            "num_embeddings": self.num_embeddings,
            "embedding_dim": self.embedding_dim,
            "padding_idx": self.padding_idx,
            "dtype": self.dtype.name,
        }
