"""Rows interleaved eight at a time for the CPU kernels: Q4_0, Q5_0 and Q8_0 as q4_0x8,
q5_0x8 and q8_0x8.

A kernel that multiplies one row at a time ends every four blocks with a horizontal reduction
(each token's int32 lanes summed into the blocks' half sums) before it can scale them; with
prompts of many tokens that reduction and the per-row bookkeeping cost about as much as the
dot products. Stored as eight rows side by side, a 32-byte vector holds four consecutive codes
of each of the eight rows, so a block of 32 values is eight such vectors, each multiplied by
four activation codes broadcast across it: the eight int32 lanes that come out are already
the eight rows' sums, scaled by one vector of the eight rows' scales, with no reduction at
all (targets/cpu/x8_kernels.py).

Per group of 8 rows, block b (values 32b..32b+31) is stored as
  d[8] f16 (row 0..7) | fifth bits: 32 bytes (q5_0x8) | nibbles: 128 bytes (q4_0x8, q5_0x8)
  d[8] f16 | codes: 256 bytes (q8_0x8)
where vector i (0..7) byte j is row j // 4's value 32b + 4i + j % 4:
- nibbles: bytes 32m..32m+31 hold vector 2m in the low nibbles and 2m + 1 in the high ones;
- fifth bits: byte j holds vector i's fifth bit at bit i;
- q8_0x8's int8 codes: vector i is bytes 32i..32i+31.
The group's blocks follow one another, so a group is its eight rows' bytes and a matrix keeps
its size; the values are the base type's exactly (`pack` / `unpack` only move bits).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

ROWS = 8   # rows per group
QK = 32    # values per block


@dataclass(frozen=True)
class Interleaved:
    base: str      # the GGUF type
    bb: int        # bytes of one base block
    bits: int      # bits per code: 4, 5 (a plane of fifth bits after the scales) or 8

    @property
    def fifth(self) -> bool:
        return self.bits == 5

    @property
    def group_block_bytes(self) -> int:
        return ROWS * self.bb


INTERLEAVED = {
    "q4_0x8": Interleaved("q4_0", 18, 4),
    "q5_0x8": Interleaved("q5_0", 22, 5),
    "q8_0x8": Interleaved("q8_0", 34, 8),
}
INTERLEAVES = {lay.base: name for name, lay in INTERLEAVED.items()}  # base type -> layout

_BIT = np.arange(8, dtype=np.uint8)


def _codes(lay: Interleaved, b: np.ndarray) -> np.ndarray:
    """[..., bb] base blocks -> [..., 32] codes in value order (q8_0's bytes as they are)."""
    if lay.bits == 8:
        return b[..., 2:]
    qs = b[..., -16:]
    u = np.concatenate([qs & 15, qs >> 4], axis=-1)
    if lay.fifth:
        u |= np.unpackbits(b[..., 2:6], axis=-1, bitorder="little") << 4
    return u


def pack(lay: Interleaved, raw: np.ndarray) -> np.ndarray:
    """[rows, nb * bb] base bytes (rows a multiple of 8) -> the same bytes interleaved."""
    rows = raw.shape[0]
    if rows % ROWS:
        raise ValueError(f"{lay.base}: {rows} rows are not whole groups of {ROWS}")
    b = np.ascontiguousarray(raw, np.uint8).reshape(rows // ROWS, ROWS, -1, lay.bb)
    b = b.transpose(0, 2, 1, 3)                      # [groups, blocks, 8 rows, bb]
    u = _codes(lay, b)                               # [g, nb, 8 rows, 32 values]
    # vector i byte j = row j // 4, value 4i + j % 4
    v = u.reshape(*u.shape[:2], ROWS, 8, 4).transpose(0, 1, 3, 2, 4)
    v = v.reshape(*u.shape[:2], 8, 32)               # [g, nb, vector i, byte j]
    parts = [b[..., 0:2].reshape(*b.shape[:2], 16)]
    if lay.bits == 8:
        parts.append(v.reshape(*b.shape[:2], 256))
        return np.concatenate(parts, axis=-1).reshape(rows, -1)
    if lay.fifth:
        parts.append(np.bitwise_or.reduce(((v >> 4) & 1) << _BIT[:, None], axis=2)
                     .astype(np.uint8))
    nib = v & 15
    parts.append((nib[:, :, 0::2] | (nib[:, :, 1::2] << 4)).reshape(*b.shape[:2], 128))
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def unpack(lay: Interleaved, raw: np.ndarray) -> np.ndarray:
    """The inverse of `pack`."""
    rows = raw.shape[0]
    g = rows // ROWS
    p = np.ascontiguousarray(raw, np.uint8).reshape(g, -1, lay.group_block_bytes)
    nb = p.shape[1]
    if lay.bits == 8:
        v = p[..., 16:].reshape(g, nb, 8, 32)
    else:
        nibs = p[..., -128:].reshape(g, nb, 4, 32)
        v = np.empty((g, nb, 8, 32), np.uint8)
        v[:, :, 0::2] = nibs & 15
        v[:, :, 1::2] = nibs >> 4
    if lay.fifth:
        f = p[..., 16:48]
        v |= ((f[:, :, None, :] >> _BIT[:, None]) & 1) << 4
    u = v.reshape(g, nb, 8, ROWS, 4).transpose(0, 1, 3, 2, 4).reshape(g, nb, ROWS, 32)
    out = np.empty((g, nb, ROWS, lay.bb), np.uint8)
    out[..., 0:2] = p[..., 0:16].reshape(g, nb, ROWS, 2)
    if lay.bits == 8:
        out[..., 2:] = u
        return out.transpose(0, 2, 1, 3).reshape(rows, -1)
    if lay.fifth:
        out[..., 2:6] = np.packbits(u >> 4, axis=-1, bitorder="little")
    low = u & 15
    out[..., -16:] = low[..., :16] | (low[..., 16:] << 4)
    return out.transpose(0, 2, 1, 3).reshape(rows, -1)


_FORMATS: dict = {}


def interleaved_format(name: str):
    """The storage format of a layout name (None for other names)."""
    lay = INTERLEAVED.get(name)
    if lay is None:
        return None
    if name not in _FORMATS:
        from .registry import get_format, layout_format
        base = get_format(lay.base)
        _FORMATS[name] = layout_format(name, lay.base, partial(pack, lay), partial(unpack, lay),
                                       base.block_size, base.block_bytes, group_rows=ROWS)
    return _FORMATS[name]
