"""ONNX LSTM/GRU/RNN nodes -> rnnkit layers with torch-layout weights.

The nodes may sit in the main graph or in subgraphs (``If`` branches, ``Loop``/``Scan``
bodies), which see the names of every graph enclosing them (ONNX's scoping rules).
"""

from __future__ import annotations

import os

import numpy as np
import onnx
from onnx import numpy_helper

from .._modes import layer_suffix
from ._layout import GATES, ONNX_OF_TORCH, reorder

# ops that pass one tensor through while changing only its layout, as exporters place
# them between the layers of a stack
_PASS_THROUGH = {"Transpose", "Reshape", "Squeeze", "Unsqueeze", "Identity", "Dropout",
                 "Cast"}
# ops that only select, rearrange or cast stored values, without arithmetic: torch's export
# of an LSTMCell reorders the gates of stored weights with Slice + Concat, then Unsqueeze,
# so load_weights evaluates these (with onnx's reference implementation) to reach the values
_FOLDABLE = {"Constant", "Identity", "Cast", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
             "Transpose", "Concat", "Slice", "Split", "Gather"}
# the inputs each operator defines, in order (ONNX's LSTM/GRU/RNN specs)
_INPUTS = {"LSTM": ["X", "W", "R", "B", "sequence_lens", "initial_h", "initial_c", "P"],
           "GRU": ["X", "W", "R", "B", "sequence_lens", "initial_h"],
           "RNN": ["X", "W", "R", "B", "sequence_lens", "initial_h"]}
# ONNX's peephole rows p_i|p_o|p_f <-> rnnkit's p_i|p_f|p_o (the swap is its own inverse)
_PEEPHOLE_ORDER = [0, 2, 1]
_DEFAULT_ACTIVATIONS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"],
                        "RNN": ["Tanh"]}


def _attrs(node) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _text(value):
    return value.decode() if isinstance(value, bytes) else value


def _label(node) -> str:
    """How errors and ``name=`` call a node: its name, else its first output's."""
    return node.name or node.output[0]


def _standard(node) -> bool:
    return node.domain in ("", "ai.onnx")


class _Scope:
    """The names one graph defines, and the graph enclosing it (None for the main graph):
    a name a subgraph does not define is looked up outwards."""

    def __init__(self, graph, parent: _Scope | None, where: str, opsets: list):
        self.parent, self.where, self.opsets = parent, where, opsets
        self.stored = {t.name: t for t in graph.initializer}
        self.producers = {out: node for node in graph.node for out in node.output if out}
        # a main-graph input that also has an initializer is read as the stored value
        self.inputs = {i.name for i in graph.input} - set(self.stored)
        self._values = {}

    def _owner(self, name: str) -> _Scope | None:
        scope = self
        while scope is not None and name not in scope.producers and \
                name not in scope.stored and name not in scope.inputs:
            scope = scope.parent
        return scope

    def producer(self, name: str):
        """The node computing ``name``, or None for a stored value or a graph input."""
        owner = self._owner(name)
        return None if owner is None else owner.producers.get(name)

    def is_model_input(self, name: str) -> bool:
        owner = self._owner(name)
        return owner is not None and owner.parent is None and name in owner.inputs

    def constant(self, name: str) -> np.ndarray | None:
        """``name``'s value when it is stored, or folded from stored values by _FOLDABLE
        ops; else None (it depends on an input)."""
        owner = self._owner(name)
        if owner is None or name in owner.inputs:
            return None
        if name not in owner._values:
            owner._values[name] = None  # while folding: no value yet
            if name in owner.stored:
                owner._values[name] = numpy_helper.to_array(owner.stored[name])
            else:
                owner._fold(owner.producers[name])
        return owner._values[name]

    def _fold(self, node):
        if not _standard(node) or node.op_type not in _FOLDABLE:
            return
        feeds = {name: self.constant(name) for name in node.input if name}
        if any(value is None for value in feeds.values()):
            return
        from onnx.reference import ReferenceEvaluator  # the opset's exact semantics

        graph = onnx.helper.make_graph(  # a one-node model: the evaluator takes its opsets
            [node], "fold", [onnx.helper.make_empty_tensor_value_info(n) for n in feeds],
            [onnx.helper.make_empty_tensor_value_info(n) for n in node.output if n])
        model = onnx.helper.make_model(graph, opset_imports=self.opsets)
        outputs = ReferenceEvaluator(model).run(None, feeds)
        for name, value in zip(node.output, outputs):
            if name:
                self._values[name] = np.asarray(value)

    def describe(self) -> str:
        return f"in {self.where}" if self.where else "in the main graph"


def _find(graph, scope: _Scope, found: list, others: list) -> None:
    """Append (node, scope) for each recurrent node of ``graph`` and its subgraphs, in
    graph order (a subgraph's nodes where the node holding it runs, an If's then_branch
    before its else_branch); ``others`` gets the LSTM/GRU/RNN nodes of other domains,
    which are not ONNX's operators."""
    for node in graph.node:
        if node.op_type in GATES:
            (found if _standard(node) else others).append((node, scope))
        for attr in sorted(node.attribute, key=lambda a: a.name == "else_branch"):  # then first
            if attr.type == onnx.AttributeProto.GRAPH:
                subgraphs = [(attr.g, attr.name)]
            elif attr.type == onnx.AttributeProto.GRAPHS:
                subgraphs = [(g, f"{attr.name}[{k}]") for k, g in enumerate(attr.graphs)]
            else:
                continue
            for subgraph, branch in subgraphs:
                where = f"{node.op_type} {_label(node)!r}.{branch}"
                where = f"{scope.where} > {where}" if scope.where else where
                _find(subgraph, _Scope(subgraph, scope, where, scope.opsets), found, others)


def _listing(found) -> str:
    return ", ".join(f"{node.op_type} {_label(node)!r} ({scope.describe()})"
                     for node, scope in found)


class _Layer:
    """One ONNX recurrent node, in torch's terms."""

    def __init__(self, node, scope: _Scope):
        self.node, self.mode, self.scope = node, node.op_type, scope
        attrs = _attrs(node)
        where = f"{node.op_type} node {_label(node)!r}"
        if scope.parent is not None:
            where += f" ({scope.describe()})"
        if len(node.input) > len(_INPUTS[self.mode]):
            raise ValueError(f"{where} has {len(node.input)} inputs; ONNX's {self.mode} "
                             f"operator defines {len(_INPUTS[self.mode])} "
                             f"({', '.join(_INPUTS[self.mode])})")
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
            value = scope.constant(node.input[index])
            if value is None:
                raise ValueError(f"{where}: its {name} ({node.input[index]!r}) is computed in "
                                 "the graph, not stored; load_weights reads stored weights "
                                 f"(and {', '.join(sorted(_FOLDABLE))} of them)")
            return value

        W, R, B = constant(1, "W"), constant(2, "R"), constant(3, "B")
        if W is None or R is None:
            raise ValueError(f"{where} has no W or R input")
        P = constant(7, "P") if self.mode == "LSTM" else None
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
        if P is not None and P.shape != (D, 3 * H):
            raise ValueError(f"{where} has peephole weights P {P.shape}; expected "
                             f"(num_directions, 3*hidden_size) = ({D}, {3 * H})")
        # an all-zero P is no peephole: the layer loads plain (torch's), unless its stack
        # has peepholes elsewhere
        self.peepholes = P is not None and bool(np.any(P))
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
            if self.mode == "LSTM":  # zeros without P, kept for a stack with peepholes
                w["weight_ph"] = np.zeros(3 * H, W.dtype) if P is None else \
                    reorder(P[d], _PEEPHOLE_ORDER)
            self.weights.append({k: v.astype(self.dtype) for k, v in w.items()})

    def continues(self, other: _Layer) -> bool:
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
            node = self.scope.producer(name)
            if node is None or node.op_type not in _PASS_THROUGH:
                return False
            name = node.input[0]
        return False


def _input_transposed(layer: _Layer) -> bool:
    """A Transpose (1, 0, 2) between a model input and the first layer: batch_first."""
    name, transposed = layer.node.input[0], False
    for _ in range(16):
        if layer.scope.is_model_input(name):
            return transposed
        node = layer.scope.producer(name)
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
    peepholes = any(layer.peepholes for layer in chain)
    if peepholes:
        kwargs["peepholes"] = True
    if first.mode == "RNN":
        kwargs["nonlinearity"] = first.nonlinearity
    module = getattr(nn, first.mode)(first.input_size, first.hidden_size, **kwargs)
    state = {}
    for k, layer in enumerate(chain):
        for d, weights in enumerate(layer.weights):
            for name, value in weights.items():
                if name != "weight_ph" or peepholes:
                    state[name + layer_suffix(k, d)] = value
    module.load_state_dict(state)
    return module


def load_weights(path, name: str | None = None):
    model = onnx.load(os.fspath(path))
    opsets = list(model.opset_import)
    found, others = [], []
    _find(model.graph, _Scope(model.graph, None, "", opsets), found, others)
    if not found:
        also = f" (it has {_listing(others)}, not ONNX's operators)" if others else ""
        raise ValueError(f"{path} has no LSTM, GRU or RNN node, in its graph or any "
                         f"subgraph{also}")
    labels = [_label(node) for node, _ in found]
    if name is not None and labels.count(name) != 1:
        problem = "no" if name not in labels else "more than one"
        raise ValueError(f"{path} has {problem} LSTM, GRU or RNN node named {name!r}; its "
                         f"recurrent nodes are {_listing(found)}")
    layers = []
    for node, scope in found:
        try:
            layers.append(_Layer(node, scope))
        except ValueError as error:
            if name is None:
                raise
            layers.append(error)  # with name=, only the chosen node's chain must load
    chains = []  # runs of indices into layers, each a stack of consecutive layers
    for k, layer in enumerate(layers):
        previous = layers[chains[-1][-1]] if chains else None
        if isinstance(layer, _Layer) and isinstance(previous, _Layer) and \
                layer.continues(previous):
            chains[-1].append(k)
        else:
            chains.append([k])
    if name is not None:
        target = labels.index(name)
        if isinstance(layers[target], ValueError):
            raise layers[target]
        chains = [next(chain for chain in chains if target in chain)]
    modules = []
    for chain in chains:
        first = layers[chain[0]]
        modules.append(_build([layers[k] for k in chain],
                              first.batch_first or _input_transposed(first)))
    return modules[0] if len(modules) == 1 else modules
