"""Gemma 3 (text): Llama's skeleton with Gemma's options — (1 + w) RMSNorm, an embedding scale of
sqrt(hidden), qk-norm, norms after attention and after the MLP, GELU-tanh gated MLP, and
five sliding-window layers (local RoPE base) for every global one.

What GGUF leaves implicit lives here: the local RoPE base 10000 on sliding layers, the 6-layer
pattern, the attention scale from query_pre_attn_scalar, the embedding scale and GELU-tanh.
"""
from __future__ import annotations

import dataclasses

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .gguf_meta import gguf_decoder_spec, rope_from_meta
from .registry import Family, register
from .spec import LayerSpec, RopeSpec, rope_scaling

PATTERN = 6          # every 6th layer attends globally
LOCAL_THETA = 10000.0

TENSORS = dict(LLAMA_TENSORS, **{
    "blk.{i}.post_attention_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.pre_feedforward_layernorm.weight",
    "blk.{i}.post_ffw_norm.weight": "model.layers.{i}.post_feedforward_layernorm.weight",
})


def _layers(n: int, window: int, types=None) -> list:
    types = types or ["full_attention" if (i + 1) % PATTERN == 0 else "sliding_attention"
                      for i in range(n)]
    return [LayerSpec(sliding_window=window, rope="local") if t == "sliding_attention"
            else LayerSpec(sliding_window=0, rope="global") for t in types]


def _gemma_options(s, *, unit_offset: bool):
    s.norm_unit_offset = unit_offset
    s.post_norms = True
    s.qk_norm = True
    s.act = "gelu_tanh"
    s.tie_embeddings = True
    s.embed_scale = float(s.hidden) ** 0.5
    return s


def _hf_rope(cfg: dict, kind: str, head_dim: int, max_pos: int) -> RopeSpec:
    params = cfg.get("rope_parameters") or {}
    sub = params.get(kind) if isinstance(params.get(kind), dict) else None
    if sub is not None:
        theta, scaling = rope_scaling({"rope_parameters": sub})
    elif kind == "sliding_attention":
        theta, scaling = float(cfg.get("rope_local_base_freq", LOCAL_THETA)), None
    else:
        theta, scaling = rope_scaling(cfg)
    return RopeSpec(theta=theta, rot_dim=head_dim, scaling=scaling, max_position_embeddings=max_pos)


def _spec(cfg: dict):
    cfg = dict(cfg, hidden_act=cfg.get("hidden_activation") or cfg.get("hidden_act")
               or "gelu_pytorch_tanh")
    s = _gemma_options(decoder_spec(cfg, "gemma3"), unit_offset=True)
    s.attn_scale = float(cfg.get("query_pre_attn_scalar") or s.head_dim) ** -0.5
    s.attn_softcap = float(cfg.get("attn_logit_softcapping") or 0.0)
    s.final_softcap = float(cfg.get("final_logit_softcapping") or 0.0)
    max_pos = int(cfg.get("max_position_embeddings", 131072))
    s.ropes = {"global": _hf_rope(cfg, "full_attention", s.head_dim, max_pos),
               "local": _hf_rope(cfg, "sliding_attention", s.head_dim, max_pos)}
    s.layers = _layers(s.n_layers, int(cfg.get("sliding_window") or 0), cfg.get("layer_types"))
    return s


def _gguf_spec(meta, names):
    s = gguf_decoder_spec(meta, "gemma3", names, neox=True)
    # llama.cpp's converter stores Gemma's norm weights with the 1 already added.
    s = _gemma_options(s, unit_offset=False)
    # GGUF has no query_pre_attn_scalar: head_dim for every size but the 62-layer 27B.
    scale_dim = s.hidden / s.n_heads if s.n_layers == 62 else s.head_dim
    s.attn_scale = float(scale_dim) ** -0.5
    glob = rope_from_meta(meta, s.head_dim, neox=True, default_theta=1e6)
    s.ropes = {"global": glob, "local": dataclasses.replace(glob, theta=LOCAL_THETA,
                                                            scaling=None)}
    s.layers = _layers(s.n_layers, meta.int("attention.sliding_window", 0))
    return s


FAMILY = register(Family(name="gemma3", model_types=("gemma3_text",), spec=_spec,
                         tensors=TENSORS, build=pre_norm_decoder, gguf_archs=("gemma3",),
                         gguf_spec=_gguf_spec, chat_template="gemma"))
