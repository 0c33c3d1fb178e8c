"""manual_seed and the one Generator all of rnnkit's randomness draws from."""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Seed rnnkit's randomness (parameter init, dropout masks), like ``torch.manual_seed``.

    Args:
        seed: a non-negative integer.

    Returns:
        The generator now in use (also reachable as ``rnnkit.default_generator()``).
    """
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def default_generator() -> np.random.Generator:
    """The generator that parameter init and dropout draw from."""
    return _generator


def dropout_mask(shape: tuple, dtype, p: float) -> np.ndarray:
    """Dropout's multiplier: 0 with probability ``p``, else ``1/(1-p)``; one Bernoulli
    draw per element from rnnkit's generator (all zeros, no draw, when ``p == 1``)."""
    dtype = np.dtype(dtype)
    if p == 1.0:
        return np.zeros(shape, dtype)
    keep = _generator.random(shape) >= p  # Bernoulli(1 - p) per element
    return keep.astype(dtype) / dtype.type(1.0 - p)


def zoneout_mask(shape: tuple, dtype, p: float) -> np.ndarray:
    """Zoneout's ``d``: 1 (keep the previous state) with probability ``p``, else 0; one
    Bernoulli draw per element from rnnkit's generator."""
    return (_generator.random(shape) < p).astype(dtype)
