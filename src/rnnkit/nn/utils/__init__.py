"""Utilities: packing (``rnn``) and gradient clipping (``clip_grad``)."""

from . import clip_grad, rnn
from .clip_grad import clip_grad_norm_

__all__ = ["rnn", "clip_grad", "clip_grad_norm_"]
