"""``clip_grad_norm_``: rescale gradients whose total norm exceeds a bound, as torch."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["clip_grad_norm_"]


def _vector_norm(x: np.ndarray, norm_type: float) -> np.ndarray:
    """``torch.linalg.vector_norm`` of ``x`` seen as one vector, in ``x``'s dtype."""
    x = np.abs(np.asarray(x).ravel())
    if norm_type == math.inf:
        return x.max(initial=0) if x.size else np.zeros((), x.dtype)[()]
    if norm_type == -math.inf:
        return x.min()
    if norm_type == 0:
        return np.asarray(np.count_nonzero(x), x.dtype)[()]
    if norm_type == 2:
        return np.sqrt(np.sum(x * x))
    if norm_type == 1:
        return np.sum(x)
    return np.sum(x**norm_type) ** (1 / norm_type)


def clip_grad_norm_(
    parameters_or_grads,
    max_norm: float,
    norm_type: float | str = 2.0,
    error_if_nonfinite: bool = False,
):
    r"""Scale gradients in place so that their total norm is at most ``max_norm``, exactly
    as ``torch.nn.utils.clip_grad_norm_``::

        total_norm = ‖(‖g_1‖, ‖g_2‖, ...)‖        (the norm of all gradients as one vector)
        g_i ← g_i · min(max_norm / (total_norm + 1e-6), 1)

    Args:
        parameters_or_grads: the dict of gradients ``rnnkit.value_and_grad`` returns
            (its arrays are scaled in place), or parameters (one, or an iterable, e.g.
            ``model.parameters()``) whose ``.grad`` is scaled; parameters without a
            gradient are skipped. Plain arrays in the iterable count as gradients.
        max_norm: the largest total norm allowed.
        norm_type: the p of the p-norm; ``float('inf')`` or ``'inf'`` for the max norm.
        error_if_nonfinite: raise ``RuntimeError`` if the total norm is nan or inf.

    Returns:
        The total norm of the gradients before clipping, a NumPy scalar.

    Example:
        >>> import numpy as np
        >>> from rnnkit.nn.utils import clip_grad_norm_
        >>> grads = {"weight": np.array([3.0, 0.0]), "bias": np.array([4.0])}
        >>> print(clip_grad_norm_(grads, max_norm=1.0))
        5.0
        >>> grads["weight"].round(6), grads["bias"].round(6)
        (array([0.6, 0. ]), array([0.8]))
    """
    max_norm = float(max_norm)
    norm_type = float(norm_type)
    # (holder, key): where each gradient lives, so that one that cannot be scaled in
    # place (read-only, or not an ndarray) is replaced instead
    if isinstance(parameters_or_grads, Mapping):
        slots = [(parameters_or_grads, k) for k, g in parameters_or_grads.items() if g is not None]
        grads = [np.asarray(parameters_or_grads[k]) for _, k in slots]
    else:
        items = parameters_or_grads
        if isinstance(items, np.ndarray) or not isinstance(items, Iterable):
            items = [items]
        slots, grads = [], []
        for item in items:
            if hasattr(item, "grad"):
                if item.grad is not None:
                    slots.append((item, None))
                    grads.append(np.asarray(item.grad))
            elif isinstance(item, np.ndarray):
                slots.append((item, ...))
                grads.append(item)
            else:
                raise TypeError(
                    "clip_grad_norm_ takes a dict of gradients or parameters with .grad, "
                    f"got a {type(item).__name__}"
                )
    if not grads:
        return np.float32(0.0)  # torch: tensor(0.)
    norms = np.array([_vector_norm(g, norm_type) for g in grads])  # stacked, as torch
    total_norm = _vector_norm(norms, norm_type)
    if error_if_nonfinite and not np.isfinite(total_norm):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is "
            "non-finite, so it cannot be clipped. To disable this error and scale the "
            "gradients by the non-finite norm anyway, set `error_if_nonfinite=False`"
        )
    dtype = total_norm.dtype
    clip_coef = dtype.type(max_norm) / (total_norm + dtype.type(1e-6))
    clip_coef_clamped = np.minimum(clip_coef, dtype.type(1.0))  # never scales up
    for (holder, key), g in zip(slots, grads, strict=True):
        coef = clip_coef_clamped.astype(g.dtype)
        if key is ...:  # a plain gradient array
            holder *= coef
        elif key is None:  # a parameter: its .grad
            if isinstance(holder.grad, np.ndarray) and holder.grad.flags.writeable:
                holder.grad *= coef
            else:
                holder.grad = g * coef
        elif isinstance(holder[key], np.ndarray) and holder[key].flags.writeable:
            holder[key] *= coef  # the dict's own array, in place
        else:
            holder[key] = g * coef
    return total_norm
