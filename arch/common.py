"""Config fields and tensor names that the Llama lineage shares; families adjust from here."""
from __future__ import annotations

from .spec import LayerSpec, ModelSpec, RopeSpec, need, rope_scaling

# Canonical role -> Hugging Face name, for models laid out like transformers' Llama.
LLAMA_TENSORS = {
    "token_embd.weight": "model.embed_tokens.weight",
    "output_norm.weight": "model.norm.weight",
    "output.weight": "lm_head.weight",
    "blk.{i}.attn_norm.weight": "model.layers.{i}.input_layernorm.weight",
    "blk.{i}.ffn_norm.weight": "model.layers.{i}.post_attention_layernorm.weight",
    "blk.{i}.attn_q.weight": "model.layers.{i}.self_attn.q_proj.weight",
    "blk.{i}.attn_k.weight": "model.layers.{i}.self_attn.k_proj.weight",
    "blk.{i}.attn_v.weight": "model.layers.{i}.self_attn.v_proj.weight",
    "blk.{i}.attn_q.bias": "model.layers.{i}.self_attn.q_proj.bias",
    "blk.{i}.attn_k.bias": "model.layers.{i}.self_attn.k_proj.bias",
    "blk.{i}.attn_v.bias": "model.layers.{i}.self_attn.v_proj.bias",
    "blk.{i}.attn_output.weight": "model.layers.{i}.self_attn.o_proj.weight",
    "blk.{i}.attn_output.bias": "model.layers.{i}.self_attn.o_proj.bias",
    "blk.{i}.attn_q_norm.weight": "model.layers.{i}.self_attn.q_norm.weight",
    "blk.{i}.attn_k_norm.weight": "model.layers.{i}.self_attn.k_norm.weight",
    "blk.{i}.ffn_gate.weight": "model.layers.{i}.mlp.gate_proj.weight",
    "blk.{i}.ffn_up.weight": "model.layers.{i}.mlp.up_proj.weight",
    "blk.{i}.ffn_down.weight": "model.layers.{i}.mlp.down_proj.weight",
    "blk.{i}.ffn_gate.bias": "model.layers.{i}.mlp.gate_proj.bias",
    "blk.{i}.ffn_up.bias": "model.layers.{i}.mlp.up_proj.bias",
    "blk.{i}.ffn_down.bias": "model.layers.{i}.mlp.down_proj.bias",
}

_ACTS = {"silu": "silu", "swish": "silu", "gelu_pytorch_tanh": "gelu_tanh", "gelu_new": "gelu_tanh",
         "gelu": "gelu"}


def eos_ids(cfg: dict) -> list:
    e = cfg.get("eos_token_id")
    return [] if e is None else (list(e) if isinstance(e, (list, tuple)) else [e])


def decoder_spec(cfg: dict, arch: str, *, windows=None) -> ModelSpec:
    """The fields every Llama-lineage config has; `windows` gives per-layer sliding windows."""
    hidden = int(need(cfg, "hidden_size"))
    n_heads = int(need(cfg, "num_attention_heads"))
    n_layers = int(need(cfg, "num_hidden_layers"))
    head_dim = int(cfg.get("head_dim") or hidden // n_heads)
    theta, scaling = rope_scaling(cfg)
    max_pos = int(cfg.get("max_position_embeddings", 2048))
    act = cfg.get("hidden_act", "silu")
    if act not in _ACTS:
        from .spec import ConfigError
        raise ConfigError(f"config.json hidden_act '{act}' is not supported")
    windows = windows or [0] * n_layers
    # Partial rotary (Phi, GLM 4): only the first rot_dim dims of a head are rotated.
    params = cfg.get("rope_parameters") if isinstance(cfg.get("rope_parameters"), dict) else {}
    prf = float(cfg.get("partial_rotary_factor") or params.get("partial_rotary_factor") or 1.0)
    rot_dim = int(head_dim * prf)
    return ModelSpec(
        arch=arch, vocab_size=int(need(cfg, "vocab_size")), hidden=hidden, n_layers=n_layers,
        n_heads=n_heads, n_kv_heads=int(cfg.get("num_key_value_heads") or n_heads),
        head_dim=head_dim, ff=int(need(cfg, "intermediate_size")),
        norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        qkv_bias=bool(cfg.get("attention_bias", False)),
        o_bias=bool(cfg.get("attention_bias", False)),
        mlp_bias=bool(cfg.get("mlp_bias", False)), act=_ACTS[act],
        ropes={"global": RopeSpec(theta=theta, rot_dim=rot_dim, scaling=scaling,
                                  max_position_embeddings=max_pos)},
        layers=[LayerSpec(sliding_window=int(w or 0)) for w in windows],
        bos_token_id=cfg.get("bos_token_id"), eos_token_ids=eos_ids(cfg),
        torch_dtype=cfg.get("torch_dtype") or cfg.get("dtype"),
    )


def layer_windows(cfg: dict, n_layers: int) -> list:
    """Per-layer sliding windows from `layer_types` (transformers 4.5x+) or the older flags."""
    w = cfg.get("sliding_window") or 0
    types = cfg.get("layer_types")
    if types:
        return [w if t == "sliding_attention" else 0 for t in types]
    if "use_sliding_window" in cfg and not cfg["use_sliding_window"]:
        return [0] * n_layers
    start = cfg.get("max_window_layers", 0) if "use_sliding_window" in cfg else 0
    return [w if i >= start else 0 for i in range(n_layers)]
