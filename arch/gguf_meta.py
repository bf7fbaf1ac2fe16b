"""Typed access to GGUF metadata, and the hyperparameters the Llama lineage shares there."""
from __future__ import annotations

from ..errors import IngotError
from .spec import LayerSpec, ModelSpec, RopeSpec

_SCALING = {"linear": "linear", "yarn": "yarn", "longrope": "longrope"}


class Meta:
    """`meta.int("block_count")` reads `<arch>.block_count` and checks its type."""

    def __init__(self, values: dict, arch: str, path="GGUF"):
        self.v, self.arch, self.path = values, arch, path

    def _get(self, key, kinds, default, required):
        full = key if key.startswith(("general.", "tokenizer.")) else f"{self.arch}.{key}"
        if full not in self.v:
            if required:
                raise IngotError(f"{self.path}: metadata '{full}' is missing")
            return default
        val = self.v[full]
        if isinstance(val, bool) and bool not in kinds or not isinstance(val, kinds):
            raise IngotError(f"{self.path}: metadata '{full}' has the wrong type "
                             f"({type(val).__name__})")
        return val

    def int(self, key, default=None, required=None):
        return self._get(key, (int,), default, default is None if required is None else required)

    def float(self, key, default=None, required=None):
        v = self._get(key, (int, float), default, default is None if required is None
                      else required)
        return None if v is None else float(v)

    def str(self, key, default=None):
        return self._get(key, (str,), default, default is None)

    def has(self, key) -> bool:
        return f"{self.arch}.{key}" in self.v


def rope_from_meta(m: Meta, head_dim: int, *, neox: bool, theta_key="rope.freq_base",
                   default_theta=10000.0) -> RopeSpec:
    kind = m.str("rope.scaling.type", "none")
    scaling = None
    if kind in _SCALING:
        scaling = {"rope_type": _SCALING[kind], "factor": m.float("rope.scaling.factor", 1.0)}
        orig = m.int("rope.scaling.original_context_length", 0)
        if orig:
            scaling["original_max_position_embeddings"] = orig
    return RopeSpec(theta=m.float(theta_key, default_theta),
                    rot_dim=m.int("rope.dimension_count", head_dim), neox=neox, scaling=scaling,
                    max_position_embeddings=m.int("context_length", 2048))


def gguf_decoder_spec(m: Meta, arch: str, names: set, *, neox: bool) -> ModelSpec:
    """Hyperparameters of a Llama-lineage GGUF; biases, qk-norm and tied output from the
    tensors present."""
    hidden = m.int("embedding_length")
    heads = m.int("attention.head_count")
    head_dim = m.int("attention.key_length", hidden // heads)
    n_layers = m.int("block_count")
    tokens = m.v.get("tokenizer.ggml.tokens")
    vocab = m.int("vocab_size", len(tokens) if isinstance(tokens, list) else 0)
    window = m.int("attention.sliding_window", 0)
    eos = m.v.get("tokenizer.ggml.eos_token_id")
    return ModelSpec(
        arch=arch, vocab_size=vocab, hidden=hidden, n_layers=n_layers, n_heads=heads,
        n_kv_heads=m.int("attention.head_count_kv", heads), head_dim=head_dim,
        ff=m.int("feed_forward_length"),
        norm_eps=m.float("attention.layer_norm_rms_epsilon", 1e-5),
        tie_embeddings="output.weight" not in names,
        qkv_bias="blk.0.attn_q.bias" in names, o_bias="blk.0.attn_output.bias" in names,
        mlp_bias="blk.0.ffn_up.bias" in names, qk_norm="blk.0.attn_q_norm.weight" in names,
        ropes={"global": rope_from_meta(m, head_dim, neox=neox)},
        layers=[LayerSpec(sliding_window=window) for _ in range(n_layers)],
        bos_token_id=m.v.get("tokenizer.ggml.bos_token_id"),
        eos_token_ids=[] if eos is None else [eos],
    )
