"""Module and Parameter: torch's container semantics on NumPy arrays."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from autograd.extend import VSpace
from autograd.numpy.numpy_boxes import ArrayBox
from autograd.numpy.numpy_vspaces import ArrayVSpace
from autograd.tracer import isbox

from ..._validate import from_torch

__all__ = ["Module", "Parameter"]


class Parameter(np.ndarray):
    """A trainable array: an ``ndarray`` that also carries ``.grad`` (ndarray or None).

    Arithmetic on a parameter gives a plain ndarray; in-place updates
    (``p -= lr * p.grad``) change the parameter, as optimizers do.
    """

    def __new__(cls, data):
        obj = np.array(data, copy=True).view(cls)
        obj.grad = None
        return obj

    def __array_finalize__(self, obj):
        self.grad = None  # a view or copy starts without a gradient

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # results of arithmetic are plain arrays, never Parameters
        result = np.asarray(array)
        return result[()] if return_scalar else result

    def __reduce__(self):  # pickles as a plain array
        return (np.array, (np.asarray(self),))

    def __repr__(self):
        return "Parameter containing:\n" + repr(np.asarray(self))


# autograd may meet a Parameter as the operand of a traced operation
ArrayBox.register(Parameter)
VSpace.register(Parameter, ArrayVSpace)


def _value(p):
    """A parameter as a plain ndarray view, or the traced value standing in for it."""
    return p if isbox(p) else np.asarray(p)


class _Traced:
    """A module's parameters while ``value_and_grad`` traces them: each is looked up in the
    traced dict ``box`` under ``keys[attribute]`` on first use. Each lookup is a node of
    autograd's graph, so parameters a forward never reads cost none, and a recurrent
    stack reads its own straight from ``box`` (``flat_keys``: the keys of its weights in
    flat order, ``_StackModule._stack_weights``)."""

    __slots__ = ("box", "keys", "flat_keys", "taken")

    def __init__(self, box, keys, flat_keys):
        self.box, self.keys, self.flat_keys, self.taken = box, keys, flat_keys, {}

    def take(self, attr):
        value = self.taken.get(attr)
        if value is None:
            value = self.taken[attr] = self.box[self.keys[attr]]
        return value


# What a module tree holds (which parameter objects, under which names) changes only
# through its modules' `_parameters` and `_modules` dicts; each change bumps one
# process-wide count, and what is derived from the tree (the parameter list that
# value_and_grad, zero_grad and parameters() walk on every training step) is kept
# until the count moves on. In-place updates of the arrays change no structure.
_structure = [0]


class _Registry(OrderedDict):
    """A module's ``_parameters`` or ``_modules``: an OrderedDict whose every change bumps
    the structure count (OrderedDict's C methods do not go through ``__setitem__``, so
    each is wrapped)."""

    def __setitem__(self, key, value):
        _structure[0] += 1
        super().__setitem__(key, value)

    def __delitem__(self, key):
        _structure[0] += 1
        super().__delitem__(key)

    def pop(self, *args):
        _structure[0] += 1
        return super().pop(*args)

    def popitem(self, last=True):
        _structure[0] += 1
        return super().popitem(last)

    def clear(self):
        _structure[0] += 1
        super().clear()

    def setdefault(self, key, default=None):
        _structure[0] += 1
        return super().setdefault(key, default)

    def update(self, *args, **kwargs):
        _structure[0] += 1
        super().update(*args, **kwargs)

    def move_to_end(self, key, last=True):
        _structure[0] += 1
        super().move_to_end(key, last)

    def __reduce__(self):  # copies and pickles are plain OrderedDicts turned back into these
        return (type(self), (list(self.items()),))


class _ParameterTable(NamedTuple):
    """A module tree's parameters as a training step reads them (``Module._table``)."""

    named: list        # (dotted name, Parameter), as named_parameters() yields them
    plain: dict        # dotted name -> the parameter as a plain ndarray view
    sources: list      # per module: (module, {attribute: dotted name}, flat keys or None)


class Module:
    """Base class of every layer, with torch's bookkeeping.

    Assigning a :class:`Parameter` or a :class:`Module` to an attribute registers
    it, in order, so ``named_parameters()`` lists them as torch does.
    """

    def __init__(self):
        object.__setattr__(self, "_parameters", _Registry())
        object.__setattr__(self, "_modules", _Registry())
        object.__setattr__(self, "_traced", None)
        object.__setattr__(self, "training", True)

    # ------------------------------------------------------------ attributes

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise AttributeError(
                f"cannot assign {name!r} before Module.__init__() is called; call "
                "super().__init__() first in your module's __init__"
            )
        if isinstance(value, Parameter):
            self._modules.pop(name, None)
            self.__dict__.pop(name, None)
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._parameters.pop(name, None)
            self.__dict__.pop(name, None)
            self._modules[name] = value
        elif name in self._parameters:
            if value is None:
                self._parameters[name] = None
            else:
                raise TypeError(
                    f"cannot assign {type(value).__name__} as parameter {name!r} "
                    "(rnnkit.nn.Parameter or None expected)"
                )
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        d = self.__dict__
        traced = d.get("_traced")
        if traced is not None and name in traced.keys:  # while tracing: the traced value
            return traced.take(name)
        if "_parameters" in d and name in d["_parameters"]:
            return d["_parameters"][name]
        if "_modules" in d and name in d["_modules"]:
            return d["_modules"][name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __delattr__(self, name):
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        """Register ``param`` (or None, a declared but absent parameter) as ``name``."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"parameter {name!r} must be a Parameter or None")
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        self._modules[name] = module

    # ------------------------------------------------------------ calling

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def _param(self, name: str):
        """The parameter ``name`` as the forward pass uses it (traced when differentiating)."""
        p = getattr(self, name)
        return None if p is None else _value(p)

    # ------------------------------------------------------------ traversal

    def named_modules(self, prefix: str = "") -> Iterator[tuple[str, Module]]:
        yield prefix, self
        for name, module in self._modules.items():
            if module is not None:
                yield from module.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def children(self) -> Iterator[Module]:
        for module in self._modules.values():
            if module is not None:
                yield module

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """Every parameter with its dotted name, in registration order (torch's); a
        parameter held by several modules is listed once, under its first name."""
        if prefix:
            for name, p in self._table().named:
                yield f"{prefix}.{name}", p
        else:
            yield from self._table().named

    def parameters(self) -> Iterator[Parameter]:
        for _, p in self._table().named:
            yield p

    def _table(self) -> _ParameterTable:
        """The parameters of this module tree, walked once and kept until any module's
        parameters or submodules change (``_structure``)."""
        cached = self.__dict__.get("_table_cache")
        if cached is not None and cached[0] == _structure[0]:
            return cached[1]
        first, named, sources = {}, [], []
        for module_prefix, module in self.named_modules():
            keys = {}
            for name, p in module._parameters.items():
                if p is None:
                    continue
                if id(p) not in first:  # a parameter held twice is listed once
                    first[id(p)] = f"{module_prefix}.{name}" if module_prefix else name
                    named.append((first[id(p)], p))
                keys[name] = first[id(p)]
            flat_names = module.__dict__.get("_flat_weights_names")
            flat_keys = (tuple(keys[n] for n in flat_names)
                         if flat_names is not None and all(n in keys for n in flat_names)
                         else None)
            sources.append((module, keys, flat_keys))
        table = _ParameterTable(named, {name: np.asarray(p) for name, p in named}, sources)
        object.__setattr__(self, "_table_cache", (_structure[0], table))
        return table

    def __getstate__(self):
        # the table refers to this process's parameter objects: copies walk their own
        state = self.__dict__.copy()
        state.pop("_table_cache", None)
        return state

    def __setstate__(self, state):
        # a Parameter pickles as a plain array (files hold arrays only): a copy's
        # parameters are Parameters again
        self.__dict__.update(state)
        params = self.__dict__.get("_parameters")
        if params is not None:
            for name, p in list(params.items()):
                if p is not None and not isinstance(p, Parameter):
                    params[name] = Parameter(p)

    # ------------------------------------------------------------ state

    def state_dict(self) -> OrderedDict:
        """An ordered dict of parameter name -> ndarray copy."""
        return OrderedDict((name, np.array(p, copy=True)) for name, p in self.named_parameters())

    def load_state_dict(self, state_dict, strict: bool = True):
        """Copy arrays (or anything ``np.asarray`` takes, e.g. CPU torch tensors) into the
        parameters of the same names.

        Raises:
            ValueError: a missing or unexpected key (with ``strict``), or an entry
                whose shape differs from the parameter's, naming the key and both shapes.

        Returns:
            ``(missing_keys, unexpected_keys)`` as lists, like torch's named tuple.
        """
        if not hasattr(state_dict, "items"):
            raise TypeError(
                f"state_dict must be a mapping of name -> array, got {type(state_dict).__name__}"
            )
        params = dict(self.named_parameters())
        missing = [k for k in params if k not in state_dict]
        unexpected = [k for k in state_dict if k not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append(f"missing keys {missing}")
            if unexpected:
                parts.append(f"unexpected keys {unexpected}")
            raise ValueError(
                f"error loading state_dict into {type(self).__name__}: {'; '.join(parts)}"
            )
        arrays = {}
        for name, value in state_dict.items():
            if name not in params:
                continue
            array = np.asarray(from_torch(value))
            if array.shape != params[name].shape:
                raise ValueError(
                    f"state_dict[{name!r}] has shape {array.shape}, but the parameter "
                    f"{name} of {type(self).__name__} has shape {params[name].shape}"
                )
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype,
                                                                              np.integer)):
                raise TypeError(f"state_dict[{name!r}] must hold numbers, got {array.dtype}")
            arrays[name] = array
        for name, array in arrays.items():  # nothing changes unless every entry is valid
            params[name][...] = array
        return missing, unexpected

    def train(self, mode: bool = True) -> Module:
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> Module:
        return self.train(False)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad`` (None by default, as torch)."""
        for _, p in self._table().named:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = np.zeros_like(np.asarray(p))

    def _trace_parameters(self, values) -> None:
        """Stand the traced ``values`` (a traced dict, dotted name -> value) in for the
        parameters while tracing, until ``_untrace_parameters``; each is looked up on first
        use (``_Traced``). A parameter held by several modules is one entry, its gradient
        summed over them."""
        for module, keys, flat_keys in self._table().sources:
            object.__setattr__(module, "_traced", _Traced(values, keys, flat_keys))

    def _untrace_parameters(self) -> None:
        for module, _, _ in self._table().sources:
            object.__setattr__(module, "_traced", None)

    # ------------------------------------------------------------ display

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"({name}): " + repr(m).replace("\n", "\n  ") for name, m in
                 self._modules.items()]
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not lines:
            return head + ")"
        return head + "\n  " + "\n  ".join(lines) + "\n)"
