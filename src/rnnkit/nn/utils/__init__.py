"""Utilities: packing (``rnn``) and gradient clipping (``clip_grad``)."""

from . import rnn

__all__ = ["rnn"]
