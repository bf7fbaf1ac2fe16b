"""Matrices stored eight rows interleaved (quant/interleave.py: q4_0x8, q5_0x8, q8_0x8).

`linear(x, xs, n, K, w, N, b, y, scratch, tid, nth)` as the other 8-bit-activation kernels:
each thread quantizes the input rows into its scratch (q8_kernels.quantize_rows) and takes a
run of eight-row groups. Per block of 32 values a group's codes are eight byte vectors; each
is multiplied by four activation codes broadcast across its lanes, so the eight int32 lanes
summed over the block are the eight rows' block sums (no horizontal reduction), converted
once and scaled by the rows' scales times the block's dx; the q4_0 / q5_0 offset (8 or 16
times the scale) comes off as the rows' scales times 8 or 16 times the activations' block sum.
q8_0's codes are signed bytes, loaded as they are (the dot takes their signs onto the
activations, as q8_kernels does).
In prefill a group's block is unpacked once for a tile of up to TILE tokens, whose
accumulators stay on the stack; every token takes the same steps alone or in a tile, so a
token's logits are the same bits in a batch, a prefill or a decode step.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.interleave import INTERLEAVED, ROWS
from .inlining import helper
from .intrinsics import prefetch, ptr_f32, stack_addr
from .kernels import KW, PREFETCH_BYTES, split
from .q8_kernels import quantize_rows
from .simd import (b32_and, b32_load, b32_or, b32_shl, b32_shr, dot4_u8_bcast, dot8_u8_bcast,
                   dot_i8_bcast,
                   f8_add, f8_halves8, f8_load, f8_madd_i, f8_msub, f8_mul, f8_splat, f8_store,
                   f8_zero, i8_add)

TILE = 8  # tokens that share one unpacking of a group's block


@helper(**KW)
def _fifth(f, i):
    """Vector i's fifth bits (bit i of f's bytes) at bit 4."""
    if i <= 4:
        return b32_and(b32_shl(f, 4 - i), 16)
    return b32_and(b32_shr(f, i - 4), 16)


@helper(**KW)
def codes8(p):
    """q8_0x8: a group block's eight vectors of int8 codes."""
    return (b32_load(p + 16), b32_load(p + 48), b32_load(p + 80), b32_load(p + 112),
            b32_load(p + 144), b32_load(p + 176), b32_load(p + 208), b32_load(p + 240))


@helper(**KW)
def nibble_vectors(a):
    """The eight vectors of 4-bit codes in the 128 bytes at a (interleave.to_nibbles)."""
    n0, n1, n2, n3 = b32_load(a), b32_load(a + 32), b32_load(a + 64), b32_load(a + 96)
    return (b32_and(n0, 15), b32_shr(n0, 4), b32_and(n1, 15), b32_shr(n1, 4),
            b32_and(n2, 15), b32_shr(n2, 4), b32_and(n3, 15), b32_shr(n3, 4))


def make_codes(fifth):
    on = 48 if fifth else 16  # the nibbles, after the scales (and the fifth bits)

    @helper(**KW)
    def codes(p):
        """A group block's eight code vectors (unsigned, 4 or 5 bits)."""
        v0, v1, v2, v3, v4, v5, v6, v7 = nibble_vectors(p + on)
        if fifth:
            f = b32_load(p + 16)
            v0, v1 = b32_or(v0, _fifth(f, 0)), b32_or(v1, _fifth(f, 1))
            v2, v3 = b32_or(v2, _fifth(f, 2)), b32_or(v3, _fifth(f, 3))
            v4, v5 = b32_or(v4, _fifth(f, 4)), b32_or(v5, _fifth(f, 5))
            v6, v7 = b32_or(v6, _fifth(f, 6)), b32_or(v7, _fifth(f, 7))
        return v0, v1, v2, v3, v4, v5, v6, v7
    return codes


@helper(**KW)
def _dot_i8(v, xa):
    return dot_i8_bcast(v, xa)


@helper(**KW)
def _token(acc, xa, dx, s, sw, mconst, bits, v0, v1, v2, v3, v4, v5, v6, v7):
    """One token's block: the eight rows' exact sums, scaled, minus the offset term. Unsigned
    codes are summed in int16 before widening, as many vectors as stay exact (simd)."""
    if bits == 4:
        i = dot8_u8_bcast(v0, v1, v2, v3, v4, v5, v6, v7, xa)
    elif bits == 5:
        i = i8_add(dot4_u8_bcast(v0, v1, v2, v3, xa), dot4_u8_bcast(v4, v5, v6, v7, xa + 16))
    else:
        i = i8_add(i8_add(i8_add(_dot_i8(v0, xa), _dot_i8(v1, xa + 4)),
                          i8_add(_dot_i8(v2, xa + 8), _dot_i8(v3, xa + 12))),
                   i8_add(i8_add(_dot_i8(v4, xa + 16), _dot_i8(v5, xa + 20)),
                          i8_add(_dot_i8(v6, xa + 24), _dot_i8(v7, xa + 28))))
    acc = f8_madd_i(acc, i, f8_mul(sw, f8_splat(dx)))
    if bits == 8:
        return acc
    return f8_msub(acc, sw, f8_splat(mconst * s))


@helper(**KW)
def block_sum(S, b):
    """dx times the sum of block b's activation codes (its two half sums)."""
    q4 = (b // 4) * 8 + b % 4
    return S[q4] + S[q4 + 4]


def make_x8_linear(lay):
    GB = lay.group_block_bytes
    ahead = max(4, PREFETCH_BYTES // GB) * GB  # whole group blocks
    bits = lay.bits
    mconst = np.float32({4: 8, 5: 16, 8: 0}[lay.bits])
    codes = codes8 if bits == 8 else make_codes(lay.fifth)

    @njit(**KW)
    def linear(x, xs_, n, K, w, N, b, y, scratch, tid, nth):
        lo, hi = split(N // ROWS, tid, nth)
        if lo >= hi:
            return
        QB, oD, oS = quantize_rows(x, xs_, n, K, scratch)
        nb = K // 32
        A = stack_addr(256)  # a tile's accumulators: 32 bytes x TILE
        for g in range(lo, hi):
            grp = w + g * nb * GB
            bias = f8_load(b + 32 * g) if b != 0 else f8_zero()
            t = 0
            while t + 2 <= n:
                T = min(TILE, n - t)
                for k in range(T):
                    f8_store(A + 32 * k, f8_zero())
                for blk in range(nb):
                    p = grp + blk * GB
                    sw = f8_halves8(p)
                    v0, v1, v2, v3, v4, v5, v6, v7 = codes(p)
                    for k in range(T):
                        X = scratch + (t + k) * QB
                        a = _token(f8_load(A + 32 * k), X + 32 * blk, ptr_f32(X + oD)[blk],
                                   block_sum(ptr_f32(X + oS), blk), sw, mconst, bits,
                                   v0, v1, v2, v3, v4, v5, v6, v7)
                        f8_store(A + 32 * k, a)
                for k in range(T):
                    f8_store(y + 4 * ((t + k) * N + ROWS * g),
                             f8_add(f8_load(A + 32 * k), bias))
                t += T
            while t < n:
                X = scratch + t * QB
                D = ptr_f32(X + oD)
                S = ptr_f32(X + oS)
                acc = f8_zero()
                for blk in range(nb):
                    p = grp + blk * GB
                    for c in range(0, GB, 64):
                        prefetch(p + ahead + c)
                    v0, v1, v2, v3, v4, v5, v6, v7 = codes(p)
                    acc = _token(acc, X + 32 * blk, D[blk], block_sum(S, blk), f8_halves8(p),
                                 mconst, bits, v0, v1, v2, v3, v4, v5, v6, v7)
                f8_store(y + 4 * (t * N + ROWS * g), f8_add(acc, bias))
                t += 1
    return linear


X8_LINEAR = {name: make_x8_linear(lay) for name, lay in INTERLEAVED.items()
             if not lay.superblock}
