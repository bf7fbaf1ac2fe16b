"""Q4_K and Q6_K matrices stored eight rows interleaved (quant/interleave_k.py: q4_kx8,
q6_kx8), with 8-bit activations: the kernels of x8_kernels.py, per 32 values of a super-block.

Per 32 values the eight code vectors, each multiplied by four activation codes broadcast
across it, sum into the eight rows' int32 lanes (no horizontal reduction); codes are added in
int16 before widening as far as they stay exact (eight 4-bit vectors, two 6-bit ones). Each
lane is multiplied by its row's integer sub-block scale (exact in int32) and the sum scaled
by the block's dx into a super-block accumulator; the offsets (q4_k's mins, q6_k's -32) go
into a second one against the activations' block or half sums; the rows' d (and dmin) scale
both once per super-block.
A prefill tile unpacks a super-block's scales and codes once, onto the stack, for up to TILE
tokens; every token takes the same arithmetic steps alone or in a tile, so its logits are the
same bits in a batch, a prefill or a decode step.
"""
from __future__ import annotations

import numpy as np
from numba import njit

from ...quant.interleave import INTERLEAVED, ROWS
from .inlining import helper
from .intrinsics import prefetch, ptr_f32, stack_addr
from .kernels import KW, PREFETCH_BYTES, split
from .q8_kernels import quantize_rows
from .simd import (b32_and, b32_load, b32_or, b32_shl, b32_shr, b32_store, dot2_u8_bcast,
                   dot8_u8_bcast, f8_add, f8_halves8, f8_load, f8_madd_i, f8_msub, f8_mul,
                   f8_splat, f8_store, f8_zero, i8_add, i8_load_s8, i8_load_u8, i8_mul)
from .x8_kernels import TILE, nibble_vectors

F32 = np.float32(32.0)


@helper(**KW)
def q4_k_scales(sbp, SC):
    """A q4_kx8 super-block's 64 scales then 64 mins as bytes at SC (byte 8j + row)."""
    a, b, c = b32_load(sbp + 32), b32_load(sbp + 64), b32_load(sbp + 96)
    b32_store(SC, b32_or(b32_and(a, 15), b32_shl(b32_and(c, 3), 4)))
    b32_store(SC + 32, b32_or(b32_shr(a, 4), b32_shl(b32_and(c, 12), 2)))
    b32_store(SC + 64, b32_or(b32_and(b, 15), b32_and(c, 48)))
    b32_store(SC + 96, b32_or(b32_shr(b, 4), b32_and(b32_shr(c, 2), 48)))


@helper(**KW)
def _top(p, c):
    """Plane p's bits 2c, 2c + 1 at bits 4, 5."""
    if c == 0:
        return b32_and(b32_shl(p, 4), 48)
    if c == 1:
        return b32_and(b32_shl(p, 2), 48)
    if c == 2:
        return b32_and(p, 48)
    return b32_and(b32_shr(p, 2), 48)


def make_codes(bits):
    @helper(**KW)
    def codes(sbp, j):
        """Values 32j..32j+31 of a group super-block: eight vectors of codes."""
        if bits == 4:
            return nibble_vectors(sbp + 128 + 128 * j)
        v0, v1, v2, v3, v4, v5, v6, v7 = nibble_vectors(sbp + 144 + 128 * j)
        p0, p1 = b32_load(sbp + 1168 + 64 * j), b32_load(sbp + 1200 + 64 * j)
        return (b32_or(v0, _top(p0, 0)), b32_or(v1, _top(p0, 1)), b32_or(v2, _top(p0, 2)),
                b32_or(v3, _top(p0, 3)), b32_or(v4, _top(p1, 0)), b32_or(v5, _top(p1, 1)),
                b32_or(v6, _top(p1, 2)), b32_or(v7, _top(p1, 3)))
    return codes


def make_sub(bits):
    @helper(**KW)
    def sub(main, off, X, D, S, blk, sbp, SC, j, v0, v1, v2, v3, v4, v5, v6, v7):
        """One token's 32 values j of a super-block into its two accumulators."""
        xa = X + 32 * blk
        q4 = (blk // 4) * 8 + blk % 4  # the block's half sums: S[q4], S[q4 + 4]
        if bits == 4:
            i = dot8_u8_bcast(v0, v1, v2, v3, v4, v5, v6, v7, xa)
            main = f8_madd_i(main, i8_mul(i, i8_load_u8(SC + 8 * j)), f8_splat(D[blk]))
            return main, f8_madd_i(off, i8_load_u8(SC + 64 + 8 * j),
                                   f8_splat(S[q4] + S[q4 + 4]))
        sa = i8_load_s8(sbp + 16 + 16 * j)
        sb = i8_load_s8(sbp + 24 + 16 * j)
        ia = i8_add(dot2_u8_bcast(v0, v1, xa), dot2_u8_bcast(v2, v3, xa + 8))
        ib = i8_add(dot2_u8_bcast(v4, v5, xa + 16), dot2_u8_bcast(v6, v7, xa + 24))
        main = f8_madd_i(main, i8_add(i8_mul(ia, sa), i8_mul(ib, sb)), f8_splat(D[blk]))
        off = f8_madd_i(off, sa, f8_splat(S[q4]))
        return main, f8_madd_i(off, sb, f8_splat(S[q4 + 4]))
    return sub


def make_finish(bits):
    @helper(**KW)
    def finish(acc, main, off, sbp):
        """acc plus a super-block's two accumulators times the rows' d (and dmin)."""
        d = f8_halves8(sbp)
        if bits == 4:
            return f8_msub(f8_add(acc, f8_mul(main, d)), off, f8_halves8(sbp + 16))
        return f8_add(acc, f8_mul(f8_msub(main, off, f8_splat(F32)), d))
    return finish


def make_xk_linear(lay):
    GB = lay.group_block_bytes  # one group super-block
    SUBB = GB // 8              # its bytes per 32 values
    ahead = -(-PREFETCH_BYTES // 64) * 64
    bits = lay.bits
    codes, sub, finish = make_codes(bits), make_sub(bits), make_finish(bits)

    @njit(**KW)
    def linear(x, xs_, n, K, w, N, b, y, scratch, tid, nth):
        lo, hi = split(N // ROWS, tid, nth)
        if lo >= hi:
            return
        QB, oD, oS = quantize_rows(x, xs_, n, K, scratch)
        nsb = K // 256
        A = stack_addr(256)    # a tile's accumulators: 32 bytes x TILE
        SC = stack_addr(128)   # q4_k: a super-block's scales and mins as bytes
        CB = stack_addr(2048)  # a tile's unpacked super-block: 64 code vectors
        for g in range(lo, hi):
            grp = w + g * nsb * GB
            bias = f8_load(b + 32 * g) if b != 0 else f8_zero()
            t = 0
            while t + 2 <= n:
                T = min(TILE, n - t)
                for k in range(T):
                    f8_store(A + 32 * k, f8_zero())
                for s in range(nsb):
                    sbp = grp + s * GB
                    if bits == 4:
                        q4_k_scales(sbp, SC)
                    for j in range(8):
                        v0, v1, v2, v3, v4, v5, v6, v7 = codes(sbp, j)
                        c = CB + 256 * j
                        b32_store(c, v0)
                        b32_store(c + 32, v1)
                        b32_store(c + 64, v2)
                        b32_store(c + 96, v3)
                        b32_store(c + 128, v4)
                        b32_store(c + 160, v5)
                        b32_store(c + 192, v6)
                        b32_store(c + 224, v7)
                    for k in range(T):
                        X = scratch + (t + k) * QB
                        D, S = ptr_f32(X + oD), ptr_f32(X + oS)
                        main, off = f8_zero(), f8_zero()
                        for j in range(8):
                            c = CB + 256 * j
                            main, off = sub(main, off, X, D, S, s * 8 + j, sbp, SC, j,
                                            b32_load(c), b32_load(c + 32), b32_load(c + 64),
                                            b32_load(c + 96), b32_load(c + 128),
                                            b32_load(c + 160), b32_load(c + 192),
                                            b32_load(c + 224))
                        f8_store(A + 32 * k, finish(f8_load(A + 32 * k), main, off, sbp))
                for k in range(T):
                    f8_store(y + 4 * ((t + k) * N + ROWS * g),
                             f8_add(f8_load(A + 32 * k), bias))
                t += T
            while t < n:
                X = scratch + t * QB
                D, S = ptr_f32(X + oD), ptr_f32(X + oS)
                acc = f8_zero()
                for s in range(nsb):
                    sbp = grp + s * GB
                    if bits == 4:
                        q4_k_scales(sbp, SC)
                    main, off = f8_zero(), f8_zero()
                    for j in range(8):
                        for c in range(0, SUBB, 64):  # the stream ahead
                            prefetch(sbp + SUBB * j + ahead + c)
                        v0, v1, v2, v3, v4, v5, v6, v7 = codes(sbp, j)
                        main, off = sub(main, off, X, D, S, s * 8 + j, sbp, SC, j,
                                        v0, v1, v2, v3, v4, v5, v6, v7)
                    acc = finish(acc, main, off, sbp)
                f8_store(y + 4 * (t * N + ROWS * g), f8_add(acc, bias))
                t += 1
    return linear


XK_LINEAR = {name: make_xk_linear(lay) for name, lay in INTERLEAVED.items()
             if lay.superblock}
