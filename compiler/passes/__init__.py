"""The pass pipeline, in order. Each pass is a pure Graph -> Graph function in its own file."""
from __future__ import annotations

from . import fuse_add_norm, fuse_gate_up, fuse_qkv

# Phase 1: merge matmuls that share an input (fewer, larger passes over activations).
# Phase 2: fuse elementwise work into its neighbours.
PIPELINE = [fuse_qkv, fuse_gate_up, fuse_add_norm]


def run_passes(graph, verify=None):
    """Apply the pipeline; `verify(before, after, name)` is called after each pass if given."""
    for p in PIPELINE:
        after = p.run(graph)
        if verify is not None:
            verify(graph, after, p.NAME)
        graph = after
    return graph
