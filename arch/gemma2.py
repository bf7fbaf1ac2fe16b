"""Gemma 2: Gemma's options plus norms after attention and after the MLP, tanh soft-capping of
the attention scores and of the logits, an attention scale from query_pre_attn_scalar, and a
sliding window on every other layer (the first included); one RoPE base for all layers.

What GGUF leaves implicit lives here, as llama.cpp reads it: the alternating window pattern, the
defaults for missing keys (window 4096, caps 50 and 30), and the attention scale, which the file
does not carry: 1/sqrt(head_dim) for every size but the 46-layer 27B (1/sqrt(hidden / heads)).
"""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .gemma import gguf_spec, hf_spec
from .gemma3 import TENSORS  # Gemma 3 kept Gemma 2's sandwich-norm tensor names
from .registry import Family, register
from .spec import LayerSpec


def _alternating(n: int, window: int, types=None) -> list:
    types = types or ["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(n)]
    return [LayerSpec(sliding_window=window if t == "sliding_attention" else 0) for t in types]


def _spec(cfg: dict):
    s = hf_spec(cfg, "gemma2")
    s.post_norms = True
    s.attn_scale = float(cfg.get("query_pre_attn_scalar") or s.head_dim) ** -0.5
    # null in the config switches the cap off (transformers checks `is not None`).
    s.attn_softcap = float(cfg.get("attn_logit_softcapping") or 0.0)
    s.final_softcap = float(cfg.get("final_logit_softcapping") or 0.0)
    s.layers = _alternating(s.n_layers, int(cfg.get("sliding_window") or 0),
                            cfg.get("layer_types"))
    return s


def _gguf_spec(meta, names):
    s = gguf_spec(meta, names, "gemma2")
    s.post_norms = True
    s.attn_softcap = meta.float("attn_logit_softcapping", 50.0)
    s.final_softcap = meta.float("final_logit_softcapping", 30.0)
    scale_dim = s.hidden // s.n_heads if s.n_layers == 46 else s.head_dim
    s.attn_scale = float(scale_dim) ** -0.5
    s.layers = _alternating(s.n_layers, meta.int("attention.sliding_window", 4096))
    return s


FAMILY = register(Family(name="gemma2", model_types=("gemma2",), spec=_spec, tensors=TENSORS,
                         build=pre_norm_decoder, gguf_archs=("gemma2",), gguf_spec=_gguf_spec,
                         chat_template="gemma"))
