"""ONNX LSTM/GRU/RNN nodes -> rnnkit layers with torch-layout weights."""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from ._layout import GATES, ONNX_OF_TORCH, reorder, suffix

# ops that pass one tensor through while changing only its layout, as exporters place
# them between the layers of a stack
_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                 "Cast"}
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


class _Layer:
    """One ONNX recurrent node, in torch's terms."""

    def __init__(self, node, constants):
        self.node, self.mode = node, node.op_type
        attrs = _attrs(node)
        where = f"{node.op_type} node {node.name or node.output[0]!r}"
        self.direction = _text(attrs.get("direction", b"forward"))
        if self.direction not in ("forward", "bidirectional"):
            raise ValueError(f"{where} runs direction={self.direction!r}; torch layers run "
                             "'forward' or 'bidirectional' only")
        D = 2 if self.direction == "bidirectional" else 1
        if attrs.get("clip") is not None:
            raise ValueError(f"{where} clips its cell input (clip=...), which torch layers "
                             "do not do")
        if attrs.get("input_forget", 0):
            raise ValueError(f"{where} couples the input and forget gates (input_forget=1), "
                             "which torch's LSTM does not")
        if self.mode == "GRU" and attrs.get("linear_before_reset", 0) != 1:
            raise ValueError(f"{where} has linear_before_reset=0, which torch's GRU cannot "
                             "express (torch applies the reset gate after W_hn h + b_hn)")
        activations = [_text(a) for a in attrs.get("activations", [])]
        self.nonlinearity = "tanh"
        if self.mode == "RNN" and activations:
            kinds = {a.lower() for a in activations}
            if len(activations) != D or kinds - {"tanh", "relu"} or len(kinds) != 1:
                raise ValueError(f"{where} uses activations {activations}; torch's RNN takes "
                                 "one of Tanh or Relu for both directions")
            self.nonlinearity = kinds.pop()
        elif activations and activations != _DEFAULT_ACTIVATIONS[self.mode] * D:
            raise ValueError(f"{where} uses activations {activations}; torch's "
                             f"{self.mode} uses {_DEFAULT_ACTIVATIONS[self.mode]}")
        self.batch_first = bool(attrs.get("layout", 0))

        def constant(index, name):
            if len(node.input) <= index or not node.input[index]:
                return None
            if node.input[index] not in constants:
                raise ValueError(f"{where}: its {name} ({node.input[index]!r}) is computed in "
                                 "the graph, not stored; load_weights reads stored weights")
            return constants[node.input[index]]

        W, R, B = constant(1, "W"), constant(2, "R"), constant(3, "B")
        if W is None or R is None:
            raise ValueError(f"{where} has no W or R input")
        if self.mode == "LSTM":
            P = constant(7, "P")
            if P is not None and np.any(P):
                raise ValueError(f"{where} has peephole weights P, which torch's LSTM lacks")
        G = W.shape[1] if W.ndim == 3 else -1
        self.hidden_size = int(attrs.get("hidden_size", R.shape[-1]))
        H = self.hidden_size
        if W.ndim != 3 or W.shape[0] != D or G != GATES[self.mode] * H or \
                R.shape != (D, G, H) or (B is not None and B.shape != (D, 2 * G)):
            raise ValueError(
                f"{where} has W {W.shape}, R {R.shape}, B {None if B is None else B.shape}; "
                f"expected ({D}, {GATES[self.mode] * H}, input_size), ({D}, "
                f"{GATES[self.mode] * H}, {H}), ({D}, {2 * GATES[self.mode] * H})"
            )
        self.D, self.input_size = D, int(W.shape[2])
        self.bias = B is not None
        dtype = W.dtype if W.dtype in (np.float32, np.float64) else np.dtype(np.float32)
        self.dtype = np.dtype(dtype)
        order = ONNX_OF_TORCH[self.mode]  # torch block k is ONNX block order[k]
        self.weights = []  # per direction: {"weight_ih": ..., ...} in torch's layout
        for d in range(D):
            w = {"weight_ih": reorder(W[d], order), "weight_hh": reorder(R[d], order)}
            if B is not None:
                w["bias_ih"], w["bias_hh"] = reorder(B[d, :G], order), reorder(B[d, G:], order)
            self.weights.append({k: v.astype(self.dtype) for k, v in w.items()})

    def continues(self, other: _Layer, producers) -> bool:
        """Whether this node reads ``other``'s output as the next layer of one stack."""
        same = (self.mode, self.hidden_size, self.D, self.bias, self.nonlinearity,
                self.dtype, self.batch_first) == (other.mode, other.hidden_size, other.D,
                                                  other.bias, other.nonlinearity, other.dtype,
                                                  other.batch_first)
        if not same or self.input_size != other.D * other.hidden_size:
            return False
        name = self.node.input[0]
        for _ in range(16):
            if name == other.node.output[0]:
                return True
            node = producers.get(name)
            if node is None or node.op_type not in _PASS_THROUGH:
                return False
            name = node.input[0]
        return False


def _input_transposed(layer: _Layer, producers, graph_inputs) -> bool:
    """A Transpose (1, 0, 2) between a graph input and the first layer: batch_first."""
    name, transposed = layer.node.input[0], False
    for _ in range(16):
        if name in graph_inputs:
            return transposed
        node = producers.get(name)
        if node is None or node.op_type not in _PASS_THROUGH:
            return False
        if node.op_type == "Transpose" and list(_attrs(node).get("perm", [])) == [1, 0, 2]:
            transposed = not transposed
        name = node.input[0]
    return False


def _build(chain: list[_Layer], batch_first: bool):
    from .. import nn

    first = chain[0]
    kwargs = {"num_layers": len(chain), "bias": first.bias, "batch_first": batch_first,
              "bidirectional": first.D == 2, "dtype": first.dtype}
    if first.mode == "RNN":
        kwargs["nonlinearity"] = first.nonlinearity
    module = getattr(nn, first.mode)(first.input_size, first.hidden_size, **kwargs)
    state = {}
    for k, layer in enumerate(chain):
        for d, weights in enumerate(layer.weights):
            for name, value in weights.items():
                state[name + suffix(k, d)] = value
    module.load_state_dict(state)
    return module


def load_weights(path):
    model = onnx.load(os.fspath(path))
    graph = model.graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    producers = {}
    for node in graph.node:
        if node.op_type == "Constant":
            value = _attrs(node).get("value")
            if value is not None:
                constants[node.output[0]] = numpy_helper.to_array(value)
        for out in node.output:
            producers[out] = node
    graph_inputs = {i.name for i in graph.input} - set(constants)
    layers = [_Layer(n, constants) for n in graph.node
              if n.op_type in GATES and n.domain in ("", "ai.onnx")]
    if not layers:
        raise ValueError(f"{path} has no LSTM, GRU or RNN node")
    chains = []
    for layer in layers:
        if chains and layer.continues(chains[-1][-1], producers):
            chains[-1].append(layer)
        else:
            chains.append([layer])
    modules = []
    for chain in chains:
        batch_first = chain[0].batch_first or _input_transposed(chain[0], producers,
                                                                graph_inputs)
        modules.append(_build(chain, batch_first))
    return modules[0] if len(modules) == 1 else modules
