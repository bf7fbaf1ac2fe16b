"""Every fusion pass preserves the model's outputs (numpy interpreter) and actually fires."""
from __future__ import annotations

import pytest

from ingot.compiler.check import outputs_match
from ingot.compiler.ir import Op
from ingot.compiler.passes import PIPELINE, fuse_add_norm, fuse_gate_up, fuse_qkv
from ingot.errors import IngotError
from test_memplan import traced

FIRES = {fuse_qkv: lambda g: sum(n.weights.get("w") is not None and
                                  n.weights["w"].name.endswith("attn_qkv.weight")
                                  for n in g.nodes),
         fuse_gate_up: lambda g: sum(n.op is Op.SWIGLU for n in g.nodes),
         fuse_add_norm: lambda g: sum(n.op is Op.ADD_RMSNORM for n in g.nodes)}


@pytest.mark.parametrize("name", ["llama_yarn_bias", "qwen2", "qwen3"])
@pytest.mark.parametrize("p", PIPELINE, ids=lambda p: p.NAME)
def test_pass_preserves_outputs(p, name, model_dirs):
    before = traced(model_dirs(name)[0], passes=False)
    after = p.run(before)
    assert FIRES[p](after) > 0 and len(after.nodes) < len(before.nodes)
    outputs_match(before, after, p.NAME, vocab=300)


def test_check_detects_a_broken_rewrite(model_dirs):
    g = traced(model_dirs("llama")[0], passes=False)
    broken = fuse_add_norm.run(g)
    for n in broken.nodes:
        if n.op is Op.ADD_RMSNORM:
            n.attrs = dict(n.attrs, eps=0.5)  # a wrong rewrite: the eps changed
            break
    with pytest.raises(IngotError, match="changed the outputs"):
        outputs_match(g, broken, "broken", vocab=300)
