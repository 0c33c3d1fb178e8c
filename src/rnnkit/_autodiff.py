"""Autograd primitives around the fused recurrences; grad, value_and_grad, no_grad.

HIPS autograd (https://github.com/HIPS/autograd) differentiates the glue: indexing,
packing, concatenation, ``Linear``, losses. A recurrent module's whole stack of
layers is one primitive (``stacked_layers``); a cell is the same primitive with one
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
from autograd.extend import VSpace, defvjp_argnums, primitive
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


def _tracing(*values) -> bool:
    """True when a gradient must flow through this call."""
    return not _grad_disabled() and any(map(isbox, values))


# ---------------------------------------------------------------- saved activations


class _Saved:
    """What a layer's backward needs, riding along as the primitive's last output.

    Nobody differentiates it: its vector space has a single point, so autograd
    allocates nothing for its cotangent.
    """

    __slots__ = ("arrays",)

    def __init__(self, arrays):
        self.arrays = arrays


class _SavedVSpace(VSpace):
    def __init__(self, value):
        pass

    def zeros(self):
        return _Saved(None)

    def _add(self, x, y):
        return x

    def _mut_add(self, x, y):
        return x

    def _covector(self, x):
        return x

    def _scalar_mul(self, x, a):
        return x

    def _inner_prod(self, x, y):
        return 0.0


VSpace.register(_Saved, _SavedVSpace)


# ---------------------------------------------------------------- the stack primitive
# A module's whole stack (every layer and direction, the dropout between layers) is
# one primitive: per traced call autograd then records one node for the recurrences,
# not a node per layer-direction plus its bias sum, output unpacking, concatenation
# of the directions and stacking of the final states (each node costs tens of
# microseconds of tracing and backward bookkeeping; at seed size that was most of a
# training step). A cell is the same primitive with one layer, one direction and one
# step. Its VJP runs the layers' fused backwards from the top down.


class StackSpec(NamedTuple):
    """What a stack is, besides its arrays: the primitive's first, untraced argument."""

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


def _stack_value(spec, x, h_0, c_0, flat):
    """The primitives' value: ``(output, h_n, c_n, saved)`` for the LSTM, ``(output, h_n,
    saved)`` else (autograd has no vector space for a None output)."""
    if _fusable(spec, x, h_0, c_0, flat):
        output, h_n, c_n, saved = _fused_forward(spec, x, h_0, c_0, flat)
    else:
        output, h_n, c_n, saved = _stack_forward(spec, x, h_0, c_0, flat, keep=True)
    return (output, h_n) + ((c_n,) if c_n is not None else ()) + (_Saved(saved),)


# ---------------------------------------------------------------- small stacks: fused
# A small traced call (``_ops.is_small``) without cell options or dropout between layers
# runs its whole training forward in one compiled call and its whole backward in another
# (``_kernels/stack_train.py``), not a wrapper call, allocations and GEMMs per
# layer-direction. The weights are the traced values, not necessarily a module's flat
# buffer: they are copied into one per call (``_ops.SmallStack``); the weights' gradients
# come back in one flat buffer, of which each weight's gradient is a view.

_FUSED_TRAIN = True  # tests switch it off to run the layer-by-layer path


class _Fused(NamedTuple):
    """``saved`` of a fused forward: the compiled stack, its histories, and whether the
    states are a cell's ``(N, H)`` (the stack takes ``(1, N, H)``)."""

    stack: object
    arrays: tuple
    cell: bool


def _fusable(spec, x, h_0, c_0, flat):
    """Whether a traced call runs fused: small, no options, no dropout, one float dtype."""
    if not _FUSED_TRAIN or spec.options.any or (spec.training and spec.dropout > 0):
        return False
    dt = x.dtype
    if x.shape[0] == 0 or x.shape[1] == 0:  # no step or no row: nothing to fuse
        return False
    if dt not in (np.float32, np.float64) or h_0.dtype != dt or (
            c_0 is not None and c_0.dtype != dt) or any(w.dtype != dt for w in flat):
        return False
    return _ops.is_small(spec.mode, x, spec.num_layers, spec.num_directions,
                         flat[0].shape[0] // MODES[spec.mode].gates, h_0.shape[-1])


def _fused_forward(spec, x, h_0, c_0, flat):
    """``_stack_forward(keep=True)`` in one compiled call, the weights copied flat."""
    stack = _ops.SmallStack(spec.mode, flat, spec.num_layers, spec.num_directions, spec.bias,
                            spec.proj)
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


@primitive
def _stack(spec, x, h_0, c_0, *flat):
    """The stack on weights passed one by one (a cell, a user's own arrays)."""
    return _stack_value(spec, x, h_0, c_0, flat)


@primitive
def _stack_in_dict(spec, keys, x, h_0, c_0, params):
    """The stack on the weights ``params[k] for k in keys``: a module's, read straight from
    the traced parameter dict (one graph node, no lookup node per weight)."""
    return _stack_value(spec, x, h_0, c_0, [params[k] for k in keys])


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


def _stack_backward(spec, h_0, c_0, flat, saved, g):
    """The stack's VJP: ``(dx, dh_0, dc_0, d_flat)`` from the outputs' cotangents ``g``."""
    mode = MODES[spec.mode]
    if isinstance(saved, _Fused):
        return _fused_backward(saved, g, mode.cell_state)
    D = spec.num_directions
    H_out = h_0.shape[-1]
    d, dh_n = g[0], g[1]  # nobody uses `saved`: its cotangent is a placeholder
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


def _stack_vjp(argnums, ans, args, kwargs):
    spec, x, h_0, c_0, *flat = args

    def vjp(g):
        d, dh_0, dc_0, d_flat = _stack_backward(spec, h_0, c_0, flat, ans[-1].arrays, g)
        by_arg = {1: d, 2: dh_0, 3: dc_0}  # 0 is spec, 4... the flat weights
        return tuple(by_arg[a] if a < 4 else d_flat[a - 4] for a in argnums)

    return vjp


defvjp_argnums(_stack, _stack_vjp)


def _stack_in_dict_vjp(argnums, ans, args, kwargs):
    spec, keys, x, h_0, c_0, params = args

    def vjp(g):
        flat = [params[k] for k in keys]
        d, dh_0, dc_0, d_flat = _stack_backward(spec, h_0, c_0, flat, ans[-1].arrays, g)
        # the weights' gradients alone: a partial dict, which _ParametersVSpace adds to
        # the other gradients of the same dict key by key
        by_arg = {2: d, 3: dh_0, 4: dc_0,
                  5: _Parameters(zip(keys, d_flat, strict=True))}
        return tuple(by_arg[a] for a in argnums)

    return vjp


defvjp_argnums(_stack_in_dict, _stack_in_dict_vjp)


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
            its flat weight buffer (no copy of ``flat`` per call), or None.

    Returns:
        ``output (L, N, D * H_out), h_n, c_n`` (``c_n`` None but for the LSTM).
    """
    cell_state = MODES[spec.mode].cell_state
    c_0 = c_0 if cell_state else None
    if isinstance(flat, ParamsInDict):
        if not _grad_disabled():
            res = _stack_in_dict(spec, flat.keys, x, h_0, c_0, flat.params)
            return res[0], res[1], (res[2] if cell_state else None)
        params = getval(flat.params)
        flat = [params[k] for k in flat.keys]
    boxed = any(map(isbox, (x, h_0, c_0, *flat)))
    if boxed and not _grad_disabled():
        res = _stack(spec, x, h_0, c_0, *flat)
        return res[0], res[1], (res[2] if cell_state else None)
    # nothing to differentiate (inside no_grad the values may still be boxes): keep no
    # per-step history
    if boxed:
        x, h_0, c_0, flat = getval(x), getval(h_0), getval(c_0), list(map(getval, flat))
        small = None  # the module's buffer holds its parameters, not these values
    if not (spec.training and spec.dropout > 0) and not spec.options.any and _ops.is_small(
            spec.mode, x, spec.num_layers, spec.num_directions, flat[0].shape[0] //
            MODES[spec.mode].gates, h_0.shape[-1]):
        # a small call: every layer and direction in one compiled call
        stack = small() if small is not None else None
        if stack is None:
            stack = _ops.SmallStack(spec.mode, flat, spec.num_layers, spec.num_directions,
                                    spec.bias, spec.proj)
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
_own_traces: set[int] = set()  # traces rnnkit is running; trace ids are never reused


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


@contextlib.contextmanager
def _own_trace(values):
    """While rnnkit traces ``values``, plain NumPy calls on its boxes are refused."""
    traces = {v._trace for v in values if isbox(v)}
    new = traces - _own_traces
    _own_traces.update(new)
    try:
        yield
    finally:
        _own_traces.difference_update(new)


# ---------------------------------------------------------------- grad, value_and_grad


class _Parameters(dict):
    """A module's parameters while tracing (name -> array).

    Each parameter looked up in a traced dict is an autograd ``container_take``, and
    each of those asks for the dict's vector space, which maps over every entry:
    quadratic in the number of parameters. This dict builds its vector space once.
    """

    __slots__ = ("_vspace",)


class _ParametersVSpace(DictVSpace):
    """A parameter dict's gradients. A recurrent stack's VJP returns a partial dict (its own
    weights' gradients only: ``_stack_in_dict``), so sums go key by key, a key missing on
    one side counting as zero; ``value_and_grad`` gives every parameter without a
    gradient its zeros at the end."""

    def _subval(self, xs, idx, x):
        # Called as each parameter's gradient lands in the gradient dict, which autograd
        # owns and has marked mutable: set it in place. DictVSpace copies the dict through
        # autograd's traced `dict`, a primitive call per parameter.
        xs[idx] = x
        return xs

    def _add(self, xs, ys):
        out = _Parameters(xs)
        for k, y in ys.items():
            out[k] = out[k] + y if k in out else y
        return out

    def _mut_add(self, xs, ys):
        for k, y in ys.items():
            xs[k] = xs[k] + y if k in xs else y  # not in place: y may be another's array
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


def _copies(arrays: dict) -> dict:
    """Fresh copies of ``arrays`` (name -> array): one copy of their buffer when they are
    views tiling one (the fused stack's gradients), else one copy each."""
    values = list(arrays.values())
    base = values[0].base if values else None
    if (base is not None and base.ndim == 1 and base.flags.c_contiguous
            and all(v.base is base and v.flags.c_contiguous for v in values)):
        copy = base.copy()
        start, item = base.__array_interface__["data"][0], base.itemsize
        return {name: copy[(v.__array_interface__["data"][0] - start) // item:][:v.size]
                .reshape(v.shape) for name, v in arrays.items()}
    return {name: np.array(v) for name, v in arrays.items()}


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
        modules = {k: args[k] for k in nums if _is_module(args[k])}
        named = {k: dict(m.named_parameters()) for k, m in modules.items()}
        start = tuple(
            _Parameters((name, np.asarray(p)) for name, p in named[k].items())
            if k in modules else args[k]
            for k in nums
        )

        def traced(values):
            # one argument is traced as itself; several as a tuple, unpacked once here
            # (each index of a traced tuple is a node of the graph)
            values = (values,) if len(nums) == 1 else tuple(values)
            call_args = list(args)
            with contextlib.ExitStack() as stack:
                stack.enter_context(_own_trace(values))
                for k, value in zip(nums, values):
                    if k in modules:
                        stack.enter_context(modules[k]._traced_parameters(value))
                    else:
                        call_args[k] = value
                return fun(*call_args, **kwargs)

        # autograd's make_vjp, without its warning for a loss that does not depend on the
        # arguments (their gradient is zero) and without the warnings filter it would take
        # to silence that on every call
        start_value = start[0] if len(nums) == 1 else start
        start_node = VJPNode.new_root()
        with trace_stack.new_trace() as trace:
            start_box = new_box(start_value, trace, start_node)
            end_box = traced(start_box)
        if isbox(end_box) and end_box._trace == start_box._trace:
            value, end_node = end_box._value, end_box._node
        else:
            value, end_node = end_box, None
        if np.ndim(value) != 0:
            raise ValueError(
                f"the function to differentiate must return a scalar loss, got an "
                f"array of shape {np.shape(value)}; reduce it, e.g. with .sum() or .mean()"
            )
        grads = (vspace(start_value).zeros() if end_node is None
                 else backward_pass(np.ones_like(value), end_node))
        grads = [grads] if len(nums) == 1 else list(grads)
        for i, (k, g) in enumerate(zip(nums, grads)):
            if k in modules:
                params = named[k]
                g = grads[i] = {name: g[name] if name in g else np.zeros_like(np.asarray(p))
                                for name, p in params.items()}  # keyed like named_parameters
                fresh = None
                for name, g_p in g.items():
                    p = params[name]
                    if p.grad is not None:
                        p.grad = p.grad + g_p
                    elif g_p.dtype == p.dtype:  # .grad never shares the returned dict's memory
                        fresh = _copies(g) if fresh is None else fresh
                        p.grad = fresh[name]
                    else:
                        p.grad = np.array(g_p, dtype=p.dtype)
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

