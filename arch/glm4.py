"""GLM 4 (0414): Llama's skeleton with q/k/v biases, gate and up stored as one gate_up_proj,
norms after attention and after the MLP as well as before them, and partial rotary embedding
(half of each head by default) that rotates interleaved pairs (2i, 2i + 1)."""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .registry import Family, register

TENSORS = dict(LLAMA_TENSORS, **{
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_self_attn_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_mlp_layernorm.weight",
    "blk.{i}.ffn_gate_up.weight": "model.layers.{i}.mlp.gate_up_proj.weight",
})


def _spec(cfg: dict):
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    if "partial_rotary_factor" not in cfg and "partial_rotary_factor" not in params:
        cfg = dict(cfg, partial_rotary_factor=0.5)  # transformers' default for GLM 4
    s = decoder_spec(cfg, "glm4")
    s.qkv_bias, s.o_bias = bool(cfg.get("attention_bias", True)), False
    s.post_norms = s.fused_gate_up = True
    s.ropes["global"].neox = False
    return s


FAMILY = register(Family(name="glm4", model_types=("glm4",), spec=_spec, tensors=TENSORS,
                         build=pre_norm_decoder))
