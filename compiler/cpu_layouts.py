"""CPU builds store the 32-value block types' matrices in the kernels' regrouped layout.

The layouts (quant/repack.py) hold the same values as ggml's blocks with the bits moved, so
that the CPU kernels build codes with fewer instructions; only the CPU kernels read them
(CUDA builds, and a CUDA build's CPU layers, keep ggml's blocks). A matrix takes one when
every row is whole quads (K a multiple of 128) and only LINEAR multiplies it: a table also
looked up by EMBED (a tied embedding) keeps ggml's blocks, which the lookup reads.
"""
from __future__ import annotations

from ..quant.repack import QUAD, REPACKED
from .ir import Op


def regroup_for_cpu(graph) -> int:
    """Give the graph's eligible matrices their regrouped type (in place: the weights are this
    compile's own); returns how many changed."""
    looked_up = {id(n.weights["w"]) for n in graph.nodes if n.op is Op.EMBED}
    changed = 0
    for node in graph.nodes:
        w = node.weights.get("w") if node.op is Op.LINEAR else None
        if w is None or id(w) in looked_up or w.dtype not in REPACKED:
            continue
        if len(w.shape) == 2 and w.shape[1] % (32 * QUAD) == 0:
            w.dtype = REPACKED[w.dtype]
            changed += 1
    return changed
