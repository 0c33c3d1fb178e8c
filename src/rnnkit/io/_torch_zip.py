r"""The restricted reader of ``torch.save``'s zip files: no PyTorch, and nothing from the
file ever runs. Its unpickler knows only the globals torch writes for tensors and plain
containers, each mapped to a stand-in of ours, and refuses everything else with
:class:`rnnkit.UnsafeFileError`; sizes, offsets and strides are checked against the
bytes the archive holds.

A torch file is a zip archive::

    <name>/data.pkl        the pickled object; a tensor pickles as
                           _rebuild_tensor_v2(storage, offset, size, stride, ...) and its
                           storage as persistent id ('storage', torch.FloatStorage,
                           key, location, numel)
    <name>/data/<key>      the raw bytes of storage <key>, numel * itemsize of them
    <name>/byteorder       "little" or "big"
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
import zlib
from collections import OrderedDict

import numpy as np

from . import UnsafeFileError

_MAX_PICKLE_BYTES = 64 << 20  # data.pkl of a state dict is kilobytes; its tensors live apart
_MAX_DEPTH = 100  # nesting of containers in a checkpoint
_MAX_OBJECTS = 1_000_000  # containers and tensors visited when converting
_MAX_DIMS = 64

_STORAGE_DTYPES = {
    "FloatStorage": "float32", "DoubleStorage": "float64", "HalfStorage": "float16",
    "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
    "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
    "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
    "ComplexDoubleStorage": "complex128", "UntypedStorage": "uint8",
}
_TORCH_DTYPES = {  # torch.float32 etc. as they appear in checkpoints: read as names
    "float32": "float32", "float": "float32", "float64": "float64", "double": "float64",
    "float16": "float16", "half": "float16", "bfloat16": "bfloat16", "int64": "int64",
    "long": "int64", "int32": "int32", "int": "int32", "int16": "int16", "int8": "int8",
    "uint8": "uint8", "bool": "bool", "complex64": "complex64", "complex128": "complex128",
}


class _Marker:
    """A stand-in for a torch global that is only ever a value (a storage type, a dtype)."""

    __slots__ = ("name", "value")

    def __init__(self, name, value):
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "value", value)

    def __setattr__(self, name, value):
        raise UnsafeFileError(f"the file tries to set attribute {name!r} on {self.name}")

    def __setstate__(self, state):
        raise UnsafeFileError(f"the file tries to set the state of {self.name}")

    def __call__(self, *args, **kwargs):
        raise UnsafeFileError(f"the file tries to call {self.name}, which is only a marker")

    def __reduce__(self):
        raise TypeError("not picklable")


class _Function(_Marker):
    """A stand-in for a torch function: calls our safe implementation, nothing else."""

    __slots__ = ()

    def __call__(self, *args, **kwargs):
        return self.value(*args, **kwargs)


class _Storage:
    """One storage of the archive: its key, element dtype and the bytes behind it."""

    __slots__ = ("key", "dtype", "numel", "array", "budget")

    def __setstate__(self, state):
        raise UnsafeFileError("the file tries to set the state of a storage")


class _Tensor:
    """A tensor as the pickle describes it; turned into an ndarray after unpickling."""

    __slots__ = ("array",)

    def __init__(self, array):
        self.array = array

    def __setstate__(self, state):  # torch's tensors never receive state from BUILD
        raise UnsafeFileError("the file tries to set the state of a tensor")


def _ints(name, value, length=None):
    if not isinstance(value, (tuple, list)) or len(value) > _MAX_DIMS:
        raise UnsafeFileError(f"tensor {name} must be a tuple of at most {_MAX_DIMS} ints, "
                              f"got {type(value).__name__}")
    if length is not None and len(value) != length:
        raise UnsafeFileError(f"tensor {name} has {len(value)} entries, expected {length}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, int) or v < 0 or v > 1 << 48:
            raise UnsafeFileError(f"tensor {name} must hold non-negative ints, got {v!r}")
        out.append(v)
    return tuple(out)


def _rebuild_tensor(storage, storage_offset, size, stride, *rest):
    """``torch._utils._rebuild_tensor_v2`` on our storages: a checked, copied ndarray."""
    if not isinstance(storage, _Storage):
        raise UnsafeFileError("_rebuild_tensor_v2 expects a storage from the archive, got "
                              f"{type(storage).__name__}")
    size = _ints("size", size)
    stride = _ints("stride", stride, len(size))
    (offset,) = _ints("storage_offset", (storage_offset,))
    base = storage.array  # (numel,) elements
    _budget = storage.budget
    if 0 in size:
        return _Tensor(np.empty(size, dtype=base.dtype))
    last = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= storage.numel:
        raise UnsafeFileError(
            f"a tensor of size {size}, stride {stride} and offset {offset} reaches element "
            f"{last} of storage {storage.key!r}, which holds only {storage.numel} elements"
        )
    total = int(np.prod(size, dtype=object)) * base.itemsize
    if total > _budget[0]:
        raise UnsafeFileError(
            f"a tensor of size {size} would take {total} bytes, far more than its file holds "
            "(a zero stride repeating a few elements)"
        )
    item = base.itemsize
    view = np.lib.stride_tricks.as_strided(
        base[offset:], shape=size, strides=[s * item for s in stride], writeable=False
    )
    _budget[0] -= total
    return _Tensor(np.array(view, copy=True, order="C"))


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *rest):
    if not isinstance(data, _Tensor):
        raise UnsafeFileError(f"_rebuild_parameter expects a tensor, got {type(data).__name__}")
    return data


def _rebuild_from_type(func, new_type, args, state):
    if not isinstance(func, _Function) or func.name not in _TENSOR_REBUILDS or \
            not isinstance(new_type, _Marker):
        raise UnsafeFileError("_rebuild_from_type_v2 expects a tensor rebuild function")
    if new_type.name not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
        raise UnsafeFileError(f"the file rebuilds a tensor of type {new_type.name}")
    if not isinstance(args, tuple):
        raise UnsafeFileError("_rebuild_from_type_v2 expects a tuple of arguments")
    return func(*args)


_TENSOR_REBUILDS = ("torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_tensor",
                    "torch._utils._rebuild_parameter")


def _ordered_dict(*args):
    if args and not (len(args) == 1 and isinstance(args[0], (list, tuple))):
        raise UnsafeFileError("collections.OrderedDict takes one list of pairs here")
    return OrderedDict(*args)


def _latin1(text="", encoding="latin1", *rest):  # _codecs.encode: how protocol 2 pickles bytes
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafeFileError("_codecs.encode is allowed only to turn text into latin1 bytes")
    return text.encode("latin1")


def _device(*args):
    if not all(isinstance(a, (str, int)) for a in args) or len(args) > 2:
        raise UnsafeFileError("torch.device takes a type and an optional index")
    return ":".join(str(a) for a in args)


def _torch_size(*args):
    return _ints("torch.Size", args[0] if args else ())


def _container(kind):
    def make(*args):
        if len(args) > 1 or (args and not isinstance(args[0], (list, tuple))):
            raise UnsafeFileError(f"{kind.__name__} takes one list here")
        return kind(*args)
    return make


def _globals() -> dict:
    g = {}

    def fn(name, impl):
        g[name] = _Function(name, impl)

    fn("torch._utils._rebuild_tensor_v2", _rebuild_tensor)
    fn("torch._utils._rebuild_tensor", _rebuild_tensor)
    fn("torch._utils._rebuild_parameter", _rebuild_parameter)
    fn("torch._tensor._rebuild_from_type_v2", _rebuild_from_type)
    fn("collections.OrderedDict", _ordered_dict)
    fn("_codecs.encode", _latin1)
    fn("torch.device", _device)
    fn("torch.Size", _torch_size)
    for module in ("builtins", "__builtin__"):
        fn(f"{module}.set", _container(set))
        fn(f"{module}.frozenset", _container(frozenset))
    for name, dtype in _STORAGE_DTYPES.items():
        g[f"torch.{name}"] = _Marker(f"torch.{name}", dtype)
    for name, dtype in _TORCH_DTYPES.items():
        g[f"torch.{name}"] = _Marker(f"torch.{name}", dtype)
    g["torch.Tensor"] = _Marker("torch.Tensor", None)
    g["torch.nn.parameter.Parameter"] = _Marker("torch.nn.parameter.Parameter", None)
    return g


def _safe_name(name: str) -> bool:
    if not name or name.startswith(("/", "\\")) or "\\" in name or "\x00" in name:
        return False
    if len(name) > 1 and name[1] == ":":  # a Windows drive
        return False
    return ".." not in name.split("/")


def _native(dtype_name, byteorder):
    if dtype_name == "bfloat16":
        return np.dtype("<u2" if byteorder == "little" else ">u2")
    dtype = np.dtype(dtype_name)
    return dtype.newbyteorder("<" if byteorder == "little" else ">")


class _TorchUnpickler(pickle.Unpickler):
    """Unpickles ``data.pkl`` with nothing but our stand-ins for torch's globals."""

    def __init__(self, data, archive, prefix, byteorder):
        super().__init__(io.BytesIO(data))
        self._archive = archive
        self._prefix = prefix
        self._byteorder = byteorder
        self._storages = {}
        self._allowed = _globals()
        # expanded (stride 0) tensors may outgrow their storage, but not without bound
        self._budget = [4 * os.path.getsize(archive.filename) + (64 << 20)]

    def find_class(self, module, name):
        full = f"{module}.{name}"
        if full in self._allowed:
            return self._allowed[full]
        raise UnsafeFileError(
            f"rnnkit.load refuses global {full!r}: a weights file holds tensors and plain "
            "containers only, and rnnkit never runs code from a file"
        )

    def persistent_load(self, pid):
        if (not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != "storage"
                or not isinstance(pid[1], _Marker) or pid[1].name[6:] not in _STORAGE_DTYPES):
            raise UnsafeFileError(f"rnnkit.load refuses persistent id {pid!r:.200}: only "
                                  "torch storages are allowed")
        _, marker, key, _location, numel = pid  # the location ("cpu", "cuda:0") is ignored
        if not isinstance(key, str) or not _safe_name(key) or "/" in key:
            raise UnsafeFileError(f"storage key {key!r:.100} is not a plain name")
        (numel,) = _ints("storage numel", (numel,))
        dtype_name = marker.value
        cached = self._storages.get(key)
        if cached is not None and cached.dtype == dtype_name:
            return cached
        member = f"{self._prefix}data/{key}"
        try:
            info = self._archive.getinfo(member)
        except KeyError:
            raise UnsafeFileError(f"storage {key!r} is missing from the archive "
                                  f"(no member {member!r})") from None
        raw_dtype = _native(dtype_name, self._byteorder)
        nbytes = numel * raw_dtype.itemsize
        if info.file_size < nbytes:
            raise UnsafeFileError(
                f"storage {key!r} claims {numel} elements of {dtype_name} ({nbytes} bytes) "
                f"but the archive holds only {info.file_size} bytes for it"
            )
        data = self._archive.read(member)[:nbytes]
        if len(data) < nbytes:
            raise UnsafeFileError(f"storage {key!r} is truncated: {len(data)} of {nbytes} "
                                  "bytes")
        array = np.frombuffer(data, dtype=raw_dtype, count=numel) if numel else \
            np.zeros(0, raw_dtype)
        if dtype_name == "bfloat16":  # the top 16 bits of a float32
            array = (array.astype(np.uint32) << 16).view(np.float32)
        else:
            array = array.astype(array.dtype.newbyteorder("="), copy=False)
        storage = _Storage()
        storage.key, storage.dtype, storage.numel, storage.array = key, dtype_name, numel, array
        storage.budget = self._budget  # bytes all tensors may take: shared, spent as used
        self._storages[key] = storage
        return storage


def _to_plain(obj):
    """Tensors -> ndarrays through the nesting; shared objects stay shared, depth is bounded."""
    memo = {}
    count = [0]

    def walk(value, depth):
        if depth > _MAX_DEPTH:
            raise UnsafeFileError(f"the checkpoint nests containers more than {_MAX_DEPTH} "
                                  "deep (or contains itself)")
        if isinstance(value, (str, bytes, int, float, complex, bool, type(None))):
            return value
        key = id(value)
        if key in memo:
            return memo[key]
        count[0] += 1
        if count[0] > _MAX_OBJECTS:
            raise UnsafeFileError(f"the checkpoint holds more than {_MAX_OBJECTS} objects")
        if isinstance(value, _Tensor):
            out = value.array
        elif isinstance(value, OrderedDict):
            out = OrderedDict((walk(k, depth + 1), walk(v, depth + 1))
                              for k, v in value.items())
        elif type(value) is dict:
            out = {walk(k, depth + 1): walk(v, depth + 1) for k, v in value.items()}
        elif type(value) is list:
            out = [walk(v, depth + 1) for v in value]
        elif type(value) is tuple:
            out = tuple(walk(v, depth + 1) for v in value)
        elif type(value) in (set, frozenset):
            out = type(value)(walk(v, depth + 1) for v in value)
        elif isinstance(value, _Marker) and not isinstance(value, _Function):
            out = value.value if value.name[6:] in _TORCH_DTYPES else value.name
        else:
            raise UnsafeFileError(f"the checkpoint holds an object rnnkit does not read: "
                                  f"{type(value).__name__}")
        memo[key] = out
        return out

    return walk(obj, 0)


def load(path: str):
    """:func:`rnnkit.load` of a torch zip file: an ``OrderedDict`` of ndarrays for a state
    dict, else the checkpoint's nesting of dicts, lists and tuples with ndarrays in it."""
    try:
        archive = zipfile.ZipFile(path)
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path} is not a readable zip file: {error}") from None
    with archive:
        names = archive.namelist()
        for name in names:
            if not _safe_name(name):
                raise UnsafeFileError(f"{path} has an archive member with an unsafe name "
                                      f"{name!r} (absolute or with '..')")
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise ValueError(
                f"{path} is a TorchScript archive (torch.jit.save), which holds code, not a "
                "state dict; in PyTorch, load it and re-save its weights with "
                "torch.save(model.state_dict(), path)"
            )
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise ValueError(f"{path} is a zip file but not one torch.save wrote: it has "
                             f"{len(pickles)} '<name>/data.pkl' members, expected 1")
        prefix = pickles[0][: -len("data.pkl")]
        info = archive.getinfo(pickles[0])
        if info.file_size > _MAX_PICKLE_BYTES:
            raise UnsafeFileError(f"{path}: data.pkl declares {info.file_size} bytes, more "
                                  f"than the {_MAX_PICKLE_BYTES} a state dict needs")
        data = archive.read(pickles[0])
        byteorder = "little"
        if f"{prefix}byteorder" in names:
            byteorder = archive.read(f"{prefix}byteorder")[:16].decode("ascii", "replace")
            if byteorder not in ("little", "big"):
                raise ValueError(f"{path} has an unknown byteorder {byteorder!r}")
        unpickler = _TorchUnpickler(data, archive, prefix, byteorder)
        try:
            obj = unpickler.load()
            result = _to_plain(obj)
        except RecursionError:
            raise UnsafeFileError(f"{path} nests objects too deeply to read") from None
        except UnsafeFileError:
            raise
        except (pickle.UnpicklingError, zipfile.BadZipFile, zlib.error, EOFError, TypeError,
                ValueError, KeyError, IndexError, AttributeError, MemoryError,
                OverflowError) as error:
            raise ValueError(f"{path} holds a malformed pickle: {type(error).__name__}: "
                             f"{str(error)[:200]}") from None
    if isinstance(result, dict) and all(isinstance(v, np.ndarray) for v in result.values()):
        return OrderedDict(result)
    return result
