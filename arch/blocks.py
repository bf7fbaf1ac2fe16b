"""Shared blocks every architecture composes: norms, attention, MLPs, the decoder stack.

Family differences are options on these blocks (biases, qk-norm, windows, scales), never copies.
Weights are asked for by canonical role names; each family's tensor table maps those onto its
file's names.
"""
from __future__ import annotations

from ..compiler.ir import GraphBuilder, Op, T
from .rope import rope_tables
from .spec import ModelSpec


def rms_norm(b: GraphBuilder, x, role: str, spec: ModelSpec, *, group=0):
    w = b.weight(role, (group or x.cols,))
    return b.emit(Op.RMSNORM, [x], x.cols, role, weights={"w": w}, eps=spec.norm_eps,
                  unit_offset=spec.norm_unit_offset, group=group)


def linear(b: GraphBuilder, x, role: str, out: int, bias: bool):
    w = b.weight(f"{role}.weight", (out, x.cols))
    weights = {"w": w}
    if bias:
        weights["b"] = b.weight(f"{role}.bias", (out,))
    return b.emit(Op.LINEAR, [x], out, role, weights=weights)


def rope(b: GraphBuilder, x, spec: ModelSpec, table: str, n_heads: int, max_seq: int, cache):
    """Rotary embedding with the named table (tables are built once per graph, cached)."""
    rs = spec.ropes[table]
    if table not in cache:
        cos, sin = rope_tables(rs, spec.head_dim, max_seq)
        cache[table] = (b.const(f"rope.{table}.cos", cos), b.const(f"rope.{table}.sin", sin))
    cos, sin = cache[table]
    return b.emit(Op.ROPE, [x], x.cols, f"{x.name}.rope", weights={"cos": cos, "sin": sin},
                  n_heads=n_heads, head_dim=spec.head_dim, rot_dim=rs.rot_dim or spec.head_dim,
                  neox=rs.neox)


def attention(b: GraphBuilder, x, i: int, spec: ModelSpec, max_seq: int, rope_cache):
    """GQA self-attention with optional biases, qk-norm, sliding window; returns o_proj output."""
    p = f"blk.{i}.attn"
    H, KV, D = spec.n_heads, spec.n_kv_heads, spec.head_dim
    q = linear(b, x, f"{p}_q", H * D, spec.qkv_bias)
    k = linear(b, x, f"{p}_k", KV * D, spec.qkv_bias)
    v = linear(b, x, f"{p}_v", KV * D, spec.qkv_bias)
    if spec.qk_norm:
        q = rms_norm(b, q, f"{p}_q_norm.weight", spec, group=D)
        k = rms_norm(b, k, f"{p}_k_norm.weight", spec, group=D)
    layer = spec.layers[i]
    q = rope(b, q, spec, layer.rope, H, max_seq, rope_cache)
    k = rope(b, k, spec, layer.rope, KV, max_seq, rope_cache)
    kc = b.state(f"{p}.k_cache", KV * D, max_seq)
    vc = b.state(f"{p}.v_cache", KV * D, max_seq)
    o = b.emit(Op.ATTENTION, [q, k, v], H * D, f"{p}.sdpa",
               states={"k_cache": kc, "v_cache": vc}, n_heads=H, n_kv_heads=KV, head_dim=D,
               scale=spec.scale, window=layer.sliding_window, softcap=spec.attn_softcap)
    return linear(b, o, f"{p}_output", spec.hidden, spec.o_bias)


def gated_mlp(b: GraphBuilder, x, i: int, spec: ModelSpec):
    """act(gate(x)) * up(x) -> down."""
    p = f"blk.{i}.ffn"
    g = linear(b, x, f"{p}_gate", spec.ff, spec.mlp_bias)
    u = linear(b, x, f"{p}_up", spec.ff, spec.mlp_bias)
    h = b.emit(Op.MUL_ACT, [g, u], spec.ff, f"{p}.act", act=spec.act)
    return linear(b, h, f"{p}_down", spec.hidden, spec.mlp_bias)


def embed(b: GraphBuilder, spec: ModelSpec):
    tokens = b.input("tokens", 1, "i32")
    table = b.weight("token_embd.weight", (spec.vocab_size, spec.hidden))
    return b.emit(Op.EMBED, [tokens], spec.hidden, "embed", weights={"w": table},
                  scale=spec.embed_scale)


def lm_head(b: GraphBuilder, x, spec: ModelSpec):
    """Final norm and output projection on the last row only: prefill needs one row of logits."""
    last = b.last_row(x)
    h = rms_norm(b, last, "output_norm.weight", spec)
    role = "token_embd" if spec.tie_embeddings else "output"
    logits = linear(b, h, role, spec.vocab_size, False)
    if spec.final_softcap:
        logits = b.emit(Op.SOFTCAP, [logits], spec.vocab_size, "logits.softcap",
                        c=spec.final_softcap)
    b.mark_output("logits", logits)


def pre_norm_decoder(b: GraphBuilder, spec: ModelSpec, max_seq: int):
    """The Llama-style stack: x += attn(norm(x)); x += mlp(norm(x)). With `post_norms`
    (Gemma 2/3) each branch's output is normalised again before the residual add."""
    x = embed(b, spec)
    rope_cache: dict = {}
    for i in range(spec.n_layers):
        h = rms_norm(b, x, f"blk.{i}.attn_norm.weight", spec)
        h = attention(b, h, i, spec, max_seq, rope_cache)
        if spec.post_norms:
            h = rms_norm(b, h, f"blk.{i}.post_attention_norm.weight", spec)
        x = b.emit(Op.ADD, [x, h], spec.hidden, f"blk.{i}.attn_residual")
        h = gated_mlp(b, rms_norm(b, x, f"blk.{i}.ffn_norm.weight", spec), i, spec)
        if spec.post_norms:
            h = rms_norm(b, h, f"blk.{i}.post_ffw_norm.weight", spec)
        x = b.emit(Op.ADD, [x, h], spec.hidden, f"blk.{i}.ffn_residual")
    lm_head(b, x, spec)
