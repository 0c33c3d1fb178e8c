"""Functions on arrays: dropout, linear, embedding, softmax, losses.

Everything here is written with ``autograd.numpy`` so gradients flow through it.
The recurrences are not here: each recurrent module is one primitive with a fused
backward pass (``rnnkit._autodiff.stacked_layers``).
"""

from __future__ import annotations

import warnings

import autograd.numpy as anp
import numpy as np
from autograd.tracer import getval

from .._random import dropout_mask

__all__ = [
    "dropout",
    "linear",
    "embedding",
    "log_softmax",
    "softmax",
    "cross_entropy",
    "mse_loss",
]


def dropout(input, p: float = 0.5, training: bool = True):
    """Zero each element with probability ``p`` and scale the rest by ``1/(1-p)``, like
    ``torch.nn.functional.dropout``; the identity when not ``training`` or ``p == 0``.

    The Bernoulli mask is drawn from rnnkit's generator (``rnnkit.manual_seed``).
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    value = getval(input)
    return input * dropout_mask(value.shape, value.dtype, p)


# ---------------------------------------------------------------- linear, embedding


def linear(input, weight, bias=None):
    r"""``y = x W^T + b``, like ``torch.nn.functional.linear``.

    Args:
        input: ``(*, in_features)``.
        weight: ``(out_features, in_features)``.
        bias: ``(out_features,)`` or None.

    Shape:
        output: ``(*, out_features)``.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> F.linear(np.ones((2, 3)), np.full((4, 3), 0.5), np.arange(4.0))
        array([[1.5, 2.5, 3.5, 4.5],
               [1.5, 2.5, 3.5, 4.5]])
    """
    w = getval(weight)
    if getval(input).shape[-1:] != w.shape[-1:]:
        raise ValueError(
            f"input must have shape (*, in_features) = (*, {w.shape[-1]}), "
            f"got {getval(input).shape}"
        )
    output = input @ weight.T  # (*, out_features)
    return output if bias is None else output + bias


def _index_array(name: str, input, size: int, allowed: tuple = ()) -> np.ndarray:
    """``input`` as an integer array whose entries lie in ``[0, size)`` or in ``allowed``."""
    array = np.asarray(getval(input))
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"{name} must hold integer indices, got dtype {array.dtype}")
    bad = (array < 0) | (array >= size)
    for value in allowed:
        bad &= array != value
    if bad.any():
        raise ValueError(f"{name} must hold indices in [0, {size}), got {array[bad].flat[0]}")
    return array


def embedding(input, weight, padding_idx: int | None = None):
    r"""Rows of ``weight`` picked by the indices in ``input``, like
    ``torch.nn.functional.embedding``.

    The row ``padding_idx`` (negative counts from the end, as torch) receives no
    gradient; its current value is still what the lookup returns.

    Args:
        input: integer array of any shape, entries in ``[0, num_embeddings)``.
        weight: ``(num_embeddings, embedding_dim)``.
        padding_idx: a row that receives no gradient, or None.

    Shape:
        output: ``(*input.shape, embedding_dim)``.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> F.embedding(np.array([2, 0]), np.arange(6.0).reshape(3, 2))
        array([[4., 5.],
               [0., 1.]])
    """
    w = getval(weight)
    if w.ndim != 2:
        raise ValueError(f"weight must have shape (num_embeddings, embedding_dim), got {w.shape}")
    num_embeddings = w.shape[0]
    index = _index_array("input", input, num_embeddings)
    if padding_idx is None:
        return weight[index]
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise ValueError(
            f"padding_idx must be within [-{num_embeddings}, {num_embeddings}), got {padding_idx}"
        )
    padding_idx %= num_embeddings
    if w is weight:  # nothing traced: nothing to hold back
        return weight[index]
    # the padding row reads as a constant, so its gradient stays zero (torch's rule)
    pad = (index == padding_idx)[..., None]  # (*, 1)
    return anp.where(pad, w[index], weight[index])


# ---------------------------------------------------------------- softmax, losses


def _softmax_dim(name: str, ndim: int, dim: int | None) -> int:
    if dim is None:  # torch's deprecated implicit choice, with its warning
        warnings.warn(
            f"Implicit dimension choice for {name} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning,
            stacklevel=3,
        )
        return 0 if ndim in (0, 1, 3) else 1
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(
            f"dim must be in [{-max(ndim, 1)}, {max(ndim, 1) - 1}] for a {ndim}-D input, got {dim}"
        )
    return dim % max(ndim, 1)


def _shifted(input, dim: int):
    """``input - max`` along ``dim``; the max is a constant (the result does not depend on it)."""
    m = np.max(getval(input), axis=dim, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)  # a row of -inf stays -inf, not nan
    return input - m


def log_softmax(input, dim: int | None = None):
    r"""``x_i - log Σ_j exp(x_j)`` along ``dim``, like ``torch.nn.functional.log_softmax``;
    computed as ``(x - max) - log Σ exp(x - max)``, so large inputs do not overflow.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> F.log_softmax(np.array([1000.0, 1000.0]), dim=0)
        array([-0.69314718, -0.69314718])
    """
    if np.ndim(getval(input)) == 0:
        return input - input  # torch: a 0-D input is its own single class
    dim = _softmax_dim("log_softmax", np.ndim(getval(input)), dim)
    z = _shifted(input, dim)
    return z - anp.log(anp.sum(anp.exp(z), axis=dim, keepdims=True))


def softmax(input, dim: int | None = None):
    r"""``exp(x_i) / Σ_j exp(x_j)`` along ``dim``, like ``torch.nn.functional.softmax``.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> F.softmax(np.array([[0.0, np.log(3.0)]]), dim=1)
        array([[0.25, 0.75]])
    """
    if np.ndim(getval(input)) == 0:
        return input - input + 1
    dim = _softmax_dim("softmax", np.ndim(getval(input)), dim)
    e = anp.exp(_shifted(input, dim))
    return e / anp.sum(e, axis=dim, keepdims=True)


_REDUCTIONS = ("none", "mean", "sum")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(
            f"{reduction!r} is not a valid value for reduction; use one of {_REDUCTIONS}"
        )


def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index: int = -100,
    reduction: str = "mean",
    label_smoothing: float = 0.0,
):
    r"""Cross entropy between logits and class targets, exactly as
    ``torch.nn.functional.cross_entropy``.

    With class indices ``y_n``, weights ``w`` (ones by default), ``ε = label_smoothing``
    and ``C`` classes, each element that is not ``ignore_index`` contributes::

        l_n = (1 - ε) · (-w[y_n] · log p_n[y_n])  +  (ε / C) · (-Σ_c w[c] · log p_n[c])

    ``'mean'`` divides the sum by ``Σ_n w[y_n]`` over the elements not ignored
    (torch's weighted mean), ``'sum'`` sums, ``'none'`` keeps ``(N, d1, ...)``.
    A float ``target`` of ``input``'s shape holds class probabilities instead
    (no ``ignore_index``; ``'mean'`` divides by the number of elements).

    Args:
        input: logits ``(N, C)``, ``(C,)`` or ``(N, C, d1, ...)``.
        target: class indices ``(N,)``, ``()`` or ``(N, d1, ...)``, in ``[0, C)``
            or equal to ``ignore_index``; or probabilities shaped like ``input``.
        weight: ``(C,)`` per-class weights, or None.
        ignore_index: a target value that contributes nothing, to the sum or the mean.
        reduction: ``'none'``, ``'mean'`` or ``'sum'``.
        label_smoothing: ``ε`` in ``[0, 1]``.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> logits = np.array([[2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
        >>> print(f"{F.cross_entropy(logits, np.array([0, 2])):.6f}")
        0.669079
    """
    _check_reduction(reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must be between 0.0 and 1.0, got {label_smoothing}")
    x = getval(input)
    if x.ndim == 0:
        raise ValueError("input must have shape (N, C), (C,) or (N, C, d1, ...), got ()")
    class_dim = 0 if x.ndim == 1 else 1
    C = x.shape[class_dim]
    logp = log_softmax(input, class_dim)
    if weight is not None:
        w = np.asarray(getval(weight))
        if w.shape != (C,):
            raise ValueError(f"weight must have shape (C,) = ({C},), got {w.shape}")
        if w is weight:  # a constant: in input's dtype, as torch requires
            weight = w.astype(x.dtype, copy=False)
    # weights along the class axis, broadcastable against input
    w_b = None if weight is None else anp.reshape(weight, (C,) + (1,) * (x.ndim - 1 - class_dim))

    t = np.asarray(getval(target))
    if np.issubdtype(t.dtype, np.floating):  # class probabilities
        if t.shape != x.shape:
            raise ValueError(
                f"a float target holds class probabilities and must have "
                f"input's shape {x.shape}, got {t.shape}"
            )
        if label_smoothing > 0:
            target = target * (1 - label_smoothing) + label_smoothing / C
        terms = logp * target if w_b is None else logp * target * w_b
        loss = -anp.sum(terms, axis=class_dim)
        if reduction == "mean":
            return anp.sum(loss) / max(1, x.size // max(C, 1))  # elements, not weights
        return anp.sum(loss) if reduction == "sum" else loss

    expected = x.shape[:class_dim] + x.shape[class_dim + 1 :]
    if t.shape != expected:
        spelled = {0: "()", 1: "(N,)"}.get(len(expected), "(N, d1, ...)")
        raise ValueError(
            f"target must have shape {spelled} = {expected} for input of shape "
            f"{x.shape}, got {t.shape}"
        )
    t = _index_array("target", t, C, allowed=(ignore_index,))
    keep = t != ignore_index
    safe = np.where(keep, t, 0)

    # log p[y] for every element: classes last, one row per element
    rows = logp if x.ndim == 1 else anp.moveaxis(logp, 1, -1)  # (*, C)
    flat = anp.reshape(rows, (-1, C))  # (M, C)
    picked = anp.reshape(flat[np.arange(flat.shape[0]), safe.ravel()], t.shape)
    w_y = np.ones(t.shape, x.dtype) if weight is None else weight[safe]  # w[y_n]
    mask = keep.astype(x.dtype)
    nll = -picked * w_y * mask  # (N, d1, ...)
    smooth = None
    if label_smoothing > 0:
        terms = logp if w_b is None else logp * w_b
        smooth = -anp.sum(terms, axis=class_dim) * mask  # (N, d1, ...)

    if reduction == "none":
        loss = nll
        if smooth is not None:
            loss = (1 - label_smoothing) * nll + smooth * (label_smoothing / C)
        return loss
    total = anp.sum(nll)
    s = None if smooth is None else anp.sum(smooth)
    if reduction == "mean":
        denom = anp.sum(w_y * mask)  # torch's weighted mean: Σ w[y_n] over kept elements
        with np.errstate(invalid="ignore", divide="ignore"):  # all ignored: nan, as torch
            total = total / denom
            s = None if s is None else s / denom
    if s is None:
        return total
    return (1 - label_smoothing) * total + s * (label_smoothing / C)


def mse_loss(input, target, reduction: str = "mean"):
    r"""Mean squared error ``(x - y)²``, like ``torch.nn.functional.mse_loss``.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn import functional as F
        >>> F.mse_loss(np.array([1.0, 2.0]), np.array([0.0, 0.0]))
        np.float64(2.5)
    """
    _check_reduction(reduction)
    shape_x, shape_t = np.shape(getval(input)), np.shape(getval(target))
    if shape_x != shape_t:
        warnings.warn(
            f"Using a target size ({shape_t}) that is different to the input size "
            f"({shape_x}). This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=2,
        )
    squared = (input - target) ** 2
    if reduction == "none":
        return squared
    return anp.mean(squared) if reduction == "mean" else anp.sum(squared)
