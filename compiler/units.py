"""Offload units: the weights laid out so that each layer (and the output head) is one
page-aligned run of the artefact, in the order a step reads them.

At run time a unit is either resident (its pages stay mapped) or streamed: the step asks the
kernel to read it ahead (madvise WILLNEED) one unit before it is needed and drops its pages
(MADV_DONTNEED) once every thread is past it, so a model bigger than the memory budget runs
with only the resident units plus the one being read in memory. Weights that several units
share (RoPE tables) and the token embedding that only the first step's lookup touches belong
to no unit: they stay resident.
"""
from __future__ import annotations

import re

from .ir import Op

PAGE = 4096
_LAYER = re.compile(r"blk\.(\d+)\.")


def _layer(node) -> str | None:
    names = {w.name for w in node.weights.values() if w is not None}
    layers = {m.group(1) for n in names if (m := _LAYER.match(n))}
    return f"layer {layers.pop()}" if len(layers) == 1 else None


def node_units(graph) -> list:
    """Per node, the unit its weights belong to: its layer, "embed" for the token lookup
    (which touches one row per token), "head" for weighted nodes after the last layer (final
    norm, output projection), None for the rest (RoPE tables shared by all layers)."""
    layer = [_layer(n) for n in graph.nodes]
    last = max((i for i, u in enumerate(layer) if u), default=-1)
    out = []
    for i, n in enumerate(graph.nodes):
        if n.op is Op.EMBED:
            out.append("embed")
        elif layer[i]:
            out.append(layer[i])
        elif i > last and any(w is not None for w in n.weights.values()):
            out.append("head")
        else:
            out.append(None)
    return out


def assign_units(graph) -> tuple[list, dict]:
    """(unit names in execution order, id(weight) -> its unit, or None when shared).
    A table that the lookup and the head both use (tied embeddings) belongs to the head: the
    lookup only faults in the rows it needs."""
    order: list = []
    users: dict = {}
    for node, unit in zip(graph.nodes, node_units(graph)):
        if unit is not None and unit not in order:
            order.append(unit)
        for w in node.weights.values():
            if w is not None:
                users.setdefault(id(w), set()).add(unit)
    owner = {}
    for wid, us in users.items():
        if len(us) > 1:
            us = us - {"embed"}
        owner[wid] = next(iter(us)) if len(us) == 1 else None
    return order, owner


def layout_weights(weights, owner: dict, order: list, nbytes, align: int):
    """Offsets for the weights: unowned first, then each unit's weights starting on a page.
    Returns (offsets by id, total bytes, [(unit, first byte, bytes)] page-aligned runs)."""
    rank = {u: i for i, u in enumerate(order)}
    keyed = sorted(weights, key=lambda w: -1 if owner.get(id(w)) is None
                   else rank[owner[id(w)]])
    offsets, off, runs = {}, 0, []
    current = object()
    for w in keyed:
        unit = owner.get(id(w))
        if unit is not None and unit != current:
            off = (off + PAGE - 1) // PAGE * PAGE
            runs.append([unit, off, 0])
        current = unit
        off = (off + align - 1) // align * align
        offsets[id(w)] = off
        off += nbytes(w)
        if unit is not None:
            runs[-1][2] = off - runs[-1][1]
    off = (off + PAGE - 1) // PAGE * PAGE
    return offsets, off, [tuple(r) for r in runs]
