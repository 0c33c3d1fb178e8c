"""The fused recurrences as nodes of autograd's graph; grad, value_and_grad, no_grad.

HIPS autograd (https://github.com/HIPS/autograd) differentiates the glue: indexing,
packing, concatenation, ``Linear``, losses. A recurrent module's whole stack of
layers is one node (``stacked_layers``); a cell is the same node with one
layer, one direction and one step. Its VJP runs the fused, hand-derived backward of
each layer-direction over the whole sequence once (docs/equations.md) and hands back
the gradients autograd asks for. What differs between LSTM, GRU and RNN is in
``rnnkit._modes``.

When no gradient is being taken (no traced argument, or inside ``no_grad``), the
layers call the inference forward instead, which keeps no per-step history.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from autograd.builtins import DictBox, DictVSpace
from autograd.core import VJPNode, backward_pass, vspace
from autograd.extend import VSpace
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.tracer import getval, isbox, new_box, trace_stack

from . import _ops
from ._modes import MODES, NO_OPTIONS, CellOptions, layer_weights, option_names
from ._random import dropout_mask, zoneout_mask

# ---------------------------------------------------------------- no_grad

_state = threading.local()


def _grad_disabled() -> bool:
    return getattr(_state, "no_grad", 0) > 0


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) that stops gradient tracking, like ``torch.no_grad``.

    Inside it, recurrent layers run their inference path: no gates and no state
    histories are kept, so memory beyond the output does not grow with sequence length.

    Example:
        >>> import numpy as np, rnnkit
        >>> with rnnkit.no_grad():
        ...     out, h_n = rnnkit.nn.GRU(4, 3)(np.zeros((6, 2, 4), np.float32))
        >>> out.shape
        (6, 2, 3)
    """

    def __enter__(self):
        _state.no_grad = getattr(_state, "no_grad", 0) + 1
        return self

    def __exit__(self, *exc):
        _state.no_grad -= 1
        return False


# ---------------------------------------------------------------- one node, several outputs
# A module's whole stack (every layer and direction, the dropout between layers) is one
# node of autograd's graph: per traced call autograd records one node for the
# recurrences, not a node per layer-direction plus its bias sum, output unpacking,
# concatenation of the directions and stacking of the final states (each node costs
# tens of microseconds of tracing and backward bookkeeping; at seed size that was most
# of a training step). A cell is the same node with one layer, one direction and one
# step.
#
# The node has three outputs (output, h_n, c_n). An autograd primitive has one, and a
# tuple of three would cost an indexing node per output, whose VJP fills the tuple's
# other places with zeros. So the stack's node is built by hand, as autograd's own
# primitives build theirs (a VJPNode: its parents and its VJP): a hub node whose parents
# are the traced inputs, and one small node per output whose VJP hands its cotangent to
# the hub in its place (``_Cotangents``). An output that nothing reads is never reached
# by the backward pass and costs nothing there; the hub's VJP, run once after all of
# its outputs', gives it zeros.


class _Cotangents:
    """The cotangents of a hub node's outputs, place ``i`` for output ``i`` (None until
    output ``i``'s arrives): what the output nodes hand to the hub, summed place by
    place when several arrive."""

    __slots__ = ("slots",)

    def __init__(self, slots):
        self.slots = slots


class _CotangentsVSpace(VSpace):
    def __init__(self, value):
        self.size = len(value.slots)

    def zeros(self):
        return _Cotangents([None] * self.size)

    def _add(self, x, y):
        return _Cotangents([a if b is None else b if a is None else a + b
                            for a, b in zip(x.slots, y.slots, strict=True)])

    def _mut_add(self, x, y):
        x.slots = self._add(x, y).slots
        return x


VSpace.register(_Cotangents, _CotangentsVSpace)


def _output_vjp(size, place, g):
    slots = [None] * size
    slots[place] = g
    return (_Cotangents(slots),)


def _node(parents, vjp) -> VJPNode:
    """A node of autograd's graph, as ``VJPNode.__init__`` makes one for a primitive."""
    node = VJPNode.__new__(VJPNode)
    node.parents, node.vjp = parents, vjp
    return node


def _one_node(args, forward, backward):
    """Trace ``forward`` as one node of the graph with several outputs.

    ``forward(values)`` runs on ``args`` unboxed and returns ``(outputs, saved)``;
    ``backward(saved, g)``, with ``g`` one cotangent per output (zeros for an output
    nothing read), returns one gradient per argument (None where nothing flows). The
    outputs come back boxed; a None output stays None. Higher-order and forward-mode
    derivatives are refused: the backward is a fused kernel, not traced code."""
    boxed = [(i, a) for i, a in enumerate(args) if isbox(a)]
    trace = boxed[0][1]._trace
    if any(a._trace != trace for _, a in boxed) or any(
            isbox(a._value) for _, a in boxed):
        raise NotImplementedError(
            "a recurrent layer cannot be differentiated twice (grad of grad): its "
            "backward is a fused kernel, not traced code")
    if any(type(a._node) is not VJPNode for _, a in boxed):
        raise NotImplementedError(
            "a recurrent layer has reverse-mode derivatives only (grad, value_and_grad)")
    outputs, saved = forward([getval(a) for a in args])
    size = len(outputs)

    def vjp(ct):
        g = [np.zeros_like(o) if c is None and o is not None else c
             for o, c in zip(outputs, ct.slots, strict=True)]
        grads = backward(saved, g)
        return tuple(grads[i] for i, _ in boxed)

    hub = _node(tuple(a._node for _, a in boxed), vjp)
    return tuple(None if o is None else
                 new_box(o, trace, _node((hub,), functools.partial(_output_vjp, size, i)))
                 for i, o in enumerate(outputs))


# ---------------------------------------------------------------- the stack


class StackSpec(NamedTuple):
    """What a stack is, besides its arrays: the node's first, untraced argument."""

    mode: str                # "LSTM", "GRU", "RNN_TANH" or "RNN_RELU" (rnnkit._modes)
    num_layers: int
    num_directions: int      # 2 when bidirectional
    dropout: float           # between layers, in training only
    training: bool
    batch_sizes: np.ndarray | None  # rows active at each step (packed input), or None
    bias: bool
    proj: bool               # the LSTM's weight_hr
    options: CellOptions = NO_OPTIONS  # layer norm, recurrent dropout, zoneout, peepholes

    def weights(self, flat, k):
        """Layer-direction ``k``'s weights (``rnnkit._modes.LayerWeights``)."""
        names = option_names(MODES[self.mode].cell_state, self.options)
        return layer_weights(flat, k, self.bias, self.proj, names)

    def one_call(self, x, H, P):
        """Whether the stack runs in one compiled call (``_ops.SmallStack``): no cell
        options, no dropout drawn between layers, and small (``_ops.is_small``) for ``x``
        and hidden sizes ``H``, ``P``."""
        return (not self.options.any and not (self.training and self.dropout > 0)
                and _ops.is_small(self.mode, x, self.num_layers, self.num_directions, H, P))

    def masks(self, L, N, H_out, dtype):
        """A layer-direction's draws of the options, as ``_ops_options`` takes them: in
        training the recurrent-dropout keep-mask ``(N, H_out)`` (scaled), then zoneout's
        ``d`` ``(L, N, H_out)`` (processing order); in eval, zoneout's probability."""
        o, masks = self.options, {}
        if self.training and o.recurrent_dropout > 0:
            masks["recurrent_mask"] = dropout_mask((N, H_out), dtype, o.recurrent_dropout)
        if o.zoneout > 0:
            if self.training:
                masks["zoneout_mask"] = zoneout_mask((L, N, H_out), dtype, o.zoneout)
            else:
                masks["zoneout_eval"] = o.zoneout
        return masks


def stack_train_forward(spec, x, h_0, c_0, flat, small=None):
    """The stack's forward on plain arrays, keeping what its backward needs:
    ``((output, h_n, c_n), saved)``, ``c_n`` None but for the LSTM. ``small`` as in
    ``stacked_layers``."""
    if _fusable(spec, x, h_0, c_0, flat):
        output, h_n, c_n, saved = _fused_forward(spec, x, h_0, c_0,
                                                 _small_stack_of(spec, flat, small))
    else:
        output, h_n, c_n, saved = _stack_forward(spec, x, h_0, c_0, flat, keep=True)
    return (output, h_n, c_n), saved


def _small_stack_of(spec, flat, small):
    """The compiled stack (``_ops.SmallStack``) that runs the weights ``flat``: the
    module's own (``small()``) when they are views of its buffer, read in place; else
    one over a copy of them."""
    stack = small() if small is not None else None
    if stack is None or any(w.base is not stack.weights for w in flat):
        stack = _ops.SmallStack(spec.mode, flat, spec.num_layers, spec.num_directions,
                                spec.bias, spec.proj)
    return stack


# ---------------------------------------------------------------- small stacks: fused
# A small traced call (``_ops.is_small``) without cell options or dropout between layers
# runs its whole training forward in one compiled call and its whole backward in another
# (``_kernels/stack_train.py``), not a wrapper call, allocations and GEMMs per
# layer-direction. A module's weights are read where they live, its flat buffer (the
# module's own ``_ops.SmallStack``); other weights are copied into one per call. The
# weights' gradients come back in one flat buffer, of which each weight's gradient is a
# view.

_FUSED_TRAIN = True  # tests switch it off to run the layer-by-layer path


class _Fused(NamedTuple):
    """``saved`` of a fused forward: the compiled stack, its histories, and whether the
    states are a cell's ``(N, H)`` (the stack takes ``(1, N, H)``)."""

    stack: object
    arrays: tuple
    cell: bool


def _fusable(spec, x, h_0, c_0, flat):
    """Whether a traced call runs fused: in one call (``StackSpec.one_call``), with one
    float dtype."""
    if not _FUSED_TRAIN or x.shape[0] == 0 or x.shape[1] == 0:  # no step or no row
        return False
    dt = x.dtype
    if dt not in (np.float32, np.float64) or h_0.dtype != dt or (
            c_0 is not None and c_0.dtype != dt) or any(w.dtype != dt for w in flat):
        return False
    return spec.one_call(x, flat[0].shape[0] // MODES[spec.mode].gates, h_0.shape[-1])


def _fused_forward(spec, x, h_0, c_0, stack):
    """``_stack_forward(keep=True)`` in one compiled call, on ``stack``."""
    cell = h_0.ndim == 2  # a cell's (N, H) states: its one layer-direction's
    output, h_n, c_n, arrays = stack.train_forward(
        x, h_0[None] if cell else h_0, (c_0[None] if cell else c_0) if c_0 is not None else None,
        spec.batch_sizes)
    if cell:
        h_n, c_n = h_n[0], (None if c_n is None else c_n[0])
    return output, h_n, c_n, _Fused(stack, arrays, cell)


def _fused_backward(saved, g, cell_state):
    """``_stack_backward`` of a fused forward: ``(dx, dh_0, dc_0, d_flat)``, ``d_flat``
    views of one flat gradient buffer."""
    stack, cell = saved.stack, saved.cell
    dh_n = g[1][None] if cell else g[1]
    dc_n = (g[2][None] if cell else g[2]) if cell_state else None
    dx, dh_0, dc_0, grad = stack.backward(saved.arrays, g[0], dh_n, dc_n)
    if cell:
        dh_0, dc_0 = dh_0[0], (None if dc_0 is None else dc_0[0])
    return dx, dh_0, dc_0, stack.grad_views(grad)


class ParamsInDict(NamedTuple):
    """A module's flat weights while tracing: the traced parameter dict and the keys of
    the weights in flat order (``_StackModule._stack_weights``)."""

    params: object   # a traced _Parameters
    keys: tuple


def _at(states, k):
    """Where layer-direction ``k``'s state sits: row ``k`` of ``(num_layers * D, N, H)``
    states; a cell's ``(N, H)`` state is that of its one layer-direction."""
    return k if states.ndim == 3 else Ellipsis


def _stack_forward(spec: StackSpec, x, h_0, c_0, flat, keep):
    """The stack's forward on plain arrays: ``(output, h_n, c_n, saved)``, ``c_n`` None but
    for the LSTM; ``saved``, with ``keep``, the histories the VJP needs.

    Random draws, in this order: per layer, per direction the options' masks
    (``StackSpec.masks``), then the dropout after the layer."""
    mode = MODES[spec.mode]
    D = spec.num_directions
    h_n = np.empty_like(h_0)
    c_n = np.empty_like(c_0) if mode.cell_state else None
    L, N = x.shape[:2]
    layer_input, saved = x, []
    for layer in range(spec.num_layers):
        outs, kept = [], []
        for direction in range(D):
            k = D * layer + direction
            at = _at(h_0, k)
            masks = spec.masks(L, N, h_0.shape[-1], x.dtype) if spec.options.any else {}
            out, h_n[at], c_k, s = mode.forward(
                layer_input, h_0[at], c_0[at] if mode.cell_state else None,
                spec.weights(flat, k), spec.batch_sizes, direction == 1, keep, masks)
            if mode.cell_state:
                c_n[at] = c_k
            outs.append(out)
            kept.append((s, masks))
        output = outs[0] if D == 1 else np.concatenate(outs, axis=2)  # forward first
        mask = None
        if layer < spec.num_layers - 1 and spec.training and spec.dropout > 0:  # between layers
            mask = dropout_mask(output.shape, output.dtype, spec.dropout)
            output = output * mask
        if keep:
            saved.append((layer_input, kept, mask))
        layer_input = output
    return layer_input, h_n, c_n, saved


def stack_backward(spec, h_0, c_0, flat, saved, g):
    """The stack's VJP: ``(dx, dh_0, dc_0, d_flat)`` from the outputs' cotangents ``g``
    (``output, h_n, c_n``) and ``saved`` of ``stack_train_forward``."""
    mode = MODES[spec.mode]
    if isinstance(saved, _Fused):
        return _fused_backward(saved, g, mode.cell_state)
    D = spec.num_directions
    H_out = h_0.shape[-1]
    d, dh_n = g[0], g[1]
    dc_n = g[2] if mode.cell_state else None
    dh_0 = np.empty_like(h_0)
    dc_0 = np.empty_like(c_0) if mode.cell_state else None
    d_flat = [None] * len(flat)
    for layer in range(spec.num_layers - 1, -1, -1):
        layer_input, kept, mask = saved[layer]
        if mask is not None:
            d = d * mask
        d_input = None
        for direction in range(D):
            k = D * layer + direction
            at = _at(h_0, k)
            d_dir = d if D == 1 else d[:, :, direction * H_out:(direction + 1) * H_out]
            saved_k, masks = kept[direction]
            dx, dh_0[at], dc_k, grads = mode.backward(
                layer_input, spec.weights(flat, k), saved_k, d_dir, dh_n[at],
                dc_n[at] if mode.cell_state else None, spec.batch_sizes, direction == 1,
                masks)
            if mode.cell_state:
                dc_0[at] = dc_k
            d_flat[k * len(grads):(k + 1) * len(grads)] = grads
            d_input = dx if d_input is None else d_input + dx
        d = d_input
    return d, dh_0, dc_0, d_flat


def _traced_stack(spec, x, h_0, c_0, flat, small):
    """``stacked_layers`` while differentiating: the stack as one node (``_one_node``).
    Its arguments are ``x, h_0, c_0`` and the weights, one by one, or (``ParamsInDict``)
    the traced parameter dict, whose gradient is then the stack's weights' alone: a
    partial dict that ``_ParametersVSpace`` adds to the rest key by key."""
    in_dict = isinstance(flat, ParamsInDict)
    args = (x, h_0, c_0) + ((flat.params,) if in_dict else tuple(flat))
    plain = []  # the forward's plain values: the backward's too

    def forward(values):
        x, h_0, c_0, *weights = values
        if in_dict:
            weights = [weights[0][k] for k in flat.keys]
        plain[:] = (h_0, c_0, weights)
        return stack_train_forward(spec, x, h_0, c_0, weights, small)

    def backward(saved, g):
        h_0, c_0, weights = plain
        d, dh_0, dc_0, d_flat = stack_backward(spec, h_0, c_0, weights, saved, g)
        if not in_dict:
            return (d, dh_0, dc_0, *d_flat)
        grads = _Parameters(zip(flat.keys, d_flat, strict=True))
        if isinstance(saved, _Fused):  # views of one buffer: value_and_grad copies it once
            grads._tiles = (d_flat[0].base, saved.stack.spans)
        return (d, dh_0, dc_0, grads)

    return _one_node(args, forward, backward)


def stacked_layers(spec: StackSpec, x, h_0, c_0, flat, small=None):
    """Every layer and direction of a recurrent module (or a cell's one step), traced as
    one autograd node.

    Args:
        spec: the stack's :class:`StackSpec`.
        x: ``(L, N, H_in)``, time-major; rows sorted by decreasing length when
            ``spec.batch_sizes`` is given.
        h_0: ``(num_layers * D, N, H_out)``. c_0: ``(num_layers * D, N, H_cell)`` for the
            LSTM, ignored for the others. A cell (one layer-direction) passes its
            ``(N, H)`` states as they are, and gets ``h_n``, ``c_n`` of that shape back:
            no traced indexing around it.
        flat: per layer-direction ``k = D * layer + direction`` its weights in the order
            of ``rnnkit._modes.weight_names``, then its option parameters
            (``rnnkit._modes.option_names``); or, while a module's parameters are traced,
            a :class:`ParamsInDict` naming them in that order.
        small: optionally, a callable giving the module's own ``_ops.SmallStack`` over
            its flat weight buffer (no copy of the weights per call), or None.

    Returns:
        ``output (L, N, D * H_out), h_n, c_n`` (``c_n`` None but for the LSTM).
    """
    cell_state = MODES[spec.mode].cell_state
    c_0 = c_0 if cell_state else None
    if isinstance(flat, ParamsInDict):
        if not _grad_disabled():
            return _traced_stack(spec, x, h_0, c_0, flat, small)
        params = getval(flat.params)
        flat = [params[k] for k in flat.keys]
    boxed = any(map(isbox, (x, h_0, c_0, *flat)))
    if boxed and not _grad_disabled():
        return _traced_stack(spec, x, h_0, c_0, flat, small)
    # nothing to differentiate (inside no_grad the values may still be boxes): keep no
    # per-step history
    if boxed:
        x, h_0, c_0, flat = getval(x), getval(h_0), getval(c_0), list(map(getval, flat))
        small = None  # the module's buffer holds its parameters, not these values
    if spec.one_call(x, flat[0].shape[0] // MODES[spec.mode].gates, h_0.shape[-1]):
        # a small call: every layer and direction in one compiled call
        stack = _small_stack_of(spec, flat, small)
        cell = h_0.ndim == 2  # a cell's (N, H) states: its one layer-direction's
        output, h_n, c_n = stack.run(x, h_0[None] if cell else h_0,
                                     (c_0[None] if cell else c_0) if cell_state else None,
                                     spec.batch_sizes)
        if cell:
            h_n, c_n = h_n[0], (c_n[0] if cell_state else None)
        return output, h_n, c_n
    output, h_n, c_n, _ = _stack_forward(spec, x, h_0, c_0, flat, keep=False)
    return output, h_n, c_n


# ---------------------------------------------------------------- plain numpy on traced values
# Ufuncs (np.tanh, np.exp, ...) already dispatch to autograd's wrappers through
# ArrayBox.__array_ufunc__ and differentiate correctly; every other NumPy function
# would silently turn a traced value into an object array and lose its gradient.
# rnnkit refuses those calls with a clear error, but only on its own traced values:
# the traces that rnnkit.grad / value_and_grad started are recorded while they run,
# and a box of any other trace (plain autograd code in the same process) behaves
# exactly as if nothing were patched. The hooks have to sit on ArrayBox itself,
# since every traced array is one: autograd picks the box class by the value's type.

_PLAIN_NUMPY = (
    "{name} was called on a value that rnnkit is differentiating; plain NumPy functions "
    "do not carry gradients. Use rnnkit.numpy.{short} instead (import rnnkit.numpy as rnp)"
)
_own_traces: set[int] = set()  # the traces (levels of autograd's stack) rnnkit is running


def _array_function(self, func, types, args, kwargs):
    if self._trace in _own_traces:
        raise TypeError(_PLAIN_NUMPY.format(name=f"{func.__module__}.{func.__name__}",
                                            short=func.__name__))
    # what NumPy does for an argument without __array_function__: run the implementation
    return func._implementation(*args, **kwargs)


def _refuse_array(*args, **kwargs):
    raise TypeError(_PLAIN_NUMPY.format(name="numpy.asarray/np.array", short="array"))


class _ArrayHook:
    """``__array__`` on rnnkit's own traced values only: elsewhere the attribute is absent
    (NumPy looks it up on the instance, and an AttributeError means "none")."""

    def __get__(self, box, owner=None):
        if box is None:
            return self
        if box._trace not in _own_traces:
            raise AttributeError("__array__")
        return _refuse_array


ArrayBox.__array_function__ = _array_function
ArrayBox.__array__ = _ArrayHook()


# ---------------------------------------------------------------- grad, value_and_grad


class _Parameters(dict):
    """A module's parameters while tracing (name -> array), or their gradients.

    Each parameter looked up in a traced dict is an autograd ``container_take``, and
    each of those asks for the dict's vector space, which maps over every entry:
    quadratic in the number of parameters. This dict builds its vector space once.

    A fused stack's gradient dict notes ``_tiles``, ``(buffer, spans)``: its values are
    views of ``buffer`` at ``spans`` (``(start, stop, shape)`` in key order), so that
    ``value_and_grad`` copies them for ``.grad`` in one copy. Any change to the dict
    forgets it.
    """

    __slots__ = ("_vspace", "_tiles")


def _untile(xs):
    """``xs`` changed: its values no longer tile one buffer (a gradient dict autograd made
    may be a plain dict, which notes nothing)."""
    if type(xs) is _Parameters:
        xs._tiles = None


class _ParametersVSpace(DictVSpace):
    """A parameter dict's gradients. A recurrent stack's VJP returns a partial dict (its own
    weights' gradients only: ``_traced_stack``), so sums go key by key, a key missing on
    one side counting as zero; ``value_and_grad`` gives every parameter without a
    gradient its zeros at the end."""

    def _subval(self, xs, idx, x):
        # Called as each parameter's gradient lands in the gradient dict, which autograd
        # owns and has marked mutable: set it in place. DictVSpace copies the dict through
        # autograd's traced `dict`, a primitive call per parameter.
        xs[idx] = x
        _untile(xs)
        return xs

    def _add(self, xs, ys):
        out = _Parameters(xs)
        for k, y in ys.items():
            out[k] = out[k] + y if k in out else y
        return out

    def _mut_add(self, xs, ys):
        for k, y in ys.items():
            xs[k] = xs[k] + y if k in xs else y  # not in place: y may be another's array
        _untile(xs)
        return xs


def _parameters_vspace(value: _Parameters) -> DictVSpace:
    try:
        return value._vspace
    except AttributeError:
        value._vspace = _ParametersVSpace(value)
        return value._vspace


VSpace.register(_Parameters, _parameters_vspace)
DictBox.register(_Parameters)


_MODULE = []  # the Module class, imported on first use (modules import this file)


def _is_module(obj) -> bool:
    if not _MODULE:
        from .nn.modules.module import Module

        _MODULE.append(Module)
    return isinstance(obj, _MODULE[0])


def _grads_for_module(g, table) -> dict:
    """A module's gradient dict, keyed like ``named_parameters()`` (zeros for a parameter
    nothing read), each also accumulated into the parameter's ``.grad``, which never
    shares the returned arrays' memory: a fresh ``.grad`` is a copy (of a fused stack's
    gradient buffer, one copy for all its views)."""
    tiles = getattr(g, "_tiles", None)
    if tiles is not None:
        buffer, spans = tiles
        fresh = buffer.copy()
        copies = [fresh[a:b].reshape(shape) for a, b, shape in spans]
        copies = dict(zip(g, copies, strict=True))
    else:
        copies = {}
    grads = {}
    for name, p in table.named:
        g_p = g.get(name) if g is not None else None
        if g_p is None:
            g_p = np.zeros(p.shape, p.dtype)
        grads[name] = g_p
        if p.grad is not None:
            p.grad = p.grad + g_p
        elif name in copies and g_p.dtype == p.dtype:
            p.grad = copies[name]
        else:
            p.grad = np.array(g_p, dtype=p.dtype)
    return grads


def value_and_grad(fun: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """Return a function computing ``fun``'s scalar value and its gradient, like ``jax``.

    ``argnums`` counts ``fun``'s positional arguments, the model being argument 0.
    A module argument gets a dict of gradients keyed like ``named_parameters()``,
    which is also accumulated into each parameter's ``.grad`` as torch's
    ``backward`` does; an array gets an array, a tuple of arrays a tuple.

    Example:
        >>> import numpy as np, rnnkit
        >>> lin = rnnkit.nn.Linear(3, 1, dtype=np.float64)
        >>> x = np.ones((4, 3))
        >>> loss, grads = rnnkit.value_and_grad(lambda m, x: (m(x) ** 2).mean())(lin, x)
        >>> sorted(grads), grads["weight"].shape
        (['bias', 'weight'], (1, 3))
    """
    single = isinstance(argnums, (int, np.integer))
    nums = (int(argnums),) if single else tuple(int(k) for k in argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        for k in nums:
            if not -len(args) <= k < len(args):
                raise ValueError(
                    f"argnums={argnums} asks for argument {k}, but the function got "
                    f"{len(args)} positional arguments"
                )
        tables = {k: args[k]._table() for k in nums if _is_module(args[k])}
        # a module's parameters are traced as one dict of plain views (kept with the
        # module's table: the same dict, and its vector space, every step)
        start = tuple(tables[k].plain if k in tables else args[k] for k in nums)

        # autograd's make_vjp, without its warning for a loss that does not depend on the
        # arguments (their gradient is zero) and the warnings filter it would take to
        # silence that on every call; and the trace's bookkeeping inline, not in four
        # context managers (a few microseconds each, on every training step)
        start_value = start[0] if len(nums) == 1 else start
        start_node = VJPNode.new_root()
        trace_stack.top += 1
        trace = trace_stack.top
        mine = trace not in _own_traces  # plain NumPy on its boxes is refused
        _own_traces.add(trace)
        traced = []
        try:
            start_box = new_box(start_value, trace, start_node)
            # one argument is traced as itself; several as a tuple, unpacked once here
            # (each index of a traced tuple is a node of the graph)
            values = (start_box,) if len(nums) == 1 else tuple(start_box)
            call_args = list(args)
            for k, value in zip(nums, values):
                if k in tables:
                    traced.append(args[k])
                    args[k]._trace_parameters(value)
                else:
                    call_args[k] = value
            end_box = fun(*call_args, **kwargs)
        finally:
            for module in traced:
                module._untrace_parameters()
            if mine:
                _own_traces.discard(trace)
            trace_stack.top -= 1
        if isbox(end_box) and end_box._trace == start_box._trace:
            value, end_node = end_box._value, end_box._node
        else:
            value, end_node = end_box, None
        if np.ndim(value) != 0:
            raise ValueError(
                f"the function to differentiate must return a scalar loss, got an "
                f"array of shape {np.shape(value)}; reduce it, e.g. with .sum() or .mean()"
            )
        if end_node is None:  # the loss does not depend on the arguments
            grads = [None if k in tables else vspace(start[i]).zeros()
                     for i, k in enumerate(nums)]
        else:
            grads = backward_pass(np.ones_like(value), end_node)
            grads = [grads] if len(nums) == 1 else list(grads)
        for i, k in enumerate(nums):
            if k in tables:
                grads[i] = _grads_for_module(grads[i], tables[k])
        result = tuple(grads)
        return value, (result[0] if single else result)

    return wrapped


def grad(fun: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """Like :func:`value_and_grad`, returning the gradients alone."""
    vg = value_and_grad(fun, argnums)

    @functools.wraps(fun)
    def wrapped(*args, **kwargs):
        return vg(*args, **kwargs)[1]

    return wrapped

