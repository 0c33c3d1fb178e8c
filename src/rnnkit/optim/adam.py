"""``Adam`` and ``AdamW``, with torch's update rules and bias corrections."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_hyper

__all__ = ["Adam", "AdamW"]


def _lerp(start, end, weight):
    """torch's ``lerp``: the formula it picks by ``|weight|``, for identical rounding."""
    if abs(weight) < 0.5:
        return start + weight * (end - start)
    return end - (end - start) * (1 - weight)


class Adam(Optimizer):
    r"""Adam, exactly as ``torch.optim.Adam`` (its single-tensor path). For each
    parameter ``θ`` with gradient ``g``, at step ``t``::

        g ← -g                                      if maximize
        θ ← θ (1 - lr λ)                            if decoupled_weight_decay (AdamW)
        g ← g + λ θ                                 otherwise, if weight_decay λ ≠ 0
        m ← lerp(m, g, 1 - β1)                      = β1 m + (1 - β1) g
        v ← β2 v + (1 - β2) g²
        v̂ ← max(v̂, v) if amsgrad, else v
        θ ← θ - (lr / (1 - β1^t)) · m / (sqrt(v̂) / sqrt(1 - β2^t) + ε)

    Args:
        params: parameters (e.g. ``model.parameters()``) or parameter groups (dicts).
        lr: learning rate. Default: 1e-3
        betas: ``(β1, β2)``. Default: (0.9, 0.999)
        eps: ``ε``. Default: 1e-8
        weight_decay: ``λ``. Default: 0
        amsgrad: use the running maximum of ``v``. Default: False
        maximize: ascend the objective instead. Default: False
        decoupled_weight_decay: decay the weights directly, as AdamW. Default: False

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn, optim
        >>> p = nn.Parameter(np.array([1.0, 2.0]))
        >>> opt = optim.Adam([p], lr=0.1)
        >>> p.grad = np.array([3.0, -0.5])
        >>> opt.step()
        >>> np.asarray(p).round(6)    # the first step moves every weight by about lr
        array([0.9, 2.1])
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
    ):
        _check_hyper("learning rate", lr)
        _check_hyper("epsilon value", eps)
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        _check_hyper("weight_decay value", weight_decay)
        defaults = {
            "lr": lr,
            "betas": tuple(betas),
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
            "maximize": maximize,
            "decoupled_weight_decay": decoupled_weight_decay,
        }
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
        beta1, beta2 = group["betas"]
        if not state:
            state["step"] = np.array(0.0, dtype=np.float32)  # torch keeps a float32 count
            state["exp_avg"] = np.zeros_like(np.asarray(p))
            state["exp_avg_sq"] = np.zeros_like(np.asarray(p))
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = np.zeros_like(np.asarray(p))
        if group["maximize"]:
            g = -g
        state["step"] += 1
        step = float(state["step"])

        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                p *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * p

        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg[...] = _lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if group["amsgrad"]:
            max_sq = state["max_exp_avg_sq"]
            np.maximum(max_sq, exp_avg_sq, out=max_sq)
            denom = np.sqrt(max_sq) / bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        p[...] = p + (-step_size) * (exp_avg / denom)


class AdamW(Adam):
    r"""Adam with decoupled weight decay, exactly as ``torch.optim.AdamW``: each step
    first shrinks the weights, ``θ ← θ (1 - lr λ)``, then applies Adam's update
    (see :class:`Adam`). Note the default ``weight_decay`` is 1e-2, as torch's.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn, optim
        >>> p = nn.Parameter(np.array([1.0]))
        >>> opt = optim.AdamW([p], lr=0.1, weight_decay=0.5)
        >>> p.grad = np.array([0.0])
        >>> opt.step()               # Adam's part is 0: only the decay, 1 * (1 - 0.05)
        >>> np.asarray(p)
        array([0.95])
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        maximize: bool = False,
    ):
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            maximize=maximize,
            decoupled_weight_decay=True,
        )
