"""Checks of arguments at the public boundary, in one place.

Every message names the argument, what was expected and what came, in the
vocabulary of torch's docs. Modules, packing, io and the optimizers call these;
none of them writes its own.
"""

from __future__ import annotations

import numbers

import numpy as np
from autograd.tracer import getval

__all__ = [
    "is_torch_tensor",
    "from_torch",
    "float_dtype",
    "int_arg",
    "numeric_array",
    "float_array",
    "array_of",
    "expect_shape",
    "call_lengths",
]


# ---------------------------------------------------------------- torch tensors


def is_torch_tensor(value) -> bool:
    """True for a torch tensor, recognised without importing torch."""
    return not isinstance(value, np.ndarray) and hasattr(value, "detach") \
        and hasattr(value, "numpy")


def from_torch(value):
    """A CPU torch tensor as an ndarray (detached, copied off any device); anything else
    unchanged."""
    return value.detach().cpu().numpy() if is_torch_tensor(value) else value


# ---------------------------------------------------------------- constructor arguments


def float_dtype(dtype) -> np.dtype:
    """A layer's dtype: ``np.float32`` (the default, for None) or ``np.float64``."""
    resolved = np.dtype(np.float32 if dtype is None else dtype)
    if resolved not in (np.float32, np.float64):
        raise TypeError(f"dtype must be np.float32 or np.float64, got {resolved}")
    return resolved


def int_arg(name: str, value, minimum: int | None = 0) -> int:
    """An ``int`` (not a bool) of at least ``minimum`` (None: any)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)


# ---------------------------------------------------------------- arrays


def array_of(name: str, value) -> np.ndarray:
    """``value`` (traced or not) as the ndarray it is; a torch tensor or anything else is
    a ``TypeError`` that says what to pass."""
    array = getval(value)
    if is_torch_tensor(array):
        raise TypeError(f"{name} must be a numpy array, got a torch tensor; pass {name}.numpy()")
    if not isinstance(array, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(array).__name__}")
    return array


def numeric_array(name: str, value) -> np.ndarray:
    """A numeric or bool array of any dtype: what packing and padding take (token ids
    before an ``Embedding``, masks), as torch does."""
    array = array_of(name, value)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise TypeError(f"{name} must be a numeric or bool array, got {array.dtype}")
    return array


def float_array(name: str, value, dtype: np.dtype, owner: str = "layer") -> np.ndarray:
    """``value`` must be a float array of ``owner``'s dtype: never cast silently."""
    array = array_of(name, value)
    if array.dtype != dtype:
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(f"{name} must be a float32 or float64 array, got {array.dtype}")
        raise TypeError(
            f"{name} has dtype {array.dtype} but the {owner}'s parameters are {dtype}; "
            f"convert with {name}.astype(np.{dtype}) or build the {owner} with "
            f"dtype=np.{array.dtype}"
        )
    return array


def expect_shape(name: str, array, expected: tuple, spelled: str, hint: str = "") -> None:
    """``array`` must have shape ``expected``, spelled in torch's words as ``spelled``."""
    shape = tuple(getval(array).shape)
    if shape != tuple(expected):
        raise ValueError(f"{name} must have shape {spelled} = {tuple(expected)}, got {shape}{hint}")


def call_lengths(value, batch: int, seq_len: int) -> np.ndarray:
    """The ``lengths=`` of a layer call: one int per sequence, each in ``[0, seq_len]``
    (0 allowed, unlike packing), as int64. Floats are refused, even whole ones: a length
    is a count of steps, and a float here is usually a mean or a mask taken by mistake."""
    array = np.asarray(from_torch(getval(value)))
    if array.ndim != 1:
        raise ValueError(
            f"lengths must be 1-D, one length per sequence (batch = {batch} entries), got "
            f"shape {array.shape}"
        )
    if array.size and (array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer)):
        raise ValueError(
            f"lengths must be integers (a list of ints or an integer array), got {array.dtype} "
            f"values {array.tolist()}"
        )
    if array.size != batch:
        raise ValueError(
            f"lengths must have one entry per sequence in the batch: expected {batch} "
            f"entries, got {array.size}"
        )
    array = array.astype(np.int64, copy=False)
    if np.any(array < 0):
        raise ValueError(f"lengths must not be negative, got lengths {array.tolist()}")
    if np.any(array > seq_len):
        raise ValueError(
            f"lengths must not exceed the padded length of input (seq_len = {seq_len}), got "
            f"lengths {array.tolist()}"
        )
    return array
