"""Quantized linear kernels with 8-bit activations: integer dot products on the weights' codes.

Each call first quantizes its input rows into the thread's scratch, 32 values at a time (as
llama.cpp's Q8 activations): int8 codes, the block's float scale dx, and dx * (sum of codes)
for each half of 16 — the term that a weight's offset or minimum multiplies. A weight row is
then read as its raw codes (once per token at decode, once per up to eight tokens in prefill): 32
codes become one byte vector (`simd`) and are multiplied with 32 activation codes into int32
lanes. Four such pieces are reduced together into one vector of their eight half sums
(exact integers), converted once and scaled by one vector (weight scales times dx); offsets
and minima come in through the half sums of the activations, again as one vector. Nothing is
widened to float per value, and the float work is one multiply-add per four pieces.

Each block type is described once: `quads_<type>(sink)` returns `(group, tail)`; `group(w, g,
st)` hands the sink every four pieces of the g-th group of blocks of a row (four 32-value
blocks, or one 256-value block = two quads) as `sink(st, V0..V3, q, sw, mv, signed)`:
V the codes as bytes (signed or not), q the quad of activations they multiply (32-blocks
4q..4q+3), sw the weight scales of the pieces' halves of 16 as one vector ([first halves of
the four pieces, then their second halves]), mv what each half's activation sum is multiplied
by and subtracted (offsets and minima). The scale vectors are built with vector loads and
conversions (four f16 scales in one vcvtph2ps, k-quant sub-block scales unpacked in lanes):
built lane by lane from scalars they took as many instructions as the dot products on
q5_0 and the k-quants. `tail` takes the last, partial group of 32-value types. A sink owns the
accumulators (`st`, a tuple): one token in registers, or a tile of up to eight tokens against
the same unpacked codes with their accumulators on the stack — the same steps per token in
both, so a token's result is the same bits alone or in a tile.
Block layouts are ggml's (see quant_kernels.py for the value order of each type).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.repack import LAYOUTS
from .inlining import helper
from .intrinsics import prefetch, ptr_f32, ptr_i8, ptr_u8, stack_addr
from .kernels import KW, PREFETCH_BYTES, split
from .quant_kernels import f16, fq, q3_k_scale
from .simd import (b32_and, b32_bits, b32_fifths, b32_load, b32_nibbles16, b32_or, b32_shl,
                   b32_shr, b32_zero, dot_i8, dot_u8, f8_halves4x2, f8_halves4x2_at, f8_hi4x2,
                   f8_i8_even_odd, f8_k4_scales, f8_lo4x2, f8_load, f8_load4x2, f8_madd_i,
                   f8_msub, f8_mul, f8_neg, f8_set, f8_splat, f8_store, f8_sum, f8_zero, i8_quad)

TILE = 8  # tokens that share one unpacking of a weight row in prefill
F0 = np.float32(0)
F4, F8, F16, F32, F127 = (np.float32(v) for v in (4, 8, 16, 32, 127))


# --- activation rows: codes padded to whole quads of 4 x 32, then per quad its 4 dx, then
# per quad its 8 half sums (first halves of the 4 blocks, then second halves) ---

@njit(**KW)
def q8_row_bytes(k):
    """Scratch bytes for one quantized activation row of k values (k a multiple of 32)."""
    return (k + 127) // 128 * 176


@helper(**KW)
def q8_dx_offset(k):
    return (k + 127) // 128 * 128


@helper(**KW)
def q8_sums_offset(k):
    return (k + 127) // 128 * 144


@helper(**KW)
def quantize_row(x, K, X):
    """float32 row at x (K values) -> codes, scales and half sums at X (padding zeroed)."""
    src = ptr_f32(x)
    Q = ptr_i8(X)
    D = ptr_f32(X + q8_dx_offset(K))
    S = ptr_f32(X + q8_sums_offset(K))
    nblk = K // 32
    for blk in range((K + 127) // 128 * 4):
        o = blk * 32
        q4 = (blk // 4) * 8 + blk % 4
        if blk >= nblk:
            for j in range(32):
                Q[o + j] = 0
            D[blk] = F0
            S[q4] = F0
            S[q4 + 4] = F0
            continue
        amax = F0
        for j in range(32):
            amax = max(amax, abs(src[o + j]))
        inv = F127 / amax if amax > F0 else F0
        d = amax / F127
        s0 = 0
        s1 = 0
        for j in range(16):
            q = np.int32(np.rint(src[o + j] * inv))
            Q[o + j] = q
            s0 += q
        for j in range(16, 32):
            q = np.int32(np.rint(src[o + j] * inv))
            Q[o + j] = q
            s1 += q
        D[blk] = d
        S[q4] = d * np.float32(s0)
        S[q4 + 4] = d * np.float32(s1)


@helper(**KW)
def quantize_rows(x, xs_, n, K, scratch):
    """The n input rows (xs_ floats apart) quantized into scratch, one after another; returns
    (bytes per row, offset of the dx, offset of the half sums). Every thread quantizes all
    rows: no barrier, and it is cheap."""
    QB = q8_row_bytes(K)
    for t in range(n):
        quantize_row(x + t * xs_ * 4, K, scratch + t * QB)
    return QB, q8_dx_offset(K), q8_sums_offset(K)


# --- block types as quads of pieces ---

def quads_small(codes, BB, signed, mconst, moff):
    """32-value types: a group is four blocks, one quad. `codes(p)` gives a block's 32 codes;
    its scale is the f16 at p, and what multiplies the activations' sums is `mconst` times
    the scale (q4_0's 8, q5_0's 16) or, with `moff`, minus the f16 at p + moff (q4_1, q5_1)."""
    def make(sink):
        @helper(**KW)
        def group(w, g, st):
            p = w + 4 * g * BB
            sw = f8_halves4x2(p, p + BB, p + 2 * BB, p + 3 * BB)
            if moff:
                mv = f8_neg(f8_halves4x2(p + moff, p + BB + moff, p + 2 * BB + moff,
                                         p + 3 * BB + moff))
            else:
                mv = f8_mul(sw, f8_splat(mconst))
            return sink(st, codes(p), codes(p + BB), codes(p + 2 * BB), codes(p + 3 * BB), g,
                        sw, mv, signed)

        @helper(**KW)
        def piece(p):
            d = f16(p)
            return codes(p), d, -f16(p + moff) if moff else mconst * d

        @helper(**KW)
        def tail(w, g, nblk, st):
            """The last 1-3 blocks; the missing pieces are zero codes with zero scales (their
            activations are zero-padded too), so they add exact zeros."""
            p = w + 4 * g * BB
            left = nblk - 4 * g
            V0, a0, m0 = piece(p)
            V1, a1, m1 = b32_zero(), F0, F0
            V2, a2, m2 = b32_zero(), F0, F0
            if left > 1:
                V1, a1, m1 = piece(p + BB)
            if left > 2:
                V2, a2, m2 = piece(p + 2 * BB)
            return sink(st, V0, V1, V2, b32_zero(), g, f8_set(a0, a1, a2, F0, a0, a1, a2, F0),
                        f8_set(m0, m1, m2, F0, m0, m1, m2, F0), signed)
        return group, tail
    return make


@helper(**KW)
def codes_q4_0(p):   # f16 d, 16 bytes of nibbles; values d * (q - 8)
    return b32_nibbles16(p + 2)


@helper(**KW)
def codes_q4_1(p):   # f16 d, f16 m, nibbles; values d * q + m
    return b32_nibbles16(p + 4)


@helper(**KW)
def codes_q5_0(p):   # f16 d, u32 fifth bits, nibbles; values d * (q - 16)
    return b32_or(b32_nibbles16(p + 6), b32_shl(b32_bits(p + 2), 4))


@helper(**KW)
def codes_q5_1(p):   # f16 d, f16 m, u32 fifth bits, nibbles; values d * q + m
    return b32_or(b32_nibbles16(p + 8), b32_shl(b32_bits(p + 4), 4))


@helper(**KW)
def codes_q8_0(p):   # f16 d, 32 int8 codes
    return b32_load(p + 2)


@helper(**KW)
def codes_q8_1(p):   # f16 d, f16 s (unused here), 32 int8 codes
    return b32_load(p + 4)


def quads_repacked(lay):
    """A CPU build's regrouped 32-value types (quant/repack.py): a group is one repacked
    block, a quad. The sink gets the same codes and scale vectors as from the base type's four
    blocks (so the same bits out), built from a quad's side-by-side parts: its four scales in
    one conversion, two 32-byte nibble loads, and for q5 types one vector of fifth bits that
    each block shifts into place. The subtracted term is as in quads_small: the offsets of
    q4_1/q5_1, or half the code range (8 or 16) times the scale for q4_0/q5_0."""
    QB = lay.quad_bytes
    moff = lay.offset
    fifth = lay.fifth != 0
    mconst = F16 if fifth else F8
    oh = 16 if moff else 8            # the fifth bits (q5 types)
    on = oh + (16 if fifth else 0)    # the nibbles

    def make(sink):
        @helper(**KW)
        def group(w, g, st):
            p = w + g * QB
            sw = f8_halves4x2_at(p)
            mv = f8_neg(f8_halves4x2_at(p + 8)) if moff else f8_mul(sw, f8_splat(mconst))
            n0 = b32_load(p + on)
            n1 = b32_load(p + on + 32)
            c0, c1, c2, c3 = b32_and(n0, 15), b32_shr(n0, 4), b32_and(n1, 15), b32_shr(n1, 4)
            if fifth:
                h = b32_fifths(p + oh)  # block k's bits at bit k: moved to bit 4
                c0 = b32_or(c0, b32_and(b32_shl(h, 4), 16))
                c1 = b32_or(c1, b32_and(b32_shl(h, 3), 16))
                c2 = b32_or(c2, b32_and(b32_shl(h, 2), 16))
                c3 = b32_or(c3, b32_and(b32_shl(h, 1), 16))
            return sink(st, c0, c1, c2, c3, g, sw, mv, False)

        @helper(**KW)
        def tail(w, g, nblk, st):
            return st  # whole quads only
        return group, tail
    return make


def quads_large(half):
    """256-value types: a group is one block = two quads; `half(p, h, sink, st, i)` hands the
    sink the block's pieces 4h..4h+3 (h a literal once inlined)."""
    def make(sink):
        @helper(**KW)
        def group(w, i, st):
            st = half(w, i, 0, sink, st)
            return half(w, i, 1, sink, st)

        @helper(**KW)
        def tail(w, g, nblk, st):
            return st  # whole blocks only
        return group, tail
    return make


@helper(**KW)
def k4_vectors(p, h, d, dmin):
    """q4_k/q5_k sub-blocks 4h..4h+3: their d * scale and dmin * min, each twice (the lanes
    of a quad's half sums)."""
    v = f8_mul(f8_k4_scales(p, h), f8_set(d, d, d, d, dmin, dmin, dmin, dmin))
    return f8_lo4x2(v), f8_hi4x2(v)


@helper(**KW)
def half_q4_k(w, i, h, sink, st):   # f16 d, f16 dmin, scales[12], qs[128]
    p = w + i * 144
    d = f16(p)
    dmin = f16(p + 2)
    # qs bytes c*32..: sub-block 2c in the low nibbles, 2c + 1 in the high ones
    v0 = b32_load(p + 16 + 64 * h)
    v1 = b32_load(p + 48 + 64 * h)
    sw, mv = k4_vectors(p + 4, h, d, dmin)
    return sink(st, b32_and(v0, 15), b32_shr(v0, 4), b32_and(v1, 15), b32_shr(v1, 4),
                2 * i + h, sw, mv, False)


@helper(**KW)
def _q5_k_codes(v, hb, c):
    """Sub-blocks 2c (low nibbles) and 2c + 1 (high) with their fifth bits from qh."""
    lo = b32_or(b32_and(v, 15), b32_shl(b32_and(b32_shr(hb, 2 * c), 1), 4))
    hi = b32_or(b32_shr(v, 4), b32_shl(b32_and(b32_shr(hb, 2 * c + 1), 1), 4))
    return lo, hi


@helper(**KW)
def half_q5_k(w, i, h, sink, st):   # f16 d, f16 dmin, scales[12], qh[32], qs[128]
    p = w + i * 176
    d = f16(p)
    dmin = f16(p + 2)
    hb = b32_load(p + 16)
    V0, V1 = _q5_k_codes(b32_load(p + 48 + 64 * h), hb, 2 * h)
    V2, V3 = _q5_k_codes(b32_load(p + 80 + 64 * h), hb, 2 * h + 1)
    sw, mv = k4_vectors(p + 4, h, d, dmin)
    return sink(st, V0, V1, V2, V3, 2 * i + h, sw, mv, False)


@helper(**KW)
def _q6_k_codes(ql, qh, s):
    """Values h*128 + s*32 + l: nibble s // 2 of ql, 2-bit field s of qh."""
    nib = b32_and(ql, 15) if s < 2 else b32_shr(ql, 4)
    return b32_or(nib, b32_shl(b32_and(b32_shr(qh, 2 * s), 3), 4))


@helper(**KW)
def half_q6_k(w, i, h, sink, st):   # ql[128], qh[64], i8 scales[16], f16 d; d*sc*(q - 32)
    p = w + i * 210
    d = f16(p + 208)
    ql0 = b32_load(p + h * 64)
    ql1 = b32_load(p + h * 64 + 32)
    qh = b32_load(p + 128 + h * 32)
    # the 8 scales of this half: sub-blocks 0, 2, 4, 6 (first halves of 16), then 1, 3, 5, 7
    sw = f8_mul(f8_i8_even_odd(p + 192 + h * 8), f8_splat(d))
    return sink(st, _q6_k_codes(ql0, qh, 0), _q6_k_codes(ql1, qh, 1), _q6_k_codes(ql0, qh, 2),
                _q6_k_codes(ql1, qh, 3), 2 * i + h, sw, f8_mul(sw, f8_splat(F32)), False)


@helper(**KW)
def _q3_k_codes(q, hm, h, s):
    """2-bit field s of qs byte h*32 + l, bit 4h + s of hmask byte l."""
    return b32_or(b32_and(b32_shr(q, 2 * s), 3), b32_shl(b32_and(b32_shr(hm, 4 * h + s), 1), 2))


@helper(**KW)
def half_q3_k(w, i, h, sink, st):   # hmask[32], qs[64], scales[12], f16 d; d*sc*(q - 4)
    p = w + i * 110
    d = f16(p + 108)
    hm = b32_load(p)
    q = b32_load(p + 32 + h * 32)
    s0, s1 = d * q3_k_scale(p + 96, h * 8), d * q3_k_scale(p + 96, h * 8 + 2)
    s2, s3 = d * q3_k_scale(p + 96, h * 8 + 4), d * q3_k_scale(p + 96, h * 8 + 6)
    t0, t1 = d * q3_k_scale(p + 96, h * 8 + 1), d * q3_k_scale(p + 96, h * 8 + 3)
    t2, t3 = d * q3_k_scale(p + 96, h * 8 + 5), d * q3_k_scale(p + 96, h * 8 + 7)
    sw = f8_set(s0, s1, s2, s3, t0, t1, t2, t3)
    return sink(st, _q3_k_codes(q, hm, h, 0), _q3_k_codes(q, hm, h, 1),
                _q3_k_codes(q, hm, h, 2), _q3_k_codes(q, hm, h, 3), 2 * i + h,
                sw, f8_mul(sw, f8_splat(F4)), False)


@helper(**KW)
def _q2_k_scales(p, k, d, dmin):
    """Scale byte k: the low nibble scales, the high nibble is the minimum."""
    b = np.int64(ptr_u8(p)[k])
    return d * fq(b & 15), dmin * fq(b >> 4)


@helper(**KW)
def half_q2_k(w, i, h, sink, st):   # scales[16] (lo scale, hi min), qs[64], f16 d, dmin
    p = w + i * 84
    d = f16(p + 80)
    dmin = f16(p + 82)
    q = b32_load(p + 16 + h * 32)   # 2-bit field s of qs byte h*32 + l
    s0, n0 = _q2_k_scales(p, h * 8, d, dmin)
    s1, n1 = _q2_k_scales(p, h * 8 + 2, d, dmin)
    s2, n2 = _q2_k_scales(p, h * 8 + 4, d, dmin)
    s3, n3 = _q2_k_scales(p, h * 8 + 6, d, dmin)
    t0, o0 = _q2_k_scales(p, h * 8 + 1, d, dmin)
    t1, o1 = _q2_k_scales(p, h * 8 + 3, d, dmin)
    t2, o2 = _q2_k_scales(p, h * 8 + 5, d, dmin)
    t3, o3 = _q2_k_scales(p, h * 8 + 7, d, dmin)
    return sink(st, b32_and(q, 3), b32_and(b32_shr(q, 2), 3), b32_and(b32_shr(q, 4), 3),
                b32_and(b32_shr(q, 6), 3), 2 * i + h, f8_set(s0, s1, s2, s3, t0, t1, t2, t3),
                f8_set(n0, n1, n2, n3, o0, o1, o2, o3), False)


@helper(**KW)
def half_q8_k(w, i, h, sink, st):   # f32 d, i8 qs[256], i16 bsums[16]
    p = w + i * 292
    d = ptr_f32(p)[0]
    c = p + 4 + 128 * h
    return sink(st, b32_load(c), b32_load(c + 32), b32_load(c + 64), b32_load(c + 96),
                2 * i + h, f8_splat(d), f8_zero(), True)


# name -> (quads, values per block, bytes per block)
Q8_BLOCK_TYPES = {
    "q4_0": (quads_small(codes_q4_0, 18, False, F8, 0), 32, 18),
    "q4_1": (quads_small(codes_q4_1, 20, False, F0, 2), 32, 20),
    "q5_0": (quads_small(codes_q5_0, 22, False, F16, 0), 32, 22),
    "q5_1": (quads_small(codes_q5_1, 24, False, F0, 2), 32, 24),
    "q8_0": (quads_small(codes_q8_0, 34, True, F0, 0), 32, 34),
    "q8_1": (quads_small(codes_q8_1, 36, True, F0, 0), 32, 36),
    "q2_k": (quads_large(half_q2_k), 256, 84), "q3_k": (quads_large(half_q3_k), 256, 110),
    "q4_k": (quads_large(half_q4_k), 256, 144), "q5_k": (quads_large(half_q5_k), 256, 176),
    "q6_k": (quads_large(half_q6_k), 256, 210), "q8_k": (quads_large(half_q8_k), 256, 292),
    # CPU builds' regrouped 32-value types: one quad per block
    **{name: (quads_repacked(lay), 128, lay.quad_bytes) for name, lay in LAYOUTS.items()},
}


# --- sinks ---

@helper(**KW)
def codes_dot(V, xa, signed):
    return dot_i8(V, xa) if signed else dot_u8(V, xa)


@helper(**KW)
def _tok(X, oD, oS, q, V0, V1, V2, V3, sw, mv, signed, acc):
    """One token's share of a quad: the four pieces' half sums, scaled by the weight scales
    times the blocks' dx, minus the subtracted terms times the activations' half sums."""
    xa = X + q * 128
    sums = i8_quad(codes_dot(V0, xa, signed), codes_dot(V1, xa + 32, signed),
                   codes_dot(V2, xa + 64, signed), codes_dot(V3, xa + 96, signed))
    acc = f8_madd_i(acc, sums, f8_mul(sw, f8_load4x2(X + oD + q * 16)))
    if not signed:
        acc = f8_msub(acc, mv, f8_load(X + oS + q * 32))
    return acc


@helper(**KW)
def sink_one(st, V0, V1, V2, V3, q, sw, mv, signed):
    """One token, st = (X, oD, oS, acc)."""
    X, oD, oS, acc = st
    return X, oD, oS, _tok(X, oD, oS, q, V0, V1, V2, V3, sw, mv, signed, acc)


@helper(**KW)
def sink_tile(st, V0, V1, V2, V3, q, sw, mv, signed):
    """T tokens (quantized rows X, X + QB, ...) against the same unpacked codes, their
    accumulators in memory at A (32 bytes each), st = (X, QB, oD, oS, T, A): each token takes
    exactly the steps of `sink_one`. A loop over the tokens, not T unrolled copies, keeps the
    code (and its compile time) small; the codes and scales stay in registers across it."""
    X, QB, oD, oS, T, A = st
    for k in range(T):
        a = A + 32 * k
        f8_store(a, _tok(X + k * QB, oD, oS, q, V0, V1, V2, V3, sw, mv, signed, f8_load(a)))
    return st


def make_q8_linear(quads, block_size, block_bytes):
    """A `linear(x, xs, n, K, w, N, b, y, scratch, tid, nth)` over a block-quantized W with
    8-bit activations (scratch holds n quantized rows: `q8_row_bytes(K)` each)."""
    BS, BB = block_size, block_bytes
    GB = 4 if BS == 32 else 1   # weight blocks per group
    one, one_tail = quads(sink_one)
    tile, tile_tail = quads(sink_tile)

    @njit(**KW)
    def linear(x, xs_, n, K, w, N, b, y, scratch, tid, nth):
        lo, hi = split(N, tid, nth)
        if lo >= hi:
            return
        QB, oD, oS = quantize_rows(x, xs_, n, K, scratch)
        Y = ptr_f32(y)
        A = stack_addr(256)  # the tile's accumulators: 32 bytes x TILE (a literal)
        nb = K // BS
        rb = nb * BB
        ng = nb // GB
        tail = nb % GB != 0
        # One row at a time (two rows interleaved measured half as fast on the decode step's
        # big matrices: one sequential stream is what the prefetcher keeps up with). For
        # several tokens the row stays in L1 and is unpacked once per tile of up to eight
        # (x1.2 over four on AVX2 prefill for q5_0; the tile is a loop, not eight unrolled
        # copies, which measured as fast and compiles 4x faster); a last token goes alone.
        ahead = max(2, -(-PREFETCH_BYTES // rb)) * rb  # whole rows, a line at a time
        for r in range(lo, hi):
            row = w + r * rb
            for c in range(0, rb, 64):
                prefetch(row + ahead + c)
            bias = ptr_f32(b)[r] if b != 0 else F0
            t = 0
            while t + 2 <= n:
                T = min(TILE, n - t)
                for k in range(T):
                    f8_store(A + 32 * k, f8_zero())
                st = (scratch + t * QB, QB, oD, oS, T, A)
                for g in range(ng):
                    st = tile(row, g, st)
                if tail:
                    st = tile_tail(row, ng, nb, st)
                for k in range(T):
                    Y[(t + k) * N + r] = f8_sum(f8_load(A + 32 * k)) + bias
                t += T
            while t < n:
                st1 = (scratch + t * QB, oD, oS, f8_zero())
                for g in range(ng):
                    st1 = one(row, g, st1)
                if tail:
                    st1 = one_tail(row, ng, nb, st1)
                Y[t * N + r] = f8_sum(st1[3]) + bias
                t += 1
    return linear


Q8_LINEAR = {name: make_q8_linear(*spec) for name, spec in Q8_BLOCK_TYPES.items()}
