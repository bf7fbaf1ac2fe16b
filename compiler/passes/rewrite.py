"""Helpers passes share: rebuild a graph with nodes replaced and tensor uses redirected."""
from __future__ import annotations

import dataclasses

from ..ir import Graph, Node, Tensor, Weight


def redirect(nodes, mapping: dict) -> list:
    """New nodes whose inputs use mapping[id(old)] in place of old (views included)."""
    def sub(t: Tensor) -> Tensor:
        return mapping.get(id(t), t)
    return [dataclasses.replace(n, inputs=[sub(t) for t in n.inputs]) for n in nodes]


def with_nodes(g: Graph, nodes: list, **extra_meta) -> Graph:
    meta = dict(g.meta)
    meta.setdefault("passes", [])
    meta["passes"] = list(meta["passes"]) + list(extra_meta.pop("passes", []))
    meta.update(extra_meta)
    return Graph(nodes, g.inputs, g.outputs, g.states, meta)


def merge_sibling_linears(g: Graph, roles: tuple, fused_role: str) -> Graph:
    """Fuse LINEAR nodes that read the same tensor and whose weights are the given roles of one
    layer (e.g. attn_q/attn_k/attn_v) into one LINEAR with stacked weights; the old outputs
    become column views of the fused output."""
    by_input: dict = {}
    for i, n in enumerate(g.nodes):
        if n.op.value == "linear":
            by_input.setdefault(id(n.inputs[0]), []).append(i)
    replace, drop, mapping = {}, set(), {}
    for idxs in by_input.values():
        group = {}
        for i in idxs:
            role = g.nodes[i].weights["w"].name
            for r in roles:
                if role.endswith(f".{r}.weight"):
                    group[r] = i
        if len(group) != len(roles):
            continue
        members = [g.nodes[group[r]] for r in roles]
        ws = [m.weights["w"] for m in members]
        has_b = ["b" in m.weights for m in members]
        if len({w.dtype for w in ws}) != 1 or len({w.shape[1] for w in ws}) != 1 or \
                len(set(has_b)) != 1:
            continue
        prefix = ws[0].name[: -len(f"{roles[0]}.weight")]
        rows = sum(w.shape[0] for w in ws)
        fw = Weight(f"{prefix}{fused_role}.weight", (rows, ws[0].shape[1]), ws[0].dtype,
                    ("concat", ws))
        weights = {"w": fw}
        if has_b[0]:
            bs = [m.weights["b"] for m in members]
            weights["b"] = Weight(f"{prefix}{fused_role}.bias", (rows,), bs[0].dtype,
                                  ("concat", bs))
        x = members[0].inputs[0]
        out = Tensor(f"{prefix}{fused_role}", x.rows, rows)
        col = 0
        for m in members:
            o = m.outputs[0]
            mapping[id(o)] = Tensor(f"{out.name}[{col}:{col + o.cols}]", o.rows, o.cols,
                                    base=out, col_offset=col)
            col += o.cols
        first = min(group.values())
        replace[first] = Node(members[0].op, [x], [out], {}, weights)
        drop.update(i for i in group.values() if i != first)
    if not replace:
        return g
    nodes = [replace.get(i, n) for i, n in enumerate(g.nodes) if i not in drop]
    return with_nodes(g, redirect(nodes, mapping))
