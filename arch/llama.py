"""Llama: pre-norm decoder, GQA, SwiGLU, RoPE (llama3/linear/dynamic/yarn scaling)."""
from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register

FAMILY = register(Family(
    name="llama", model_types=("llama",),
    spec=lambda cfg: decoder_spec(cfg, "llama"),
    tensors=LLAMA_TENSORS, build=pre_norm_decoder,
    # llama.cpp's converter permutes q/k rows so that GGUF Llamas rotate interleaved pairs.
    gguf_archs=("llama",),
    gguf_spec=lambda meta, names: gguf_decoder_spec(meta, "llama", names, neox=False),
))
