"""Tracing: run a family's block composition against a GraphBuilder to get the graph IR.

The builder's weight callback resolves canonical roles through the family's tensor table and
checks each tensor's shape against what the architecture expects.
"""
from __future__ import annotations

import re

from ..arch.registry import Family
from ..arch.spec import ModelSpec
from ..errors import IngotError
from ..quant.policy import storage_dtype
from .ir import Graph, GraphBuilder, Weight


def _file_name(family: Family, role: str) -> str:
    m = re.match(r"blk\.(\d+)\.(.*)", role)
    if m:
        return family.tensors["blk.{i}." + m.group(2)].format(i=m.group(1))
    return family.tensors[role]


def trace(family: Family, spec: ModelSpec, tensors: dict, *, dtype: str, max_seq: int) -> Graph:
    cache: dict = {}

    def get_weight(role: str, shape: tuple, optional: bool):
        if role in cache:
            return cache[role]
        name = _file_name(family, role)
        ref = tensors.get(name)
        if ref is None:
            if optional:
                return None
            raise IngotError(f"model is missing tensor '{name}'")
        if tuple(ref.shape) != tuple(shape):
            raise IngotError(f"tensor '{name}' has shape {list(ref.shape)}, expected "
                             f"{list(shape)} from config.json")
        w = Weight(role, tuple(shape), storage_dtype(role, shape, dtype), ("file", ref))
        cache[role] = w
        return w

    b = GraphBuilder(get_weight)
    family.build(b, spec, max_seq)
    return b.finish(arch=spec.arch)
