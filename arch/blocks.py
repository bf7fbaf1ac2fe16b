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


def block_norm(b: GraphBuilder, x, base: str, spec: ModelSpec):
    """The norm in front of (or after) a block: RMSNorm, or LayerNorm with its bias."""
    if spec.norm == "layer":
        w = b.weight(f"{base}.weight", (x.cols,))
        bias = b.weight(f"{base}.bias", (x.cols,), optional=True)
        weights = {"w": w} if bias is None else {"w": w, "b": bias}
        return b.emit(Op.LAYERNORM, [x], x.cols, base, weights=weights, eps=spec.norm_eps)
    return rms_norm(b, x, f"{base}.weight", spec)


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
    if spec.fused_qkv:  # one [q | k | v] matrix in the file (Phi 3): views of one product
        qkv = linear(b, x, f"{p}_qkv", (H + 2 * KV) * D, spec.qkv_bias)
        q, k, v = b.view(qkv, 0, H * D), b.view(qkv, H * D, KV * D), \
            b.view(qkv, (H + KV) * D, KV * D)
    else:
        q = linear(b, x, f"{p}_q", H * D, spec.qkv_bias)
        k = linear(b, x, f"{p}_k", KV * D, spec.qkv_bias)
        v = linear(b, x, f"{p}_v", KV * D, spec.qkv_bias)
    if spec.qk_norm:
        q = rms_norm(b, q, f"{p}_q_norm.weight", spec, group=D)
        k = rms_norm(b, k, f"{p}_k_norm.weight", spec, group=D)
    layer = spec.layers[i]
    if layer.rope:  # SmolLM 3 leaves RoPE out of some layers
        q = rope(b, q, spec, layer.rope, H, max_seq, rope_cache)
        k = rope(b, k, spec, layer.rope, KV, max_seq, rope_cache)
    # A sliding-window layer keeps a ring of the window plus one chunk of rows (every key a
    # token of the chunk can see survives that chunk's own writes), not the whole context.
    w = layer.sliding_window
    ring = min(max_seq, w + b.chunk - 1) if w else max_seq
    kc = b.state(f"{p}.k_cache", KV * D, ring, b.kv_cache)
    vc = b.state(f"{p}.v_cache", KV * D, ring, b.kv_cache)
    o = b.emit(Op.ATTENTION, [q, k, v], H * D, f"{p}.sdpa",
               states={"k_cache": kc, "v_cache": vc}, n_heads=H, n_kv_heads=KV, head_dim=D,
               scale=spec.scale, window=w, softcap=spec.attn_softcap, ring=ring)
    return linear(b, o, f"{p}_output", spec.hidden, spec.o_bias)


def mlp(b: GraphBuilder, x, i: int, spec: ModelSpec):
    """Gated: act(gate(x)) * up(x) -> down (gate and up fused in the file or not);
    plain: act(up(x)) -> down."""
    p = f"blk.{i}.ffn"
    if spec.mlp == "plain":
        u = linear(b, x, f"{p}_up", spec.ff, spec.mlp_bias)
        h = b.emit(Op.ACT, [u], spec.ff, f"{p}.act", act=spec.act)
    elif spec.fused_gate_up:
        gu = linear(b, x, f"{p}_gate_up", 2 * spec.ff, spec.mlp_bias)
        h = b.emit(Op.SWIGLU, [gu], spec.ff, f"{p}.act", act=spec.act)
    else:
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
    h = block_norm(b, last, "output_norm", spec)
    role = "token_embd" if spec.tie_embeddings else "output"
    logits = linear(b, h, role, spec.vocab_size, spec.output_bias)
    if spec.logit_scale != 1.0:
        logits = b.emit(Op.SCALE, [logits], spec.vocab_size, "logits.scale", c=spec.logit_scale)
    if spec.final_softcap:
        logits = b.emit(Op.SOFTCAP, [logits], spec.vocab_size, "logits.softcap",
                        c=spec.final_softcap)
    b.mark_output("logits", logits)


def _residual(b: GraphBuilder, x, h, spec: ModelSpec, name: str):
    if spec.residual_scale != 1.0:  # Granite
        h = b.emit(Op.SCALE, [h], spec.hidden, f"{name}.scale", c=spec.residual_scale)
    return b.emit(Op.ADD, [x, h], spec.hidden, name)


def pre_norm_decoder(b: GraphBuilder, spec: ModelSpec, max_seq: int):
    """The Llama-style stack: x += attn(norm(x)); x += mlp(norm(x)). With `post_norms`
    (Gemma 2/3, GLM 4) each branch's output is normalised again before the residual add; with
    `parallel_residual` (Phi 2) attention and MLP read the same normed x and add together."""
    x = embed(b, spec)
    rope_cache: dict = {}
    for i in range(spec.n_layers):
        h = block_norm(b, x, f"blk.{i}.attn_norm", spec)
        a = attention(b, h, i, spec, max_seq, rope_cache)
        if spec.parallel_residual:
            m = mlp(b, h, i, spec)
            x = b.emit(Op.ADD, [x, b.emit(Op.ADD, [a, m], spec.hidden, f"blk.{i}.branches")],
                       spec.hidden, f"blk.{i}.residual")
            continue
        if spec.post_norms:
            a = block_norm(b, a, f"blk.{i}.post_attention_norm", spec)
        x = _residual(b, x, a, spec, f"blk.{i}.attn_residual")
        h = mlp(b, block_norm(b, x, f"blk.{i}.ffn_norm", spec), i, spec)
        if spec.post_norms:
            h = block_norm(b, h, f"blk.{i}.post_ffw_norm", spec)
        x = _residual(b, x, h, spec, f"blk.{i}.ffn_residual")
    lm_head(b, x, spec)
