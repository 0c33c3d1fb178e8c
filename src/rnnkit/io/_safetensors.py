"""The safetensors format: an 8-byte little-endian header length, a JSON header (each
array's dtype, shape and byte range, plus string metadata), then the raw bytes.

rnnkit's metadata keys: ``format`` ("rnnkit"), ``rnnkit_order`` (the state dict's key
order, which safetensors sorts away) and, for a module, ``rnnkit_class`` and ``config``
(its constructor arguments, JSON), which :func:`rnnkit.load_module` rebuilds it from.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict
from collections.abc import Mapping

import numpy as np

from .._validate import from_torch
from ._atomic import write_atomically

_FORMAT = "rnnkit"


def looks_like_safetensors(head: bytes) -> bool:
    """``head``, a file's first 9 bytes: a header length, then the JSON header's ``{``.

    Checked before the pickle magic byte 0x80, which a header length can also start with.
    """
    return len(head) == 9 and head[8:9] == b"{" and 0 < int.from_bytes(head[:8], "little")


def _as_array(name, value) -> np.ndarray:
    array = np.asarray(from_torch(value))
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number)
                                     or array.dtype == np.bool_):
        raise TypeError(f"state_dict[{name!r}] must be a numeric array, got {array.dtype}")
    return np.ascontiguousarray(array)


def save(obj, path: str | os.PathLike) -> None:
    """:func:`rnnkit.save`: a state dict, or a module with its config, written atomically."""
    from safetensors.numpy import save as _serialize

    metadata = {"format": _FORMAT}
    if hasattr(obj, "state_dict") and hasattr(obj, "named_parameters"):  # a Module
        state_dict = obj.state_dict()
        if hasattr(obj, "config"):
            metadata["rnnkit_class"] = type(obj).__name__
            metadata["config"] = json.dumps(obj.config())
    elif isinstance(obj, Mapping):
        state_dict = obj
    else:
        raise TypeError(
            f"rnnkit.save expects a state dict (name -> array) or an rnnkit Module, got "
            f"{type(obj).__name__}"
        )
    tensors = OrderedDict()
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"state dict keys must be str, got {name!r}")
        tensors[name] = _as_array(name, value)
    metadata["rnnkit_order"] = json.dumps(list(tensors))  # safetensors sorts its entries
    write_atomically(path, _serialize(dict(tensors), metadata=metadata))


def load(path: str) -> tuple[OrderedDict, dict]:
    """``(state_dict, metadata)`` of a safetensors file, the arrays in their saved order."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        metadata = f.metadata() or {}
        keys = list(f.keys())
        order = keys
        if "rnnkit_order" in metadata:
            try:
                saved = json.loads(metadata["rnnkit_order"])
            except ValueError:
                saved = None
            if isinstance(saved, list) and sorted(saved) == sorted(keys):
                order = saved
        return OrderedDict((k, f.get_tensor(k)) for k in order), metadata
