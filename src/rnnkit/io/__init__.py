r"""Weights in and out: safetensors files, and PyTorch ``.pt`` files read without torch.

``save`` writes a state dict (or a module's, with the arguments that rebuild it) in the
safetensors format, atomically. ``load`` reads safetensors files and the zip files of
``torch.save`` without PyTorch and without running anything from the file: its
unpickler knows only the globals torch writes for tensors and plain containers, each
mapped to a stand-in of ours, and refuses everything else with :class:`UnsafeFileError`.

Which file holds what::

    __init__.py       save, load, load_module, UnsafeFileError; tells the formats apart
    _safetensors.py   safetensors: arrays and rnnkit's metadata, out and in
    _torch_zip.py     torch.save's zip files: the restricted unpickler and its checks
    _rebuild.py       load_module's rebuild: the allowed classes, built from their config
    _atomic.py        write_atomically, the one atomic file write of rnnkit

The submodules import ``UnsafeFileError`` from here, so the functions below import
them when first called.

Example:
    >>> import os, tempfile, numpy as np, rnnkit
    >>> path = os.path.join(tempfile.mkdtemp(), "gru.safetensors")
    >>> rnnkit.save(rnnkit.nn.GRU(3, 4, num_layers=2, dtype=np.float64), path)
    >>> list(rnnkit.load(path))[:2]
    ['weight_ih_l0', 'weight_hh_l0']
    >>> rnnkit.load_module(path)
    GRU(3, 4, num_layers=2, dtype=float64)
"""

from __future__ import annotations

import json
import os

__all__ = ["save", "load", "load_module", "UnsafeFileError"]


class UnsafeFileError(ValueError):
    """A file asks for something ``rnnkit.load`` will not do: run code, reach outside
    its archive, or read past its own data."""


def save(obj, path: str | os.PathLike) -> None:
    """Save a state dict, or a module, to ``path`` in the safetensors format.

    Args:
        obj: a mapping of name -> array (ndarrays, or CPU torch tensors), or an
            ``rnnkit.nn.Module``. A module's constructor arguments (its ``config()``)
            go in the file's metadata, so :func:`load_module` rebuilds it.
        path: the file to write. The write is atomic: the old file survives a crash.

    Raises:
        TypeError: ``obj`` is neither, or holds something that is not a numeric array.

    Example:
        >>> import os, tempfile, numpy as np, rnnkit
        >>> path = os.path.join(tempfile.mkdtemp(), "w.safetensors")
        >>> rnnkit.save({"w": np.eye(2, dtype=np.float32)}, path)
        >>> rnnkit.load(path)["w"].dtype
        dtype('float32')
    """
    from . import _safetensors

    _safetensors.save(obj, path)


def load(path: str | os.PathLike):
    """Read the arrays of a safetensors file or of a PyTorch ``.pt``/``.pth`` file.

    Torch files are read without PyTorch: tensors saved from any device, views with
    offsets, non-contiguous strides, float16/bfloat16 (as float32)/float32/float64 and
    the integer and bool dtypes, inside nested dicts, lists and tuples. Nothing in the
    file is ever run: globals other than torch's tensor and container markers are refused.

    Returns:
        An ``OrderedDict`` of name -> ndarray for a state dict; for other checkpoints
        (``{"model": state_dict, "epoch": 3}``) the same nesting of dicts, lists and
        tuples, with ndarrays for tensors.

    Raises:
        UnsafeFileError: the file asks for code, paths outside the archive or bytes it
            does not hold.
        ValueError: the file is a legacy (pre-1.6) torch file, a TorchScript archive or
            not a weights file.

    Example:
        >>> import os, tempfile, numpy as np, rnnkit
        >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
        >>> rnnkit.save(rnnkit.nn.LSTM(2, 3).state_dict(), path)
        >>> {k: v.shape for k, v in rnnkit.load(path).items()}["weight_ih_l0"]
        (12, 2)
    """
    from . import _safetensors, _torch_zip

    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return _torch_zip.load(path)
    if _safetensors.looks_like_safetensors(head):
        return _safetensors.load(path)[0]
    if head[:1] == b"\x80" or head[:2] == b"\x1f\x8b":
        raise ValueError(
            f"{path} is a PyTorch file in the legacy (pre-1.6, non-zip) format, which rnnkit "
            "cannot read safely; re-save it with a current torch: "
            "torch.save(torch.load(path), path), or torch.save(model.state_dict(), path)"
        )
    raise ValueError(
        f"{path} is neither a safetensors file nor a PyTorch zip file (it starts with "
        f"{head[:8]!r})"
    )


def load_module(path: str | os.PathLike):
    """Rebuild the layer or model that ``rnnkit.save(module, path)`` wrote, weights included.

    Only classes of ``rnnkit.nn`` and ``rnnkit.models`` are built, looked up by name;
    nothing named by the file is imported.

    Example:
        >>> import os, tempfile, rnnkit
        >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
        >>> rnnkit.save(rnnkit.nn.LSTM(4, 8, bidirectional=True), path)
        >>> rnnkit.load_module(path)
        LSTM(4, 8, bidirectional=True)
    """
    from . import _rebuild, _safetensors

    path = os.fspath(path)
    with open(path, "rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04" or (head[:1] == b"\x80"
                                     and not _safetensors.looks_like_safetensors(head)):
        raise ValueError(
            f"{path} is a PyTorch file, which holds weights but not rnnkit's layer "
            "arguments; build the layer and call layer.load_state_dict(rnnkit.load(path))"
        )
    state_dict, metadata = _safetensors.load(path)
    if "rnnkit_class" not in metadata or "config" not in metadata:
        raise ValueError(
            f"{path} holds a state dict without the class and arguments of a module (it was "
            "saved from a state dict); build the module and call "
            "module.load_state_dict(rnnkit.load(path))"
        )
    try:
        config = json.loads(metadata["config"])
    except ValueError as error:
        raise ValueError(f"{path} has a malformed module config: {error}") from None
    module = _rebuild.build(metadata["rnnkit_class"], config, _rebuild.allowed_classes())
    module.load_state_dict(state_dict)
    return module
