"""q, k and v projections of one layer read the same normed input: one matmul does all three."""
from ..ir import Graph
from .rewrite import merge_sibling_linears, with_nodes

NAME = "fuse_qkv"


def run(g: Graph) -> Graph:
    g = merge_sibling_linears(g, ("attn_q", "attn_k", "attn_v"), "attn_qkv")
    return with_nodes(g, g.nodes, passes=[NAME])
