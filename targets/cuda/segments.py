"""Layer segments of a graph, so that a device map can run each layer on the GPU or the CPU.

Segment k < L is layer k's nodes (segment 0 also takes the nodes before layer 0: the token
lookup); segment L is the tail (final norm, output head). The plan records the segments' node
ranges and, per segment, the arena tensors it reads that an earlier segment wrote: the bytes
that cross a device boundary (`live_in`). The host-side code is one CPU entry per segment and
step, called in sequence; the CUDA launches carry their node index, so a launch range per
segment follows.
"""
from __future__ import annotations

from types import SimpleNamespace

from ...errors import IngotError
from ...compiler.units import node_units


def segment_bounds(graph, n_layers: int) -> list:
    """[0, s1, ..., sL, N]: segment k is nodes [b[k], b[k+1]); L + 1 segments."""
    units = node_units(graph)
    first = {}
    for i, u in enumerate(units):
        if u is not None and u not in first:
            first[u] = i
    starts = [0]
    for k in range(1, n_layers):
        if f"layer {k}" not in first:
            raise IngotError(f"cannot split the graph by layer: layer {k} has no weighted node")
        starts.append(first[f"layer {k}"])
    starts.append(first.get("head", len(graph.nodes)))
    bounds = starts + [len(graph.nodes)]
    if any(a > b for a, b in zip(bounds, bounds[1:])):
        raise IngotError("cannot split the graph by layer: layers are not in order")
    for i, u in enumerate(units):  # every layer's weighted nodes sit in its own segment
        if u and u.startswith("layer "):
            k = int(u.split()[1])
            if not bounds[k] <= i < bounds[k + 1]:
                raise IngotError(f"cannot split the graph by layer: node {i} of {u} lies "
                                 f"outside its segment")
    return bounds


def segment_of(bounds: list, node: int) -> int:
    k = 0
    while node >= bounds[k + 1]:
        k += 1
    return k


def _bytes(t) -> tuple:
    """(c0, c1): the tensor's bytes as c0 + c1 * n."""
    esize = 4 if t.dtype in ("f32", "i32") else 2
    return (0, t.cols * esize) if t.rows == "T" else (t.rows * t.cols * esize, 0)


def live_in(graph, plan, bounds: list) -> list:
    """Per segment, [arena offset, c0, c1, writer segment] for each arena tensor it reads that
    an earlier segment wrote last (graph inputs, the token ids, are excluded: the backends
    place them)."""
    writer: dict = {}   # id(root) -> last segment that wrote it
    out = []
    for k in range(len(bounds) - 1):
        need: dict = {}
        for node in graph.nodes[bounds[k]:bounds[k + 1]]:
            for t in node.inputs:
                r = getattr(t, "root", None)
                if r is None or r.kind in ("state", "input"):
                    continue
                w = writer.get(id(r))
                if w is not None and w < k and id(r) not in need:
                    need[id(r)] = [plan.offset(r), *_bytes(r), w]
            for t in node.outputs:
                if getattr(t, "root", None) is not None and t.root.kind != "state":
                    writer[id(t.root)] = k
        out.append(sorted(need.values()))
    return out


def segment_view(graph, bounds: list, k: int):
    """The nodes of segment k, as the CPU step renderer reads a graph."""
    return SimpleNamespace(nodes=graph.nodes[bounds[k]:bounds[k + 1]])
