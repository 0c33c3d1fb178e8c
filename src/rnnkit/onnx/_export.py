"""rnnkit modules -> ONNX graphs of LSTM/GRU/RNN, MatMul, Gather nodes."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .._modes import layer_suffix
from ._layout import GATES, TORCH_OF_ONNX, reorder

_MIN_OPSET = 14


class _Graph:
    """Nodes and initializers under construction, with unique names."""

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype
        self.nodes, self.initializers = [], []
        self._count = 0

    def name(self, hint: str) -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def const(self, hint: str, array) -> str:
        name = self.name(hint)
        self.initializers.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def weight(self, hint: str, array) -> str:
        return self.const(hint, np.ascontiguousarray(np.asarray(array, dtype=self.dtype)))

    def op(self, op_type: str, inputs, outputs: int | list = 1, **attrs):
        names = outputs if isinstance(outputs, list) else \
            [self.name(op_type) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, list(inputs), names,
                                           name=self.name(op_type + "_node"), **attrs))
        return names[0] if len(names) == 1 else names


def _kind(module) -> str:
    return type(module).__name__


# rnnkit's peephole rows i|f|o -> ONNX's P rows i|o|f (ONNX block k is rnnkit block k here)
_PEEPHOLE_ORDER = [0, 2, 1]


def _refuse_options(module) -> None:
    """A ``ValueError`` naming the first cell option of a recurrent layer in ``module`` (itself
    or any submodule) that ONNX's operators cannot express: layer norm and zoneout.
    Peepholes export as the LSTM operator's ``P``; recurrent dropout does nothing in eval."""
    from ..nn.modules.rnn import RNNBase

    for path, m in module.named_modules():
        if not isinstance(m, RNNBase):
            continue
        op = "RNN" if m.mode.startswith("RNN") else m.mode
        where = "" if not path else f" (module {path!r} of the {_kind(module)})"
        if m.layer_norm:
            raise ValueError(
                f"cannot export layer_norm=True to ONNX{where}: ONNX's {op} operator has no "
                "layer normalization; export a layer built with layer_norm=False"
            )
        if m.zoneout:
            raise ValueError(
                f"cannot export zoneout={m.zoneout} to ONNX{where}: ONNX's {op} operator has "
                "no zoneout (in eval mode h_t = zoneout * h_{t-1} + (1 - zoneout) * h~_t, "
                "which its recurrence cannot express); export a layer built with zoneout=0"
            )


def _recurrent(g: _Graph, rnn, x: str, h_0, c_0, seq_lens, unbatched: bool):
    """Emit ``rnn`` on ``x`` (L, N, H_in) or batch-first; returns (output, h_n, c_n)."""
    mode = "RNN" if rnn.mode.startswith("RNN") else rnn.mode
    if rnn.proj_size:
        raise ValueError(
            "rnnkit.onnx.export cannot export an LSTM with proj_size > 0: ONNX's LSTM "
            "operator has no projection (export the layer without proj_size)"
        )
    H, D, G = rnn.hidden_size, rnn._directions, GATES[mode] * rnn.hidden_size
    params = {name: np.asarray(p) for name, p in rnn.named_parameters()}
    order = TORCH_OF_ONNX[mode]  # ONNX block k is torch block order[k]
    if unbatched:  # (L, H_in) -> (L, 1, H_in); states (S, H) -> (S, 1, H)
        axis = g.const("axis1", np.array([1], np.int64))
        x = g.op("Unsqueeze", [x, axis])
        h_0 = None if h_0 is None else g.op("Unsqueeze", [h_0, axis])
        c_0 = None if c_0 is None else g.op("Unsqueeze", [c_0, axis])
    elif rnn.batch_first:  # (N, L, H_in) -> (L, N, H_in); states are never batch-first
        x = g.op("Transpose", [x], perm=[1, 0, 2])
    attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
    if mode == "GRU":
        attrs["linear_before_reset"] = 1  # torch's n = tanh(W_in x + b_in + r (W_hn h + b_hn))
    if mode == "RNN":
        attrs["activations"] = ["Relu" if rnn.mode == "RNN_RELU" else "Tanh"] * D
    h_list, c_list = [], []
    for layer in range(rnn.num_layers):
        names = [layer_suffix(layer, d) for d in range(D)]
        W = np.stack([reorder(params[f"weight_ih{s}"], order) for s in names])  # (D, G, H_in)
        R = np.stack([reorder(params[f"weight_hh{s}"], order) for s in names])  # (D, G, H)
        inputs = [x, g.weight(f"W_l{layer}", W), g.weight(f"R_l{layer}", R)]
        if rnn.bias:
            B = np.stack([np.concatenate([reorder(params[f"bias_ih{s}"], order),
                                          reorder(params[f"bias_hh{s}"], order)])
                          for s in names])  # (D, 2G)
            inputs.append(g.weight(f"B_l{layer}", B))
        else:
            inputs.append("")
        inputs.append(seq_lens or "")
        for state in (h_0, c_0) if mode == "LSTM" else (h_0,):
            if state is None:
                inputs.append("")
            else:  # this layer's rows 2*layer + direction of (D*num_layers, N, H)
                inputs.append(g.op("Slice", [
                    state, g.const("start", np.array([D * layer], np.int64)),
                    g.const("end", np.array([D * (layer + 1)], np.int64)),
                    g.const("axes", np.array([0], np.int64))]))
        if mode == "LSTM" and rnn.peepholes:  # P (D, 3H), ONNX rows p_i|p_o|p_f
            P = np.stack([reorder(params[f"weight_ph{s}"], _PEEPHOLE_ORDER) for s in names])
            inputs.append(g.weight(f"P_l{layer}", P))
        while inputs[-1] == "":
            inputs.pop()
        outs = g.op(mode, inputs, 3 if mode == "LSTM" else 2, **attrs)
        Y = g.op("Transpose", [outs[0]], perm=[0, 2, 1, 3])  # (L, D, N, H) -> (L, N, D, H)
        x = g.op("Reshape", [Y, g.const("shape", np.array([0, 0, D * H], np.int64))])
        h_list.append(outs[1])
        if mode == "LSTM":
            c_list.append(outs[2])
    del G
    h_n = h_list[0] if len(h_list) == 1 else g.op("Concat", h_list, axis=0)
    c_n = None
    if mode == "LSTM":
        c_n = c_list[0] if len(c_list) == 1 else g.op("Concat", c_list, axis=0)
    if unbatched:
        axis = g.const("axis1", np.array([1], np.int64))
        x, h_n = g.op("Squeeze", [x, axis]), g.op("Squeeze", [h_n, axis])
        c_n = None if c_n is None else g.op("Squeeze", [c_n, axis])
    elif rnn.batch_first:
        x = g.op("Transpose", [x], perm=[1, 0, 2])
    return x, h_n, c_n


def _feedforward(g: _Graph, module, x: str) -> str:
    kind = _kind(module)
    if kind == "Linear":  # y = x W^T + b on the last axis
        y = g.op("MatMul", [x, g.weight("weight_T", np.asarray(module.weight).T)])
        if module.bias is not None:
            y = g.op("Add", [y, g.weight("bias", module.bias)])
        return y
    if kind in ("Identity", "Dropout"):  # Dropout: eval mode
        return x
    if kind == "Embedding":
        return g.op("Gather", [g.weight("embedding", module.weight), x], axis=0)
    raise ValueError(
        f"rnnkit.onnx.export cannot export {kind}: it exports LSTM, GRU, RNN, and Sequential "
        "models of Linear, Embedding, Dropout and Identity (a recurrent layer may come last)"
    )


def _onnx_type(dtype: np.dtype) -> int:
    return {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
            np.dtype(np.int64): TensorProto.INT64}[np.dtype(dtype)]


def export(module, path, input, *, opset_version=17, initial_states=False,
           sequence_lens=False, dtype=None):
    if isinstance(opset_version, bool) or not isinstance(opset_version, int) or \
            opset_version < _MIN_OPSET:
        raise ValueError(f"opset_version must be an int >= {_MIN_OPSET}, got {opset_version!r}")
    if opset_version > onnx.defs.onnx_opset_version():
        raise ValueError(f"opset_version {opset_version} is newer than this onnx supports "
                         f"({onnx.defs.onnx_opset_version()})")
    if hasattr(input, "shape") and hasattr(input, "dtype"):
        shape = tuple(int(n) for n in input.shape)
    elif isinstance(input, (tuple, list)) and all(isinstance(n, int) for n in input):
        shape = tuple(input)
    else:
        raise TypeError(f"input must be an example array or its shape (a tuple of ints), got "
                        f"{type(input).__name__}")
    if hasattr(module, "named_modules"):
        _refuse_options(module)
    chain = list(module) if _kind(module) == "Sequential" else [module]
    if not chain:
        raise ValueError("cannot export an empty Sequential")
    from ..nn.modules.rnn import RNNBase

    for i, m in enumerate(chain):
        if isinstance(m, RNNBase) and i != len(chain) - 1:
            raise ValueError(
                f"module {i} of the Sequential is a {_kind(m)}, which returns a tuple: only the "
                "last module of a Sequential may be recurrent"
            )
    rnn = chain[-1] if isinstance(chain[-1], RNNBase) else None
    float_dtypes = [np.dtype(m.dtype) for m in chain if hasattr(m, "dtype")]
    g = _Graph(np.dtype(dtype) if dtype is not None else
               (float_dtypes[0] if float_dtypes else np.dtype(np.float32)))
    if g.dtype not in (np.float32, np.float64):
        raise ValueError(f"dtype must be float32 or float64, got {g.dtype}")
    in_type = np.int64 if _kind(chain[0]) == "Embedding" else g.dtype
    ndim = len(shape)
    if rnn is not None and len(chain) == 1:
        if ndim not in (2, 3) or shape[-1] != rnn.input_size:
            raise ValueError(
                f"input must have shape (seq_len, batch, input_size) or unbatched (seq_len, "
                f"input_size) with input_size = {rnn.input_size}, got {shape}"
            )
        dims = (["seq_len", "input_size"] if ndim == 2 else
                ["batch", "seq_len", "input_size"] if rnn.batch_first else
                ["seq_len", "batch", "input_size"])
    else:
        dims = [f"dim{i}" for i in range(ndim)]
    if ndim and in_type != np.int64:
        dims[-1] = shape[-1]  # the feature size is fixed
    inputs = [helper.make_tensor_value_info("input", _onnx_type(in_type), dims)]
    x = "input"
    dims = list(dims)
    for m in chain[:-1] if rnn is not None else chain:
        x = _feedforward(g, m, x)
        if _kind(m) == "Linear":
            dims[-1] = m.out_features
        elif _kind(m) == "Embedding":
            dims.append(m.embedding_dim)
    outputs = []
    if rnn is None:
        g.op("Identity", [x], ["output"])
        outputs.append(helper.make_tensor_value_info("output", _onnx_type(g.dtype), dims))
    else:
        if len(dims) not in (2, 3) or dims[-1] not in (rnn.input_size, None) and \
                not isinstance(dims[-1], str):
            raise ValueError(f"the {_kind(rnn)} would get {len(dims)}-D input ending in "
                             f"{dims[-1]}, expected 3-D (or 2-D) ending in {rnn.input_size}")
        unbatched = len(dims) == 2
        if unbatched and sequence_lens:
            raise ValueError("sequence_lens needs batched 3-D input")
        D = rnn._directions
        H_out = rnn.hidden_size
        state_dims = [D * rnn.num_layers, H_out] if unbatched else \
            [D * rnn.num_layers, "batch", H_out]
        h_0 = c_0 = seq = None
        if initial_states:
            h_0 = "h_0"
            inputs.append(helper.make_tensor_value_info("h_0", _onnx_type(g.dtype), state_dims))
            if rnn.mode == "LSTM":
                c_0 = "c_0"
                inputs.append(helper.make_tensor_value_info("c_0", _onnx_type(g.dtype),
                                                            state_dims))
        if sequence_lens:
            seq = "sequence_lens"
            inputs.append(helper.make_tensor_value_info(seq, TensorProto.INT32, ["batch"]))
        y, h_n, c_n = _recurrent(g, rnn, x, h_0, c_0, seq, unbatched)
        g.op("Identity", [y], ["output"])
        g.op("Identity", [h_n], ["h_n"])
        dims[-1] = D * H_out
        outputs += [helper.make_tensor_value_info("output", _onnx_type(g.dtype), dims),
                    helper.make_tensor_value_info("h_n", _onnx_type(g.dtype), state_dims)]
        if c_n is not None:
            g.op("Identity", [c_n], ["c_n"])
            outputs.append(helper.make_tensor_value_info("c_n", _onnx_type(g.dtype),
                                                         state_dims))
    graph = helper.make_graph(g.nodes, f"rnnkit_{_kind(module)}", inputs, outputs,
                              g.initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset_version)],
                              producer_name="rnnkit")
    # the oldest IR version that has the opset: readable by more runtimes
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    onnx.checker.check_model(model)
    onnx.save(model, os.fspath(path))
