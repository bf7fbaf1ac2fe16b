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
    superblock = False  # 32-value blocks; quant/interleave_k.py's K-quant layouts: 256

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


def to_vectors(u: np.ndarray) -> np.ndarray:
    """[..., 8 rows, 32 values] codes -> [..., 8 vectors, 32 bytes]: vector i byte j is row
    j // 4's value 4i + j % 4."""
    lead = u.shape[:-2]
    return u.reshape(*lead, ROWS, 8, 4).swapaxes(-3, -2).reshape(*lead, 8, 32)


def from_vectors(v: np.ndarray) -> np.ndarray:
    """The inverse of `to_vectors`."""
    lead = v.shape[:-2]
    return v.reshape(*lead, 8, ROWS, 4).swapaxes(-3, -2).reshape(*lead, ROWS, 32)


def to_nibbles(v: np.ndarray) -> np.ndarray:
    """[..., 8 vectors, 32] codes below 16 -> [..., 128] bytes: bytes 32m..32m+31 hold vector
    2m in the low nibbles and 2m + 1 in the high ones."""
    return (v[..., 0::2, :] | (v[..., 1::2, :] << 4)).reshape(*v.shape[:-2], 128)


def from_nibbles(p: np.ndarray) -> np.ndarray:
    """[..., 128] bytes -> [..., 8 vectors, 32] (the inverse of `to_nibbles`)."""
    nibs = p.reshape(*p.shape[:-1], 4, 32)
    v = np.empty((*p.shape[:-1], 8, 32), np.uint8)
    v[..., 0::2, :] = nibs & 15
    v[..., 1::2, :] = nibs >> 4
    return v


def pack(lay, raw: np.ndarray) -> np.ndarray:
    """[rows, nb * bb] base bytes (rows a multiple of 8) -> the same bytes interleaved."""
    rows = raw.shape[0]
    if rows % ROWS:
        raise ValueError(f"{lay.base}: {rows} rows are not whole groups of {ROWS}")
    b = np.ascontiguousarray(raw, np.uint8).reshape(rows // ROWS, ROWS, -1, lay.bb)
    b = b.transpose(0, 2, 1, 3)                      # [groups, blocks, 8 rows, bb]
    if lay.superblock:
        return pack_group_blocks(lay, b).reshape(rows, -1)
    v = to_vectors(_codes(lay, b))                   # [g, nb, vector i, byte j]
    parts = [b[..., 0:2].reshape(*b.shape[:2], 16)]
    if lay.bits == 8:
        parts.append(v.reshape(*b.shape[:2], 256))
        return np.concatenate(parts, axis=-1).reshape(rows, -1)
    if lay.fifth:
        parts.append(np.bitwise_or.reduce(((v >> 4) & 1) << _BIT[:, None], axis=2)
                     .astype(np.uint8))
    parts.append(to_nibbles(v & 15))
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def unpack(lay, raw: np.ndarray) -> np.ndarray:
    """The inverse of `pack`."""
    rows = raw.shape[0]
    g = rows // ROWS
    p = np.ascontiguousarray(raw, np.uint8).reshape(g, -1, lay.group_block_bytes)
    nb = p.shape[1]
    if lay.superblock:
        out = unpack_group_blocks(lay, p)
        return out.transpose(0, 2, 1, 3).reshape(rows, -1)
    v = p[..., 16:].reshape(g, nb, 8, 32) if lay.bits == 8 else from_nibbles(p[..., -128:])
    if lay.fifth:
        f = p[..., 16:48]
        v |= ((f[:, :, None, :] >> _BIT[:, None]) & 1) << 4
    u = from_vectors(v)
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


# the K-quant layouts build on the helpers above
from .interleave_k import K_INTERLEAVED, pack_group_blocks, unpack_group_blocks  # noqa: E402

INTERLEAVED.update(K_INTERLEAVED)
INTERLEAVES = {lay.base: name for name, lay in INTERLEAVED.items()}  # base type -> layout

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
