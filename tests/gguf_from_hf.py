"""Writes a tiny transformers model as a GGUF file the way llama.cpp's converter lays it out
(tensor names, metadata keys, Llama's q/k row permutation, Phi 3's fused gate_up as ffn_up,
long-RoPE factors as tensors), so GGUF inputs can be checked against transformers itself.

The name table below is written from llama.cpp's published tensor naming (gguf-py's
tensor_mapping), not from Ingot's architecture tables, so a mistake in either shows up.
"""
from __future__ import annotations

import math
import re

import numpy as np

# HF module suffix (after model.layers.N.) -> GGUF block tensor suffix.
BLOCK = {
    "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output", "self_attn.dense": "attn_output",
    "self_attn.qkv_proj": "attn_qkv", "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down",
    "mlp.gate_up_proj": "ffn_up",  # Phi 3: [gate | up] in one ffn_up
    "mlp.fc1": "ffn_up", "mlp.fc2": "ffn_down", "mlp.c_fc": "ffn_up", "mlp.c_proj": "ffn_down",
}
TOP = {"model.embed_tokens": "token_embd", "model.norm": "output_norm",
       "model.final_layernorm": "output_norm", "lm_head": "output"}
ARCH = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3", "phi": "phi2", "phi3": "phi3",
        "starcoder2": "starcoder2"}


def _permute(w: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's converter reorders Llama q/k rows so that RoPE pairs are adjacent."""
    return (w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def gguf_name(hf_name: str) -> str | None:
    m = re.match(r"model\.layers\.(\d+)\.(.+)\.(weight|bias)$", hf_name)
    if m:
        return f"blk.{m.group(1)}.{BLOCK[m.group(2)]}.{m.group(3)}"
    base, _, kind = hf_name.rpartition(".")
    return f"{TOP[base]}.{kind}" if base in TOP else None


def write_gguf(model, path, *, sliding_window: bool = True) -> None:
    import gguf
    cfg = model.config
    arch = ARCH[cfg.model_type]
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads or cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    params = getattr(cfg, "rope_parameters", None) or {}
    prf = getattr(cfg, "partial_rotary_factor", None) or params.get("partial_rotary_factor") or 1
    w = gguf.GGUFWriter(str(path), arch)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(int(head_dim * prf))
    w.add_rope_freq_base(float(params.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))))
    w.add_vocab_size(cfg.vocab_size)
    if arch in ("phi2", "starcoder2"):
        w.add_layer_norm_eps(getattr(cfg, "layer_norm_eps", None) or cfg.norm_epsilon)
    else:
        w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    if sliding_window and getattr(cfg, "sliding_window", None):
        w.add_sliding_window(cfg.sliding_window)
    if params.get("rope_type") == "longrope":
        orig = params["original_max_position_embeddings"]
        scale = cfg.max_position_embeddings / orig
        w.add_rope_scaling_orig_ctx_len(orig)
        w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(orig)))
        w.add_tensor("rope_factors_long.weight", np.asarray(params["long_factor"], np.float32))
        w.add_tensor("rope_factors_short.weight", np.asarray(params["short_factor"], np.float32))
    for name, t in model.state_dict().items():
        if name == "lm_head.weight" and cfg.tie_word_embeddings:
            continue
        out = gguf_name(name)
        if out is None:
            raise KeyError(f"no GGUF name for {name}")
        x = t.detach().float().numpy().astype(np.float32)
        if arch == "llama" and re.search(r"self_attn\.[qk]_proj\.weight$", name):
            x = _permute(x, heads if ".q_proj" in name else kv)
        w.add_tensor(out, np.ascontiguousarray(x))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
