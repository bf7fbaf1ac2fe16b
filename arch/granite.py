"""Granite (dense): Llama's layout with four multipliers — the embedding (embedding_multiplier),
the attention scores (attention_multiplier replaces 1/sqrt(head_dim)), each branch before its
residual add (residual_multiplier), and the logits (divided by logits_scaling)."""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .registry import Family, register


def _spec(cfg: dict):
    s = decoder_spec(cfg, "granite")
    s.embed_scale = float(cfg.get("embedding_multiplier", 1.0))
    s.attn_scale = float(cfg.get("attention_multiplier", s.head_dim ** -0.5))
    s.residual_scale = float(cfg.get("residual_multiplier", 1.0))
    s.logit_scale = 1.0 / float(cfg.get("logits_scaling", 1.0))
    return s


FAMILY = register(Family(name="granite", model_types=("granite",), spec=_spec,
                         tensors=LLAMA_TENSORS, build=pre_norm_decoder, chat_template="chatml"))
