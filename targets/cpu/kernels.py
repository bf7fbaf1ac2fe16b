"""CPU kernels as numba functions over raw addresses, one per IR op (some ops take two).

Every kernel takes (..., tid, nth) and does its share of rows; the step function puts a barrier
between kernels. Arguments are int64 addresses and sizes, or float64 constants, so that the
generated step function is a flat sequence of calls that LLVM sees whole. Weight loads go
through a per-storage-type loader, so one kernel description covers f32, f16 and bf16; the KV
cache's kernels likewise take their storage type's writer and widener (f32, f16, q8_0).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .inlining import helper
from .intrinsics import (bf16_to_f32, exp2_int, f32_to_half, half_to_f32, ptr_f32, ptr_i8,
                         ptr_i32, ptr_u16)

FM = {"nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}
KW = dict(fastmath=FM, error_model="numpy", _nrt=False, cache=False)
# Attention keeps -inf as the running max's start: no nnan/ninf there.
KW_ATTN = dict(fastmath=FM - {"nnan", "ninf"}, error_model="numpy", _nrt=False, cache=False)

# How far ahead of its read a weight-streaming kernel prefetches, in bytes. The hardware
# prefetcher alone lags one sequential stream; on Zen 3 (one thread, matrices far beyond L3)
# ~2.5 KB ahead measured best: q5_0x8 13.8 -> 19.0 GB/s against 0.7 KB, q8_0 rows
# 18.7 -> 19.6 GB/s against 1.4 KB; further ahead measured no better.
PREFETCH_BYTES = 2560


@helper(**KW)
def split(n, tid, nth):
    per = (n + nth - 1) // nth
    lo = min(n, tid * per)
    return lo, min(n, lo + per)


@helper(**KW)
def ld_f32(addr, i):
    return ptr_f32(addr)[i]


@helper(**KW)
def ld_f16(addr, i):
    return half_to_f32(ptr_u16(addr)[i])


@helper(**KW)
def ld_bf16(addr, i):
    return bf16_to_f32(ptr_u16(addr)[i])


LOADERS = {"f32": ld_f32, "f16": ld_f16, "bf16": ld_bf16}


def _make_embed(ld):
    @njit(**KW)
    def embed(tok, n, table, dim, scale, y, tid, nth):
        lo, hi = split(n, tid, nth)
        T = ptr_i32(tok)
        Y = ptr_f32(y)
        s = np.float32(scale)
        for t in range(lo, hi):
            base = np.int64(T[t]) * dim
            for j in range(dim):
                Y[t * dim + j] = ld(table, base + j) * s
    return embed


def _make_linear(ld):
    @njit(**KW)
    def linear(x, xs, n, K, w, N, b, y, scratch, tid, nth):
        """y[t, r] = sum_k x[t, k] * W[r, k] (+ b[r]); rows of W split across threads."""
        lo, hi = split(N, tid, nth)
        X = ptr_f32(x)
        Y = ptr_f32(y)
        if n == 1:
            for r in range(lo, hi):
                acc = np.float32(0.0)
                base = r * K
                for k in range(K):
                    acc += X[k] * ld(w, base + k)
                if b != 0:
                    acc += ptr_f32(b)[r]
                Y[r] = acc
            return
        # Several tokens: widen each weight row once into scratch, reuse it for every token.
        S = ptr_f32(scratch)
        for r in range(lo, hi):
            base = r * K
            for k in range(K):
                S[k] = ld(w, base + k)
            bias = ptr_f32(b)[r] if b != 0 else np.float32(0.0)
            for t in range(n):
                acc = np.float32(0.0)
                xo = t * xs
                for k in range(K):
                    acc += X[xo + k] * S[k]
                Y[t * N + r] = acc + bias
    return linear


EMBED = {k: _make_embed(v) for k, v in LOADERS.items()}
LINEAR = {k: _make_linear(v) for k, v in LOADERS.items()}


@helper(**KW)
def norm_row(X, xo, Y, yo, count, W, eps, unit):
    """Y[yo:yo+count] = X[xo:xo+count] / rms * (W + unit)."""
    ss = np.float32(0.0)
    for j in range(count):
        v = X[xo + j]
        ss += v * v
    r = np.float32(1.0) / math.sqrt(ss / np.float32(count) + np.float32(eps))
    u = np.float32(unit)
    for j in range(count):
        Y[yo + j] = X[xo + j] * r * (W[j] + u)


@njit(**KW)
def rmsnorm(x, xs, n, cols, group, w, eps, unit, y, ys, tid, nth):
    """RMSNorm over groups of `group` columns (group == cols for a whole row; head_dim for
    qk-norm); gain w (+1 for Gemma-style norms)."""
    G = cols // group
    lo, hi = split(n * G, tid, nth)
    for idx in range(lo, hi):
        t = idx // G
        g = idx - t * G
        norm_row(ptr_f32(x), t * xs + g * group, ptr_f32(y), t * ys + g * group, group,
                 ptr_f32(w), eps, unit)


@njit(**KW)
def layernorm(x, xs, n, cols, w, b, eps, y, tid, nth):
    """y = (x - mean) / sqrt(var + eps) * w (+ b), per row; two passes for a stable variance."""
    lo, hi = split(n, tid, nth)
    X = ptr_f32(x)
    Y = ptr_f32(y)
    W = ptr_f32(w)
    for t in range(lo, hi):
        xo = t * xs
        mean = np.float32(0.0)
        for j in range(cols):
            mean += X[xo + j]
        mean /= np.float32(cols)
        var = np.float32(0.0)
        for j in range(cols):
            c = X[xo + j] - mean
            var += c * c
        r = np.float32(1.0) / math.sqrt(var / np.float32(cols) + np.float32(eps))
        yo = t * cols
        if b != 0:
            B = ptr_f32(b)
            for j in range(cols):
                Y[yo + j] = (X[xo + j] - mean) * r * W[j] + B[j]
        else:
            for j in range(cols):
                Y[yo + j] = (X[xo + j] - mean) * r * W[j]


@njit(**KW)
def add_rmsnorm(a, b, n, cols, w, eps, unit, s, y, tid, nth):
    """s = a + b; y = rmsnorm(s): the residual add fused with the next norm."""
    lo, hi = split(n, tid, nth)
    A = ptr_f32(a)
    B = ptr_f32(b)
    S = ptr_f32(s)
    for t in range(lo, hi):
        o = t * cols
        for j in range(cols):
            S[o + j] = A[o + j] + B[o + j]
        norm_row(S, o, ptr_f32(y), o, cols, ptr_f32(w), eps, unit)


@njit(**KW)
def rope(x, xs, n, heads, hd, rot, neox, cos, sin, pos, rows, y, tid, nth):
    """Rotate pairs of each head by the table angles of its position; copy the rest.
    Row t is at position pos + t, or with a row table (`rows` != 0, the batched step) at
    rows[t]."""
    lo, hi = split(n * heads, tid, nth)
    X = ptr_f32(x)
    Y = ptr_f32(y)
    C = ptr_f32(cos)
    Sn = ptr_f32(sin)
    half = rot // 2
    cols = heads * hd
    for idx in range(lo, hi):
        t = idx // heads
        h = idx - t * heads
        xo = t * xs + h * hd
        yo = t * cols + h * hd
        co = (pos + t if rows == 0 else np.int64(ptr_i32(rows)[t])) * half
        for i in range(half):
            if neox:
                ia, ib = i, i + half
            else:
                ia, ib = 2 * i, 2 * i + 1
            c = C[co + i]
            s = Sn[co + i]
            va = X[xo + ia]
            vb = X[xo + ib]
            Y[yo + ia] = va * c - vb * s
            Y[yo + ib] = vb * c + va * s
        for i in range(rot, hd):
            Y[yo + i] = X[xo + i]


@helper(**KW)
def row_place(t, pos, rows, nb, slot_bytes):
    """Row t's position and the byte offset of its sequence's cache: consecutive positions
    in one cache, or (the batched step) from the row table: positions[nb], then slots[nb]."""
    if rows == 0:
        return pos + t, 0
    R = ptr_i32(rows)
    return np.int64(R[t]), np.int64(R[nb + t]) * slot_bytes


# KV cache storage types (compiler/ir.py KV_TYPES, kv_row_layout). Each says how to write one
# head of a cached row (`put_head`: f32 values in, the type's bytes out) and how to widen one
# back into f32 (`widen`, scales applied); attention reads f32 rows in place and widens the
# others once per row into a stack buffer, so every type shares one inner loop.
ATTN_MAX_GROUP = 8  # scratch rows compiler/pipeline.py reserves per thread (attention no
# longer uses them: its scores live on the stack, ATTN_CHUNK positions at a time)
ATTN_MAX_HEAD_DIM = 512


@helper(**KW)
def kv_put_f32(X, xo, row, soff, h, D):
    R = ptr_f32(row)
    for d in range(D):
        R[h * D + d] = X[xo + d]


@helper(**KW)
def kv_put_f16(X, xo, row, soff, h, D):
    R = ptr_u16(row)
    for d in range(D):
        R[h * D + d] = f32_to_half(X[xo + d])


@helper(**KW)
def kv_widen_f16(row, soff, h, D, buf):
    R = ptr_u16(row)
    for d in range(D):
        buf[d] = half_to_f32(R[h * D + d])


@helper(**KW)
def kv_put_q8_0(X, xo, row, soff, h, D):
    """GGUF's Q8_0 per block of 32 (a head's last one shorter): scale d = max|x| / 127 stored
    as f16, quants round(x / d) (halves away from zero)."""
    Q = ptr_i8(row)
    S = ptr_u16(row + soff)
    nblk = (D + 31) // 32
    for b in range(nblk):
        d0 = b * 32
        d1 = min(d0 + 32, D)
        amax = np.float32(0.0)
        for d in range(d0, d1):
            amax = max(amax, abs(X[xo + d]))
        dq = amax / np.float32(127.0)
        inv = np.float32(1.0) / dq if amax > 0 else np.float32(0.0)
        S[h * nblk + b] = f32_to_half(dq)
        for d in range(d0, d1):
            v = X[xo + d] * inv
            v = v + np.float32(0.5) if v >= 0 else v - np.float32(0.5)
            Q[h * D + d] = np.int8(np.int32(v))


@helper(**KW)
def kv_widen_q8_0(row, soff, h, D, buf):
    Q = ptr_i8(row)
    S = ptr_u16(row + soff)
    nblk = (D + 31) // 32
    for b in range(nblk):
        sc = half_to_f32(S[h * nblk + b])
        for d in range(b * 32, min(b * 32 + 32, D)):
            buf[d] = sc * np.float32(np.int32(Q[h * D + d]))


@helper(**KW)
def kv_widen_none(row, soff, h, D, buf):
    pass  # f32 rows are read in place


KV_FORMATS = {  # name -> (put_head, widen, rows read in place: their type)
    "f32": (kv_put_f32, kv_widen_none, "f32"),
    "f16": (kv_put_f16, kv_widen_f16, "f16"),
    "q8_0": (kv_put_q8_0, kv_widen_q8_0, ""),
}


def _make_kv_store(put_head):
    @njit(**KW)
    def kv_store(k, ks, v, vs, n, KV, D, kc, vc, pos, rows, nb, slot_bytes, ring, row_bytes,
                 soff, tid, nth):
        """Append this step's key and value rows to the layer's cache in its storage type:
        position p goes to row p % ring (ring = the cache's rows; max_seq for full layers, so
        p itself)."""
        lo, hi = split(n, tid, nth)
        Kx = ptr_f32(k)
        Vx = ptr_f32(v)
        for t in range(lo, hi):
            p, base = row_place(t, pos, rows, nb, slot_bytes)
            o = base + (p % ring) * row_bytes
            for h in range(KV):
                put_head(Kx, t * ks + h * D, kc + o, soff, h, D)
                put_head(Vx, t * vs + h * D, vc + o, soff, h, D)
    return kv_store


@helper(**KW)
def fast_exp(x):
    """exp(x) for float32 in vector lanes: 2**n * p(r) with x = n ln2 + r, |r| <= ln2 / 2, p a
    degree-6 Taylor polynomial (relative error < 2e-7 there); x clamped to [-87, 88]."""
    x = min(max(x, np.float32(-87.0)), np.float32(88.0))
    n = np.float32(np.rint(x * np.float32(1.4426950408889634)))
    r = x - n * np.float32(0.693145751953125) - n * np.float32(1.428606765330187e-06)
    p = np.float32(1.0 / 720)
    p = p * r + np.float32(1.0 / 120)
    p = p * r + np.float32(1.0 / 24)
    p = p * r + np.float32(1.0 / 6)
    p = p * r + np.float32(0.5)
    p = p * r + np.float32(1.0)
    p = p * r + np.float32(1.0)
    return p * exp2_int(n)


KV_STORE = {k: _make_kv_store(f[0]) for k, f in KV_FORMATS.items()}
kv_store = KV_STORE["f32"]  # the f32 cache's (kernel tests)


@helper(**KW)
def silu(x):
    return x / (np.float32(1.0) + fast_exp(-x))


@helper(**KW)
def gelu_tanh(x):
    # 0.5 x (1 + tanh(u)) = x * sigmoid(2u)
    u = np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)
    return x / (np.float32(1.0) + fast_exp(np.float32(-2.0) * u))


@helper(**KW)
def gelu_erf(x):
    return np.float32(0.5) * x * (np.float32(1.0) + math.erf(x * np.float32(0.7071067811865476)))


ACT_CODES = {"silu": 0, "gelu_tanh": 1, "gelu": 2}


@helper(**KW)
def _share(n, cols, tid, nth):
    """Rows lo..hi, columns c0..c1 of this thread: rows split across threads, or with fewer
    rows than threads (decode) the columns."""
    if n >= nth:
        lo, hi = split(n, tid, nth)
        return lo, hi, 0, cols
    c0, c1 = split(cols, tid, nth)
    return 0, n, c0, c1


def _make_mul_act(fn):
    @helper(**KW)
    def rows(A, as_, B, bs, Y, cols, lo, hi, c0, c1):
        for t in range(lo, hi):
            for j in range(c0, c1):
                Y[t * cols + j] = fn(A[t * as_ + j]) * B[t * bs + j]
    return rows


def _make_act_rows(fn):
    @helper(**KW)
    def rows(X, xs, Y, cols, lo, hi, c0, c1):
        for t in range(lo, hi):
            for j in range(c0, c1):
                Y[t * cols + j] = fn(X[t * xs + j])
    return rows


_MUL_SILU, _MUL_GELU_TANH, _MUL_GELU = (_make_mul_act(f) for f in (silu, gelu_tanh, gelu_erf))
_ACT_SILU, _ACT_GELU_TANH, _ACT_GELU = (_make_act_rows(f) for f in (silu, gelu_tanh, gelu_erf))


@njit(**KW)
def mul_act(a, as_, b, bs, n, cols, kind, y, tid, nth):
    """y = act(a) * b, row by row; a and b may be column views of one fused matrix. One loop
    per activation, so each vectorises."""
    lo, hi, c0, c1 = _share(n, cols, tid, nth)
    A, B, Y = ptr_f32(a), ptr_f32(b), ptr_f32(y)
    if kind == 0:
        _MUL_SILU(A, as_, B, bs, Y, cols, lo, hi, c0, c1)
    elif kind == 1:
        _MUL_GELU_TANH(A, as_, B, bs, Y, cols, lo, hi, c0, c1)
    else:
        _MUL_GELU(A, as_, B, bs, Y, cols, lo, hi, c0, c1)


@njit(**KW)
def act_rows(x, xs, n, cols, kind, y, tid, nth):
    """y = act(x): the activation of a plain (ungated) MLP."""
    lo, hi, c0, c1 = _share(n, cols, tid, nth)
    X, Y = ptr_f32(x), ptr_f32(y)
    if kind == 0:
        _ACT_SILU(X, xs, Y, cols, lo, hi, c0, c1)
    elif kind == 1:
        _ACT_GELU_TANH(X, xs, Y, cols, lo, hi, c0, c1)
    else:
        _ACT_GELU(X, xs, Y, cols, lo, hi, c0, c1)


@njit(**KW)
def add(a, as_, b, bs, n, cols, y, tid, nth):
    lo, hi = split(n, tid, nth)
    A = ptr_f32(a)
    B = ptr_f32(b)
    Y = ptr_f32(y)
    for t in range(lo, hi):
        for j in range(cols):
            Y[t * cols + j] = A[t * as_ + j] + B[t * bs + j]


@njit(**KW)
def scale(x, xs, n, cols, c, softcap, y, tid, nth):
    """y = c * x, or c * tanh(x / c) when softcap."""
    lo, hi = split(n, tid, nth)
    X = ptr_f32(x)
    Y = ptr_f32(y)
    cc = np.float32(c)
    for t in range(lo, hi):
        for j in range(cols):
            v = X[t * xs + j]
            Y[t * cols + j] = cc * math.tanh(v / cc) if softcap else cc * v
