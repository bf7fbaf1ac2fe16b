"""The memory planner against its verifier, on real traced graphs."""
from __future__ import annotations

import pytest

from ingot.compiler.memplan import lifetimes, plan_memory, verify
from ingot.compiler.passes import run_passes
from ingot.compiler.source import open_source
from ingot.compiler.trace import trace
from ingot.errors import IngotError
from ingot.quant.policy import Policy


def traced(folder, passes=True):
    g = trace(open_source(folder), Policy("f32", None), max_seq=64)
    return run_passes(g) if passes else g


@pytest.mark.parametrize("name", ["llama", "qwen3", "qwen2"])
def test_plan_is_verified_and_smaller_than_naive(name, model_dirs):
    g = traced(model_dirs(name)[0])
    plan = plan_memory(g, t_max=16)
    verify(plan)  # no two live buffers overlap
    assert plan.arena_size < plan.naive_size / 2
    # Every tensor any node touches has a buffer, views share their base's.
    for n in g.nodes:
        for t in n.inputs + n.outputs:
            if t.kind != "state":
                assert plan.offset(t) >= 0


def test_verifier_catches_overlap(model_dirs):
    plan = plan_memory(traced(model_dirs("llama")[0]), t_max=8)
    bufs = plan.buffers
    a, b = next((a, b) for a in bufs for b in bufs
                if a is not b and a.start <= b.end and b.start <= a.end)
    b.offset = a.offset
    with pytest.raises(IngotError, match="overlap"):
        verify(plan)


def test_outputs_live_to_the_end(model_dirs):
    g = traced(model_dirs("llama")[0])
    bufs = {id(b.tensor): b for b in lifetimes(g, 4)}
    assert bufs[id(g.outputs["logits"].root)].end == len(g.nodes)
