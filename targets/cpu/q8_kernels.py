"""Quantized linear kernels with 8-bit activations: integer dot products on the weights' codes.

Each call first quantizes its input rows into the thread's scratch, 32 values at a time (as
llama.cpp's Q8 activations): int8 codes, the block's float scale dx, and dx * (sum of codes)
for each half of 16 — the term that a weight's offset or minimum multiplies. A weight row is
then read as its raw codes (once per token at decode, once per four tokens in prefill): 32
codes become one byte vector (`simd`), are multiplied with 32 activation codes into int32
lanes, and are scaled (weight scale times dx) into a float vector accumulator; offsets and minima come in through the half sums. Nothing is
widened to float per value, so a decode step streams the bytes of its weights and little else.

Each block type is described once, as the pieces its block is made of: `pieces_<type>(sink)`
returns `block(w, i, st)`, which hands every 32 codes of block i of a row to `sink(st, V, j,
sw0, sw1, m0, m1, signed)`: V the codes as bytes (signed or not), j the 32-block of the
activations they multiply, sw0 / sw1 the weight scales of their two halves of 16, and m0 / m1
what each half's activation sum is multiplied by and subtracted (offsets and minima). A sink
owns the accumulators (`st`, a tuple): the decode sink keeps one token in two alternating
chains; the prefill sink multiplies the unpacked codes with four tokens at once. Block layouts
are ggml's (see quant_kernels.py for the value order of each type).
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .intrinsics import prefetch, ptr_f32, ptr_i8, ptr_u8
from .kernels import KW, split
from .quant_kernels import f16, fq, k4_scale_min, q3_k_scale
from .simd import (b32_and, b32_bits, b32_load, b32_nibbles16, b32_or, b32_shl, b32_shr, dot_i8,
                   dot_u8, f8_fma, f8_sum, f8_zero)

IL = dict(inline="always", **KW)
F0 = np.float32(0)
F4, F8, F16, F32, F127 = (np.float32(v) for v in (4, 8, 16, 32, 127))


@njit(**KW)
def q8_row_bytes(k):
    """Scratch bytes for one quantized activation row of k values (k a multiple of 32)."""
    return k + k // 32 * 4 + k // 16 * 4


@njit(**IL)
def xd(X, K, blk):
    """dx of 32-block blk."""
    return ptr_f32(X + K)[blk]


@njit(**IL)
def xs(X, K, half):
    """dx * sum of the codes of 16-value half `half`."""
    return ptr_f32(X + K + K // 8)[half]


@njit(**IL)
def quantize_row(x, K, X):
    """float32 row at x (K values) -> codes, scales and half sums at X."""
    src = ptr_f32(x)
    Q = ptr_i8(X)
    D = ptr_f32(X + K)
    S = ptr_f32(X + K + K // 8)
    for blk in range(K // 32):
        o = blk * 32
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
        S[2 * blk] = d * np.float32(s0)
        S[2 * blk + 1] = d * np.float32(s1)


# --- block types as pieces ---

def pieces_q4_0(sink):   # f16 d, 16 bytes of nibbles; values d * (q - 8)
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 18
        d = f16(p)
        return sink(st, b32_nibbles16(p + 2), i, d, d, F8 * d, F8 * d, False)
    return block


def pieces_q4_1(sink):   # f16 d, f16 m, nibbles; values d * q + m
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 20
        d = f16(p)
        m = -f16(p + 2)
        return sink(st, b32_nibbles16(p + 4), i, d, d, m, m, False)
    return block


def pieces_q5_0(sink):   # f16 d, u32 fifth bits, nibbles; values d * (q - 16)
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 22
        d = f16(p)
        v = b32_or(b32_nibbles16(p + 6), b32_shl(b32_bits(p + 2), 4))
        return sink(st, v, i, d, d, F16 * d, F16 * d, False)
    return block


def pieces_q5_1(sink):   # f16 d, f16 m, u32 fifth bits, nibbles; values d * q + m
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 24
        d = f16(p)
        m = -f16(p + 2)
        v = b32_or(b32_nibbles16(p + 8), b32_shl(b32_bits(p + 4), 4))
        return sink(st, v, i, d, d, m, m, False)
    return block


def pieces_q8(sink, bb, qo):   # q8_0 (34 bytes) and q8_1 (36): f16 d at 0, i8 codes at qo
    @njit(**IL)
    def block(w, i, st):
        p = w + i * bb
        d = f16(p)
        return sink(st, b32_load(p + qo), i, d, d, F0, F0, True)
    return block


def pieces_q4_k(sink):   # f16 d, f16 dmin, scales[12], qs[128]
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 144
        d = f16(p)
        dmin = f16(p + 2)
        for c in range(4):  # qs bytes c*32..: sub-block 2c in low nibbles, 2c + 1 in high
            a0, m0 = k4_scale_min(p + 4, 2 * c, d, dmin)
            a1, m1 = k4_scale_min(p + 4, 2 * c + 1, d, dmin)
            v = b32_load(p + 16 + c * 32)
            st = sink(st, b32_and(v, 15), i * 8 + 2 * c, a0, a0, m0, m0, False)
            st = sink(st, b32_shr(v, 4), i * 8 + 2 * c + 1, a1, a1, m1, m1, False)
        return st
    return block


def pieces_q5_k(sink):   # f16 d, f16 dmin, scales[12], qh[32], qs[128]
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 176
        d = f16(p)
        dmin = f16(p + 2)
        h = b32_load(p + 16)
        for c in range(4):  # as q4_k, plus 16 * bits 2c (low nibbles) and 2c + 1 (high) of qh
            a0, m0 = k4_scale_min(p + 4, 2 * c, d, dmin)
            a1, m1 = k4_scale_min(p + 4, 2 * c + 1, d, dmin)
            v = b32_load(p + 48 + c * 32)
            lo = b32_or(b32_and(v, 15), b32_shl(b32_and(b32_shr(h, 2 * c), 1), 4))
            hi = b32_or(b32_shr(v, 4), b32_shl(b32_and(b32_shr(h, 2 * c + 1), 1), 4))
            st = sink(st, lo, i * 8 + 2 * c, a0, a0, m0, m0, False)
            st = sink(st, hi, i * 8 + 2 * c + 1, a1, a1, m1, m1, False)
        return st
    return block


def pieces_q6_k(sink):   # ql[128], qh[64], i8 scales[16], f16 d; values d * sc * (q - 32)
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 210
        d = f16(p + 208)
        for h in range(2):
            ql0 = b32_load(p + h * 64)
            ql1 = b32_load(p + h * 64 + 32)
            qh = b32_load(p + 128 + h * 32)
            for s in range(4):  # values h*128 + s*32 + l: nibble s // 2 of ql byte
                ql = ql0 if s % 2 == 0 else ql1  # h*64 + (s % 2)*32 + l, 2-bit field s of qh
                nib = b32_and(ql, 15) if s < 2 else b32_shr(ql, 4)
                v = b32_or(nib, b32_shl(b32_and(b32_shr(qh, 2 * s), 3), 4))
                sc0 = d * fq(ptr_i8(p + 192)[h * 8 + 2 * s])
                sc1 = d * fq(ptr_i8(p + 192)[h * 8 + 2 * s + 1])
                st = sink(st, v, i * 8 + h * 4 + s, sc0, sc1, F32 * sc0, F32 * sc1, False)
        return st
    return block


def pieces_q3_k(sink):   # hmask[32], qs[64], scales[12], f16 d; values d * sc * (q - 4)
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 110
        d = f16(p + 108)
        hm = b32_load(p)
        for h in range(2):
            q = b32_load(p + 32 + h * 32)
            for s in range(4):  # 2-bit field s of qs byte h*32 + l, bit 4h + s of hmask byte l
                v = b32_or(b32_and(b32_shr(q, 2 * s), 3),
                           b32_shl(b32_and(b32_shr(hm, 4 * h + s), 1), 2))
                sc0 = d * q3_k_scale(p + 96, h * 8 + 2 * s)
                sc1 = d * q3_k_scale(p + 96, h * 8 + 2 * s + 1)
                st = sink(st, v, i * 8 + h * 4 + s, sc0, sc1, F4 * sc0, F4 * sc1, False)
        return st
    return block


def pieces_q2_k(sink):   # scales[16] (lo scale, hi min), qs[64], f16 d, dmin
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 84
        d = f16(p + 80)
        dmin = f16(p + 82)
        for h in range(2):
            q = b32_load(p + 16 + h * 32)
            for s in range(4):  # 2-bit field s of qs byte h*32 + l; scale byte h*8 + 2s (+1)
                b0 = np.int64(ptr_u8(p)[h * 8 + 2 * s])
                b1 = np.int64(ptr_u8(p)[h * 8 + 2 * s + 1])
                st = sink(st, b32_and(b32_shr(q, 2 * s), 3), i * 8 + h * 4 + s,
                          d * fq(b0 & 15), d * fq(b1 & 15), dmin * fq(b0 >> 4),
                          dmin * fq(b1 >> 4), False)
        return st
    return block


def pieces_q8_k(sink):   # f32 d, i8 qs[256], i16 bsums[16]
    @njit(**IL)
    def block(w, i, st):
        p = w + i * 292
        d = ptr_f32(p)[0]
        for c in range(8):
            st = sink(st, b32_load(p + 4 + c * 32), i * 8 + c, d, d, F0, F0, True)
        return st
    return block


# name -> (pieces, values per block, bytes per block)
Q8_BLOCK_TYPES = {
    "q4_0": (pieces_q4_0, 32, 18), "q4_1": (pieces_q4_1, 32, 20),
    "q5_0": (pieces_q5_0, 32, 22), "q5_1": (pieces_q5_1, 32, 24),
    "q8_0": (lambda sink: pieces_q8(sink, 34, 2), 32, 34),
    "q8_1": (lambda sink: pieces_q8(sink, 36, 4), 32, 36),
    "q2_k": (pieces_q2_k, 256, 84), "q3_k": (pieces_q3_k, 256, 110),
    "q4_k": (pieces_q4_k, 256, 144), "q5_k": (pieces_q5_k, 256, 176),
    "q6_k": (pieces_q6_k, 256, 210), "q8_k": (pieces_q8_k, 256, 292),
}


# --- sinks ---

@njit(**IL)
def codes_dot(V, xa, signed):
    return dot_i8(V, xa) if signed else dot_u8(V, xa)


@njit(**IL)
def sink_one(st, V, j, sw0, sw1, m0, m1, signed):
    """One token, st = (X, K, acc, alt, corr); the two accumulators swap after every piece."""
    X, K, acc, alt, corr = st
    dx = xd(X, K, j)
    acc = f8_fma(acc, codes_dot(V, X + j * 32, signed), sw0 * dx, sw1 * dx)
    corr += m0 * xs(X, K, 2 * j) + m1 * xs(X, K, 2 * j + 1)
    return X, K, alt, acc, corr


@njit(**IL)
def _tok(X, K, j, V, sw0, sw1, m0, m1, signed, acc, corr):
    dx = xd(X, K, j)
    acc = f8_fma(acc, codes_dot(V, X + j * 32, signed), sw0 * dx, sw1 * dx)
    return acc, corr + m0 * xs(X, K, 2 * j) + m1 * xs(X, K, 2 * j + 1)


@njit(**IL)
def sink_four(st, V, j, sw0, sw1, m0, m1, signed):
    """Four tokens (quantized rows X, X + QB, ...) against the same unpacked codes,
    st = (X, QB, K, acc0..3, alt0..3, corr0..3). Each token keeps two chains that swap after
    every piece, exactly as `sink_one` does, so a token's result is the same bits whether it
    ran alone or in a tile (batched sequences answer as they would alone)."""
    X, QB, K, a0, a1, a2, a3, b0, b1, b2, b3, c0, c1, c2, c3 = st
    a0, c0 = _tok(X, K, j, V, sw0, sw1, m0, m1, signed, a0, c0)
    a1, c1 = _tok(X + QB, K, j, V, sw0, sw1, m0, m1, signed, a1, c1)
    a2, c2 = _tok(X + 2 * QB, K, j, V, sw0, sw1, m0, m1, signed, a2, c2)
    a3, c3 = _tok(X + 3 * QB, K, j, V, sw0, sw1, m0, m1, signed, a3, c3)
    return X, QB, K, b0, b1, b2, b3, a0, a1, a2, a3, c0, c1, c2, c3


def make_q8_linear(pieces, block_size, block_bytes):
    """A `linear(x, xs, n, K, w, N, b, y, scratch, tid, nth)` over a block-quantized W with
    8-bit activations (scratch holds n quantized rows: `q8_row_bytes(K)` each)."""
    BS, BB = block_size, block_bytes
    one = pieces(sink_one)
    four = pieces(sink_four)

    @njit(**KW)
    def linear(x, xs_, n, K, w, N, b, y, scratch, tid, nth):
        lo, hi = split(N, tid, nth)
        if lo >= hi:
            return
        QB = q8_row_bytes(K)
        for t in range(n):  # every thread quantizes all rows: no barrier, and it is cheap
            quantize_row(x + t * xs_ * 4, K, scratch + t * QB)
        Y = ptr_f32(y)
        nb = K // BS
        rb = nb * BB
        # One row at a time (two rows interleaved measured half as fast on the decode step's
        # big matrices: one sequential stream is what the prefetcher keeps up with). For
        # several tokens the row stays in L1 and is unpacked once per four tokens.
        for r in range(lo, hi):
            row = w + r * rb
            # Two rows ahead, a line at a time: measured 9.2 -> 11.8 GB/s on the decode step's
            # largest matrix (the hardware prefetcher alone lags one sequential stream).
            for c in range(0, rb, 64):
                prefetch(row + 2 * rb + c)
            bias = ptr_f32(b)[r] if b != 0 else F0
            t = 0
            while t + 4 <= n:
                z = f8_zero()
                st = (scratch + t * QB, QB, K, z, z, z, z, z, z, z, z, F0, F0, F0, F0)
                for i in range(nb):
                    st = four(row, i, st)
                # Token k's two chains are st[3 + k] and st[7 + k], summed as in `one`.
                Y[t * N + r] = f8_sum(st[3]) + f8_sum(st[7]) - st[11] + bias
                Y[(t + 1) * N + r] = f8_sum(st[4]) + f8_sum(st[8]) - st[12] + bias
                Y[(t + 2) * N + r] = f8_sum(st[5]) + f8_sum(st[9]) - st[13] + bias
                Y[(t + 3) * N + r] = f8_sum(st[6]) + f8_sum(st[10]) - st[14] + bias
                t += 4
            while t < n:
                st1 = (scratch + t * QB, K, f8_zero(), f8_zero(), F0)
                for i in range(nb):
                    st1 = one(row, i, st1)
                Y[t * N + r] = f8_sum(st1[2]) + f8_sum(st1[3]) - st1[4] + bias
                t += 1
    return linear


Q8_LINEAR = {name: make_q8_linear(*spec) for name, spec in Q8_BLOCK_TYPES.items()}
