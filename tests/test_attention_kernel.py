"""The CPU attention kernel against a float64 numpy softmax attention: GQA groups longer than
the kernel's run of heads, a ring buffer that wraps, a sliding window, several threads (the
compact caches' kernels: test_kv_cache.py); and a token's result is the same bits whatever
tile, thread split or step it was computed in (the batched step relies on that)."""
from __future__ import annotations

import numpy as np
import pytest

from ingot.compiler.ir import kv_row_layout
from ingot.targets.cpu.attention import ATTENTION, attention
from ingot.targets.cpu.kernels import ATTN_MAX_GROUP, KV_STORE


def reference(Q, KC, VC, n, H, KV, D, pos, ring, scale, window):
    out = np.zeros((n, H, D))
    grp = H // KV
    for t in range(n):
        for h in range(H):
            g, p = h // grp, pos + t
            start = max(0, p - window + 1) if window > 0 else 0
            js = np.arange(start, p + 1) % ring
            k = KC.reshape(ring, KV, D)[js, g].astype(np.float64)
            v = VC.reshape(ring, KV, D)[js, g].astype(np.float64)
            s = k @ Q[t, h * D:(h + 1) * D].astype(np.float64) * scale
            w = np.exp(s - s.max())
            out[t, h] = (w / w.sum()) @ v
    return out.reshape(n, H * D)


@pytest.mark.parametrize("n,H,KV,D,pos,ring,window,nth", [
    (1, 4, 1, 256, 140, 1024, 0, 2),     # Gemma 3 270M's decode shape
    (5, 12, 2, 64, 30, 40, 20, 3),       # ring of window + chunk - 1, wrapped
    (3, 16, 16, 32, 7, 64, 0, 1),        # plain multi-head
    (2, 20, 2, 48, 100, 300, 0, 2),      # groups of 10: runs of ATTN_MAX_GROUP and the rest
])
def test_attention_matches_numpy(n, H, KV, D, pos, ring, window, nth):
    rng = np.random.default_rng(n * 1000 + H)
    qs = H * D + 3  # a row stride wider than the heads, as in a fused qkv matrix
    Q = rng.standard_normal((n, qs)).astype(np.float32)
    KC = rng.standard_normal(ring * KV * D).astype(np.float32)
    VC = rng.standard_normal(ring * KV * D).astype(np.float32)
    out = np.full(n * H * D + 16, np.nan, np.float32)
    scratch = np.zeros(ATTN_MAX_GROUP * (pos + n), np.float32)
    for tid in range(nth):
        attention(Q.ctypes.data, qs, n, H, KV, D, KC.ctypes.data, VC.ctypes.data, pos, 0, 0, 0,
                  ring, KV * D * 4, 0, 0.125, window, 0.0, out.ctypes.data, scratch.ctypes.data,
                  tid, nth)
    assert np.isnan(out[n * H * D:]).all()
    # f32 sums over up to a few hundred positions and D products: 1e-5 absolute on O(1) values.
    assert np.abs(out[:n * H * D].reshape(n, H * D) - reference(
        Q, KC, VC, n, H, KV, D, pos, ring, 0.125, window)).max() < 1e-5


def filled(fmt, ring, KV, D, rng):
    """Key and value caches of `ring` rows written by the kernel's own store."""
    row_bytes, soff = kv_row_layout(fmt, KV, D)
    K = rng.standard_normal((ring, KV * D)).astype(np.float32)
    V = rng.standard_normal((ring, KV * D)).astype(np.float32)
    kc = np.zeros(ring * row_bytes, np.uint8)
    vc = np.zeros_like(kc)
    KV_STORE[fmt](K.ctypes.data, KV * D, V.ctypes.data, KV * D, ring, KV, D, kc.ctypes.data,
                  vc.ctypes.data, 0, 0, 0, 0, ring, row_bytes, soff, 0, 1)
    return kc, vc


def run(fmt, Q, qs, n, H, KV, D, kc, vc, pos, ring, window, nth, rows=0, nb=0):
    row_bytes, soff = kv_row_layout(fmt, KV, D)
    out = np.full(n * H * D, np.nan, np.float32)
    for tid in range(nth):
        ATTENTION[fmt](Q.ctypes.data, qs, n, H, KV, D, kc.ctypes.data, vc.ctypes.data, pos, rows,
                       nb, 0, ring, row_bytes, soff, 0.125, window, 0.0, out.ctypes.data, 0,
                       tid, nth)
    return out.reshape(n, H * D)


@pytest.mark.parametrize("fmt", ["f32", "f16", "q8_0"])  # rows in place; widened first
def test_a_token_gives_the_same_bits_in_any_tile(fmt):
    """Prefill tiles (4 tokens x 4 heads), one token alone, another thread split, and the
    batched step's row table all compute a token's attention with the same operations."""
    n, H, KV, D, pos, ring, window = 11, 4, 1, 256, 60, 96, 40
    rng = np.random.default_rng(3)
    kc, vc = filled(fmt, ring, KV, D, rng)
    Q = rng.standard_normal((n, H * D)).astype(np.float32)
    tiled = run(fmt, Q, H * D, n, H, KV, D, kc, vc, pos, ring, window, 1)
    assert np.array_equal(tiled, run(fmt, Q, H * D, n, H, KV, D, kc, vc, pos, ring, window, 3))
    for t in (0, 5, 10):
        q1 = np.ascontiguousarray(Q[t:t + 1])
        alone = run(fmt, q1, H * D, 1, H, KV, D, kc, vc, pos + t, ring, window, 2)
        table = np.array([pos + t, 0], np.int32)  # the batched step: position, then slot
        batched = run(fmt, q1, H * D, 1, H, KV, D, kc, vc, 0, ring, window, 1,
                      rows=table.ctypes.data, nb=1)
        assert np.array_equal(alone[0], tiled[t]) and np.array_equal(batched[0], tiled[t])
