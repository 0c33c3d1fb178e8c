"""``Sequential``: modules called one after another, with torch's names "0", "1", ..."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from .module import Module

__all__ = ["Sequential"]


class Sequential(Module):
    r"""Calls its modules in order, each on the previous one's output, like
    ``torch.nn.Sequential``. Built from modules (named ``"0"``, ``"1"``, ...) or from
    one ``OrderedDict`` of name -> module; parameter names follow (``"0.weight"``).

    Supports ``len``, iteration, ``seq[i]`` (negative too), ``seq[i:j]`` (a new
    ``Sequential`` sharing the modules) and ``append``.

    Example:
        >>> import numpy as np
        >>> from rnnkit import nn
        >>> model = nn.Sequential(nn.Linear(4, 8), nn.Dropout(0.1), nn.Linear(8, 2))
        >>> [name for name, _ in model.named_parameters()]
        ['0.weight', '0.bias', '2.weight', '2.bias']
        >>> len(model), type(model[-1]).__name__
        (3, 'Linear')
        >>> model.eval()(np.zeros((5, 4), np.float32)).shape
        (5, 2)
    """

    def __init__(self, *args: Module):
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            items = list(args[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(args)]
        for name, module in items:
            if not isinstance(module, Module):
                raise TypeError(
                    f"Sequential takes rnnkit.nn.Module instances, got {type(module).__name__} "
                    f"as module {name!r}"
                )
            self.add_module(name, module)

    def _index(self, idx: int) -> str:
        size = len(self._modules)
        if not -size <= idx < size:
            raise IndexError(f"index {idx} is out of range for a Sequential of {size} modules")
        return list(self._modules)[idx % size]

    def __getitem__(self, idx):
        if isinstance(idx, slice):
            return Sequential(OrderedDict(list(self._modules.items())[idx]))
        return self._modules[self._index(idx)]

    def __setitem__(self, idx: int, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(
                f"Sequential takes rnnkit.nn.Module instances, got {type(module).__name__}"
            )
        self._modules[self._index(idx)] = module

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        """Add ``module`` at the end, named by its position; returns ``self`` (torch's)."""
        if not isinstance(module, Module):
            raise TypeError(
                f"Sequential takes rnnkit.nn.Module instances, got {type(module).__name__}"
            )
        self.add_module(str(len(self)), module)
        return self

    def forward(self, input):
        for module in self._modules.values():
            input = module(input)
        return input

    def config(self) -> dict:
        """The modules' classes and configs, in order (used by ``rnnkit.save``); each entry
        also carries its ``"name"`` when the names are not the default "0", "1", ...."""
        names = list(self._modules)
        specs = [{"class": type(m).__name__, "config": m.config()} for m in self._modules.values()]
        if names != [str(i) for i in range(len(names))]:
            for spec, name in zip(specs, names, strict=True):
                spec["name"] = name
        return {"modules": specs}
