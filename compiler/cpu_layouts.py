"""CPU builds store the 32-value block types' matrices in the kernels' regrouped layout.

The layouts hold the same values as ggml's blocks with the bits moved, so that the CPU
kernels do less work per value; only the CPU kernels read them (CUDA builds, and a CUDA
build's CPU layers, keep ggml's blocks). Only matrices that LINEAR alone multiplies take one:
a table also looked up by EMBED (a tied embedding) keeps ggml's blocks, which the lookup reads.
- Q4_0, Q5_0 and Q8_0 with rows in whole groups of eight: eight rows interleaved
  (quant/interleave.py, q4_0x8 / q5_0x8 / q8_0x8), so no kernel reduces lanes across a row;
- otherwise Q4_0, Q4_1, Q5_0, Q5_1 with rows a multiple of 128 wide: four blocks regrouped
  (quant/repack.py, q4_0r etc.).
"""
from __future__ import annotations

from ..quant.interleave import INTERLEAVES, ROWS
from ..quant.repack import QUAD, REPACKED
from .ir import Op

# Interleaved layouts that the embedding lookup reads in place (quant_embed.decode_row_q8_0x8): a
# tied Q8_0 table, the usual one in GGUF files, is the output head's largest matrix.
LOOKED_UP_LAYOUTS = {"q8_0x8"}


def regroup_for_cpu(graph) -> int:
    """Give the graph's eligible matrices their regrouped type (in place: the weights are this
    compile's own); returns how many changed."""
    looked_up = {id(n.weights["w"]) for n in graph.nodes if n.op is Op.EMBED}
    changed = 0
    for node in graph.nodes:
        w = node.weights.get("w") if node.op is Op.LINEAR else None
        if w is None or len(w.shape) != 2:
            continue
        tied = id(w) in looked_up
        if (w.dtype in INTERLEAVES and _rows_in_groups(w)
                and (not tied or INTERLEAVES[w.dtype] in LOOKED_UP_LAYOUTS)):
            w.dtype = INTERLEAVES[w.dtype]
        elif w.dtype in REPACKED and w.shape[1] % (32 * QUAD) == 0 and not tied:
            w.dtype = REPACKED[w.dtype]
        else:
            continue
        changed += 1
    return changed


def _rows_in_groups(w) -> bool:
    """Rows in whole groups of ROWS, in each fused part too (a recompile from the artefact
    reads a part's rows on their own)."""
    kind, src = w.source
    parts = src if kind == "concat" else [w]
    return all(len(p.shape) == 2 and p.shape[0] % ROWS == 0 for p in parts)
