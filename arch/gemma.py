"""Gemma (v1): Llama's skeleton with Gemma's options — (1 + w) RMSNorm, an embedding scale of
sqrt(hidden), GELU-tanh gated MLP, tied embeddings, head_dim from the config (256 on 7B, not
hidden / heads).

What GGUF leaves implicit lives here: the embedding scale and GELU-tanh; llama.cpp's converter
writes no RoPE base (10000) and stores the norms with the 1 already added.
"""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register


def hf_spec(cfg: dict, arch: str):
    """What every Gemma generation shares, from a Hugging Face config: Gemma's "gelu" (and a
    missing one) always meant the tanh approximation; newer configs name the field
    `hidden_activation`; the embeddings are tied unless the config says otherwise."""
    act = cfg.get("hidden_activation") or cfg.get("hidden_act")
    cfg = dict(cfg, hidden_act="gelu_pytorch_tanh" if act in (None, "gelu") else act,
               tie_word_embeddings=cfg.get("tie_word_embeddings", True))
    s = decoder_spec(cfg, arch)
    s.norm_unit_offset = True
    s.embed_scale = float(s.hidden) ** 0.5
    return s


def gguf_spec(meta, names, arch: str):
    """The same from GGUF metadata; the converter stored the norms with the 1 already added."""
    s = gguf_decoder_spec(meta, arch, names, neox=True)
    s.act = "gelu_tanh"
    s.embed_scale = float(s.hidden) ** 0.5
    return s


FAMILY = register(Family(
    name="gemma", model_types=("gemma",), spec=lambda cfg: hf_spec(cfg, "gemma"),
    tensors=LLAMA_TENSORS, build=pre_norm_decoder, gguf_archs=("gemma",),
    gguf_spec=lambda meta, names: gguf_spec(meta, names, "gemma"), chat_template="gemma"))
