"""ONNX export and import of rnnkit's recurrent layers (optional: ``pip install 'rnnkit[onnx]'``).

``export`` writes an LSTM/GRU/RNN layer (or a ``Sequential`` of ``Linear``, ``Embedding``,
``Dropout`` and ``Identity``) as an ONNX graph of the standard ``LSTM``/``GRU``/``RNN``
operators, which onnxruntime runs; ``load_weights`` turns the recurrent nodes of an
ONNX model (ours, or one from ``torch.onnx.export``) back into rnnkit layers.

``rnnkit.onnx`` is an attribute of ``rnnkit``, imported on first access (like
``torch.onnx``). Importing ``rnnkit`` never imports ``onnx``; this package imports it on
first use.
"""

from __future__ import annotations

import os

__all__ = ["export", "load_weights"]

_HINT = "rnnkit.onnx needs the onnx package: pip install 'rnnkit[onnx]'"


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as error:
        raise ImportError(f"{_HINT} ({error})") from error


def export(module, path: str | os.PathLike, input, *, opset_version: int = 17,
           initial_states: bool = False, sequence_lens: bool = False, dtype=None) -> None:
    """Write ``module`` to ``path`` as an ONNX model.

    Recurrent layers become a chain of ONNX ``LSTM``/``GRU``/``RNN`` nodes, one per
    layer (``direction="bidirectional"`` for two directions), with torch's gate order
    and output layout restored around them, so the graph computes what the layer's
    forward does in eval mode (no dropout).

    Cell options (API.md "Cell options (beyond torch)"): an LSTM's ``peepholes=True``
    becomes the operator's ``P`` input (D, 3*hidden_size), its rows reordered from
    rnnkit's i|f|o to ONNX's i|o|f; ``recurrent_dropout`` does nothing in eval mode and
    exports as a plain layer. ``layer_norm=True`` and ``zoneout > 0`` have no ONNX
    operator: a ``ValueError`` naming the option, for a layer anywhere in ``module``.

    Args:
        module: an ``nn.LSTM``/``GRU``/``RNN``, or an ``nn.Sequential`` of ``Linear``,
            ``Embedding``, ``Dropout`` and ``Identity`` (a recurrent layer may come last).
        path: the ``.onnx`` file to write.
        input: an example input array, or its shape. Batch and sequence length are
            dynamic in the graph; the feature size is fixed.
        opset_version: ONNX opset to target, at least 14. Default: 17
        initial_states: add graph inputs ``h_0`` (and ``c_0``) with the layer's shapes.
        sequence_lens: add a graph input ``sequence_lens`` (int32, one length per batch
            entry): each sequence stops at its own length, as with a ``PackedSequence``;
            outputs past a sequence's end are zero.
        dtype: the graph's float type; default the module's. onnxruntime runs the
            recurrent operators in float32 only.

    Graph inputs ``input`` [, ``h_0``, ``c_0``, ``sequence_lens``]; outputs ``output``,
    ``h_n`` [, ``c_n``] with torch's shapes.

    Raises:
        ImportError: onnx is not installed.
        ValueError: a module or option the export cannot express (``proj_size``,
            ``layer_norm=True``, ``zoneout > 0``); the message names it.

    Example:
        >>> import os, tempfile, onnx, rnnkit
        >>> path = os.path.join(tempfile.mkdtemp(), "lstm.onnx")
        >>> rnnkit.onnx.export(rnnkit.nn.LSTM(3, 4, num_layers=2), path, (5, 2, 3))
        >>> [o.name for o in onnx.load(path).graph.output]   # onnxruntime runs it as is
        ['output', 'h_n', 'c_n']
    """
    _require_onnx()
    from ._export import export as _export

    _export(module, path, input, opset_version=opset_version,
            initial_states=initial_states, sequence_lens=sequence_lens, dtype=dtype)


def load_weights(path: str | os.PathLike, *, name: str | None = None):
    """Rebuild rnnkit layers, with torch-layout weights, from the LSTM/GRU/RNN nodes of an
    ONNX model.

    The nodes are searched for in the main graph and in every subgraph (``If`` branches,
    ``Loop`` and ``Scan`` bodies), whose nodes may read the stored tensors of the graphs
    around them. Weights are read where they are stored (initializers, ``Constant``
    nodes), through the ops that only select, reorder or cast them (``Slice``,
    ``Concat``, ``Unsqueeze``, ``Transpose``, ``Cast``, ... as ``torch.onnx.export``
    writes for an ``LSTMCell``).

    An LSTM node's peephole input ``P`` (ONNX rows i|o|f) loads as ``peepholes=True``
    with ``weight_ph_l{k}`` in rnnkit's rows i|f|o; in a stack where only some nodes have
    ``P``, the others get zero peepholes (the same function). An all-zero ``P`` on every
    node of a stack loads as a plain LSTM.

    Consecutive nodes where each reads the previous one's output (as the layers of
    ``rnnkit.onnx.export`` or ``torch.onnx.export`` do) become one multi-layer module;
    a leading ``Transpose`` from the graph input marks ``batch_first``.

    Args:
        path: the ``.onnx`` file to read.
        name: the name of one recurrent node (or, for an unnamed node, of its first
            output): only the module of the stack holding that node is rebuilt and
            returned; the other nodes need not be loadable. Default: all of them

    Returns:
        With ``name``, the module of that node's stack. Without, the module when the
        model holds one stack, else a list of modules in graph order (a subgraph's
        nodes counting where the node holding it runs).

    Raises:
        ImportError: onnx is not installed.
        TypeError: ``name`` is not a string.
        ValueError: no recurrent node (the message names LSTM/GRU/RNN nodes of other
            domains, if any); ``name`` names none (or several) of them (the message lists
            the recurrent nodes, with their op type and graph); weights computed from graph
            inputs rather than stored; an operator variant rnnkit has no layer for
            (clipping, ``input_forget=1``, ``direction="reverse"``,
            ``linear_before_reset=0``, other activations); or an input of the wrong shape
            or beyond the operator's (the message names it).

    Example:
        >>> import os, tempfile, numpy as np, rnnkit
        >>> path = os.path.join(tempfile.mkdtemp(), "gru.onnx")
        >>> gru = rnnkit.nn.GRU(3, 4, num_layers=2, bidirectional=True)
        >>> rnnkit.onnx.export(gru, path, (5, 2, 3))
        >>> rnnkit.onnx.load_weights(path)
        GRU(3, 4, num_layers=2, bidirectional=True)
        >>> rnnkit.onnx.load_weights(path, name="GRU_node_17")  # the stack's second node
        GRU(3, 4, num_layers=2, bidirectional=True)
    """
    if name is not None and not isinstance(name, str):
        raise TypeError(f"name must be a str, the name of a recurrent node, got "
                        f"{type(name).__name__}")
    _require_onnx()
    from ._import import load_weights as _load_weights

    return _load_weights(path, name=name)
