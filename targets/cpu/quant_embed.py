"""Embedding lookup from a block-quantized table: decode just the rows of this step's tokens
(the table itself stays quantized in the mapped artefact)."""
from __future__ import annotations

import numpy as np
from numba import njit

from .intrinsics import ptr_f32, ptr_i32
from .kernels import KW, split
from .quant_kernels import BLOCK_TYPES


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
