"""rnnkit.onnx and the cell options (API.md "Cell options (beyond torch)"): an LSTM's
peepholes export as the ONNX LSTM operator's ``P`` (rows i|o|f) and load back; recurrent
dropout exports as the eval-mode layer it is; layer norm and zoneout are refused, naming
the option, wherever the layer sits in the model."""

from __future__ import annotations

import numpy as np
import pytest

import rnnkit
import rnnkit.onnx
from rnnkit import nn
from rnnkit.models import SequenceClassifier
from rnnkit.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

needs_onnx = pytest.mark.usefixtures("onnx")

L, N, H_IN = 6, 4, 3

BUILDS = {
    "lstm-ph": lambda dtype: nn.LSTM(H_IN, 5, peepholes=True, dtype=dtype),
    "lstm-ph-2-bi": lambda dtype: nn.LSTM(H_IN, 5, num_layers=2, bidirectional=True,
                                          peepholes=True, dtype=dtype),
    "lstm-ph-bf-nobias": lambda dtype: nn.LSTM(H_IN, 4, num_layers=2, bias=False,
                                               batch_first=True, peepholes=True, dtype=dtype),
    "lstm-ph-rd-2-bi": lambda dtype: nn.LSTM(H_IN, 5, num_layers=2, bidirectional=True,
                                             peepholes=True, recurrent_dropout=0.3,
                                             dtype=dtype),
    "lstm-rd": lambda dtype: nn.LSTM(H_IN, 5, num_layers=2, recurrent_dropout=0.5,
                                     dtype=dtype),
    "gru-rd-bi": lambda dtype: nn.GRU(H_IN, 5, num_layers=2, bidirectional=True,
                                      recurrent_dropout=0.25, dtype=dtype),
    "rnn-rd": lambda dtype: nn.RNN(H_IN, 5, nonlinearity="relu", recurrent_dropout=0.4,
                                   dtype=dtype),
}


def _session(ort, path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _expected(layer, x, hx=None, lengths=None):
    """rnnkit's eval-mode output (zeros past each length), h_n[, c_n]."""
    layer.eval()
    if lengths is None:
        output, state = layer(x, hx)
    else:
        packed = pack_padded_sequence(x, lengths, batch_first=layer.batch_first,
                                      enforce_sorted=False)
        packed_out, state = layer(packed, hx)
        output, _ = pad_packed_sequence(packed_out, batch_first=layer.batch_first,
                                        total_length=L)
    return [output, *state] if layer.mode == "LSTM" else [output, state]


def _input(layer, rng, dtype=np.float32):
    shape = (N, L, H_IN) if layer.batch_first else (L, N, H_IN)
    return rng.standard_normal(shape).astype(dtype)


# -------------------------------------------------------------- export: onnxruntime parity


@pytest.mark.parametrize("extras", ["plain", "states+lengths"])
@pytest.mark.parametrize("name", list(BUILDS))
def test_export_matches_rnnkit_in_onnxruntime(tmp_path, rng, name, extras, onnx, ort):
    rnnkit.manual_seed(1)
    layer = BUILDS[name](np.float32)
    layer.train()  # the export is of eval mode whatever the layer's mode
    x = _input(layer, rng)
    path = tmp_path / f"{name}.onnx"
    with_extras = extras != "plain"
    rnnkit.onnx.export(layer, path, x, initial_states=with_extras, sequence_lens=with_extras)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    feeds, hx, lengths = {"input": x}, None, None
    if with_extras:
        S = layer.num_layers * (2 if layer.bidirectional else 1)
        h_0 = rng.standard_normal((S, N, layer.hidden_size)).astype(np.float32)
        feeds["h_0"], hx = h_0, h_0
        if layer.mode == "LSTM":
            feeds["c_0"] = rng.standard_normal(h_0.shape).astype(np.float32)
            hx = (h_0, feeds["c_0"])
        lengths = np.array([3, L, 1, 5])
        feeds["sequence_lens"] = lengths.astype(np.int32)
    got = _session(ort, path).run(None, feeds)
    expected = _expected(layer, x, hx, lengths)
    assert [g.shape for g in got] == [e.shape for e in expected]
    for g, e, what in zip(got, expected, ["output", "h_n", "c_n"], strict=False):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5, err_msg=what)


def test_peepholes_are_the_P_input_in_onnx_order(tmp_path, onnx):
    from onnx import numpy_helper

    layer = BUILDS["lstm-ph-2-bi"](np.float32)
    H = layer.hidden_size
    rnnkit.onnx.export(layer, tmp_path / "p.onnx", (L, N, H_IN))
    model = onnx.load(str(tmp_path / "p.onnx"))
    stored = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    nodes = [node for node in model.graph.node if node.op_type == "LSTM"]
    assert len(nodes) == 2
    for k, node in enumerate(nodes):
        assert len(node.input) == 8 and node.input[7], "P is the LSTM operator's 8th input"
        P = stored[node.input[7]]
        assert P.shape == (2, 3 * H)
        for d, suffix in enumerate([f"_l{k}", f"_l{k}_reverse"]):
            p_i, p_f, p_o = np.split(np.asarray(getattr(layer, "weight_ph" + suffix)), 3)
            np.testing.assert_array_equal(P[d], np.concatenate([p_i, p_o, p_f]))


def test_plain_lstm_and_recurrent_dropout_write_no_P(tmp_path, onnx):
    for name, layer in [("plain", nn.LSTM(H_IN, 5)), ("rd", BUILDS["lstm-rd"](np.float32))]:
        rnnkit.onnx.export(layer, tmp_path / f"{name}.onnx", (L, N, H_IN))
        nodes = [n for n in onnx.load(str(tmp_path / f"{name}.onnx")).graph.node
                 if n.op_type == "LSTM"]
        assert nodes and all(len(n.input) < 8 for n in nodes), name


def test_peepholes_change_the_onnx_output(tmp_path, rng, onnx, ort):
    """The parity above is not vacuous: the same weights without P give other outputs."""
    layer = BUILDS["lstm-ph"](np.float32)
    x = _input(layer, rng)
    rnnkit.onnx.export(layer, tmp_path / "p.onnx", x)
    with_p = _session(ort, tmp_path / "p.onnx").run(None, {"input": x})[0]
    plain = nn.LSTM(H_IN, 5)
    plain.load_state_dict({k: v for k, v in layer.state_dict().items()
                           if not k.startswith("weight_ph")})
    rnnkit.onnx.export(plain, tmp_path / "plain.onnx", x)
    without = _session(ort, tmp_path / "plain.onnx").run(None, {"input": x})[0]
    assert np.abs(with_p - without).max() > 1e-3
    np.testing.assert_allclose(without, _expected(plain, x)[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["lstm-ph-2-bi", "lstm-ph-bf-nobias", "lstm-ph-rd-2-bi"])
def test_float64_export_matches_onnx_reference(tmp_path, rng, name, onnx):
    """onnxruntime runs the LSTM in float32 only: a float64 graph is checked with onnx's own
    reference evaluator, which implements P."""
    from onnx.reference import ReferenceEvaluator

    layer = BUILDS[name](np.float64)
    x = _input(layer, rng, np.float64)
    rnnkit.onnx.export(layer, tmp_path / "d.onnx", x)
    model = onnx.load(str(tmp_path / "d.onnx"))
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.DOUBLE
    got = ReferenceEvaluator(model).run(None, {"input": x})
    for g, e in zip(got, _expected(layer, x), strict=True):
        assert g.dtype == np.float64
        np.testing.assert_allclose(g, e, rtol=1e-10, atol=1e-12)


def test_float64_layer_exported_as_float32_runs_in_onnxruntime(tmp_path, rng, onnx, ort):
    layer = BUILDS["lstm-ph-rd-2-bi"](np.float64)
    x = _input(layer, rng, np.float64)
    rnnkit.onnx.export(layer, tmp_path / "f.onnx", x, dtype=np.float32)
    got = _session(ort, tmp_path / "f.onnx").run(None, {"input": x.astype(np.float32)})
    for g, e in zip(got, _expected(layer, x), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_sequential_ending_in_a_peephole_lstm(tmp_path, rng, onnx, ort):
    model = nn.Sequential(nn.Embedding(10, H_IN),
                          nn.LSTM(H_IN, 4, num_layers=2, peepholes=True, recurrent_dropout=0.2))
    model.eval()
    x = rng.integers(0, 10, (L, N))
    rnnkit.onnx.export(model, tmp_path / "s.onnx", x)
    got = _session(ort, tmp_path / "s.onnx").run(None, {"input": x})
    output, (h_n, c_n) = model(x)
    for g, e in zip(got, [output, h_n, c_n], strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


# -------------------------------------------------------------- round trip through load_weights


@needs_onnx
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["lstm-ph", "lstm-ph-2-bi", "lstm-ph-bf-nobias"])
def test_round_trip_keeps_peepholes(tmp_path, rng, name, dtype):
    layer = BUILDS[name](dtype)
    rnnkit.onnx.export(layer, tmp_path / "m.onnx", (2, 2, H_IN))
    back = rnnkit.onnx.load_weights(tmp_path / "m.onnx")
    assert back.peepholes is True
    config, expected = back.config(), layer.config()
    config.pop("dropout"), expected.pop("dropout")
    assert config == expected
    state = back.state_dict()
    assert list(state) == list(layer.state_dict())
    for key, value in layer.state_dict().items():
        assert state[key].dtype == value.dtype
        np.testing.assert_array_equal(state[key], value, err_msg=key)
    x = _input(layer, rng, dtype)
    for g, e in zip(_expected(back, x), _expected(layer, x), strict=True):
        np.testing.assert_array_equal(g, e)


@needs_onnx
def test_round_trip_of_recurrent_dropout_is_the_eval_layer(tmp_path, rng):
    """ONNX holds no recurrent dropout: the layer loads without it, computing the same."""
    layer = BUILDS["lstm-ph-rd-2-bi"](np.float32)
    rnnkit.onnx.export(layer, tmp_path / "m.onnx", (2, 2, H_IN))
    back = rnnkit.onnx.load_weights(tmp_path / "m.onnx")
    assert (back.peepholes, back.recurrent_dropout) == (True, 0.0)
    x = _input(layer, rng)
    for g, e in zip(_expected(back, x), _expected(layer, x), strict=True):
        np.testing.assert_array_equal(g, e)


def _drop_P(onnx, path, layers):
    """Remove the P input of the LSTM nodes numbered ``layers`` (graph order)."""
    model = onnx.load(str(path))
    nodes = [n for n in model.graph.node if n.op_type == "LSTM"]
    for k in layers:
        del nodes[k].input[7:]
    onnx.save(model, str(path))


def test_stack_with_P_on_some_nodes_loads_zero_peepholes_for_the_others(tmp_path, rng, onnx,
                                                                         ort):
    layer = BUILDS["lstm-ph-2-bi"](np.float32)
    path = tmp_path / "m.onnx"
    rnnkit.onnx.export(layer, path, (L, N, H_IN))
    _drop_P(onnx, path, [1])
    back = rnnkit.onnx.load_weights(path)
    assert back.num_layers == 2 and back.peepholes
    np.testing.assert_array_equal(back.weight_ph_l1, 0)
    np.testing.assert_array_equal(back.weight_ph_l1_reverse, 0)
    np.testing.assert_array_equal(back.weight_ph_l0, layer.weight_ph_l0)
    x = _input(layer, rng)
    got = _session(ort, path).run(None, {"input": x})
    for g, e in zip(got, _expected(back, x), strict=True):
        np.testing.assert_allclose(g, e, rtol=1e-5, atol=1e-5)


def test_all_zero_P_loads_as_a_plain_lstm(tmp_path, onnx):
    from onnx import numpy_helper

    layer = nn.LSTM(H_IN, 5, num_layers=2, peepholes=True)
    for k in range(2):
        getattr(layer, f"weight_ph_l{k}")[...] = 0
    rnnkit.onnx.export(layer, tmp_path / "z.onnx", (2, 2, H_IN))
    model = onnx.load(str(tmp_path / "z.onnx"))
    P = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name.startswith("P_")]
    assert len(P) == 2 and not any(np.any(p) for p in P)
    back = rnnkit.onnx.load_weights(tmp_path / "z.onnx")
    assert repr(back) == "LSTM(3, 5, num_layers=2)"
    assert not any(k.startswith("weight_ph") for k in back.state_dict())


# -------------------------------------------------------------- refusals


@needs_onnx
@pytest.mark.parametrize("kind", ["LSTM", "GRU", "RNN"])
def test_layer_norm_and_zoneout_are_refused_naming_the_option(tmp_path, kind):
    cls = getattr(nn, kind)
    with pytest.raises(ValueError, match=rf"cannot export layer_norm=True to ONNX: ONNX's "
                                         rf"{kind} operator has no layer normalization"):
        rnnkit.onnx.export(cls(H_IN, 4, layer_norm=True), tmp_path / "a.onnx", (2, 1, H_IN))
    with pytest.raises(ValueError, match=rf"cannot export zoneout=0.25 to ONNX: ONNX's {kind} "
                                         "operator has no zoneout"):
        rnnkit.onnx.export(cls(H_IN, 4, zoneout=0.25), tmp_path / "b.onnx", (2, 1, H_IN))
    assert not (tmp_path / "a.onnx").exists() and not (tmp_path / "b.onnx").exists()


@needs_onnx
def test_refusal_names_the_option_even_with_exportable_ones(tmp_path):
    both = nn.LSTM(H_IN, 4, num_layers=2, peepholes=True, recurrent_dropout=0.1,
                   layer_norm=True)
    with pytest.raises(ValueError, match="layer_norm=True"):
        rnnkit.onnx.export(both, tmp_path / "a.onnx", (2, 1, H_IN))
    zoned = nn.GRU(H_IN, 4, recurrent_dropout=0.1, zoneout=0.5)
    with pytest.raises(ValueError, match="zoneout=0.5"):
        rnnkit.onnx.export(zoned, tmp_path / "b.onnx", (2, 1, H_IN))


@needs_onnx
def test_refusal_inside_models(tmp_path):
    seq = nn.Sequential(nn.Embedding(10, H_IN), nn.LSTM(H_IN, 4, layer_norm=True))
    with pytest.raises(ValueError, match=r"cannot export layer_norm=True to ONNX \(module '1' "
                                         r"of the Sequential\)"):
        rnnkit.onnx.export(seq, tmp_path / "s.onnx", (L, N))
    classifier = SequenceClassifier(H_IN, 2, model="gru", hidden_size=4)
    classifier.rnn = nn.GRU(H_IN, 4, batch_first=True, zoneout=0.1)
    with pytest.raises(ValueError, match=r"cannot export zoneout=0.1 to ONNX \(module 'rnn' of "
                                         r"the SequenceClassifier\)"):
        rnnkit.onnx.export(classifier, tmp_path / "c.onnx", (N, L, H_IN))
    # without the option the same model is refused for what it is, not for an option
    classifier.rnn = nn.GRU(H_IN, 4, batch_first=True)
    with pytest.raises(ValueError, match="cannot export SequenceClassifier"):
        rnnkit.onnx.export(classifier, tmp_path / "c.onnx", (N, L, H_IN))


def _lstm_node_model(onnx, path, extra_inputs: dict, n_inputs: int | None = None):
    """A one-node LSTM (hidden 2, input 3) reading W, R and the given stored inputs by
    position (index -> array)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    stored = {1: rng.standard_normal((1, 8, 3)).astype(np.float32),
              2: rng.standard_normal((1, 8, 2)).astype(np.float32), **extra_inputs}
    count = n_inputs or max(stored) + 1
    names = ["X"] + [f"in{k}" if k in stored else "" for k in range(1, count)]
    node = helper.make_node("LSTM", names, ["Y"], hidden_size=2)
    graph = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["L", "N", 3])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(a, f"in{k}") for k, a in stored.items()])
    onnx.save(helper.make_model(graph), str(path))
    return path


def test_imported_P_of_a_foreign_node_in_rnnkit_order(tmp_path, rng, onnx, ort):
    P = np.array([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]], np.float32)  # ONNX rows p_i|p_o|p_f
    path = _lstm_node_model(onnx, tmp_path / "p.onnx", {7: P})
    back = rnnkit.onnx.load_weights(path)
    assert repr(back) == "LSTM(3, 2, bias=False, peepholes=True)"
    np.testing.assert_array_equal(back.weight_ph_l0, [1, 2, 5, 6, 3, 4])  # p_i|p_f|p_o
    x = rng.standard_normal((L, N, 3)).astype(np.float32)
    got = _session(ort, path).run(None, {"X": x})[0]  # Y: (L, 1, N, H)
    np.testing.assert_allclose(got[:, 0], _expected(back, x)[0], rtol=1e-5, atol=1e-5)


def test_import_refuses_a_bad_P_and_extra_inputs(tmp_path, onnx):
    bad = _lstm_node_model(onnx, tmp_path / "bad.onnx", {7: np.ones((1, 4), np.float32)})
    with pytest.raises(ValueError, match=r"peephole weights P \(1, 4\); expected "
                                         r"\(num_directions, 3\*hidden_size\) = \(1, 6\)"):
        rnnkit.onnx.load_weights(bad)
    extra = _lstm_node_model(onnx, tmp_path / "extra.onnx", {8: np.ones(2, np.float32)})
    with pytest.raises(ValueError, match="has 9 inputs; ONNX's LSTM operator defines 8"):
        rnnkit.onnx.load_weights(extra)
