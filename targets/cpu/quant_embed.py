"""Embedding lookup from a block-quantized table: decode just the rows of this step's tokens
(the table itself stays quantized in the mapped artefact). A tied table that a CPU build
stores eight rows interleaved for the output head (q8_0x8, quant/interleave.py) is read in
place: a row's block is its scale and four bytes of each of the block's eight vectors."""
from __future__ import annotations

import numpy as np
from numba import njit

from .inlining import helper
from .intrinsics import ptr_f32, ptr_i32
from .kernels import KW, split
from .quant_kernels import BLOCK_TYPES, f16, fq, i8


def make_embed(decode_row, block_size):
    """embed(tok, n, table, dim, scale, y, tid, nth): rows T[t] of the table, decoded by
    decode_row(table, row, blocks, Y, offset), times scale."""
    @njit(**KW)
    def embed(tok, n, table, dim, scale, y, tid, nth):
        lo, hi = split(n, tid, nth)
        T = ptr_i32(tok)
        Y = ptr_f32(y)
        s = np.float32(scale)
        nb = dim // block_size
        for t in range(lo, hi):
            decode_row(table, np.int64(T[t]), nb, Y, t * dim)
            for j in range(dim):
                Y[t * dim + j] *= s
    return embed


def make_quant_embed(decode_block, block_size, block_bytes):
    @helper(**KW)
    def decode_row(table, r, nb, Y, o):  # ggml's blocks: a row is nb blocks in a run
        row = table + r * (nb * block_bytes)
        for i in range(nb):
            decode_block(row, i, Y, o + i * block_size)
    return make_embed(decode_row, block_size)


QUANT_EMBED = {name: make_quant_embed(*spec) for name, spec in BLOCK_TYPES.items()}


@helper(**KW)
def decode_row_q8_0x8(table, r, nb, Y, o):
    """Row r of a q8_0x8 table: per block, its scale and four bytes of each of the block's
    eight vectors (vector i, bytes 4 (r % 8)..: the row's values 4i..4i+3)."""
    grp = table + (r // 8) * (nb * 272)
    rr = r % 8
    for b in range(nb):
        p = grp + b * 272
        d = f16(p + 2 * rr)
        for i in range(8):
            for k in range(4):
                Y[o + 32 * b + 4 * i + k] = d * fq(i8(p + 16 + 32 * i + 4 * rr, k))


QUANT_EMBED["q8_0x8"] = make_embed(decode_row_q8_0x8, 32)
