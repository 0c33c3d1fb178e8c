"""``SGD``: stochastic gradient descent with torch's momentum, dampening, Nesterov."""

from __future__ import annotations

import numpy as np

from .optimizer import Optimizer, _check_hyper

__all__ = ["SGD"]


class SGD(Optimizer):
    r"""Stochastic gradient descent, exactly as ``torch.optim.SGD`` (its single-tensor
    path). For each parameter ``θ`` with gradient ``g``, at step ``t``::

        g ← -g                                   if maximize
        g ← g + λ θ                              if weight_decay λ ≠ 0
        b ← g  (t = 1);  b ← μ b + (1 - τ) g      if momentum μ ≠ 0 (dampening τ)
        g ← g + μ b  if nesterov,  else  g ← b
        θ ← θ - lr · g

    Args:
        params: parameters (e.g. ``model.parameters()``) or parameter groups (dicts).
        lr: learning rate. Default: 1e-3
        momentum: ``μ``. Default: 0
        dampening: ``τ``. Default: 0
        weight_decay: ``λ``, L2 penalty. Default: 0
        nesterov: Nesterov momentum (needs ``momentum > 0`` and ``dampening = 0``).
        maximize: ascend the objective instead. Default: False

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn, optim
        >>> p = nn.Parameter(np.array([1.0, 2.0]))
        >>> opt = optim.SGD([p], lr=0.1)
        >>> p.grad = np.array([1.0, -1.0])
        >>> opt.step()
        >>> np.asarray(p)
        array([0.9, 2.1])
    """

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        momentum: float = 0,
        dampening: float = 0,
        weight_decay: float = 0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
    ):
        _check_hyper("learning rate", lr)
        _check_hyper("momentum value", momentum)
        _check_hyper("weight_decay value", weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
            "maximize": maximize,
        }
        super().__init__(params, defaults)

    def _update(self, p, g, state, group):
        lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
        if group["maximize"]:
            g = -g
        if weight_decay != 0:
            g = g + weight_decay * p
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = np.array(g, dtype=p.dtype, copy=True)
            else:
                buf *= momentum
                buf += (1 - group["dampening"]) * g
            g = g + momentum * buf if group["nesterov"] else buf
        p[...] = p - lr * g
