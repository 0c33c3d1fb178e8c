"""rnnkit.save / load / load_module: safetensors round trips, atomic writes, torch files
read without torch."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import OrderedDict

import numpy as np
import pytest

import rnnkit
from rnnkit import nn

from helpers import assert_close

LAYERS = [
    lambda dtype: nn.LSTM(3, 5, dtype=dtype),
    lambda dtype: nn.LSTM(3, 5, num_layers=2, bidirectional=True, batch_first=True,
                          dropout=0.25, dtype=dtype),
    lambda dtype: nn.LSTM(3, 5, proj_size=2, bias=False, dtype=dtype),
    lambda dtype: nn.GRU(3, 5, num_layers=3, bias=False, dtype=dtype),
    lambda dtype: nn.GRU(4, 2, bidirectional=True, batch_first=True, dtype=dtype),
    lambda dtype: nn.RNN(3, 5, nonlinearity="relu", num_layers=2, dtype=dtype),
    lambda dtype: nn.RNN(3, 5, bidirectional=True, bias=False, dtype=dtype),
    lambda dtype: nn.LSTMCell(3, 5, dtype=dtype),
    lambda dtype: nn.GRUCell(3, 5, bias=False, dtype=dtype),
    lambda dtype: nn.RNNCell(3, 5, nonlinearity="relu", dtype=dtype),
]


def _equal_dicts(a, b):
    assert list(a) == list(b)
    for k in a:
        assert a[k].dtype == np.asarray(b[k]).dtype, k
        np.testing.assert_array_equal(a[k], np.asarray(b[k]), err_msg=k)


# ---------------------------------------------------------------- safetensors


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_state_dict_round_trip(tmp_path, dtype):
    layer = nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dtype)
    path = tmp_path / "lstm.safetensors"
    rnnkit.save(layer.state_dict(), path)
    loaded = rnnkit.load(path)
    assert isinstance(loaded, OrderedDict)
    _equal_dicts(loaded, layer.state_dict())  # same order, dtype and values
    other = nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=dtype)
    other.load_state_dict(loaded)
    _equal_dicts(other.state_dict(), layer.state_dict())


def test_save_plain_dict_of_many_dtypes(tmp_path):
    d = {"f16": np.arange(3, dtype=np.float16), "i64": np.arange(4),
         "b": np.array([True, False]), "t": np.arange(6.0).reshape(2, 3).T}
    rnnkit.save(d, tmp_path / "d.safetensors")
    _equal_dicts(rnnkit.load(tmp_path / "d.safetensors"), d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("build", LAYERS)
def test_load_module_rebuilds_every_layer(tmp_path, build, dtype):
    layer = build(dtype)
    path = tmp_path / "layer.safetensors"
    rnnkit.save(layer, path)
    rebuilt = rnnkit.load_module(path)
    assert type(rebuilt) is type(layer)
    assert rebuilt.config() == layer.config()
    assert repr(rebuilt) == repr(layer)
    _equal_dicts(rebuilt.state_dict(), layer.state_dict())


def test_load_module_outputs_match(tmp_path, rng):
    layer = nn.GRU(3, 4, num_layers=2, bidirectional=True, dtype=np.float64)
    rnnkit.save(layer, tmp_path / "g.safetensors")
    rebuilt = rnnkit.load_module(tmp_path / "g.safetensors")
    x = rng.standard_normal((5, 2, 3))
    assert_close(rebuilt(x)[0], layer(x)[0], rtol=0, atol=0)


def test_load_module_sequential(tmp_path):
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2, dtype=np.float64))
    rnnkit.save(model, tmp_path / "s.safetensors")
    rebuilt = rnnkit.load_module(tmp_path / "s.safetensors")
    assert type(rebuilt) is nn.Sequential
    _equal_dicts(rebuilt.state_dict(), model.state_dict())


def test_load_module_refuses_unknown_and_plain(tmp_path):
    from safetensors.numpy import save_file

    path = tmp_path / "evil.safetensors"
    save_file({"w": np.zeros(2, np.float32)}, str(path),
              metadata={"rnnkit_class": "os.system", "config": "{}"})
    with pytest.raises(ValueError, match="cannot rebuild class 'os.system'"):
        rnnkit.load_module(path)
    save_file({"w": np.zeros(2, np.float32)}, str(path),
              metadata={"rnnkit_class": "LSTM", "config": '{"input_size": {"class": '
                        '"subprocess.Popen", "config": {}}}'})
    with pytest.raises(ValueError, match="cannot rebuild class 'subprocess.Popen'"):
        rnnkit.load_module(path)
    rnnkit.save({"w": np.zeros(2)}, path)
    with pytest.raises(ValueError, match="saved from a state dict"):
        rnnkit.load_module(path)


def test_save_refuses_non_arrays(tmp_path):
    with pytest.raises(TypeError, match="state dict"):
        rnnkit.save([np.zeros(2)], tmp_path / "x.safetensors")
    with pytest.raises(TypeError, match="numeric array"):
        rnnkit.save({"a": np.array(["x"])}, tmp_path / "x.safetensors")


# ---------------------------------------------------------------- atomic writes


def test_failed_write_leaves_old_file(tmp_path, monkeypatch):
    path = tmp_path / "w.safetensors"
    rnnkit.save({"a": np.ones(3)}, path)

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", broken)
    with pytest.raises(OSError, match="disk full"):
        rnnkit.save({"a": np.zeros(3)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(rnnkit.load(path)["a"], np.ones(3))
    assert os.listdir(tmp_path) == ["w.safetensors"]  # the temp file is gone


def test_killed_writer_leaves_a_whole_file(tmp_path):
    path = tmp_path / "big.safetensors"
    writer = textwrap.dedent(f"""
        import numpy as np, rnnkit
        i = 0
        while True:
            i += 1
            rnnkit.save({{f"w{{k}}": np.full(1 << 20, i, np.float32) for k in range(6)}},
                        {str(path)!r})
            print(i, flush=True)
    """)
    for attempt in range(4):
        proc = subprocess.Popen([sys.executable, "-c", writer], stdout=subprocess.PIPE)
        try:
            assert proc.stdout.readline()  # at least one whole save is on disk
            time.sleep(0.05 + 0.07 * attempt)  # then kill it somewhere mid-write
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stdout.close()
        loaded = rnnkit.load(path)
        assert len(loaded) == 6
        values = {float(v[0]) for v in loaded.values()}
        assert len(values) == 1  # one version, whole, never a mix
        for v in loaded.values():
            assert v.shape == (1 << 20,) and (v == v[0]).all()


# ---------------------------------------------------------------- torch files

torch_only = pytest.mark.usefixtures("torch")  # the fixture is conftest's


def _check_tree(ours, theirs, top=True):
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and list(ours) == list(theirs)
        if not top:  # a top-level dict of arrays always reads as an OrderedDict
            assert isinstance(ours, OrderedDict) == isinstance(theirs, OrderedDict)
        for k in theirs:
            _check_tree(ours[k], theirs[k], top=False)
    elif isinstance(theirs, (list, tuple)):
        assert type(ours) is type(theirs) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs, strict=True):
            _check_tree(a, b, top=False)
    elif hasattr(theirs, "numpy"):
        import torch

        expected = theirs.detach()
        if expected.dtype == torch.bfloat16:
            expected = expected.float()
        expected = expected.numpy()
        assert isinstance(ours, np.ndarray)
        assert ours.dtype == expected.dtype and ours.shape == expected.shape
        np.testing.assert_array_equal(ours, expected)
        assert ours.flags.writeable and ours.flags.c_contiguous
    else:
        assert ours == theirs


def test_torch_tensors_of_every_dtype(tmp_path, torch):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(4, 6, generator=g, dtype=torch.float64)
    obj = {
        "f32": torch.randn(3, 4, generator=g),
        "f64": x,
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 3, generator=g).bfloat16(),
        "i64": torch.arange(-3, 3),
        "i32": torch.arange(4, dtype=torch.int32),
        "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "bool": torch.tensor([[True, False]]),
        "scalar": torch.tensor(2.5),
        "empty": torch.zeros(0, 3),
        "view": x[1:3, 2:],  # a storage offset
        "transposed": x.t(),  # non-contiguous strides
        "strided": x[::2, 1::3],
        "expanded": torch.arange(3.0).reshape(3, 1).expand(3, 4),  # stride 0
        "param": torch.nn.Parameter(torch.ones(2)),
    }
    torch.save(obj, tmp_path / "t.pt")
    loaded = rnnkit.load(tmp_path / "t.pt")
    _check_tree(loaded, obj)
    assert loaded["bf16"].dtype == np.float32  # bfloat16 reads as float32, bit-exact


def test_torch_nested_checkpoint(tmp_path, torch):
    lstm = torch.nn.LSTM(3, 4, num_layers=2)
    opt = torch.optim.Adam(lstm.parameters())
    lstm(torch.randn(2, 1, 3))[0].sum().backward()
    opt.step()
    obj = {"model": lstm.state_dict(), "epoch": 3, "optimizer": opt.state_dict(),
           "history": [1.5, 0.5], "pair": (torch.ones(1), "x"), "name": "run",
           "ordered": OrderedDict([("b", torch.zeros(2)), ("a", torch.ones(2))]),
           "nothing": None, "device": torch.device("cpu"), "shape": torch.Size([2, 3])}
    torch.save(obj, tmp_path / "ckpt.pth")
    loaded = rnnkit.load(tmp_path / "ckpt.pth")
    assert loaded["device"] == "cpu" and loaded["shape"] == (2, 3)
    del obj["device"], obj["shape"], loaded["device"], loaded["shape"]
    _check_tree(loaded, obj)
    assert isinstance(loaded["model"], OrderedDict)


def test_torch_tensor_from_cuda_location(tmp_path, torch):
    # a file saved on a GPU differs only in the location tag of each storage
    import zipfile

    torch.save({"w": torch.arange(6.0).reshape(2, 3)}, tmp_path / "cpu.pt")
    with zipfile.ZipFile(tmp_path / "cpu.pt") as src, \
            zipfile.ZipFile(tmp_path / "cuda.pt", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("data.pkl"):
                assert b"X\x03\x00\x00\x00cpu" in data
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            dst.writestr(info, data)
    np.testing.assert_array_equal(rnnkit.load(tmp_path / "cuda.pt")["w"],
                                  np.arange(6.0, dtype=np.float32).reshape(2, 3))


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_torch_state_dict_into_rnnkit(tmp_path, torch, kind, rng):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(3, 5, num_layers=2, bidirectional=True)
    torch.save(theirs.state_dict(), tmp_path / f"{kind}.pt")
    ours = getattr(nn, kind)(3, 5, num_layers=2, bidirectional=True)
    ours.load_state_dict(rnnkit.load(tmp_path / f"{kind}.pt"))
    x = rng.standard_normal((6, 2, 3)).astype(np.float32)
    with torch.no_grad():
        expected = theirs(torch.from_numpy(x))[0].numpy()
    assert_close(ours(x)[0], expected, rtol=1e-5, atol=1e-6)


def test_torch_legacy_format_refused(tmp_path, torch):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match="legacy .*torch.save"):
        rnnkit.load(tmp_path / "old.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit is deprecated
def test_torchscript_refused(tmp_path, torch):
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 3)), tmp_path / "ts.pt")
    with pytest.raises(ValueError, match=r"TorchScript.*state_dict\(\)"):
        rnnkit.load(tmp_path / "ts.pt")


def test_load_module_refuses_torch_file(tmp_path, torch):
    torch.save(torch.nn.GRU(2, 3).state_dict(), tmp_path / "g.pt")
    with pytest.raises(ValueError, match="load_state_dict"):
        rnnkit.load_module(tmp_path / "g.pt")


def test_not_a_weights_file(tmp_path):
    (tmp_path / "x.txt").write_text("hello world, not weights")
    with pytest.raises(ValueError, match="neither a safetensors file nor a PyTorch"):
        rnnkit.load(tmp_path / "x.txt")


def test_load_pt_where_torch_cannot_be_imported(tmp_path, torch):
    theirs = torch.nn.LSTM(2, 3)
    torch.save({"model": theirs.state_dict(), "epoch": 1}, tmp_path / "m.pt")
    np.save(tmp_path / "w.npy", theirs.weight_hh_l0.detach().numpy())
    code = textwrap.dedent(f"""
        import sys
        sys.modules["torch"] = None  # any import of torch now fails
        import numpy as np, rnnkit
        ckpt = rnnkit.load({str(tmp_path / "m.pt")!r})
        lstm = rnnkit.nn.LSTM(2, 3)
        lstm.load_state_dict(ckpt["model"])
        assert ckpt["epoch"] == 1
        assert np.array_equal(lstm.weight_hh_l0, np.load({str(tmp_path / "w.npy")!r}))
        assert sys.modules["torch"] is None
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_load_module_of_a_model(tmp_path):
    from rnnkit import models

    model = models.SequenceClassifier(3, 4, model="gru", hidden_size=5, num_layers=2)
    rnnkit.save(model, tmp_path / "model.safetensors")
    rebuilt = rnnkit.load_module(tmp_path / "model.safetensors")
    assert type(rebuilt) is models.SequenceClassifier
    assert rebuilt.config() == model.config()
    _equal_dicts(rebuilt.state_dict(), model.state_dict())


def test_safetensors_header_length_starting_with_pickle_magic(tmp_path):
    """A safetensors header length whose low byte is 0x80 (pickle's magic) still loads."""
    from safetensors.numpy import save_file

    path = tmp_path / "w.safetensors"
    for pad in range(0, 300):
        save_file({"w": np.arange(3.0)}, str(path), metadata={"pad": "x" * pad})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        raise AssertionError("no padding gave a header length starting with 0x80")
    np.testing.assert_array_equal(rnnkit.load(path)["w"], np.arange(3.0))
    module_path = tmp_path / "m.safetensors"
    lstm = rnnkit.nn.LSTM(2, 3)
    for pad in range(0, 300):
        rnnkit.save(lstm, module_path)
        data = module_path.read_bytes()
        if data[0] == 0x80:
            break
        lstm = rnnkit.nn.LSTM(2, 3 + (pad % 5), num_layers=1 + pad // 5)
    else:
        raise AssertionError("no module gave a header length starting with 0x80")
    rebuilt = rnnkit.load_module(module_path)
    assert repr(rebuilt) == repr(lstm)
