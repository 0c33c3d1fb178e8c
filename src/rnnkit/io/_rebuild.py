"""Module rebuild for :func:`rnnkit.load_module`: the class a file names, looked up among
those of ``rnnkit.nn`` and ``rnnkit.models`` (never imported by the file's say), called
with its saved config. Nested modules are ``{"class", "config"}`` specs; a
``Sequential``'s config is ``{"modules": [spec, ...]}``, the specs named (``"name"``)
unless their names are the default "0", "1", ...."""

from __future__ import annotations

import importlib
from collections import OrderedDict

_MAX_CONFIG_DEPTH = 20


def allowed_classes() -> dict:
    """The classes ``load_module`` may build: those of ``rnnkit.nn`` and ``rnnkit.models``."""
    from .. import nn
    from ..nn.modules.module import Module

    def exported(module):
        names = getattr(module, "__all__", None) or [n for n in dir(module)
                                                     if not n.startswith("_")]
        out = {}
        for n in names:
            obj = getattr(module, n, None)
            if isinstance(obj, type) and issubclass(obj, Module):
                out[n] = obj
        return out

    classes = exported(nn)
    try:
        models = importlib.import_module("rnnkit.models")  # a fixed name, never the file's
    except ModuleNotFoundError as error:
        if error.name not in ("rnnkit.models",):
            raise
    else:
        for n, cls in exported(models).items():
            classes.setdefault(n, cls)
    return classes


def _is_spec(value) -> bool:
    return (isinstance(value, dict) and set(value) <= {"class", "config", "name"}
            and isinstance(value.get("class"), str) and "config" in value)


def build(class_name, config, classes, depth=0):
    """``classes[class_name](**config)``, its nested specs built first."""
    if depth > _MAX_CONFIG_DEPTH:
        raise ValueError("the module configuration is nested too deeply to rebuild")
    if not isinstance(class_name, str) or class_name not in classes:
        raise ValueError(
            f"cannot rebuild class {class_name!r}: load_module builds only the classes of "
            f"rnnkit.nn and rnnkit.models ({', '.join(sorted(classes))}); build the module "
            "yourself and call module.load_state_dict(rnnkit.load(path))"
        )
    cls = classes[class_name]
    if not isinstance(config, dict):
        raise ValueError(f"the config of {class_name} must be a JSON object, got "
                         f"{type(config).__name__}")

    def rebuild(value):
        if _is_spec(value):
            return build(value["class"], value["config"], classes, depth + 1)
        if isinstance(value, list) and value and all(_is_spec(v) for v in value):
            return [rebuild(v) for v in value]
        return value

    if set(config) == {"modules"} and isinstance(config["modules"], list):  # Sequential
        specs = config["modules"]
        if not all(_is_spec(v) for v in specs):
            raise ValueError(f"the modules of {class_name} must be {{'class', 'config'}} "
                             "objects")
        children = [rebuild(v) for v in specs]
        names = [v.get("name") for v in specs]
        if all(isinstance(n, str) for n in names) and names != [str(i) for i in
                                                                 range(len(names))]:
            return cls(OrderedDict(zip(names, children, strict=True)))
        return cls(*children)
    return cls(**{k: rebuild(v) for k, v in config.items()})
