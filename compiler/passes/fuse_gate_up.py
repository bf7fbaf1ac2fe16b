"""gate and up projections become one matmul, and act(gate) * up over its two halves becomes
one SWIGLU op reading the fused matrix."""
from ..ir import Graph, Node, Op
from .rewrite import merge_sibling_linears, with_nodes

NAME = "fuse_gate_up"


def run(g: Graph) -> Graph:
    g = merge_sibling_linears(g, ("ffn_gate", "ffn_up"), "ffn_gate_up")
    nodes = []
    for n in g.nodes:
        a, b = (n.inputs + [None, None])[:2]
        halves = (n.op is Op.MUL_ACT and a.base is not None and a.base is b.base
                  and a.col_offset == 0 and b.col_offset == a.cols and a.cols == b.cols
                  and a.base.cols == 2 * a.cols and not a.last_row)
        nodes.append(Node(Op.SWIGLU, [a.base], n.outputs, dict(n.attrs)) if halves else n)
    return with_nodes(g, nodes, passes=[NAME])
