"""Malicious .pt files: rnnkit.load refuses each with a clear error, and nothing runs.

Every payload tries to create the file ``PWNED`` (or set an attribute on a module); the
sentinel fixture checks afterwards that it never appeared.
"""

from __future__ import annotations

import pickle
import sys
import tracemalloc
import zipfile

import numpy as np
import pytest

import rnnkit
from rnnkit import UnsafeFileError


def _lit(value) -> bytes:
    """``value`` as the opcodes that push it (protocol 2, without header and STOP)."""
    return pickle.dumps(value, protocol=2)[2:-1]


def _call(module: str, name: str, *args: bytes) -> bytes:
    """Opcodes that push ``module.name(*args)``; each arg is already opcodes."""
    return b"c" + f"{module}\n{name}\n".encode() + b"(" + b"".join(args) + b"tR"


def _pickle(body: bytes) -> bytes:
    return b"\x80\x02" + body + b"."


def _storage(dtype="FloatStorage", key="0", numel=4, location="cpu") -> bytes:
    pid = b"(" + _lit("storage") + b"ctorch\n" + dtype.encode() + b"\n" + _lit(key) + \
        _lit(location) + _lit(numel) + b"t"
    return pid + b"Q"  # BINPERSID


def _tensor(size=(4,), stride=(1,), offset=0, **storage) -> bytes:
    return _call("torch._utils", "_rebuild_tensor_v2", _storage(**storage), _lit(offset),
                 _lit(tuple(size)), _lit(tuple(stride)), _lit(False),
                 _call("collections", "OrderedDict"))


def _archive(path, data_pkl: bytes, storages=None, extra=None, prefix="archive"):
    storages = {"0": np.arange(4, dtype=np.float32).tobytes()} if storages is None else \
        storages
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{prefix}/data.pkl", data_pkl)
        z.writestr(f"{prefix}/byteorder", "little")
        for key, raw in storages.items():
            z.writestr(f"{prefix}/data/{key}", raw)
        for name, raw in (extra or {}).items():
            z.writestr(name, raw)
    return path


@pytest.fixture
def sentinel(tmp_path, monkeypatch):
    target = tmp_path / "PWNED"
    monkeypatch.delattr(rnnkit, "PWNED", raising=False)
    yield str(target)
    assert not target.exists(), "a payload ran: the sentinel file exists"
    assert not hasattr(rnnkit, "PWNED"), "a payload ran: rnnkit.PWNED was set"


def _refused(path, match):
    with pytest.raises(UnsafeFileError, match=match):
        rnnkit.load(path)


def _peak_bytes(call) -> int:
    """Peak bytes allocated (Python objects and NumPy buffers, as tracemalloc sees them)
    while ``call()`` runs: a bound on memory that, unlike a clock, a loaded machine does not
    move."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        call()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def _calls(call) -> tuple[int, object]:
    """``call()``'s result, and the function calls (Python and C) it made: a count of the
    work done, the same on an idle machine and a loaded one."""
    count = 0

    def profile(frame, event, arg):
        nonlocal count
        count += event in ("call", "c_call")

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(previous)
    return count, result


SMALL = 8 << 20  # bytes: what refusing a file may take, whatever sizes the file declares


def _dict_with(value: bytes) -> bytes:
    """{"w": <a real tensor>, "x": value}: the payload hides beside real weights."""
    return _pickle(b"}(" + _lit("w") + _tensor() + _lit("x") + value + b"u")


def test_sanity_crafted_archive_loads(tmp_path):
    loaded = rnnkit.load(_archive(tmp_path / "ok.pt", _dict_with(_lit(3))))
    np.testing.assert_array_equal(loaded["w"], np.arange(4, dtype=np.float32))
    assert loaded["x"] == 3


GLOBAL_PAYLOADS = {
    "os.system": lambda s: _call("os", "system", _lit(f"touch {s}")),
    "posix.system": lambda s: _call("posix", "system", _lit(f"touch {s}")),
    "builtins.exec": lambda s: _call("builtins", "exec", _lit(f"open({s!r}, 'w')")),
    "builtins.eval": lambda s: _call("builtins", "eval", _lit(f"open({s!r}, 'w')")),
    "__builtin__.eval": lambda s: _call("__builtin__", "eval", _lit(f"open({s!r}, 'w')")),
    "subprocess.Popen": lambda s: _call("subprocess", "Popen", _lit(["touch", s])),
    "importlib.import_module": lambda s: _call("importlib", "import_module",
                                               _lit("antigravity")),
    "builtins.__import__": lambda s: _call("builtins", "__import__", _lit("os")),
    "builtins.getattr": lambda s: _call(
        "builtins", "getattr", _call("builtins", "__import__", _lit("os")), _lit("system")),
    "builtins.open": lambda s: _call("builtins", "open", _lit(s), _lit("w")),
    "numpy.load": lambda s: _call("numpy", "load", _lit(s), _lit(True)),
    "torch.load": lambda s: _call("torch", "load", _lit(s)),
    "torch._utils._rebuild_tensor_v2.__globals__": lambda s: b"c" + (
        b"torch._utils\n_rebuild_tensor_v2.__globals__\n"),
    "collections.OrderedDict.__init__": lambda s: b"ccollections\nOrderedDict.__init__\n",
    "rnnkit.io._atomic.write_atomically": lambda s: _call(
        "rnnkit.io._atomic", "write_atomically", _lit(s), _lit(b"x")),
    "copyreg._reconstructor": lambda s: _call("copyreg", "_reconstructor",
                                              b"cbuiltins\nobject\n", b"N", b"N"),
    "numpy.core.multiarray._reconstruct": lambda s: _call(
        "numpy.core.multiarray", "_reconstruct", _lit(0), _lit((0,)), _lit(b"b")),
    "torch._utils._rebuild_device_tensor_from_numpy": lambda s: _call(
        "torch._utils", "_rebuild_device_tensor_from_numpy", _lit(0)),
}


@pytest.mark.parametrize("name", list(GLOBAL_PAYLOADS))
def test_forbidden_globals(tmp_path, sentinel, name):
    path = _archive(tmp_path / "evil.pt", _dict_with(GLOBAL_PAYLOADS[name](sentinel)))
    with pytest.raises(UnsafeFileError, match=f"refuses global '{name}'"):
        rnnkit.load(path)


def test_stack_global_and_nested_reduce_gadget(tmp_path, sentinel):
    # protocol 4 STACK_GLOBAL, inside the args of an allowed call: still refused
    inner = _lit("os") + _lit("system") + b"\x93" + b"(" + _lit(f"touch {sentinel}") + b"tR"
    body = _call("collections", "OrderedDict", b"]" + b"(" + _lit(("k", 1)) + inner + b"e")
    _refused(_archive(tmp_path / "evil.pt", _pickle(body)), "refuses global 'os.system'")


def test_torch_pickle_of_a_reduce_payload(tmp_path, sentinel):
    class Payload:
        def __reduce__(self):
            import os

            return os.system, (f"touch {sentinel}",)

    data = pickle.dumps({"w": 1, "evil": Payload()}, protocol=2)
    _refused(_archive(tmp_path / "evil.pt", data, storages={}),
             r"refuses global '(os|posix)\.system'")


def test_allowed_globals_cannot_be_turned(tmp_path, sentinel):
    # an allowed function fed to _rebuild_from_type_v2 as the rebuild function
    body = _call("torch._tensor", "_rebuild_from_type_v2",
                 b"ccollections\nOrderedDict\n", b"ctorch\nTensor\n", _lit(()), b"}")
    _refused(_archive(tmp_path / "a.pt", _pickle(body)), "expects a tensor rebuild function")
    # calling a marker
    _refused(_archive(tmp_path / "b.pt", _pickle(_call("torch", "FloatStorage", _lit(4)))),
             "only a marker")
    # BUILD (setstate) on a stand-in, to poison it for later loads
    body = b"ctorch._utils\n_rebuild_tensor_v2\n" + b"}" + _lit("__defaults__") + \
        _lit((1,)) + b"sb"
    _refused(_archive(tmp_path / "c.pt", _pickle(body)), "set the state")
    body = b"ctorch._utils\n_rebuild_tensor_v2\n" + b"N}" + _lit("value") + _lit(None) + \
        b"s\x86b"
    _refused(_archive(tmp_path / "d.pt", _pickle(body)), "set the state")
    # ... and later loads are unaffected
    assert rnnkit.load(_archive(tmp_path / "ok.pt", _dict_with(_lit(1))))["x"] == 1
    # a tensor rebuilt from something that is not a storage
    body = _call("torch._utils", "_rebuild_tensor_v2", _lit("0"), _lit(0), _lit((1,)),
                 _lit((1,)))
    _refused(_archive(tmp_path / "e.pt", _pickle(body)), "expects a storage")
    # _codecs.encode used for anything but latin1 text
    body = _call("_codecs", "encode", _lit("x"), _lit("rot13"))
    _refused(_archive(tmp_path / "f.pt", _pickle(body)), "latin1")


def test_persistent_ids(tmp_path, sentinel):
    body = _lit(("evil", "os.system")) + b"Q"
    _refused(_archive(tmp_path / "a.pt", _pickle(body)), "persistent id")
    body = _pickle(_tensor(key="../../etc/passwd"))
    _refused(_archive(tmp_path / "b.pt", body), "not a plain name")
    _refused(_archive(tmp_path / "c.pt", _pickle(_tensor(key="7"))), "missing from the archive")


@pytest.mark.parametrize("member", ["../evil", "/etc/passwd", "archive/../../x",
                                    "archive\\..\\x", "C:/x"])
def test_path_traversal_member_names(tmp_path, member):
    path = _archive(tmp_path / "evil.pt", _dict_with(_lit(1)), extra={member: b"x"})
    _refused(path, "unsafe name")


def test_storage_claims_more_bytes_than_present(tmp_path):
    body = _pickle(_tensor(size=(4,), numel=1000))
    _refused(_archive(tmp_path / "a.pt", body), "claims 1000 elements")
    body = _pickle(_tensor(size=(5,), numel=4))  # the tensor reaches past its storage
    _refused(_archive(tmp_path / "b.pt", body), "holds only 4 elements")
    body = _pickle(_tensor(size=(2, 2), stride=(3, 1), numel=4))
    _refused(_archive(tmp_path / "c.pt", body), "reaches element 4")
    body = _pickle(_tensor(size=(2,), offset=3, numel=4))
    _refused(_archive(tmp_path / "d.pt", body), "offset 3")
    body = _pickle(_tensor(size=(2,), stride=(-1,)))
    _refused(_archive(tmp_path / "e.pt", body), "non-negative")


def test_huge_declared_sizes(tmp_path):
    # each refusal allocates nothing in proportion to the sizes the file declares
    body = _pickle(_tensor(size=(10**13,), numel=10**13))
    path = _archive(tmp_path / "a.pt", body)
    assert _peak_bytes(lambda: _refused(path, "claims")) < SMALL
    body = _pickle(_tensor(size=(1 << 40,), stride=(0,)))  # zero stride: "fits" in 1 element
    path = _archive(tmp_path / "b.pt", body)
    assert _peak_bytes(lambda: _refused(path, "would take")) < SMALL
    body = _pickle(_tensor(size=(1 << 60,), stride=(0,)))
    path = _archive(tmp_path / "c.pt", body)
    assert _peak_bytes(lambda: _refused(path, "non-negative ints")) < SMALL
    body = _pickle(_tensor(size=(1,) * 100, stride=(1,) * 100))
    path = _archive(tmp_path / "d.pt", body)
    assert _peak_bytes(lambda: _refused(path, "at most 64")) < SMALL
    # a data.pkl that inflates past any state dict's size (66 MiB from 66 KiB of zip) is
    # refused before it is read: reading it would take more than 66 MiB
    path = tmp_path / "e.pt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", b"\x80\x02" + b"N0" * (33 << 20) + b"N.")
    assert _peak_bytes(lambda: _refused(path, "declares")) < SMALL


def test_recursion_bombs(tmp_path):
    deep = _pickle(b"(" * 100_000 + b"l" * 100_000)  # lists nested 100000 deep
    _refused(_archive(tmp_path / "a.pt", deep), "nests containers more than")
    # a list that contains itself
    body = _pickle(b"]q\x00h\x00a")
    _refused(_archive(tmp_path / "b.pt", body), "contains itself")
    # a dict whose value is a deep tuple
    body = _pickle(b"}" + _lit("k") + b")" + b"\x85" * 5000 + b"s")
    _refused(_archive(tmp_path / "c.pt", body), "nests")


def _reference_bomb(levels: int) -> bytes:
    """``levels`` lists of ten references to the list below: 10**levels paths, ``levels + 1``
    objects."""
    body = b"]q\x00"  # level 0, memo 0
    for level in range(1, levels + 1):
        body += b"(" + b"h" + bytes([level - 1]) * 1 + b"h" + bytes([level - 1]) + \
            (b"h" + bytes([level - 1])) * 8 + b"lq" + bytes([level])
    return _pickle(body)


def test_reference_bomb_is_linear(tmp_path):
    # 40 levels: 10**40 paths, 40 objects; a reader that followed paths would never finish
    paths = {n: _archive(tmp_path / f"bomb{n}.pt", _reference_bomb(n)) for n in (10, 20, 40)}
    rnnkit.load(paths[10])  # warm up: lazy imports and caches are not the bomb's work
    work = {}
    for n, path in paths.items():
        work[n], loaded = _calls(lambda path=path: rnnkit.load(path))
        assert len(loaded) == 10 and loaded[0] is loaded[9]
    # the work grows linearly with the levels: 20 more cost twice what 10 more did (a
    # quadratic reader's would cost 4 times as much)
    assert work[20] > work[10]
    assert work[40] - work[20] <= 2.5 * (work[20] - work[10]), work


def test_malformed_pickles_are_clear_errors(tmp_path):
    for i, body in enumerate([b"\x80\x02", b"\x80\x02(t", b"garbage", b"\x80\x02\xff."]):
        with pytest.raises(ValueError, match="malformed pickle"):
            rnnkit.load(_archive(tmp_path / f"m{i}.pt", body))


def test_big_endian_archive(tmp_path):
    data = np.arange(4, dtype=">f4").tobytes()
    path = tmp_path / "be.pt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", _pickle(_tensor()))
        z.writestr("archive/byteorder", "big")
        z.writestr("archive/data/0", data)
    np.testing.assert_array_equal(rnnkit.load(path), np.arange(4, dtype=np.float32))


def test_nothing_imported(tmp_path):
    before = set(sys.modules)
    for name in GLOBAL_PAYLOADS:
        path = _archive(tmp_path / "x.pt", _dict_with(GLOBAL_PAYLOADS[name]("/nonexistent")))
        with pytest.raises(UnsafeFileError):
            rnnkit.load(path)
    assert "antigravity" not in sys.modules
    assert not {m for m in set(sys.modules) - before if m.startswith(("subprocess", "torch"))}
