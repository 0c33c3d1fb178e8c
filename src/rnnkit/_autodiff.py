"""Autograd primitives around the fused recurrences; grad, value_and_grad, no_grad.

HIPS autograd (https://github.com/HIPS/autograd) differentiates the glue: indexing,
packing, concatenation, ``Linear``, losses. A recurrent module's whole stack of
layers is one primitive (``stacked_layers``), and so is a single layer-direction
(``lstm_layer`` and friends, which the cells use); their VJPs run the fused,
hand-derived backward of each whole sequence once (docs/equations.md) and hand back
the gradients autograd asks for.

When no gradient is being taken (no traced argument, or inside ``no_grad``), the
layers call the inference forward instead, which keeps no per-step history.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
from autograd.builtins import DictBox, DictVSpace
from autograd.core import make_vjp
from autograd.extend import VSpace, defvjp_argnums, primitive
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.tracer import getval, isbox

from . import _ops
from ._random import dropout_mask

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
    return not _grad_disabled() and any(isbox(v) for v in values)


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


def _select(grads, argnums):
    """Only the gradients autograd asks for, each computed on demand."""
    return tuple(grads[k]() for k in argnums)


# ---------------------------------------------------------------- LSTM


@primitive
def _lstm_layer(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes, reverse):
    """One layer, one direction. Returns (output, h_n, c_n, saved)."""
    output, h_n, c_n, saved = _ops.lstm_forward(
        x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes, reverse, keep=True
    )
    return output, h_n, c_n, _Saved(saved)


def _lstm_layer_vjp(argnums, ans, args, kwargs):
    x, _, _, w_ih, w_hh, _, w_hr, batch_sizes, reverse = args
    saved = ans[3].arrays

    def vjp(g):
        d_output, dh_n, dc_n, _ = g  # nobody uses `saved`: its cotangent is a placeholder
        dx, dh0, dc0, dw_ih, dw_hh, db, dw_hr = _ops.lstm_backward(
            x, w_ih, w_hh, w_hr, saved, d_output, dh_n, dc_n, batch_sizes, reverse
        )
        grads = {0: lambda: dx, 1: lambda: dh0, 2: lambda: dc0, 3: lambda: dw_ih,
                 4: lambda: dw_hh, 5: lambda: db, 6: lambda: dw_hr}
        return _select(grads, argnums)

    return vjp


defvjp_argnums(_lstm_layer, _lstm_layer_vjp)


def lstm_layer(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes=None, reverse=False):
    """One LSTM layer-direction over ``x (L, N, H_in)``. Returns ``output, h_n, c_n``."""
    if _tracing(x, h_0, c_0, w_ih, w_hh, b, w_hr):
        res = _lstm_layer(x, h_0, c_0, w_ih, w_hh, b, w_hr, batch_sizes, reverse)
        return res[0], res[1], res[2]
    output, h_n, c_n, _ = _ops.lstm_forward(
        *map(getval, (x, h_0, c_0, w_ih, w_hh, b, w_hr)), batch_sizes, reverse, keep=False
    )
    return output, h_n, c_n


# ---------------------------------------------------------------- GRU


@primitive
def _gru_layer(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse):
    """One layer, one direction. Returns (output, h_n, saved)."""
    output, h_n, saved = _ops.gru_forward(
        x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse, keep=True
    )
    return output, h_n, _Saved(saved)


def _gru_layer_vjp(argnums, ans, args, kwargs):
    x, _, w_ih, w_hh, _, _, batch_sizes, reverse = args
    saved = ans[2].arrays

    def vjp(g):
        d_output, dh_n, _ = g
        dx, dh0, dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(
            x, w_ih, w_hh, saved, d_output, dh_n, batch_sizes, reverse
        )
        grads = {0: lambda: dx, 1: lambda: dh0, 2: lambda: dw_ih, 3: lambda: dw_hh,
                 4: lambda: db_ih, 5: lambda: db_hh}
        return _select(grads, argnums)

    return vjp


defvjp_argnums(_gru_layer, _gru_layer_vjp)


def gru_layer(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes=None, reverse=False):
    """One GRU layer-direction over ``x (L, N, H_in)``. Returns ``output, h_n``."""
    if _tracing(x, h_0, w_ih, w_hh, b_ih, b_hh):
        res = _gru_layer(x, h_0, w_ih, w_hh, b_ih, b_hh, batch_sizes, reverse)
        return res[0], res[1]
    output, h_n, _ = _ops.gru_forward(
        *map(getval, (x, h_0, w_ih, w_hh, b_ih, b_hh)), batch_sizes, reverse, keep=False
    )
    return output, h_n


# ---------------------------------------------------------------- Elman RNN


@primitive
def _rnn_layer(x, h_0, w_ih, w_hh, b, nonlinearity, batch_sizes, reverse):
    """One layer, one direction. Returns (output, h_n, saved)."""
    output, h_n, saved = _ops.rnn_forward(
        x, h_0, w_ih, w_hh, b, nonlinearity, batch_sizes, reverse, keep=True
    )
    return output, h_n, _Saved(saved)


def _rnn_layer_vjp(argnums, ans, args, kwargs):
    x, _, w_ih, w_hh, _, nonlinearity, batch_sizes, reverse = args
    saved = ans[2].arrays

    def vjp(g):
        d_output, dh_n, _ = g
        dx, dh0, dw_ih, dw_hh, db = _ops.rnn_backward(
            x, w_ih, w_hh, saved, d_output, dh_n, nonlinearity, batch_sizes, reverse
        )
        grads = {0: lambda: dx, 1: lambda: dh0, 2: lambda: dw_ih, 3: lambda: dw_hh,
                 4: lambda: db}
        return _select(grads, argnums)

    return vjp


defvjp_argnums(_rnn_layer, _rnn_layer_vjp)


def rnn_layer(x, h_0, w_ih, w_hh, b, nonlinearity="tanh", batch_sizes=None, reverse=False):
    """One Elman RNN layer-direction over ``x (L, N, H_in)``. Returns ``output, h_n``."""
    if _tracing(x, h_0, w_ih, w_hh, b):
        res = _rnn_layer(x, h_0, w_ih, w_hh, b, nonlinearity, batch_sizes, reverse)
        return res[0], res[1]
    output, h_n, _ = _ops.rnn_forward(
        *map(getval, (x, h_0, w_ih, w_hh, b)), nonlinearity, batch_sizes, reverse, keep=False
    )
    return output, h_n


# ---------------------------------------------------------------- a stack of layers
# A module's whole stack (every layer and direction, the dropout between layers) is
# one primitive: per traced call autograd then records one node for the recurrences,
# not a node per layer-direction plus its bias sum, output unpacking, concatenation
# of the directions and stacking of the final states (each node costs tens of
# microseconds of tracing and backward bookkeeping; at seed size that was most of a
# training step). Its VJP runs the layers' fused backwards from the top down.


def _layer_weights(flat, k, bias, proj):
    """Layer-direction ``k``'s ``(w_ih, w_hh, b_ih, b_hh, w_hr)`` from the flat list."""
    per = 2 + 2 * bias + proj
    w = flat[k * per:(k + 1) * per]
    b_ih, b_hh = (w[2], w[3]) if bias else (None, None)
    return w[0], w[1], b_ih, b_hh, (w[-1] if proj else None)


@primitive
def _stack(spec, x, h_0, c_0, *flat):
    """Returns ``(output, h_n, c_n, saved)`` for the LSTM, ``(output, h_n, saved)`` else."""
    return _stack_forward(spec, x, h_0, c_0, flat, keep=True)


def _stack_forward(spec, x, h_0, c_0, flat, keep):
    """The stack's forward on plain arrays; ``keep``: also the histories the VJP needs."""
    mode, num_layers, D, dropout_p, training, nonlinearity, batch_sizes, bias, proj = spec
    lstm = mode == "LSTM"
    h_n = np.empty_like(h_0)
    c_n = np.empty_like(c_0) if lstm else None
    layer_input, saved = x, []
    for layer in range(num_layers):
        outs, kept = [], []
        for direction in range(D):
            k = D * layer + direction
            w_ih, w_hh, b_ih, b_hh, w_hr = _layer_weights(flat, k, bias, proj)
            reverse = direction == 1
            if lstm:
                b = None if b_ih is None else b_ih + b_hh
                out, h_n[k], c_n[k], s = _ops.lstm_forward(
                    layer_input, h_0[k], c_0[k], w_ih, w_hh, b, w_hr, batch_sizes, reverse,
                    keep=keep)
            elif mode == "GRU":
                out, h_n[k], s = _ops.gru_forward(layer_input, h_0[k], w_ih, w_hh, b_ih, b_hh,
                                                  batch_sizes, reverse, keep=keep)
            else:
                b = None if b_ih is None else b_ih + b_hh
                out, h_n[k], s = _ops.rnn_forward(layer_input, h_0[k], w_ih, w_hh, b,
                                                  nonlinearity, batch_sizes, reverse, keep=keep)
            outs.append(out)
            kept.append(s)
        output = outs[0] if D == 1 else np.concatenate(outs, axis=2)  # forward first
        mask = None
        if layer < num_layers - 1 and training and dropout_p > 0:  # between layers only
            mask = dropout_mask(output.shape, output.dtype, dropout_p)
            output = output * mask
        if keep:
            saved.append((layer_input, kept, mask))
        layer_input = output
    return (layer_input, h_n) + ((c_n,) if lstm else ()) + (_Saved(saved),)


def _stack_vjp(argnums, ans, args, kwargs):
    spec, x, h_0, c_0, *flat = args
    mode, num_layers, D, _, _, nonlinearity, batch_sizes, bias, proj = spec
    lstm = mode == "LSTM"
    saved = ans[-1].arrays
    H_out = h_0.shape[2]

    def vjp(g):
        d, dh_n = g[0], g[1]
        dc_n = g[2] if lstm else None
        dh_0 = np.empty_like(h_0)
        dc_0 = np.empty_like(c_0) if lstm else None
        d_flat = [None] * len(flat)
        for layer in range(num_layers - 1, -1, -1):
            layer_input, kept, mask = saved[layer]
            if mask is not None:
                d = d * mask
            d_input = None
            for direction in range(D):
                k = D * layer + direction
                w_ih, w_hh, _, _, w_hr = _layer_weights(flat, k, bias, proj)
                d_dir = d if D == 1 else d[:, :, direction * H_out:(direction + 1) * H_out]
                reverse = direction == 1
                if lstm:
                    dx, dh_0[k], dc_0[k], dw_ih, dw_hh, db, dw_hr = _ops.lstm_backward(
                        layer_input, w_ih, w_hh, w_hr, kept[direction], d_dir, dh_n[k],
                        dc_n[k], batch_sizes, reverse)
                    grads = [dw_ih, dw_hh] + ([db, db.copy()] if bias else []) + \
                        ([dw_hr] if proj else [])
                elif mode == "GRU":
                    dx, dh_0[k], dw_ih, dw_hh, db_ih, db_hh = _ops.gru_backward(
                        layer_input, w_ih, w_hh, kept[direction], d_dir, dh_n[k], batch_sizes,
                        reverse)
                    grads = [dw_ih, dw_hh] + ([db_ih, db_hh] if bias else [])
                else:
                    dx, dh_0[k], dw_ih, dw_hh, db = _ops.rnn_backward(
                        layer_input, w_ih, w_hh, kept[direction], d_dir, dh_n[k],
                        nonlinearity, batch_sizes, reverse)
                    grads = [dw_ih, dw_hh] + ([db, db.copy()] if bias else [])
                d_flat[k * len(grads):(k + 1) * len(grads)] = grads  # b_ih, b_hh: one sum
                d_input = dx if d_input is None else d_input + dx
            d = d_input
        by_arg = {1: d, 2: dh_0, 3: dc_0}  # 0 is spec, 4... the flat weights
        return tuple(by_arg[a] if a < 4 else d_flat[a - 4] for a in argnums)

    return vjp


defvjp_argnums(_stack, _stack_vjp)


def stacked_layers(mode, x, h_0, c_0, flat, num_layers, num_directions, dropout_p, training,
                   nonlinearity, batch_sizes, bias, proj):
    """Every layer and direction of a recurrent module, traced as one autograd node.

    ``flat`` holds per layer-direction ``w_ih, w_hh`` then ``b_ih, b_hh`` (with bias) then
    ``w_hr`` (with projection). Returns ``output, h_n, c_n`` (``c_n`` None but for the
    LSTM), as ``nn.functional.recurrent_layers``.
    """
    spec = (mode, num_layers, num_directions, dropout_p, training, nonlinearity, batch_sizes,
            bias, proj)
    c_0 = c_0 if mode == "LSTM" else None
    if _tracing(x, h_0, c_0, *flat):
        res = _stack(spec, x, h_0, c_0, *flat)
    else:  # nothing to differentiate: keep no per-step history
        res = _stack_forward(spec, *map(getval, (x, h_0, c_0)), list(map(getval, flat)),
                             keep=False)
    return res[0], res[1], (res[2] if mode == "LSTM" else None)


# ---------------------------------------------------------------- plain numpy on traced values

_PLAIN_NUMPY = (
    "{name} was called on a value that rnnkit is differentiating; plain NumPy functions "
    "do not carry gradients. Use rnnkit.numpy.{short} instead (import rnnkit.numpy as rnp)"
)


def _refuse_array_function(self, func, types, args, kwargs):
    name = f"{func.__module__}.{func.__name__}"
    raise TypeError(_PLAIN_NUMPY.format(name=name, short=func.__name__))


def _refuse_array(self, *args, **kwargs):
    raise TypeError(_PLAIN_NUMPY.format(name="numpy.asarray/np.array", short="array"))


# Ufuncs (np.tanh, np.exp, ...) already dispatch to autograd's wrappers through
# ArrayBox.__array_ufunc__ and differentiate correctly; every other NumPy function
# would silently turn the traced value into an object array, so it is refused.
ArrayBox.__array_function__ = _refuse_array_function
ArrayBox.__array__ = _refuse_array


# ---------------------------------------------------------------- grad, value_and_grad


class _Parameters(dict):
    """A module's parameters while tracing (name -> array).

    Each parameter looked up in a traced dict is an autograd ``container_take``, and
    each of those asks for the dict's vector space, which maps over every entry:
    quadratic in the number of parameters. This dict builds its vector space once.
    """

    __slots__ = ("_vspace",)


class _ParametersVSpace(DictVSpace):
    def _subval(self, xs, idx, x):
        # Called as each parameter's gradient lands in the gradient dict, which autograd
        # owns and has marked mutable: set it in place. DictVSpace copies the dict through
        # autograd's traced `dict`, a primitive call per parameter.
        xs[idx] = x
        return xs


def _parameters_vspace(value: _Parameters) -> DictVSpace:
    try:
        return value._vspace
    except AttributeError:
        value._vspace = _ParametersVSpace(value)
        return value._vspace


VSpace.register(_Parameters, _parameters_vspace)
DictBox.register(_Parameters)


def _is_module(obj) -> bool:
    from .nn.modules.module import Module  # modules import this file, not the reverse

    return isinstance(obj, Module)


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
        start = tuple(
            _Parameters((name, np.asarray(p)) for name, p in args[k].named_parameters())
            if k in modules else args[k]
            for k in nums
        )

        def traced(values):
            call_args = list(args)
            with contextlib.ExitStack() as stack:
                for k, value in zip(nums, values):
                    if k in modules:
                        stack.enter_context(modules[k]._traced_parameters(value))
                    else:
                        call_args[k] = value
                return fun(*call_args, **kwargs)

        with warnings.catch_warnings():
            # A loss that does not depend on some argument has a zero gradient for it.
            warnings.filterwarnings("ignore", message="Output seems independent of input")
            vjp, value = make_vjp(traced, start)
            if np.ndim(value) != 0:
                raise ValueError(
                    f"the function to differentiate must return a scalar loss, got an "
                    f"array of shape {np.shape(value)}; reduce it, e.g. with .sum() or .mean()"
                )
            grads = vjp(np.ones_like(value))
        for k, g in zip(nums, grads):
            if k in modules:
                params = dict(modules[k].named_parameters())
                for name, g_p in g.items():
                    p = params[name]
                    p.grad = np.array(g_p, dtype=p.dtype) if p.grad is None else p.grad + g_p
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


def is_traced(value: Any) -> bool:
    """True for a value autograd is tracing (inside ``grad``/``value_and_grad``)."""
    return isbox(value)
