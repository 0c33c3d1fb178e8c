"""rnnkit.onnx.load_weights on recurrent nodes anywhere in a model (the main graph, If
branches, Loop bodies), picked by name=, checked against onnxruntime running the same
nodes; and `rnnkit.onnx` as a lazy attribute of `rnnkit`."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import rnnkit

from helpers import assert_close

SILERO = Path(__file__).parent / "data" / "silero_vad"  # see its README.md
RTOL, ATOL = 1e-5, 1e-5  # float32: onnxruntime runs the recurrent operators in float32 only
# the onnx and ort (onnxruntime) fixtures are conftest's: missing, a test skips (fails under CI)


def _run_python(code: str) -> str:
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_import_rnnkit_imports_neither_onnx():
    assert _run_python("""
        import sys
        import rnnkit
        assert "onnx" not in sys.modules and "rnnkit.onnx" not in sys.modules
        assert "onnx" in dir(rnnkit) and "onnx" in rnnkit.__all__
        assert "onnx" not in sys.modules and "rnnkit.onnx" not in sys.modules
        module = rnnkit.onnx  # imports rnnkit.onnx, which imports onnx only when used
        assert module is sys.modules["rnnkit.onnx"] and "onnx" not in sys.modules
        try:
            rnnkit.no_such_name
        except AttributeError as error:
            assert "no_such_name" in str(error)
        print("ok")
    """) == "ok"


def test_rnnkit_onnx_works_after_import_rnnkit_only(onnx):
    assert _run_python("""
        import os, sys, tempfile
        sys.modules["torch"] = None  # as in test_without_torch: rnnkit.onnx needs no torch
        import rnnkit
        path = os.path.join(tempfile.mkdtemp(), "gru.onnx")
        rnnkit.onnx.export(rnnkit.nn.GRU(3, 4), path, (5, 2, 3))
        assert "onnx" in sys.modules
        print(rnnkit.onnx.load_weights(path))
    """) == "GRU(3, 4)"


# --- onnxruntime as the reference: the node alone, its weights computed by onnxruntime ---

def _node_alone(onnx, model, name):
    """A model of the recurrent node ``name`` (found in any subgraph) and the nodes that
    compute its weights from stored tensors, copied unchanged, so that onnxruntime computes
    the weights itself. Its inputs X, h[, c] replace the node's data inputs; its outputs
    are Y, Y_h[, Y_c]."""

    def find(graph, enclosing):
        for node in graph.node:
            if node.name == name:
                return node, [graph, *enclosing]
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    hit = find(attr.g, [graph, *enclosing])
                    if hit:
                        return hit
        return None

    target, scopes = find(model.graph, [])  # scopes: the node's graph, then outwards
    nodes, stored = [], {}

    def need(value):
        for graph in scopes:
            for tensor in graph.initializer:
                if tensor.name == value:
                    stored[value] = tensor
                    return
            for node in graph.node:
                if value in node.output:
                    for source in node.input:
                        if source:
                            need(source)
                    if node not in nodes:
                        nodes.append(node)
                    return
        raise AssertionError(f"{value!r} is not computed from stored tensors alone")

    alone = onnx.NodeProto()
    alone.CopyFrom(target)
    for k, value in enumerate(target.input):
        if k in (1, 2, 3, 7) and value:
            need(value)
    states = ["h", "c"] if target.op_type == "LSTM" else ["h"]
    alone.input[0] = "X"
    for k, state in enumerate(states):
        while len(alone.input) <= 5 + k:
            alone.input.append("")
        alone.input[5 + k] = state
    outputs = ["Y", "Y_h", "Y_c"][:len(states) + 1]
    del alone.output[:]
    alone.output.extend(outputs)
    info = onnx.helper.make_tensor_value_info
    graph = onnx.helper.make_graph(
        [*nodes, alone], "alone", [info(n, onnx.TensorProto.FLOAT, None) for n in ["X", *states]],
        [info(n, onnx.TensorProto.FLOAT, None) for n in outputs], list(stored.values()))
    return onnx.helper.make_model(graph, opset_imports=model.opset_import,
                                  ir_version=model.ir_version)


def _session(ort, model):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _check_node(onnx, ort, model, name, module, rng, L=7, N=3):
    """``module`` computes what onnxruntime computes for node ``name`` of ``model``."""
    D = 2 if module.bidirectional else 1
    x = rng.standard_normal((L, N, module.input_size)).astype(np.float32)
    states = [rng.standard_normal((D, N, module.hidden_size)).astype(np.float32)
              for _ in range(2 if module.mode == "LSTM" else 1)]
    feeds = dict(zip(["X", "h", "c"], [x, *states]))
    y, *theirs = _session(ort, _node_alone(onnx, model, name)).run(None, feeds)
    if module.mode == "LSTM":
        output, (h_n, c_n) = module(x, tuple(states))
        ours = [h_n, c_n]
    else:
        output, h_n = module(x, states[0])
        ours = [h_n]
    # ONNX's Y is (L, D, N, H), torch's output (L, N, D * H)
    assert_close(output, y.transpose(0, 2, 1, 3).reshape(L, N, -1), RTOL, ATOL, err_msg=name)
    for got, expected in zip(ours, theirs, strict=True):
        assert_close(got, expected, RTOL, ATOL, err_msg=name)


# --- silero-vad's published models (tests/data/silero_vad) ---

def test_silero_sequence_model_matches_onnxruntime(onnx, ort, rng):
    path = SILERO / "silero_vad_16k_sequence.onnx"
    lstm = rnnkit.onnx.load_weights(path)
    assert repr(lstm) == "LSTM(128, 128)" and lstm.weight_ih_l0.dtype == np.float32
    assert repr(rnnkit.onnx.load_weights(path, name="/recurrent/LSTM")) == "LSTM(128, 128)"
    _check_node(onnx, ort, onnx.load(str(path)), "/recurrent/LSTM", lstm, rng)


SILERO_IF_NODES = {  # silero_vad_16k_op15.onnx: torch's LSTMCell, exported once per branch
    "/model/decoder/rnn/LSTM": "If '/model/decoder/If_1'.then_branch",
    "/model/decoder/rnn_1/LSTM": "If '/model/decoder/If_1'.else_branch",
}


def test_silero_lstms_inside_if_branches(onnx):
    path = SILERO / "silero_vad_16k_op15.onnx"
    modules = rnnkit.onnx.load_weights(path)
    assert [repr(m) for m in modules] == ["LSTM(128, 128)"] * 2
    with pytest.raises(ValueError, match="no LSTM, GRU or RNN node named 'LSTM'") as error:
        rnnkit.onnx.load_weights(path, name="LSTM")
    for name, where in SILERO_IF_NODES.items():
        assert f"LSTM {name!r} (in {where})" in str(error.value)
    # the branches reorder torch's stored LSTMCell weights into ONNX's gate order with
    # Slice/Concat; loaded back in torch's order, they are those stored weights again
    stored = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    for module in modules:
        for key in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"]:
            np.testing.assert_array_equal(module.state_dict()[key + "_l0"],
                                          stored[f"model.decoder.rnn.{key}"], err_msg=key)


@pytest.mark.parametrize("name", list(SILERO_IF_NODES))
def test_silero_if_branch_lstm_by_name_matches_onnxruntime(onnx, ort, rng, name):
    path = SILERO / "silero_vad_16k_op15.onnx"
    lstm = rnnkit.onnx.load_weights(path, name=name)
    assert repr(lstm) == "LSTM(128, 128)"
    _check_node(onnx, ort, onnx.load(str(path)), name, lstm, rng)


# --- small synthetic models, made with onnx.helper ---

H_IN, H = 3, 4
Y_SHAPE = ["L", 1, "N", H]  # ONNX's Y: (L, D, N, H)


def _float(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def _model(onnx, nodes, inputs, outputs, initializers=()):
    helper = onnx.helper
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def _if_model(onnx, rng):
    """If(cond): a GRU in then_branch (W, R stored in the main graph, B a Constant node of
    the branch); an RNN in else_branch (its W an Unsqueeze of a stored matrix)."""
    helper, T, from_array = onnx.helper, onnx.TensorProto, onnx.numpy_helper.from_array
    info = helper.make_tensor_value_info
    then_branch = helper.make_graph([
        helper.make_node("Constant", [], ["B_gru"], value=from_array(_float(rng, 1, 6 * H))),
        helper.make_node("GRU", ["X", "W_gru", "R_gru", "B_gru"], ["Y_gru"], name="gru",
                         hidden_size=H, linear_before_reset=1),
    ], "then", [], [info("Y_gru", T.FLOAT, Y_SHAPE)])
    else_branch = helper.make_graph([
        helper.make_node("Constant", [], ["axes"], value=from_array(np.array([0]))),
        helper.make_node("Unsqueeze", ["W_rnn_2d", "axes"], ["W_rnn"]),
        helper.make_node("RNN", ["X", "W_rnn", "R_rnn"], ["Y_rnn"], name="rnn", hidden_size=H),
    ], "else", [], [info("Y_rnn", T.FLOAT, Y_SHAPE)])
    stored = [from_array(_float(rng, 1, 3 * H, H_IN), "W_gru"),
              from_array(_float(rng, 1, 3 * H, H), "R_gru"),
              from_array(_float(rng, H, H_IN), "W_rnn_2d"),
              from_array(_float(rng, 1, H, H), "R_rnn")]
    node = helper.make_node("If", ["cond"], ["Y"], name="if", then_branch=then_branch,
                            else_branch=else_branch)
    return _model(onnx, [node], [info("X", T.FLOAT, ["L", "N", H_IN]), info("cond", T.BOOL, [])],
                  [info("Y", T.FLOAT, Y_SHAPE)], stored)


def _check_output(module, y, x):
    """rnnkit's output from zero states against ONNX's Y (L, D, N, H)."""
    L, N, _ = x.shape
    assert_close(module(x)[0], y.transpose(0, 2, 1, 3).reshape(L, N, -1), RTOL, ATOL)


def test_gru_and_rnn_inside_if_branches(onnx, ort, rng, tmp_path):
    model = _if_model(onnx, rng)
    path = tmp_path / "if.onnx"
    onnx.save(model, str(path))
    assert [repr(m) for m in rnnkit.onnx.load_weights(path)] == ["GRU(3, 4)",
                                                                  "RNN(3, 4, bias=False)"]
    gru = rnnkit.onnx.load_weights(path, name="gru")
    rnn = rnnkit.onnx.load_weights(path, name="rnn")
    assert (repr(gru), repr(rnn)) == ("GRU(3, 4)", "RNN(3, 4, bias=False)")
    x = _float(rng, 5, 2, H_IN)
    session = _session(ort, model)
    _check_output(gru, session.run(None, {"X": x, "cond": np.array(True)})[0], x)
    _check_output(rnn, session.run(None, {"X": x, "cond": np.array(False)})[0], x)
    with pytest.raises(ValueError, match="no LSTM, GRU or RNN node named 'lstm'") as error:
        rnnkit.onnx.load_weights(path, name="lstm")
    assert str(error.value).endswith("its recurrent nodes are GRU 'gru' (in If 'if'.then_branch), "
                                     "RNN 'rnn' (in If 'if'.else_branch)")


def test_lstm_inside_a_loop_body_reads_enclosing_weights(onnx, ort, rng, tmp_path):
    helper, T, from_array = onnx.helper, onnx.TensorProto, onnx.numpy_helper.from_array
    info = helper.make_tensor_value_info
    body = helper.make_graph([
        helper.make_node("Identity", ["cond_in"], ["cond_out"]),
        helper.make_node("LSTM", ["X", "W", "R", "B"], ["Y_step"], name="lstm", hidden_size=H),
    ], "body", [info("i", T.INT64, []), info("cond_in", T.BOOL, [])],
        [info("cond_out", T.BOOL, []), info("Y_step", T.FLOAT, Y_SHAPE)])
    stored = [from_array(np.array(1, np.int64), "trips"), from_array(np.array(True), "true"),
              from_array(_float(rng, 1, 4 * H, H_IN), "W"),
              from_array(_float(rng, 1, 4 * H, H), "R"), from_array(_float(rng, 1, 8 * H), "B")]
    loop = helper.make_node("Loop", ["trips", "true"], ["Y"], name="loop", body=body)
    model = _model(onnx, [loop], [info("X", T.FLOAT, ["L", "N", H_IN])],
                   [info("Y", T.FLOAT, [1, *Y_SHAPE])], stored)
    onnx.save(model, str(tmp_path / "loop.onnx"))
    lstm = rnnkit.onnx.load_weights(tmp_path / "loop.onnx")
    assert repr(lstm) == "LSTM(3, 4)"
    x = _float(rng, 5, 2, H_IN)
    _check_output(lstm, _session(ort, model).run(None, {"X": x})[0][0], x)  # iteration 0
    with pytest.raises(ValueError, match=r"LSTM 'lstm' \(in Loop 'loop'.body\)"):
        rnnkit.onnx.load_weights(tmp_path / "loop.onnx", name="gru")


def _two_nodes_model(onnx, rng, unloadable=False):
    """An LSTM 'lstm' reading X1, an unnamed GRU reading X2 (neither reads the other);
    optionally a GRU 'bad' with linear_before_reset=0, which torch's GRU cannot express."""
    helper, T, from_array = onnx.helper, onnx.TensorProto, onnx.numpy_helper.from_array
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("LSTM", ["X1", "W1", "R1", "B1"], ["Y1"], name="lstm",
                              hidden_size=H),
             helper.make_node("GRU", ["X2", "W2", "R2"], ["Y2"], hidden_size=H,
                              linear_before_reset=1)]
    outputs = [info("Y1", T.FLOAT, Y_SHAPE), info("Y2", T.FLOAT, Y_SHAPE)]
    if unloadable:
        nodes.append(helper.make_node("GRU", ["X2", "W2", "R2"], ["Y3"], name="bad",
                                      hidden_size=H))
        outputs.append(info("Y3", T.FLOAT, Y_SHAPE))
    stored = [from_array(_float(rng, *shape), name) for name, shape in [
        ("W1", (1, 4 * H, H_IN)), ("R1", (1, 4 * H, H)), ("B1", (1, 8 * H)),
        ("W2", (1, 3 * H, 2)), ("R2", (1, 3 * H, H))]]
    return _model(onnx, nodes, [info("X1", T.FLOAT, ["L", "N", H_IN]),
                                info("X2", T.FLOAT, ["L", "N", 2])], outputs, stored)


def test_two_separate_nodes_by_name(onnx, ort, rng, tmp_path):
    model = _two_nodes_model(onnx, rng)
    onnx.save(model, str(tmp_path / "two.onnx"))
    both = rnnkit.onnx.load_weights(tmp_path / "two.onnx")
    assert [repr(m) for m in both] == ["LSTM(3, 4)", "GRU(2, 4, bias=False)"]
    lstm = rnnkit.onnx.load_weights(tmp_path / "two.onnx", name="lstm")
    gru = rnnkit.onnx.load_weights(tmp_path / "two.onnx", name="Y2")  # unnamed: its output
    x1, x2 = _float(rng, 5, 2, H_IN), _float(rng, 5, 2, 2)
    y1, y2 = _session(ort, model).run(None, {"X1": x1, "X2": x2})
    _check_output(lstm, y1, x1)
    _check_output(gru, y2, x2)
    for module, alone in zip(both, [lstm, gru], strict=True):
        for key, value in alone.state_dict().items():
            np.testing.assert_array_equal(module.state_dict()[key], value, err_msg=key)
    with pytest.raises(ValueError, match="its recurrent nodes are LSTM 'lstm' "
                                         r"\(in the main graph\), GRU 'Y2' \(in the main graph\)"):
        rnnkit.onnx.load_weights(tmp_path / "two.onnx", name="gru")
    with pytest.raises(TypeError, match="name must be a str"):
        rnnkit.onnx.load_weights(tmp_path / "two.onnx", name=0)


def test_name_skips_unloadable_nodes_elsewhere(onnx, rng, tmp_path):
    onnx.save(_two_nodes_model(onnx, rng, unloadable=True), str(tmp_path / "three.onnx"))
    with pytest.raises(ValueError, match="GRU node 'bad' has linear_before_reset=0"):
        rnnkit.onnx.load_weights(tmp_path / "three.onnx")
    assert repr(rnnkit.onnx.load_weights(tmp_path / "three.onnx", name="lstm")) == "LSTM(3, 4)"
    with pytest.raises(ValueError, match="GRU node 'bad' has linear_before_reset=0"):
        rnnkit.onnx.load_weights(tmp_path / "three.onnx", name="bad")


def test_name_picks_the_whole_stack(onnx, ort, rng, tmp_path):
    lstm = rnnkit.nn.LSTM(3, 4, num_layers=3, bidirectional=True)
    path = tmp_path / "stack.onnx"
    rnnkit.onnx.export(lstm, path, (5, 2, 3))
    names = [n.name for n in onnx.load(str(path)).graph.node if n.op_type == "LSTM"]
    assert len(names) == 3
    for name in names:
        back = rnnkit.onnx.load_weights(path, name=name)
        assert repr(back) == "LSTM(3, 4, num_layers=3, bidirectional=True)"
        for key, value in lstm.state_dict().items():
            np.testing.assert_array_equal(back.state_dict()[key], value, err_msg=key)


def test_no_recurrent_node_names_the_foreign_ones(onnx, tmp_path):
    helper, T = onnx.helper, onnx.TensorProto
    info = helper.make_tensor_value_info
    nodes = [helper.make_node("Identity", ["X"], ["Y"]),
             helper.make_node("LSTM", ["X"], ["Z"], name="custom", domain="example.ops")]
    graph = helper.make_graph(nodes, "g", [info("X", T.FLOAT, None)],
                              [info("Y", T.FLOAT, None), info("Z", T.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                    helper.make_opsetid("example.ops", 1)])
    onnx.save(model, str(tmp_path / "none.onnx"))
    with pytest.raises(ValueError, match="no LSTM, GRU or RNN node, in its graph or any "
                                         r"subgraph \(it has LSTM 'custom' \(in the main graph\)"):
        rnnkit.onnx.load_weights(tmp_path / "none.onnx")
