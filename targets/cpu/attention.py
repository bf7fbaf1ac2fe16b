"""Softmax attention over the KV cache (the ATTENTION op's second call, after kernels.py's
KV store): one kernel per cache storage type (KV_FORMATS), tiled as described below."""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .attn_vec import addr_of, f8_add, f8_hsum, f8_load_h, f8_madd, f8_splat
from .inlining import helper
from .intrinsics import half_to_f32, ptr_f32, ptr_u16, stack_f32
from .kernels import KV_FORMATS, KW_ATTN, fast_exp, row_place
from .simd import f8_load, f8_store, f8_zero


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
    @helper(**KW_ATTN)
    def dot_tail(qa, ka, d0, D):
        s = np.float32(0.0)  # head_dim not a multiple of 8: the last values one by one
        for d in range(d0, D):
            s += ptr_f32(qa)[d] * kload_1(ka, d)
        return s

    @helper(**KW_ATTN)
    def kload_1(ka, d):
        if es == 4:
            return ptr_f32(ka)[d]
        return half_to_f32(ptr_u16(ka)[d])

    @helper(**KW_ATTN)
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

    @helper(**KW_ATTN)
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

    @helper(**KW_ATTN)
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


ATTENTION = {k: _make_attention(f[1], f[2]) for k, f in KV_FORMATS.items()}
attention = ATTENTION["f32"]  # the f32 cache's (kernel tests)
