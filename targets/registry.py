"""One registry of named compile targets (`--target NAME`, `ingot list-targets`).

A target module registers its names at import with `register(name, make)`; `make()` returns the
target object, which has `.name`, `.describe()` (what the artefact header records) and
`.runnable_here()` (None, or why this host cannot run its code). A new family of targets adds
its module to _MODULES.
"""
from __future__ import annotations

import importlib

from ..errors import IngotError

_MODULES = ("ingot.targets.cpu.host", "ingot.targets.cuda.target")
_MAKERS: dict = {}
ALIASES = {"native": "host"}


def register(name: str, make) -> None:
    _MAKERS[name] = make


def _load() -> None:
    for m in _MODULES:
        importlib.import_module(m)


def names() -> list:
    _load()
    return list(_MAKERS)


def resolve_target(name):
    """The target object for `name` (None, "host" and "native" are this host)."""
    _load()
    name = ALIASES.get(name, name) or "host"
    if name not in _MAKERS:
        raise IngotError(f"unknown target '{name}' (available: {', '.join(_MAKERS)}; "
                         "see `ingot list-targets`)")
    return _MAKERS[name]()


def list_targets() -> list:
    """One row per target: name, triple, cpu, features, and whether this host runs its code."""
    rows = []
    for name in names():
        t = _MAKERS[name]()
        why = t.runnable_here()
        rows.append({"name": name, "triple": t.triple, "cpu": t.cpu,
                     "features": t.feature_list(), "runs_here": why is None, "why_not": why})
    return rows
