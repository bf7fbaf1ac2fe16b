"""The batched decode graph: the step graph with the output head on every row.

Prefill needs logits for its last row only, so the traced graph narrows to that row before the
final norm. Decoding several sequences at once needs one row of logits per sequence: this
derives a graph whose nodes are the same objects up to that view and fresh copies (T rows) from
it on. Weights and states are shared, so the artefact stores them once.
"""
from __future__ import annotations

from .ir import T, Graph, Node, Tensor


def batch_graph(graph: Graph) -> Graph:
    widened: dict = {}  # id(tensor) -> its all-rows counterpart

    def wide(t: Tensor) -> Tensor:
        if id(t) in widened:
            return widened[id(t)]
        if t.base is not None and (t.last_row or id(t.base) in widened):
            base = widened.get(id(t.base), t.base)
            w = Tensor(t.name.replace("[-1]", ""), T, t.cols, t.kind, t.dtype, base=base,
                       col_offset=t.col_offset)
            widened[id(t)] = w
            return w
        return t

    nodes = []
    for n in graph.nodes:
        ins = [wide(t) for t in n.inputs]
        if all(a is b for a, b in zip(ins, n.inputs)):
            nodes.append(n)
            continue
        outs = []
        for t in n.outputs:
            w = Tensor(t.name, T, t.cols, t.kind, t.dtype)
            widened[id(t)] = w
            outs.append(w)
        nodes.append(Node(n.op, ins, outs, dict(n.attrs), n.weights, n.states))
    outputs = {k: wide(t) for k, t in graph.outputs.items()}
    return Graph(nodes, dict(graph.inputs), outputs, graph.states, dict(graph.meta))
