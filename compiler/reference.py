"""A numpy interpreter of the graph IR: the executable meaning of every op.

Passes are verified by running the graph before and after them here; kernels are tested against
the same semantics. It is slow and simple on purpose.
"""
from __future__ import annotations

import numpy as np

from .ir import Graph, Op, Tensor


def act_fn(name: str, x: np.ndarray) -> np.ndarray:
    if name == "silu":
        return x / (1.0 + np.exp(-x))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3)))
    if name == "gelu":
        from math import erf
        return 0.5 * x * (1.0 + np.vectorize(erf)(x / np.sqrt(2.0)))
    raise ValueError(f"unknown activation {name}")


def rmsnorm(x, w, eps, unit_offset, group):
    rows, cols = x.shape
    g = x.reshape(rows, cols // group, group).astype(np.float64)
    y = g / np.sqrt((g * g).mean(-1, keepdims=True) + eps)
    return (y * (w.astype(np.float64) + (1.0 if unit_offset else 0.0))).reshape(rows, cols)


def layernorm(x, w, b, eps):
    x = x.astype(np.float64)
    c = x - x.mean(-1, keepdims=True)
    y = c / np.sqrt((c * c).mean(-1, keepdims=True) + eps)
    return y * w + (b if b is not None else 0.0)


def rope(x, cos, sin, pos, n_heads, head_dim, rot_dim, neox):
    rows = x.shape[0]
    h = x.reshape(rows, n_heads, head_dim).astype(np.float64).copy()
    c = cos[pos:pos + rows][:, None, :]
    s = sin[pos:pos + rows][:, None, :]
    half = rot_dim // 2
    if neox:  # pairs (i, i + rot_dim/2)
        a, b = h[..., :half].copy(), h[..., half:rot_dim].copy()
    else:  # interleaved pairs (2i, 2i + 1)
        a, b = h[..., 0:rot_dim:2].copy(), h[..., 1:rot_dim:2].copy()
    ra, rb = a * c - b * s, b * c + a * s
    if neox:
        h[..., :half], h[..., half:rot_dim] = ra, rb
    else:
        h[..., 0:rot_dim:2], h[..., 1:rot_dim:2] = ra, rb
    return h.reshape(rows, n_heads * head_dim)


def attention(q, k, v, kc, vc, pos, a):
    rows = q.shape[0]
    H, KV, D = a["n_heads"], a["n_kv_heads"], a["head_dim"]
    ring = kc.shape[0]  # position p lives in row p % ring (sliding-window layers keep a ring)
    for t in range(rows):
        kc[(pos + t) % ring] = k[t]
        vc[(pos + t) % ring] = v[t]
    out = np.zeros((rows, H * D))
    for t in range(rows):
        p = pos + t
        lo = max(0, p - a["window"] + 1) if a["window"] else 0
        for h in range(H):
            g = h // (H // KV)
            rows_ = [j % ring for j in range(lo, p + 1)]
            keys = kc[rows_, g * D:(g + 1) * D].astype(np.float64)
            vals = vc[rows_, g * D:(g + 1) * D].astype(np.float64)
            s = keys @ q[t, h * D:(h + 1) * D].astype(np.float64) * a["scale"]
            if a["softcap"]:
                s = a["softcap"] * np.tanh(s / a["softcap"])
            e = np.exp(s - s.max())
            out[t, h * D:(h + 1) * D] = (e / e.sum()) @ vals
    return out


class Interpreter:
    """Runs a graph step by step; `states` (KV caches) persist across `run` calls."""

    def __init__(self, graph: Graph, weight_data):
        self.g = graph
        self.wd = weight_data  # Weight -> float32 ndarray
        self.states = {id(s): np.zeros((s.rows, s.cols), np.float32) for s in graph.states}

    def _get(self, env, t: Tensor):
        if t.base is None:
            return env[id(t)]
        b = env[id(t.base)]
        b = b[-1:] if t.last_row else b
        return b[:, t.col_offset:t.col_offset + t.cols]

    def run(self, tokens, pos: int) -> dict:
        env = {id(self.g.inputs["tokens"]): np.asarray(tokens, np.int32).reshape(-1, 1)}
        for n in self.g.nodes:
            ins = [self._get(env, t) for t in n.inputs]
            w = {k: self.wd(v) for k, v in n.weights.items()}
            outs = self._eval(n, ins, w, pos)
            for t, o in zip(n.outputs, outs if isinstance(outs, tuple) else (outs,)):
                env[id(t)] = np.asarray(o, np.float32)
        return {k: self._get(env, t) for k, t in self.g.outputs.items()}

    def _eval(self, n, ins, w, pos):
        a = n.attrs
        if n.op is Op.EMBED:
            return w["w"][ins[0][:, 0]] * a.get("scale", 1.0)
        if n.op is Op.RMSNORM:
            return rmsnorm(ins[0], w["w"], a["eps"], a.get("unit_offset", False),
                           a.get("group") or ins[0].shape[1])
        if n.op is Op.ADD_RMSNORM:
            s = ins[0].astype(np.float32) + ins[1]
            return s, rmsnorm(s, w["w"], a["eps"], a.get("unit_offset", False), s.shape[1])
        if n.op is Op.LAYERNORM:
            return layernorm(ins[0], w["w"], w.get("b"), a["eps"])
        if n.op is Op.ACT:
            return act_fn(a["act"], ins[0].astype(np.float64))
        if n.op is Op.LINEAR:
            y = ins[0].astype(np.float64) @ w["w"].T.astype(np.float64)
            return y + w["b"] if "b" in w else y
        if n.op is Op.ROPE:
            return rope(ins[0], w["cos"], w["sin"], pos, a["n_heads"], a["head_dim"],
                        a["rot_dim"], a["neox"])
        if n.op is Op.ATTENTION:
            return attention(*ins, self.states[id(n.states["k_cache"])],
                             self.states[id(n.states["v_cache"])], pos, a)
        if n.op is Op.SWIGLU:
            f = ins[0].shape[1] // 2
            return act_fn(a.get("act", "silu"), ins[0][:, :f].astype(np.float64)) * ins[0][:, f:]
        if n.op is Op.MUL_ACT:
            return act_fn(a.get("act", "silu"), ins[0].astype(np.float64)) * ins[1]
        if n.op is Op.ADD:
            return ins[0].astype(np.float32) + ins[1]
        if n.op is Op.SCALE:
            return ins[0] * a["c"]
        if n.op is Op.SOFTCAP:
            return a["c"] * np.tanh(ins[0] / a["c"])
        raise NotImplementedError(n.op)
