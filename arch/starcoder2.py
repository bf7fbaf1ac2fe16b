"""Starcoder 2: LayerNorm with bias, biases on every projection (`use_bias`), a plain
GELU-tanh MLP (c_fc -> c_proj), a sliding window, tied embeddings by default.

GGUF (`starcoder2`) carries no window: llama.cpp attends over the whole context, and so does a
compile from GGUF unless the file names one.
"""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import decoder_spec
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register

TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output_norm.bias": "model.norm.bias",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.attn_norm.bias": "model.layers.{i}.input_layernorm.bias",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.bias": "model.layers.{i}.post_attention_layernorm.bias",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.c_fc.weight",
    "blk.{i}.ffn_up.bias": "model.layers.{i}.mlp.c_fc.bias",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.c_proj.weight",
    "blk.{i}.ffn_down.bias": "model.layers.{i}.mlp.c_proj.bias",
    **{f"blk.{{i}}.attn_{x}.{k}": f"model.layers.{{i}}.self_attn.{h}_proj.{k}"
       for x, h in (("q", "q"), ("k", "k"), ("v", "v"), ("output", "o"))
       for k in ("weight", "bias")},
}


def _spec(cfg: dict):
    n = int(cfg.get("num_hidden_layers", 0))
    bias = bool(cfg.get("use_bias", True))
    cfg = dict(cfg, rms_norm_eps=cfg.get("norm_epsilon", 1e-5),
               tie_word_embeddings=cfg.get("tie_word_embeddings", True),
               hidden_act=cfg.get("hidden_act", "gelu_pytorch_tanh"))
    s = decoder_spec(cfg, "starcoder2", windows=[cfg.get("sliding_window") or 0] * n)
    s.norm, s.mlp = "layer", "plain"
    s.qkv_bias = s.o_bias = s.mlp_bias = bias
    return s


def _gguf_spec(meta, tensors):
    s = gguf_decoder_spec(meta, "starcoder2", tensors, neox=True)
    s.norm_eps = meta.float("attention.layer_norm_epsilon", 1e-5)
    s.norm, s.mlp, s.act = "layer", "plain", "gelu_tanh"
    return s


FAMILY = register(Family(name="starcoder2", model_types=("starcoder2",), spec=_spec,
                         tensors=TENSORS, build=pre_norm_decoder, gguf_archs=("starcoder2",),
                         gguf_spec=_gguf_spec))
