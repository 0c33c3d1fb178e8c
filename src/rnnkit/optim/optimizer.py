"""``Optimizer``: torch's parameter groups, state and ``step`` over NumPy parameters.

Parameters are :class:`rnnkit.nn.Parameter` arrays, updated in place
(``p[...] = ...``). ``step()`` reads each parameter's ``.grad``; ``step(grads)``
takes the dict ``rnnkit.value_and_grad`` returns (or a list of arrays), matched
to the parameters by order.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from .._validate import from_torch

__all__ = ["Optimizer"]


class _ByIdentity(MutableMapping):
    """A dict keyed by parameter identity: arrays are not hashable, and equal values
    are different parameters. ``opt.state[p]`` works as in torch."""

    def __init__(self):
        self._keys: dict[int, Any] = {}
        self._values: dict[int, Any] = {}

    def __getitem__(self, key):
        return self._values[id(key)]

    def __setitem__(self, key, value):
        self._keys[id(key)] = key
        self._values[id(key)] = value

    def __delitem__(self, key):
        del self._keys[id(key)], self._values[id(key)]

    def __iter__(self) -> Iterator:
        return iter(list(self._keys.values()))

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return id(key) in self._keys


class Optimizer:
    """Base class of the optimizers, with torch's ``param_groups``, ``state``,
    ``zero_grad``, ``state_dict`` and ``load_state_dict``.

    Args:
        params: an iterable of parameters, or of dicts (parameter groups) each with
            a ``"params"`` entry and any hyperparameters that override ``defaults``.
        defaults: the hyperparameters of every group, by name.

    Subclasses implement ``_update(p, g, state, group)``: one parameter's update from
    its gradient ``g`` (never None), its ``state`` dict and its group's settings.
    """

    def __init__(self, params, defaults: dict):
        self.defaults = dict(defaults)
        self.state: MutableMapping = _ByIdentity()
        self.param_groups: list[dict] = []
        if isinstance(params, np.ndarray):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of parameters "
                "or dicts, but got a single array; pass [p] or model.parameters()"
            )
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], Mapping):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines += [f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params"]
        return "\n".join(lines + [")"])

    def add_param_group(self, param_group: dict) -> None:
        """Add a group of parameters with its own hyperparameters (defaults fill the rest)."""
        if not isinstance(param_group, Mapping):
            raise TypeError(f"param_group must be a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("a parameter group must have a 'params' entry")
        params = [params] if isinstance(params, np.ndarray) else list(params)
        for i, p in enumerate(params):
            if not (isinstance(p, np.ndarray) and hasattr(p, "grad")):
                raise TypeError(
                    f"optimizer can only optimize rnnkit.nn.Parameter arrays, but parameter "
                    f"{i} of the group is a {type(p).__name__}"
                )
            if not np.issubdtype(p.dtype, np.floating):
                raise TypeError(f"optimizer can only optimize float parameters, got {p.dtype}")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params):
            raise ValueError("some parameters appear in more than one parameter group")
        if len({id(p) for p in params}) != len(params):
            raise ValueError("a parameter group holds the same parameter twice")
        group["params"] = params
        for name, default in self.defaults.items():
            group.setdefault(name, default)
        self.param_groups.append(group)

    def _params(self) -> list:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear every parameter's ``.grad``: None by default, as torch, or zeros."""
        for p in self._params():
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad = np.zeros_like(np.asarray(p))

    # ------------------------------------------------------------ step

    def _gradients(self, grads) -> list:
        """One gradient (or None) per parameter, in parameter order."""
        params = self._params()
        if grads is None:
            return [p.grad for p in params]
        if isinstance(grads, Mapping):
            names, values = list(grads.keys()), list(grads.values())
        elif isinstance(grads, (list, tuple)):
            names, values = [f"grads[{i}]" for i in range(len(grads))], list(grads)
        else:
            raise TypeError(
                "step() takes a dict of gradients (as rnnkit.value_and_grad returns), a "
                f"list/tuple of arrays in parameter order, or nothing; got {type(grads).__name__}"
            )
        if len(values) != len(params):
            raise ValueError(
                f"step() got {len(values)} gradients for the optimizer's {len(params)} "
                "parameters; they are matched by order, so pass the dict of the model whose "
                "parameters() built the optimizer"
            )
        out = []
        for i, (name, g, p) in enumerate(zip(names, values, params, strict=True)):
            if g is None:
                out.append(None)
                continue
            g = np.asarray(g)
            if g.shape != p.shape:
                label = name if isinstance(grads, (list, tuple)) else f"grads[{name!r}]"
                raise ValueError(
                    f"{label} has shape {g.shape}, but the optimizer's parameter {i} (matched "
                    f"by order) has shape {p.shape}"
                )
            out.append(g)
        return out

    def step(self, grads=None):
        """Update every parameter in place from its gradient.

        Args:
            grads: None to use each parameter's ``.grad`` (parameters whose ``.grad``
                is None are skipped, as torch); the dict ``rnnkit.value_and_grad``
                returns, matched to the parameters by order (count and every shape are
                checked); a list or tuple of arrays in parameter order; or a closure
                (torch's ``step(closure)``) that computes the loss and sets ``.grad``.

        Returns:
            The closure's loss, or None.
        """
        loss = None
        if callable(grads) and not isinstance(grads, Mapping):
            loss, grads = grads(), None
        gradients = iter(self._gradients(grads))
        for group in self.param_groups:
            for p in group["params"]:
                g = next(gradients)
                if g is None:
                    continue
                g = np.asarray(g)
                if g.dtype != p.dtype:
                    g = g.astype(p.dtype)
                if p not in self.state:
                    self.state[p] = {}
                self._update(p, g, self.state[p], group)
        return loss

    def _update(self, p: np.ndarray, g: np.ndarray, state: dict, group: dict) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define _update()")

    # ------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """torch's layout, as plain containers of ndarray copies::

            {"state": {index: {name: ndarray, ...}, ...},
             "param_groups": [{hyperparameter: value, ..., "params": [index, ...]}, ...]}

        Parameters are numbered in order across groups; only those with state appear.
        """
        index = {id(p): i for i, p in enumerate(self._params())}
        state = {}
        for p in self._params():
            if p in self.state:
                state[index[id(p)]] = {
                    k: (np.array(v, copy=True) if isinstance(v, np.ndarray) else copy.deepcopy(v))
                    for k, v in self.state[p].items()
                }
        groups = []
        for group in self.param_groups:
            g = {k: copy.deepcopy(v) for k, v in group.items() if k != "params"}
            g["params"] = [index[id(p)] for p in group["params"]]
            groups.append(g)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Restore hyperparameters and state saved by :meth:`state_dict` (ours or torch's,
        with tensors converted to arrays); parameters are matched by order."""
        if not isinstance(state_dict, Mapping) or not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("state_dict must be a dict with 'state' and 'param_groups' entries")
        saved_groups = list(state_dict["param_groups"])
        if len(saved_groups) != len(self.param_groups):
            raise ValueError(
                f"loaded state dict has {len(saved_groups)} parameter groups, but the optimizer "
                f"has {len(self.param_groups)}"
            )
        id_map = {}
        for i, (saved, group) in enumerate(zip(saved_groups, self.param_groups, strict=True)):
            if len(saved["params"]) != len(group["params"]):
                raise ValueError(
                    f"parameter group {i} of the loaded state dict has {len(saved['params'])} "
                    f"parameters, but the optimizer's has {len(group['params'])}"
                )
            id_map.update(zip(saved["params"], group["params"], strict=True))
        new_state: dict = {}
        for key, entries in state_dict["state"].items():
            key = int(key) if isinstance(key, str) and key.isdigit() else key
            if key not in id_map:
                raise ValueError(f"loaded state dict has state for unknown parameter {key}")
            p = id_map[key]
            entry = {}
            for name, value in entries.items():
                value = from_torch(value)
                if name == "step":
                    entry[name] = np.array(value, dtype=np.float32)
                elif value is None:
                    entry[name] = None
                else:
                    array = np.asarray(value)
                    if array.shape != p.shape:
                        raise ValueError(
                            f"state[{key}][{name!r}] has shape {array.shape}, but parameter "
                            f"{key} has shape {p.shape}"
                        )
                    entry[name] = array.astype(p.dtype, copy=True)
            new_state[id(p)] = (p, entry)
        self.state = _ByIdentity()
        for p, entry in new_state.values():
            self.state[p] = entry
        for saved, group in zip(saved_groups, self.param_groups, strict=True):
            for k, v in saved.items():
                if k != "params":
                    group[k] = tuple(v) if isinstance(v, list) and k == "betas" else v


def _check_hyper(name: str, value, minimum: float = 0.0) -> float:
    if not value >= minimum:  # also refuses nan
        raise ValueError(f"Invalid {name}: {value}")
    return value
