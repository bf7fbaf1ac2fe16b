"""A residual add followed by the RMSNorm of its sum becomes one ADD_RMSNORM: the sum is
normalised while it is still in registers, one pass over the row instead of two."""
from ..ir import Graph, Node, Op
from .rewrite import with_nodes

NAME = "fuse_add_norm"


def run(g: Graph) -> Graph:
    nodes = list(g.nodes)
    out, skip = [], set()
    for i, n in enumerate(nodes):
        if i in skip:
            continue
        if n.op is Op.ADD and all(t.base is None for t in n.inputs):
            s = n.outputs[0]
            j = next((j for j in range(i + 1, len(nodes))
                      if nodes[j].op is Op.RMSNORM and nodes[j].inputs[0] is s
                      and (nodes[j].attrs.get("group") or s.cols) == s.cols), None)
            if j is not None:
                norm = nodes[j]
                out.append(Node(Op.ADD_RMSNORM, list(n.inputs), [s, norm.outputs[0]],
                                dict(norm.attrs), dict(norm.weights)))
                skip.add(j)
                continue
        out.append(n)
    return with_nodes(g, out, passes=[NAME])
