"""Embedding lookup from a block-quantized table: decode just the rows of this step's tokens
(the table itself stays quantized in the mapped artefact). A tied table that a CPU build
stores eight rows interleaved for the output head (q8_0x8, quant/interleave.py) is read in
place: a row's block is its scale and four bytes of each of the block's eight vectors."""
from __future__ import annotations

import numpy as np
from numba import njit

from .intrinsics import ptr_f32, ptr_i32
from .kernels import KW, split
from .quant_kernels import BLOCK_TYPES, f16, fq, i8


def make_quant_embed(decode_block, block_size, block_bytes):
    BS, BB = block_size, block_bytes

    @njit(**KW)
    def embed(tok, n, table, dim, scale, y, tid, nth):
        lo, hi = split(n, tid, nth)
        T = ptr_i32(tok)
        Y = ptr_f32(y)
        s = np.float32(scale)
        nb = dim // BS
        for t in range(lo, hi):
            row = table + np.int64(T[t]) * (nb * BB)
            for i in range(nb):
                decode_block(row, i, Y, t * dim + i * BS)
            for j in range(dim):
                Y[t * dim + j] *= s
    return embed


QUANT_EMBED = {name: make_quant_embed(*spec) for name, spec in BLOCK_TYPES.items()}


@njit(**KW)
def embed_q8_0x8(tok, n, table, dim, scale, y, tid, nth):
    lo, hi = split(n, tid, nth)
    T = ptr_i32(tok)
    Y = ptr_f32(y)
    s = np.float32(scale)
    nb = dim // 32
    for t in range(lo, hi):
        r = np.int64(T[t])
        grp = table + (r // 8) * (nb * 272)
        rr = r % 8
        for b in range(nb):
            p = grp + b * 272
            d = f16(p + 2 * rr)
            o = t * dim + b * 32
            for i in range(8):  # vector i, bytes 4 rr..: the row's values 4i..4i+3
                for k in range(4):
                    Y[o + 4 * i + k] = d * fq(i8(p + 16 + 32 * i + 4 * rr, k))
        for j in range(dim):
            Y[t * dim + j] *= s


QUANT_EMBED["q8_0x8"] = embed_q8_0x8
