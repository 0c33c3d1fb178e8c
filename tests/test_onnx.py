"""rnnkit.onnx: exported graphs pass onnx.checker and run in onnxruntime with rnnkit's
outputs; load_weights undoes export exactly and reads torch.onnx.export's models."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

import rnnkit
import rnnkit.onnx  # imports onnx only on first use
from rnnkit import nn
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# rnnkit.onnx's export and load_weights need onnx: tests that call them without naming
# onnx themselves take the fixture this way
needs_onnx = pytest.mark.usefixtures("onnx")

BUILDS = {
    "lstm": lambda dtype: nn.LSTM(3, 5, dtype=dtype),
    "lstm-2-bi": lambda dtype: nn.LSTM(3, 5, num_layers=2, bidirectional=True, dtype=dtype),
    "lstm-bf-nobias-3": lambda dtype: nn.LSTM(3, 4, num_layers=3, bias=False,
                                              batch_first=True, dtype=dtype),
    "gru": lambda dtype: nn.GRU(3, 5, dtype=dtype),
    "gru-2-bi-bf": lambda dtype: nn.GRU(3, 5, num_layers=2, bidirectional=True,
                                        batch_first=True, dtype=dtype),
    "gru-nobias": lambda dtype: nn.GRU(3, 5, bias=False, dtype=dtype),
    "rnn-relu-2": lambda dtype: nn.RNN(3, 5, num_layers=2, nonlinearity="relu", dtype=dtype),
    "rnn-bi": lambda dtype: nn.RNN(3, 5, bidirectional=True, dtype=dtype),
}
L, N = 6, 4


def _session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _reference(layer, x, hx, lengths):
    """rnnkit's output (padded with zeros past each length), h_n[, c_n]."""
    layer.eval()
    if lengths is None:
        out = layer(x, hx)
        output = out[0]
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=layer.batch_first,
                                      enforce_sorted=False)
        out = layer(packed, hx)
        output, _ = pad_packed_sequence(out[0], batch_first=layer.batch_first,
                                        total_length=L)
    states = list(out[1]) if layer.mode == "LSTM" else [out[1]]
    return [output] + states


@pytest.mark.parametrize("with_states", [False, True], ids=["zeros", "h0"])
@pytest.mark.parametrize("with_lengths", [False, True], ids=["full", "lengths"])
@pytest.mark.parametrize("name", list(BUILDS))
def test_export_matches_rnnkit(tmp_path, rng, name, with_states, with_lengths, onnx, ort):
    rnnkit.manual_seed(0)
    layer = BUILDS[name](np.float32)
    D = 2 if layer.bidirectional else 1
    shape = (N, L, 3) if layer.batch_first else (L, N, 3)
    x = rng.standard_normal(shape).astype(np.float32)
    path = tmp_path / f"{name}.onnx"
    rnnkit.onnx.export(layer, path, x, initial_states=with_states,
                       sequence_lens=with_lengths)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    feeds = {"input": x}
    hx = None
    if with_states:
        h_0 = rng.standard_normal((D * layer.num_layers, N, layer.hidden_size)).astype(
            np.float32)
        feeds["h_0"] = h_0
        hx = h_0
        if layer.mode == "LSTM":
            c_0 = rng.standard_normal(h_0.shape).astype(np.float32)
            feeds["c_0"] = c_0
            hx = (h_0, c_0)
    lengths = None
    if with_lengths:
        lengths = np.array([3, L, 1, 5])
        feeds["sequence_lens"] = lengths.astype(np.int32)
    got = _session(ort, path).run(None, feeds)
    expected = _reference(layer, x, hx, lengths)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e, what in zip(got, expected, ["output", "h_n", "c_n"], strict=False):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=what)


@needs_onnx
@pytest.mark.parametrize("name", ["lstm-2-bi", "gru", "rnn-bi"])
def test_export_unbatched(tmp_path, rng, name, ort):
    layer = BUILDS[name](np.float32)
    x = rng.standard_normal((L, 3)).astype(np.float32)
    rnnkit.onnx.export(layer, tmp_path / "u.onnx", x.shape, initial_states=True)
    h_0 = rng.standard_normal((layer.num_layers * (2 if layer.bidirectional else 1),
                               layer.hidden_size)).astype(np.float32)
    feeds = {"input": x, "h_0": h_0}
    hx = h_0
    if layer.mode == "LSTM":
        feeds["c_0"] = np.zeros_like(h_0)
        hx = (h_0, feeds["c_0"])
    got = _session(ort, tmp_path / "u.onnx").run(None, feeds)
    for g, e in zip(got, _reference(layer, x, hx, None), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


@needs_onnx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(BUILDS))
def test_round_trip_is_exact(tmp_path, name, dtype):
    layer = BUILDS[name](dtype)
    rnnkit.onnx.export(layer, tmp_path / "m.onnx", (2, 2, 3))
    back = rnnkit.onnx.load_weights(tmp_path / "m.onnx")
    assert type(back) is type(layer)
    config, expected = back.config(), layer.config()
    config.pop("dropout"), expected.pop("dropout")
    assert config == expected
    for key, value in layer.state_dict().items():
        assert back.state_dict()[key].dtype == value.dtype
        np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)


@needs_onnx
def test_float64_layer_exported_as_float32(tmp_path, rng, ort):
    layer = nn.GRU(3, 5, num_layers=2, dtype=np.float64)
    x = rng.standard_normal((L, N, 3))
    rnnkit.onnx.export(layer, tmp_path / "g.onnx", x, dtype=np.float32)
    got = _session(ort, tmp_path / "g.onnx").run(None, {"input": x.astype(np.float32)})
    np.testing.assert_allclose(got[0], layer(x)[0], rtol=1e-5, atol=1e-5)


@needs_onnx
def test_sequential_models(tmp_path, rng, ort):
    models = {
        "mlp": (nn.Sequential(nn.Linear(3, 8), nn.Dropout(0.5), nn.Identity(),
                              nn.Linear(8, 2, bias=False)),
                rng.standard_normal((7, 3)).astype(np.float32)),
        "mlp-3d": (nn.Sequential(nn.Linear(3, 4)),
                   rng.standard_normal((2, 5, 3)).astype(np.float32)),
        "embed": (nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 3)),
                  rng.integers(0, 10, (5, 2))),
        "embed-lstm": (nn.Sequential(nn.Embedding(10, 3), nn.LSTM(3, 4, num_layers=2)),
                       rng.integers(0, 10, (5, 2))),
    }
    for name, (model, x) in models.items():
        model.eval()
        path = tmp_path / f"{name}.onnx"
        rnnkit.onnx.export(model, path, x)
        got = _session(ort, path).run(None, {"input": x})
        expected = model(x)
        if isinstance(expected, tuple):
            expected = [expected[0], *expected[1]]
        else:
            expected = [expected]
        for g, e in zip(got, expected, strict=True):
            np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=name)


@needs_onnx
def test_export_refusals(tmp_path):
    with pytest.raises(ValueError, match="proj_size"):
        rnnkit.onnx.export(nn.LSTM(3, 5, proj_size=2), tmp_path / "p.onnx", (2, 1, 3))
    with pytest.raises(ValueError, match="only the last module"):
        rnnkit.onnx.export(nn.Sequential(nn.GRU(3, 4), nn.Linear(4, 2)), tmp_path / "s.onnx",
                           (2, 1, 3))
    with pytest.raises(ValueError, match="cannot export LSTMCell"):
        rnnkit.onnx.export(nn.LSTMCell(3, 4), tmp_path / "c.onnx", (2, 3))
    with pytest.raises(ValueError, match="input_size = 3"):
        rnnkit.onnx.export(nn.GRU(3, 4), tmp_path / "g.onnx", (2, 1, 5))
    with pytest.raises(ValueError, match="opset_version"):
        rnnkit.onnx.export(nn.GRU(3, 4), tmp_path / "g.onnx", (2, 1, 3), opset_version=9)


def _single_node_model(onnx, path, op, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op] * 2
    W = numpy_helper.from_array(np.ones((1, G, 3), np.float32), "W")
    R = numpy_helper.from_array(np.ones((1, G, 2), np.float32), "R")
    node = helper.make_node(op, ["X", "W", "R"], ["Y"], hidden_size=2, **attrs)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["L", "N", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], [W, R])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_load_weights_refusals(tmp_path, onnx):
    with pytest.raises(ValueError, match="linear_before_reset=0"):
        rnnkit.onnx.load_weights(_single_node_model(onnx, tmp_path / "a.onnx", "GRU"))
    with pytest.raises(ValueError, match="direction='reverse'"):
        rnnkit.onnx.load_weights(_single_node_model(onnx, tmp_path / "b.onnx", "LSTM",
                                                    direction="reverse"))
    with pytest.raises(ValueError, match="clip"):
        rnnkit.onnx.load_weights(_single_node_model(onnx, tmp_path / "c.onnx", "LSTM",
                                                    clip=3.0))
    rnnkit.onnx.export(nn.Sequential(nn.Linear(2, 3)), tmp_path / "d.onnx", (4, 2))
    with pytest.raises(ValueError, match="no LSTM, GRU or RNN node"):
        rnnkit.onnx.load_weights(tmp_path / "d.onnx")
    plain = rnnkit.onnx.load_weights(_single_node_model(onnx, tmp_path / "e.onnx", "RNN"))
    assert repr(plain) == "RNN(3, 2, bias=False)"


def test_two_separate_layers_load_as_a_list(tmp_path, onnx):
    model = nn.Sequential(nn.Linear(3, 3))
    rnnkit.onnx.export(model, tmp_path / "lin.onnx", (2, 3))
    # two graphs' recurrent nodes side by side: a GRU reading the input, an RNN too
    from onnx import compose

    a = tmp_path / "a.onnx"
    b = tmp_path / "b.onnx"
    rnnkit.onnx.export(nn.GRU(3, 4), a, (2, 1, 3))
    rnnkit.onnx.export(nn.RNN(3, 2), b, (2, 1, 3))
    merged = compose.merge_models(
        compose.add_prefix(onnx.load(str(a)), "a_"), compose.add_prefix(onnx.load(str(b)), "b_"),
        io_map=[])
    onnx.save(merged, str(tmp_path / "both.onnx"))
    modules = rnnkit.onnx.load_weights(tmp_path / "both.onnx")
    assert [repr(m) for m in modules] == ["GRU(3, 4)", "RNN(3, 2)"]


@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
@needs_onnx
def test_load_weights_of_torch_export(tmp_path, kind, torch):
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(3, 5, num_layers=2, bidirectional=True, batch_first=True)
    theirs.eval()
    x = torch.randn(2, 4, 3)
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated and chatty
        warnings.simplefilter("ignore")
        torch.onnx.export(theirs, (x,), str(tmp_path / "t.onnx"), dynamo=False,
                          opset_version=17)
    ours = rnnkit.onnx.load_weights(tmp_path / "t.onnx")
    assert repr(ours) == f"{kind}(3, 5, num_layers=2, batch_first=True, bidirectional=True)"
    for key, value in theirs.state_dict().items():
        np.testing.assert_array_equal(ours.state_dict()[key], value.numpy(), err_msg=key)
    with torch.no_grad():
        expected = theirs(x)[0].numpy()
    np.testing.assert_allclose(ours(x.numpy())[0], expected, rtol=1e-5, atol=1e-6)


def test_without_onnx_installed():
    code = textwrap.dedent("""
        import sys
        import rnnkit
        assert "onnx" not in sys.modules and "onnxruntime" not in sys.modules
        sys.modules["onnx"] = None  # as if not installed
        import rnnkit.onnx
        try:
            rnnkit.onnx.export(rnnkit.nn.GRU(2, 3), "x.onnx", (1, 1, 2))
        except ImportError as error:
            assert "pip install 'rnnkit[onnx]'" in str(error), error
            print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
