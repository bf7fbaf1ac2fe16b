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

from .attn_vec import addr_of, f8_add, f8_hsum, f8_load_h, f8_madd, f8_splat
from .intrinsics import (bf16_to_f32, exp2_int, f32_to_half, half_to_f32, ptr_f32, ptr_i8,
                         ptr_i32, ptr_u16, stack_f32)
from .simd import f8_load, f8_store, f8_zero

FM = {"nnan", "ninf", "nsz", "arcp", "contract", "afn", "reassoc"}
KW = dict(fastmath=FM, error_model="numpy", _nrt=False, cache=False)
# Attention keeps -inf as the running max's start: no nnan/ninf there.
KW_ATTN = dict(fastmath=FM - {"nnan", "ninf"}, error_model="numpy", _nrt=False, cache=False)


@njit(inline="always", **KW)
def split(n, tid, nth):
    per = (n + nth - 1) // nth
    lo = min(n, tid * per)
    return lo, min(n, lo + per)


@njit(inline="always", **KW)
def ld_f32(addr, i):
    return ptr_f32(addr)[i]


@njit(inline="always", **KW)
def ld_f16(addr, i):
    return half_to_f32(ptr_u16(addr)[i])


@njit(inline="always", **KW)
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


@njit(inline="always", **KW)
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


@njit(inline="always", **KW)
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


@njit(inline="always", **KW)
def kv_put_f32(X, xo, row, soff, h, D):
    R = ptr_f32(row)
    for d in range(D):
        R[h * D + d] = X[xo + d]


@njit(inline="always", **KW)
def kv_put_f16(X, xo, row, soff, h, D):
    R = ptr_u16(row)
    for d in range(D):
        R[h * D + d] = f32_to_half(X[xo + d])


@njit(inline="always", **KW)
def kv_widen_f16(row, soff, h, D, buf):
    R = ptr_u16(row)
    for d in range(D):
        buf[d] = half_to_f32(R[h * D + d])


@njit(inline="always", **KW)
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


@njit(inline="always", **KW)
def kv_widen_q8_0(row, soff, h, D, buf):
    Q = ptr_i8(row)
    S = ptr_u16(row + soff)
    nblk = (D + 31) // 32
    for b in range(nblk):
        sc = half_to_f32(S[h * nblk + b])
        for d in range(b * 32, min(b * 32 + 32, D)):
            buf[d] = sc * np.float32(np.int32(Q[h * D + d]))


@njit(inline="always", **KW)
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


@njit(inline="always", **KW)
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


# Attention works on tiles: up to ATTN_TILE_PAIRS (token, query head) pairs of one kv head, the
# tokens consecutive positions of one sequence, against the cache in chunks of ATTN_CHUNK
# positions. A chunk's key rows are read once for the whole tile; each pair keeps a running
# softmax (max, sum, output row) that every chunk updates, so no score row of the whole context
# is ever stored. Chunks start at multiples of ATTN_CHUNK (absolute positions) and a pair's
# arithmetic touches only its own positions, so its result is the same bits whatever tile,
# thread or batch it ran in.
ATTN_CHUNK = 32
ATTN_ACC = 4096  # floats of output rows per tile (pairs x head_dim)


def _make_dots(kload, es):
    """Dot products of f32 query rows with cache rows loaded by `kload` (es bytes a value), and
    the value rows' weighted sum; every sum in the same lane order."""
    @njit(inline="always", **KW_ATTN)
    def dot_tail(qa, ka, d0, D):
        s = np.float32(0.0)  # head_dim not a multiple of 8: the last values one by one
        for d in range(d0, D):
            s += ptr_f32(qa)[d] * kload_1(ka, d)
        return s

    @njit(inline="always", **KW_ATTN)
    def kload_1(ka, d):
        if es == 4:
            return ptr_f32(ka)[d]
        return half_to_f32(ptr_u16(ka)[d])

    @njit(inline="always", **KW_ATTN)
    def dot1(qa, ka, D):
        a = f8_zero()
        b = f8_zero()
        d = 0
        while d + 16 <= D:
            a = f8_madd(a, f8_load(qa + 4 * d), kload(ka + es * d))
            b = f8_madd(b, f8_load(qa + 4 * d + 32), kload(ka + es * d + 8 * es))
            d += 16
        if d + 8 <= D:
            a = f8_madd(a, f8_load(qa + 4 * d), kload(ka + es * d))
            d += 8
        return f8_hsum(f8_add(a, b)) + dot_tail(qa, ka, d, D)

    @njit(inline="always", **KW_ATTN)
    def dot4(qa, k0, k1, k2, k3, D):
        """dot1 of one query row with four key rows, the query loaded once for all four."""
        a0 = b0 = a1 = b1 = a2 = b2 = a3 = b3 = f8_zero()
        d = 0
        while d + 16 <= D:
            x = f8_load(qa + 4 * d)
            y = f8_load(qa + 4 * d + 32)
            o = es * d
            a0 = f8_madd(a0, x, kload(k0 + o))
            b0 = f8_madd(b0, y, kload(k0 + o + 8 * es))
            a1 = f8_madd(a1, x, kload(k1 + o))
            b1 = f8_madd(b1, y, kload(k1 + o + 8 * es))
            a2 = f8_madd(a2, x, kload(k2 + o))
            b2 = f8_madd(b2, y, kload(k2 + o + 8 * es))
            a3 = f8_madd(a3, x, kload(k3 + o))
            b3 = f8_madd(b3, y, kload(k3 + o + 8 * es))
            d += 16
        if d + 8 <= D:
            x = f8_load(qa + 4 * d)
            o = es * d
            a0 = f8_madd(a0, x, kload(k0 + o))
            a1 = f8_madd(a1, x, kload(k1 + o))
            a2 = f8_madd(a2, x, kload(k2 + o))
            a3 = f8_madd(a3, x, kload(k3 + o))
            d += 8
        return (f8_hsum(f8_add(a0, b0)) + dot_tail(qa, k0, d, D),
                f8_hsum(f8_add(a1, b1)) + dot_tail(qa, k1, d, D),
                f8_hsum(f8_add(a2, b2)) + dot_tail(qa, k2, d, D),
                f8_hsum(f8_add(a3, b3)) + dot_tail(qa, k3, d, D))

    @njit(inline="always", **KW_ATTN)
    def weigh(acc0, Sa, P, D, j0, j1, c0, vb, rs, ring, rb):
        """For each pair i < P, acc_i[d] += E_i[j - c0] * V_j[d] for j = j0..j1-1 in that order
        (acc_i D floats apart from acc0, E_i ATTN_CHUNK floats apart from Sa; V_j in row
        rs + j - j0, wrapped at ring, of rows rb bytes apart from vb). 32 values of d at a time
        are held in registers over all j, and all pairs take a block of d in turn, so that the
        block's slice of the value rows stays in L1."""
        d = 0
        while d + 32 <= D:
            i = 0
            while i + 2 <= P:  # two pairs: eight independent sums, each value row load shared
                acc = acc0 + 4 * (i * D + d)
                acd = acc + 4 * D
                E = ptr_f32(Sa + 4 * i * ATTN_CHUNK)
                F = ptr_f32(Sa + 4 * (i + 1) * ATTN_CHUNK)
                r0 = f8_load(acc)
                r1 = f8_load(acc + 32)
                r2 = f8_load(acc + 64)
                r3 = f8_load(acc + 96)
                u0 = f8_load(acd)
                u1 = f8_load(acd + 32)
                u2 = f8_load(acd + 64)
                u3 = f8_load(acd + 96)
                for j in range(j0, j1):
                    e = f8_splat(E[j - c0])
                    f = f8_splat(F[j - c0])
                    r = rs + j - j0
                    va = vb + (r - ring if r >= ring else r) * rb + es * d
                    v = kload(va)
                    r0 = f8_madd(r0, e, v)
                    u0 = f8_madd(u0, f, v)
                    v = kload(va + 8 * es)
                    r1 = f8_madd(r1, e, v)
                    u1 = f8_madd(u1, f, v)
                    v = kload(va + 16 * es)
                    r2 = f8_madd(r2, e, v)
                    u2 = f8_madd(u2, f, v)
                    v = kload(va + 24 * es)
                    r3 = f8_madd(r3, e, v)
                    u3 = f8_madd(u3, f, v)
                f8_store(acc, r0)
                f8_store(acc + 32, r1)
                f8_store(acc + 64, r2)
                f8_store(acc + 96, r3)
                f8_store(acd, u0)
                f8_store(acd + 32, u1)
                f8_store(acd + 64, u2)
                f8_store(acd + 96, u3)
                i += 2
            if i < P:
                acc = acc0 + 4 * (i * D + d)
                E = ptr_f32(Sa + 4 * i * ATTN_CHUNK)
                r0 = f8_load(acc)
                r1 = f8_load(acc + 32)
                r2 = f8_load(acc + 64)
                r3 = f8_load(acc + 96)
                for j in range(j0, j1):
                    e = f8_splat(E[j - c0])
                    r = rs + j - j0
                    va = vb + (r - ring if r >= ring else r) * rb + es * d
                    r0 = f8_madd(r0, e, kload(va))
                    r1 = f8_madd(r1, e, kload(va + 8 * es))
                    r2 = f8_madd(r2, e, kload(va + 16 * es))
                    r3 = f8_madd(r3, e, kload(va + 24 * es))
                f8_store(acc, r0)
                f8_store(acc + 32, r1)
                f8_store(acc + 64, r2)
                f8_store(acc + 96, r3)
            d += 32
        for i in range(P):
            E = ptr_f32(Sa + 4 * i * ATTN_CHUNK)
            dd = d
            while dd + 8 <= D:
                acc = acc0 + 4 * (i * D + dd)
                x0 = f8_load(acc)
                for j in range(j0, j1):
                    r = rs + j - j0
                    r = r - ring if r >= ring else r
                    x0 = f8_madd(x0, f8_splat(E[j - c0]), kload(vb + r * rb + es * dd))
                f8_store(acc, x0)
                dd += 8
            A = ptr_f32(acc0 + 4 * i * D)
            for k in range(dd, D):
                for j in range(j0, j1):
                    r = rs + j - j0
                    r = r - ring if r >= ring else r
                    A[k] += E[j - c0] * kload_1(vb + r * rb, k)
    return dot1, dot4, weigh


def _make_attention(widen, in_place):
    """in_place: "f32" or "f16" rows read where they lie; else rows widened by `widen` into a
    stack buffer first (q8_0)."""
    es = 2 if in_place == "f16" else 4
    dot1, dot4, weigh = _make_dots(f8_load_h if es == 2 else f8_load, es)
    direct = bool(in_place)

    @njit(**KW_ATTN)
    def attention(q, qs, n, H, KV, D, kc, vc, pos, rows, nb, slot_bytes, ring, row_bytes, soff,
                  scale, window, softcap, out, scratch, tid, nth):
        """Causal softmax attention of each (token, head) over the cache; GQA shares kv heads.
        Position j's key is in row j % ring. Work goes out in tiles (consecutive tokens x a
        run of heads of one kv head), dealt to the threads in turn so that the long causal
        rows at the end of a prefill spread over all of them."""
        grp = H // KV
        PM = min(16, ATTN_ACC // D)
        Gr = min(grp, PM)
        T = max(1, PM // Gr) if rows == 0 else 1
        runs = (grp + Gr - 1) // Gr
        ntile = (n + T - 1) // T
        while ntile * KV * runs < nth and T > 1:  # few tokens: smaller tiles, then head runs
            T = (T + 1) // 2
            ntile = (n + T - 1) // T
        while ntile * KV * runs < nth and Gr > 1:
            Gr = (Gr + 1) // 2
            runs = (grp + Gr - 1) // Gr
        O = ptr_f32(out)
        accb = stack_f32(4096)  # ATTN_ACC: the tile's output rows, head_dim apart
        S = stack_f32(512)      # scores, then weights: 16 pairs x ATTN_CHUNK
        M = stack_f32(16)       # each pair's running max
        L = stack_f32(16)       # and sum of weights
        buf = stack_f32(16384)  # ATTN_CHUNK widened rows (compact caches)
        acc0 = addr_of(accb)
        bufa = addr_of(buf)
        Sa = addr_of(S)
        sc = np.float32(scale)
        cap = np.float32(softcap)
        per = KV * runs
        for u in range(tid, ntile * per, nth):
            tile = u // per
            g = (u - tile * per) // runs
            h0 = g * grp + (u - tile * per - g * runs) * Gr
            Gn = min(Gr, (g + 1) * grp - h0)
            t0 = tile * T
            Tn = min(T, n - t0)
            P = Tn * Gn
            p0, base = row_place(t0, pos, rows, nb, slot_bytes)
            lo = 0
            if window > 0 and p0 - window + 1 > 0:
                lo = p0 - window + 1
            hi = p0 + Tn - 1  # the tile's positions are p0..hi (one sequence)
            kg = kc + base + es * g * D
            vg = vc + base + es * g * D
            for i in range(P):
                M[i] = -np.inf
                L[i] = 0.0
                for d in range(D):
                    accb[i * D + d] = 0.0
            c0 = lo - lo % ATTN_CHUNK
            while c0 <= hi:
                j0 = max(c0, lo)
                j1 = min(c0 + ATTN_CHUNK, hi + 1)
                rj0 = j0 % ring  # rows rj0.. hold positions j0.., wrapping at ring once at most
                if not direct:
                    for j in range(j0, j1):
                        widen(kc + base + (j % ring) * row_bytes, soff, g, D,
                              ptr_f32(bufa + 4 * (j - c0) * D))
                # Scores: four key rows at a time against every query row of the tile.
                j = j0
                while j < j1:
                    if direct:
                        r = rj0 + j - j0
                        k0 = kg + (r - ring if r >= ring else r) * row_bytes
                        r += 1
                        k1 = kg + (r - ring if r >= ring else r) * row_bytes
                        r += 1
                        k2 = kg + (r - ring if r >= ring else r) * row_bytes
                        r += 1
                        k3 = kg + (r - ring if r >= ring else r) * row_bytes
                    else:
                        k0 = bufa + 4 * (j - c0) * D
                        k1 = k0 + 4 * D
                        k2 = k1 + 4 * D
                        k3 = k2 + 4 * D
                    four = j + 4 <= j1
                    for ti in range(Tn):  # pair i = ti * Gn + hh: token t0 + ti, head h0 + hh
                        qt = q + 4 * ((t0 + ti) * qs + h0 * D)
                        for hh in range(Gn):
                            qa = qt + 4 * hh * D
                            o = (ti * Gn + hh) * ATTN_CHUNK + j - c0
                            if four:
                                S[o], S[o + 1], S[o + 2], S[o + 3] = dot4(qa, k0, k1, k2, k3,
                                                                          D)
                            else:
                                S[o] = dot1(qa, k0, D)
                    j += 4 if four else 1
                # Each pair's own positions: weights, and the running softmax rescaled.
                for i in range(P):
                    p = p0 + i // Gn if Gn > 1 else p0 + i
                    st = 0
                    if window > 0 and p - window + 1 > 0:
                        st = p - window + 1
                    ja = max(j0, st)
                    jb = min(j1, p + 1)
                    R = ptr_f32(Sa + 4 * (i * ATTN_CHUNK - c0))
                    if cap > 0:
                        for j in range(ja, jb):
                            R[j] = cap * math.tanh(R[j] * sc / cap)
                    else:
                        for j in range(ja, jb):
                            R[j] *= sc
                    # The max in four chains (max is exact: any order gives the same value).
                    m0 = m1 = m2 = m3 = M[i]
                    j = ja
                    while j + 4 <= jb:
                        m0 = max(m0, R[j])
                        m1 = max(m1, R[j + 1])
                        m2 = max(m2, R[j + 2])
                        m3 = max(m3, R[j + 3])
                        j += 4
                    while j < jb:
                        m0 = max(m0, R[j])
                        j += 1
                    m = max(max(m0, m1), max(m2, m3))
                    tot = np.float32(0.0)
                    for j in range(ja, jb):
                        e = fast_exp(R[j] - m)
                        R[j] = e
                        tot += e
                    for j in range(j0, ja):
                        R[j] = 0.0
                    for j in range(max(jb, j0), j1):
                        R[j] = 0.0
                    if m > M[i] and L[i] > 0:
                        alpha = fast_exp(M[i] - m)
                        L[i] *= alpha
                        for d in range(D):
                            accb[i * D + d] *= alpha
                    M[i] = m
                    L[i] += tot
                if not direct:
                    for j in range(j0, j1):
                        widen(vc + base + (j % ring) * row_bytes, soff, g, D,
                              ptr_f32(bufa + 4 * (j - c0) * D))
                if direct:
                    weigh(acc0, Sa, P, D, j0, j1, c0, vg, rj0, ring, row_bytes)
                else:
                    weigh(acc0, Sa, P, D, j0, j1, c0, bufa + 4 * (j0 - c0) * D, 0,
                          ATTN_CHUNK + 1, 4 * D)
                c0 += ATTN_CHUNK
            for i in range(P):
                inv = np.float32(1.0) / L[i]
                oo = (t0 + i // Gn) * H * D + (h0 + i % Gn) * D  # once per tile
                for d in range(D):
                    O[oo + d] = accb[i * D + d] * inv
    return attention


KV_STORE = {k: _make_kv_store(f[0]) for k, f in KV_FORMATS.items()}
ATTENTION = {k: _make_attention(f[1], f[2]) for k, f in KV_FORMATS.items()}
kv_store, attention = KV_STORE["f32"], ATTENTION["f32"]  # the f32 cache's (kernel tests)


@njit(inline="always", **KW)
def silu(x):
    return x / (np.float32(1.0) + fast_exp(-x))


@njit(inline="always", **KW)
def gelu_tanh(x):
    # 0.5 x (1 + tanh(u)) = x * sigmoid(2u)
    u = np.float32(0.7978845608028654) * (x + np.float32(0.044715) * x * x * x)
    return x / (np.float32(1.0) + fast_exp(np.float32(-2.0) * u))


@njit(inline="always", **KW)
def gelu_erf(x):
    return np.float32(0.5) * x * (np.float32(1.0) + math.erf(x * np.float32(0.7071067811865476)))


ACT_CODES = {"silu": 0, "gelu_tanh": 1, "gelu": 2}


@njit(inline="always", **KW)
def _share(n, cols, tid, nth):
    """Rows lo..hi, columns c0..c1 of this thread: rows split across threads, or with fewer
    rows than threads (decode) the columns."""
    if n >= nth:
        lo, hi = split(n, tid, nth)
        return lo, hi, 0, cols
    c0, c1 = split(cols, tid, nth)
    return 0, n, c0, c1


def _make_mul_act(fn):
    @njit(inline="always", **KW)
    def rows(A, as_, B, bs, Y, cols, lo, hi, c0, c1):
        for t in range(lo, hi):
            for j in range(c0, c1):
                Y[t * cols + j] = fn(A[t * as_ + j]) * B[t * bs + j]
    return rows


def _make_act_rows(fn):
    @njit(inline="always", **KW)
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
