"""Phi 3 (and Phi 3.5 / Phi 4 mini): Llama's skeleton with q, k, v stored as one qkv_proj and
gate/up as one gate_up_proj, long-RoPE scaling (short/long factors), a sliding window on every
layer where the config names one, and partial rotary on the models that set it.

GGUF (`phi3`): attn_qkv is the fused projection and ffn_up holds [gate | up]; the long-RoPE
factors are the tensors rope_factors_long/short, the pre-training length is
`rope.scaling.original_context_length` and the attention factor `rope.scaling.attn_factor`.
"""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register

TENSORS = dict(LLAMA_TENSORS, **{
    "blk.{i}.attn_qkv.weight": "model.layers.{i}.self_attn.qkv_proj.weight",
    "blk.{i}.ffn_gate_up.weight": "model.layers.{i}.mlp.gate_up_proj.weight",
})


def _spec(cfg: dict):
    n = int(cfg.get("num_hidden_layers", 0))
    sc = cfg.get("rope_scaling")
    if isinstance(sc, dict) and sc.get("type") == "su":  # the early name of longrope
        cfg = dict(cfg, rope_scaling=dict(sc, type="longrope"))
    s = decoder_spec(cfg, "phi3", windows=[cfg.get("sliding_window") or 0] * n)
    s.fused_qkv = s.fused_gate_up = True
    return s


def _gguf_spec(meta, tensors):
    s = gguf_decoder_spec(meta, "phi3", tensors, neox=True)
    s.fused_qkv = s.fused_gate_up = True
    rope = s.ropes["global"]
    if "rope_factors_long.weight" in tensors:
        sc = {"rope_type": "longrope",
              "long_factor": tensors["rope_factors_long.weight"].read_f32().ravel().tolist(),
              "short_factor": tensors["rope_factors_short.weight"].read_f32().ravel().tolist()}
        orig = meta.int("rope.scaling.original_context_length", 0)
        if orig:
            sc["original_max_position_embeddings"] = orig
        att = meta.float("rope.scaling.attn_factor", 0.0)
        if att:
            sc["attention_factor"] = att
        rope.scaling = sc
    return s


FAMILY = register(Family(name="phi3", model_types=("phi3",), spec=_spec, tensors=TENSORS,
                         build=pre_norm_decoder, gguf_archs=("phi3",), gguf_spec=_gguf_spec,
                         gguf_names={"blk.{i}.ffn_gate_up.weight": "blk.{i}.ffn_up.weight"},
                         chat_template="phi3"))
