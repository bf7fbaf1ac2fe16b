"""Phi 2 (`model_type` "phi"): one LayerNorm (with bias) feeds attention and a plain GELU MLP
in parallel, whose outputs add onto the residual together; biases everywhere (the output head
too) and partial rotary embedding (the first partial_rotary_factor of each head).

GGUF (`phi2`): q/k/v arrive separate or as one attn_qkv matrix; the rotary width is
`rope.dimension_count`, NeoX pairing as in transformers.
"""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import decoder_spec
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register
from .spec import ConfigError

TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.final_layernorm.weight",
    "output_norm.bias": "model.final_layernorm.bias",
    "output.weight": "lm_head.weight",
    "output.bias": "lm_head.bias",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_norm.bias": "model.layers.{i}.input_layernorm.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.dense.weight",
    "blk.{i}.attn_output.bias": "model.layers.{i}.self_attn.dense.bias",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.fc1.weight",
    "blk.{i}.ffn_up.bias": "model.layers.{i}.mlp.fc1.bias",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.fc2.weight",
    "blk.{i}.ffn_down.bias": "model.layers.{i}.mlp.fc2.bias",
    **{f"blk.{{i}}.attn_{x}.{k}": f"model.layers.{{i}}.self_attn.{x}_proj.{k}"
       for x in "qkv" for k in ("weight", "bias")},
}


def _options(s):
    s.norm, s.mlp, s.parallel_residual = "layer", "plain", True
    s.qkv_bias = s.o_bias = s.mlp_bias = s.output_bias = True
    return s


def _spec(cfg: dict):
    if cfg.get("qk_layernorm"):
        raise ConfigError("qk_layernorm is not supported for Phi")
    cfg = dict(cfg, rms_norm_eps=cfg.get("layer_norm_eps", 1e-5))
    return _options(decoder_spec(cfg, "phi2"))


def _gguf_spec(meta, tensors):
    s = gguf_decoder_spec(meta, "phi2", tensors, neox=True)
    s.norm_eps = meta.float("attention.layer_norm_epsilon", 1e-5)
    s.act = "gelu_tanh"
    s = _options(s)
    s.fused_qkv = "blk.0.attn_qkv.weight" in tensors
    s.output_bias = "output.bias" in tensors
    return s


FAMILY = register(Family(name="phi2", model_types=("phi",), spec=_spec, tensors=TENSORS,
                         build=pre_norm_decoder, gguf_archs=("phi2",), gguf_spec=_gguf_spec))
