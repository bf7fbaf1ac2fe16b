"""Tracing: run a family's block composition against a GraphBuilder to get the graph IR.

The builder's weight callback resolves canonical roles through the model source, checks each
tensor's shape against what the architecture expects, and asks the quantization policy for the
weight's storage type.
"""
from __future__ import annotations

from ..errors import IngotError
from ..quant.policy import Policy
from .ir import Graph, GraphBuilder, Weight
from .source import ModelSource


def trace(src: ModelSource, policy: Policy, *, max_seq: int, chunk: int | None = None,
          kv_cache: str = "f32") -> Graph:
    """`chunk`: the most tokens one prefill call takes (sizes sliding-window KV rings);
    `kv_cache`: the KV cache's storage type."""
    cache: dict = {}

    def get_weight(role: str, shape: tuple, optional: bool):
        if role in cache:
            return cache[role]
        ref = src.lookup(role)
        if ref is None:
            if optional:
                return None
            raise IngotError(f"model is missing tensor '{role}'" if src.family.tensors is None
                             else f"model is missing tensor '{_file_name(src, role)}'")
        if tuple(ref.shape) != tuple(shape):
            raise IngotError(f"tensor '{ref.name}' has shape {list(ref.shape)}, expected "
                             f"{list(shape)} from the model's configuration")
        w = Weight(role, tuple(shape), policy.choose(role, shape, ref.qtype), ("file", ref))
        cache[role] = w
        return w

    b = GraphBuilder(get_weight, chunk=chunk or max_seq, kv_cache=kv_cache)
    src.family.build(b, src.spec, max_seq)
    return b.finish(arch=src.spec.arch)


def _file_name(src: ModelSource, role: str) -> str:
    import re
    m = re.match(r"blk\.(\d+)\.(.*)", role)
    pat = src.family.tensors.get("blk.{i}." + m.group(2) if m else role, role)
    return pat.format(i=m.group(1)) if m else pat
