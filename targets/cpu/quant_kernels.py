"""Fused dequantize-and-multiply linear kernels for GGUF block types.

A weight matrix W [N, K] of a block type is row-major: row r is K // block_size blocks of
block_bytes bytes. Each type has one block decoder, `decode_block_<type>(row, i, D, o)`, that
writes block i of the row at address `row` as float32 values to D[o:o + block_size] (D a
float32 pointer); `make_quant_linear` turns a decoder into a kernel with the float kernels'
`linear` signature. Layouts follow ggml's block structs (as gguf.GGML_QUANT_SIZES sizes them);
value formulas follow gguf's dequantizers.

The code is shaped for LLVM's loop vectoriser (the build runs no SLP vectoriser). numba's
integers are int64, and vector lanes stay 64-bit (int64 -> float needs AVX-512DQ, else it goes
scalar) unless LLVM can narrow them, so:
- each inner loop walks the bytes of a run of values that share scales and stores every value
  a byte holds, so all shifts and masks are constants (a shift by a variable stays 64-bit);
- each bit field goes to float on its own through `fq` (int32, then float), and fields are
  added as floats: an integer `|` of two fields also stays 64-bit;
- loop counts go through `span`, so LLVM keeps the loops rather than unrolling them flat;
- blocks decode into an aligned stack buffer, which LLVM knows nothing else points into, so
  byte loads and float stores are free to be reordered and vectorised together.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from .inlining import helper
from .intrinsics import (f32_from_bits, half_to_f32, opaque, ptr_f32, ptr_i8, ptr_u8, ptr_u16,
                         stack_f32)
from .kernels import KW, split

# float32 literals: numba widens float32 (op) int to float64
F0, F4, F6, F8, F16, F32 = (np.float32(v) for v in (0, 4, 6, 8, 16, 32))
CHUNK = 256  # values decoded per step: a K-quant super-block, or 8 small blocks

# iq4_nl's non-linear codebook; numba freezes global arrays into read-only constants.
IQ4_NL_VALUES = np.array([-127, -104, -83, -65, -49, -35, -22, -10,
                          1, 13, 25, 38, 53, 69, 89, 113], dtype=np.float32)
# 16 * bit i of byte b, at b * 8 + i: the fifth bits of eight q5 values as one vector load.
Q5_HIGH = np.array([16 * ((b >> i) & 1) for b in range(256) for i in range(8)], dtype=np.uint8)


# Bytes load as int64: numba types uint8 >> int as uint64, and uint64 mixed with int64 as float64.
@helper(**KW)
def u8(addr, i):
    return np.int64(ptr_u8(addr)[i])


@helper(**KW)
def i8(addr, i):
    return np.int64(ptr_i8(addr)[i])


@helper(**KW)
def fq(q):
    """A small integer (a quant or a scale) as float32, by way of int32."""
    return np.float32(np.int32(q))


@helper(**KW)
def span(count):
    """`range(span(16))`: a loop LLVM vectorises rather than unrolls flat (flat, the enclosing
    block loop becomes innermost and is vectorised across blocks with gathers). The count is
    hidden as `count * opaque(1)`, so LLVM still sees a multiple of the vector width and needs
    no scalar remainder."""
    return count * opaque(1)


@helper(**KW)
def f16(addr):
    return half_to_f32(ptr_u16(addr)[0])


# --- 32-value blocks: one scale (and min) per block ---

@helper(**KW)
def decode_block_q4_0(w, i, D, o):   # f16 d, u8 qs[16]: byte j holds values j (low), j+16
    p = w + i * 18
    d = f16(p)
    for j in range(span(16)):
        b = u8(p + 2, j)
        D[o + j] = d * fq((b & 15) - 8)
        D[o + j + 16] = d * fq((b >> 4) - 8)


@helper(**KW)
def decode_block_q4_1(w, i, D, o):   # f16 d, f16 m, u8 qs[16]
    p = w + i * 20
    d = f16(p)
    m = f16(p + 2)
    for j in range(span(16)):
        b = u8(p + 4, j)
        D[o + j] = d * fq(b & 15) + m
        D[o + j + 16] = d * fq(b >> 4) + m


@helper(**KW)
def q5_run(H, Q, D, o, d, m):
    """Values of a q5 block, d * q + m with q = its nibble in Q (as q4) + 16 * bit q of the u32
    at H (read from Q5_HIGH: a bit chosen by the loop index would be a variable shift)."""
    h0 = u8(H, 0) * 8
    h1 = u8(H, 1) * 8
    h2 = u8(H, 2) * 8
    h3 = u8(H, 3) * 8
    for j in range(span(8)):
        lo = u8(Q, j)
        hi = u8(Q, j + 8)
        D[o + j] = d * (fq(lo & 15) + fq(Q5_HIGH[h0 + j])) + m
        D[o + j + 8] = d * (fq(hi & 15) + fq(Q5_HIGH[h1 + j])) + m
        D[o + j + 16] = d * (fq(lo >> 4) + fq(Q5_HIGH[h2 + j])) + m
        D[o + j + 24] = d * (fq(hi >> 4) + fq(Q5_HIGH[h3 + j])) + m


@helper(**KW)
def decode_block_q5_0(w, i, D, o):   # f16 d, u32 qh (fifth bits), u8 qs[16]
    p = w + i * 22
    d = f16(p)
    q5_run(p + 2, p + 6, D, o, d, -F16 * d)  # quants are q - 16


@helper(**KW)
def decode_block_q5_1(w, i, D, o):   # f16 d, f16 m, u32 qh, u8 qs[16]
    p = w + i * 24
    q5_run(p + 4, p + 8, D, o, f16(p), f16(p + 2))


@helper(**KW)
def decode_block_q8_0(w, i, D, o):   # f16 d, i8 qs[32]
    p = w + i * 34
    d = f16(p)
    for j in range(span(32)):
        D[o + j] = d * fq(i8(p + 2, j))


@helper(**KW)
def decode_block_q8_1(w, i, D, o):   # f16 d, f16 s (= d * sum of qs; unused here), i8 qs[32]
    # ggml's 36-byte block (as quant/legacy.py); gguf.GGML_QUANT_SIZES still says 40, from an
    # older layout with f32 d and s.
    p = w + i * 36
    d = f16(p)
    for j in range(span(32)):
        D[o + j] = d * fq(i8(p + 4, j))


@helper(**KW)
def decode_block_iq4_nl(w, i, D, o):   # f16 d, u8 qs[16] of codebook indices (as q4_0)
    p = w + i * 18
    d = f16(p)
    for j in range(span(16)):
        b = u8(p + 2, j)
        D[o + j] = d * IQ4_NL_VALUES[b & 15]
        D[o + j + 16] = d * IQ4_NL_VALUES[b >> 4]


@helper(**KW)
def e2m1x2(code):
    """Twice the e2m1 value of a 4-bit code (sign bit, then magnitude code a): 0, 1, 2, 3, 4,
    6, 8, 12 for a = 0..7, piecewise linear in a. Float selects, not a table or integer
    selects, so the loop needs no gather and keeps 32-bit lanes."""
    c = fq(code)
    neg = c >= F8
    a = c - F8 if neg else c
    k = a if a < F4 else (a + a - F4 if a < F6 else F4 * a - F16)
    return -k if neg else k


@helper(**KW)
def decode_block_mxfp4(w, i, D, o):   # u8 e8m0 exponent e, u8 qs[16] of e2m1 codes (as q4_0)
    p = w + i * 17
    e = u8(p, 0)
    # Half the scale 2^(e - 127) (for the doubled e2m1 values), built from its bits.
    d = f32_from_bits((e - 1) << 23) if e >= 2 else f32_from_bits(np.int64(0x00200000) << e)
    for j in range(span(16)):
        b = u8(p + 1, j)
        D[o + j] = d * e2m1x2(b & 15)
        D[o + j + 16] = d * e2m1x2(b >> 4)


# --- 256-value super-blocks: sub-blocks of 16 or 32 values with their own scales ---

@helper(**KW)
def q2_k_scale(sc, d, dmin):
    return d * fq(sc & 15), dmin * fq(sc >> 4)


@helper(**KW)
def decode_block_q2_k(w, i, D, o):   # u8 scales[16] (lo: scale, hi: min), u8 qs[64], f16 d, dmin
    p = w + i * 84
    d = f16(p + 80)
    dmin = f16(p + 82)
    # Byte h*32 + l of qs holds values h*128 + s*32 + l in its 2-bit fields s = 0..3; value v
    # has scale byte v // 16.
    for h in range(2):
        for g in range(2):
            a0, m0 = q2_k_scale(u8(p, h * 8 + g), d, dmin)
            a1, m1 = q2_k_scale(u8(p, h * 8 + 2 + g), d, dmin)
            a2, m2 = q2_k_scale(u8(p, h * 8 + 4 + g), d, dmin)
            a3, m3 = q2_k_scale(u8(p, h * 8 + 6 + g), d, dmin)
            Q = p + 16 + h * 32 + g * 16
            ob = o + h * 128 + g * 16
            for l in range(span(16)):
                b = u8(Q, l)
                D[ob + l] = a0 * fq(b & 3) - m0
                D[ob + 32 + l] = a1 * fq((b >> 2) & 3) - m1
                D[ob + 64 + l] = a2 * fq((b >> 4) & 3) - m2
                D[ob + 96 + l] = a3 * fq(b >> 6) - m3


@helper(**KW)
def q3_k_scale(SC, k):
    """Signed 6-bit scale k of 16: low nibbles in bytes 0..7, top 2 bits packed in 8..11."""
    lo = (u8(SC, k) & 15) if k < 8 else (u8(SC, k - 8) >> 4)
    hi = (u8(SC, 8 + (k & 3)) >> (2 * (k >> 2))) & 3
    return fq((lo | (hi << 4)) - 32)


@helper(**KW)
def q3_k_run(p, d, D, o, h, g):
    """Values h*128 + s*32 + g*16 + l (s < 4, l < 16) of a q3_k block: 2-bit field s of qs byte
    h*32 + g*16 + l, minus 4 unless bit 4h + s of hmask byte g*16 + l is set. Called with
    constant h, so the hmask shift is a constant."""
    a0 = d * q3_k_scale(p + 96, h * 8 + g)
    a1 = d * q3_k_scale(p + 96, h * 8 + 2 + g)
    a2 = d * q3_k_scale(p + 96, h * 8 + 4 + g)
    a3 = d * q3_k_scale(p + 96, h * 8 + 6 + g)
    Q = p + 32 + h * 32 + g * 16
    ob = o + h * 128 + g * 16
    for l in range(span(16)):
        b = u8(Q, l)
        hm = u8(p + g * 16, l) >> (4 * h)
        D[ob + l] = a0 * (fq(b & 3) + fq((hm & 1) << 2) - F4)
        D[ob + 32 + l] = a1 * (fq((b >> 2) & 3) + fq((hm & 2) << 1) - F4)
        D[ob + 64 + l] = a2 * (fq((b >> 4) & 3) + fq(hm & 4) - F4)
        D[ob + 96 + l] = a3 * (fq(b >> 6) + fq((hm & 8) >> 1) - F4)


@helper(**KW)
def decode_block_q3_k(w, i, D, o):   # u8 hmask[32], u8 qs[64], u8 scales[12], f16 d
    p = w + i * 110
    d = f16(p + 108)
    q3_k_run(p, d, D, o, 0, 0)
    q3_k_run(p, d, D, o, 0, 1)
    q3_k_run(p, d, D, o, 1, 0)
    q3_k_run(p, d, D, o, 1, 1)


@helper(**KW)
def k4_scale_min(p, k, d, dmin):
    """d * scale and dmin * min of sub-block k of 8 (q4_k, q5_k), from the 12 bytes at p: bytes
    0..3 hold scales, 4..7 mins, 8..11 the low nibbles of sub-blocks 4..7, whose top two bits
    are the top bits of bytes 0..7."""
    if k < 4:
        sc = u8(p, k) & 63
        mn = u8(p, k + 4) & 63
    else:
        sc = (u8(p, k + 4) & 15) | ((u8(p, k - 4) >> 6) << 4)
        mn = (u8(p, k + 4) >> 4) | ((u8(p, k) >> 6) << 4)
    return d * fq(sc), dmin * fq(mn)


@helper(**KW)
def decode_block_q4_k(w, i, D, o):   # f16 d, f16 dmin, u8 scales[12], u8 qs[128]
    p = w + i * 144
    d = f16(p)
    dmin = f16(p + 2)
    # Byte c*32 + l holds values c*64 + l (low nibble) and c*64 + 32 + l (high).
    for c in range(4):
        a0, m0 = k4_scale_min(p + 4, 2 * c, d, dmin)
        a1, m1 = k4_scale_min(p + 4, 2 * c + 1, d, dmin)
        ob = o + c * 64
        for l in range(span(32)):
            b = u8(p + 16 + c * 32, l)
            D[ob + l] = a0 * fq(b & 15) - m0
            D[ob + 32 + l] = a1 * fq(b >> 4) - m1


@helper(**KW)
def q5_k_run(p, d, dmin, D, o, c):
    """Values c*64 + l and c*64 + 32 + l (l < 32) of a q5_k block: nibbles of qs byte c*32 + l
    (as q4_k) plus 16 * bits 2c and 2c + 1 of qh byte l. Called with constant c."""
    a0, m0 = k4_scale_min(p + 4, 2 * c, d, dmin)
    a1, m1 = k4_scale_min(p + 4, 2 * c + 1, d, dmin)
    ob = o + c * 64
    for l in range(span(32)):
        b = u8(p + 48 + c * 32, l)
        hb = u8(p + 16, l) >> (2 * c)
        D[ob + l] = a0 * (fq(b & 15) + fq((hb & 1) << 4)) - m0
        D[ob + 32 + l] = a1 * (fq(b >> 4) + fq((hb & 2) << 3)) - m1


@helper(**KW)
def decode_block_q5_k(w, i, D, o):   # f16 d, f16 dmin, u8 scales[12], u8 qh[32], u8 qs[128]
    p = w + i * 176
    d = f16(p)
    dmin = f16(p + 2)
    q5_k_run(p, d, dmin, D, o, 0)
    q5_k_run(p, d, dmin, D, o, 1)
    q5_k_run(p, d, dmin, D, o, 2)
    q5_k_run(p, d, dmin, D, o, 3)


@helper(**KW)
def decode_block_q6_k(w, i, D, o):   # u8 ql[128], u8 qh[64], i8 scales[16], f16 d
    p = w + i * 210
    d = f16(p + 208)
    # Value h*128 + s*32 + g*16 + l: nibble s // 2 of ql byte h*64 + (s % 2)*32 + g*16 + l,
    # plus 16 * 2-bit field s of qh byte h*32 + g*16 + l, minus 32; scale byte v // 16.
    for h in range(2):
        for g in range(2):
            a0 = d * fq(i8(p + 192, h * 8 + g))
            a1 = d * fq(i8(p + 192, h * 8 + 2 + g))
            a2 = d * fq(i8(p + 192, h * 8 + 4 + g))
            a3 = d * fq(i8(p + 192, h * 8 + 6 + g))
            L = p + h * 64 + g * 16
            H = p + 128 + h * 32 + g * 16
            ob = o + h * 128 + g * 16
            for l in range(span(16)):
                x0 = u8(L, l)
                x1 = u8(L + 32, l)
                hq = u8(H, l)
                D[ob + l] = a0 * (fq(x0 & 15) + fq((hq & 3) << 4) - F32)
                D[ob + 32 + l] = a1 * (fq(x1 & 15) + fq((hq & 12) << 2) - F32)
                D[ob + 64 + l] = a2 * (fq(x0 >> 4) + fq(hq & 48) - F32)
                D[ob + 96 + l] = a3 * (fq(x1 >> 4) + fq((hq & 192) >> 2) - F32)


@helper(**KW)
def decode_block_q8_k(w, i, D, o):   # f32 d, i8 qs[256], i16 bsums[16] (unused here)
    p = w + i * 292
    d = ptr_f32(p)[0]
    for j in range(span(256)):
        D[o + j] = d * fq(i8(p + 4, j))


def make_quant_linear(decode_block, block_size, block_bytes):
    """A `linear(x, xs, n, K, w, N, b, y, scratch, tid, nth)` over a block-quantized W."""
    BS, BB = block_size, block_bytes
    G = max(1, CHUNK // BS)  # blocks per chunk
    CH = G * BS  # a constant for stack_f32

    @njit(**KW)
    def linear(x, xs, n, K, w, N, b, y, scratch, tid, nth):
        lo, hi = split(N, tid, nth)
        X = ptr_f32(x)
        Y = ptr_f32(y)
        S = ptr_f32(scratch)
        B = stack_f32(CH)
        nb = K // BS
        rb = nb * BB
        if n == 1:
            # Decode step: stream each row chunk by chunk, so it is read once and stays narrow;
            # one long dot per chunk rather than one short reduction per small block.
            for r in range(lo, hi):
                row = w + r * rb
                acc = F0
                for i0 in range(0, nb, G):
                    m = min(G, nb - i0)
                    for g in range(m):
                        decode_block(row, i0 + g, B, g * BS)
                    xo = i0 * BS
                    part = F0
                    for j in range(span(m * BS)):  # a loop: several accumulators
                        part += X[xo + j] * B[j]
                    acc += part
                if b != 0:
                    acc += ptr_f32(b)[r]
                Y[r] = acc
            return
        # Several tokens: widen each row once into scratch (K floats), reuse it for every token.
        for r in range(lo, hi):
            row = w + r * rb
            for i0 in range(0, nb, G):
                m = min(G, nb - i0)
                for g in range(m):
                    decode_block(row, i0 + g, B, g * BS)
                so = i0 * BS
                for j in range(m * BS):
                    S[so + j] = B[j]
            bias = ptr_f32(b)[r] if b != 0 else F0
            for t in range(n):
                acc = F0
                xo = t * xs
                for k in range(K):
                    acc += X[xo + k] * S[k]
                Y[t * N + r] = acc + bias
    return linear


# name -> (decoder, values per block, bytes per block): ggml's block sizes.
BLOCK_TYPES = {
    "q4_0": (decode_block_q4_0, 32, 18), "q4_1": (decode_block_q4_1, 32, 20),
    "q5_0": (decode_block_q5_0, 32, 22), "q5_1": (decode_block_q5_1, 32, 24),
    "q8_0": (decode_block_q8_0, 32, 34), "q8_1": (decode_block_q8_1, 32, 36),
    "q2_k": (decode_block_q2_k, 256, 84), "q3_k": (decode_block_q3_k, 256, 110),
    "q4_k": (decode_block_q4_k, 256, 144), "q5_k": (decode_block_q5_k, 256, 176),
    "q6_k": (decode_block_q6_k, 256, 210), "q8_k": (decode_block_q8_k, 256, 292),
    "iq4_nl": (decode_block_iq4_nl, 32, 18), "mxfp4": (decode_block_mxfp4, 32, 17),
}

QUANT_LINEAR = {name: make_quant_linear(*spec) for name, spec in BLOCK_TYPES.items()}
