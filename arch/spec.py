"""The canonical description every architecture file maps its config onto."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional


@dataclass
class RopeSpec:
    theta: float = 10000.0
    rot_dim: int = 0           # rotated dims per head (partial rotary when < head_dim)
    neox: bool = True          # HF "rotate_half" pairing (i, i + d/2); False = interleaved
    scaling: Optional[dict] = None  # the config's rope_scaling / rope_parameters
    max_position_embeddings: int = 2048


@dataclass
class LayerSpec:
    sliding_window: int = 0    # 0 = full attention
    rope: str = "global"       # which RoPE table this layer uses ("" = none: SmolLM 3)


@dataclass
class ModelSpec:
    arch: str
    vocab_size: int
    hidden: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    ff: int
    norm_eps: float = 1e-6
    tie_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    act: str = "silu"
    attn_scale: Optional[float] = None  # default 1/sqrt(head_dim)
    embed_scale: float = 1.0
    norm_unit_offset: bool = False  # Gemma's RMSNorm multiplies by (1 + w)
    post_norms: bool = False        # Gemma 2/3: norms after attention and after the MLP too
    attn_softcap: float = 0.0       # Gemma 2: c * tanh(scores / c)
    final_softcap: float = 0.0      # Gemma 2: the same on the logits
    norm: str = "rms"               # "rms", or "layer": LayerNorm with bias (Phi 2, Starcoder 2)
    mlp: str = "gated"              # "gated": act(gate) * up; "plain": act(up) (Phi 2, Starcoder 2)
    parallel_residual: bool = False  # Phi 2: x + attn(norm(x)) + mlp(norm(x)), one norm
    fused_qkv: bool = False         # the file holds q, k, v as one [q | k | v] matrix
    fused_gate_up: bool = False     # the file holds gate and up as one [gate | up] matrix
    output_bias: bool = False       # Phi 2's output head has a bias
    residual_scale: float = 1.0     # Granite: each branch's output is scaled before the add
    logit_scale: float = 1.0        # Granite: logits are divided by logits_scaling
    ropes: dict = field(default_factory=dict)  # table name -> RopeSpec
    layers: list = field(default_factory=list)  # LayerSpec per layer
    bos_token_id: Optional[int] = None
    eos_token_ids: list = field(default_factory=list)
    torch_dtype: Optional[str] = None

    @property
    def scale(self) -> float:
        return self.attn_scale if self.attn_scale is not None else self.head_dim ** -0.5


class ConfigError(ValueError):
    """config.json lacks or mangles a field the architecture needs."""


def need(cfg: dict, key: str, *alts):
    for k in (key,) + alts:
        if cfg.get(k) is not None:
            return cfg[k]
    raise ConfigError(f"config.json has no '{key}'")


def rope_scaling(cfg: dict) -> tuple[float, Optional[dict]]:
    """(theta, scaling dict or None) from old (`rope_theta`, `rope_scaling`) or new
    (`rope_parameters`) config layouts."""
    params = cfg.get("rope_parameters")
    if isinstance(params, dict) and ("rope_type" in params or "rope_theta" in params):
        theta = float(params.get("rope_theta", cfg.get("rope_theta", 10000.0)))
        sc = params
    else:
        theta = float(cfg.get("rope_theta", 10000.0))
        sc = cfg.get("rope_scaling")
    if not sc:
        return theta, None
    kind = sc.get("rope_type", sc.get("type", "default"))
    if kind == "default":
        return theta, None
    sc = dict(sc, rope_type=kind)
    # Some configs (Phi 3) keep the pre-training length at the top level.
    if "original_max_position_embeddings" not in sc and cfg.get("original_max_position_embeddings"):
        sc["original_max_position_embeddings"] = cfg["original_max_position_embeddings"]
    return theta, sc
