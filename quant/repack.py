"""Row layouts for the CPU kernels: a GGUF type's blocks regrouped at compile time.

ggml's 32-value blocks (q4_0, q4_1, q5_0, q5_1) keep each block's scale, fifth bits and
nibbles together, so a kernel builds a block's 32 codes in value order from two places (a
16-byte half split into low and high nibbles, and 32 fifth bits spread one per byte): about
ten vector instructions per 32 codes, more than the dot product that uses them. The CPU
kernels read four blocks at a time (a quad), so a CPU build stores each quad as
  d[4] f16 | m[4] f16 (q4_1, q5_1) | fifth bits: 16 bytes (q5_0, q5_1) | nibbles: 64 bytes
- nibbles: byte j of the first 32 holds value j of block 0 (low nibble) and of block 1 (high
  nibble), the second 32 the same for blocks 2 and 3: one AND or one shift is a block's codes;
- fifth bits: byte j (0..15) holds value j's bit of block k at bit k, and value j + 16's at
  bit k + 4: one variable shift per quad, then a shift and an AND per block;
- scales (and offsets) side by side: one 8-byte load and one conversion per quad.
A quad keeps the bytes of its four blocks, so sizes, offsets and streaming are unchanged; a
repacked row is a whole number of quads (K a multiple of 128). The values are the base
type's exactly: `pack` and `unpack` only move bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

QUAD = 4  # blocks of 32 values per repacked block


@dataclass(frozen=True)
class Layout:
    base: str        # the GGUF type whose blocks are regrouped
    bb: int          # bytes of one base block
    offset: bool     # an f16 offset m after d (q4_1, q5_1)
    fifth: int       # byte offset of the base block's 32 fifth bits (0: none)

    @property
    def quad_bytes(self) -> int:
        return QUAD * self.bb


LAYOUTS = {
    "q4_0r": Layout("q4_0", 18, False, 0),
    "q4_1r": Layout("q4_1", 20, True, 0),
    "q5_0r": Layout("q5_0", 22, False, 2),
    "q5_1r": Layout("q5_1", 24, True, 4),
}
REPACKED = {lay.base: name for name, lay in LAYOUTS.items()}  # base type -> layout name

_K = np.arange(QUAD, dtype=np.uint8)[:, None]  # block k of a quad, against bit positions


def pack(lay: Layout, raw: np.ndarray) -> np.ndarray:
    """[rows, n * bb] bytes of the base type (n a multiple of 4) -> the same bytes repacked."""
    rows = raw.shape[0]
    b = np.ascontiguousarray(raw, np.uint8).reshape(rows, -1, QUAD, lay.bb)
    parts = [b[..., 0:2].reshape(rows, -1, 8)]
    if lay.offset:
        parts.append(b[..., 2:4].reshape(rows, -1, 8))
    if lay.fifth:
        bits = np.unpackbits(b[..., lay.fifth:lay.fifth + 4], axis=-1, bitorder="little")
        # [rows, quads, 4 blocks, 32 values] -> per value j < 16 one byte for all four blocks
        fifth = (bits[..., :16] << _K) | (bits[..., 16:] << (_K + 4))
        parts.append(np.bitwise_or.reduce(fifth, axis=2).astype(np.uint8))
    qs = b[..., -16:]
    codes = np.concatenate([qs & 15, qs >> 4], axis=-1)  # [rows, quads, 4, 32] in value order
    parts += [codes[:, :, 0] | (codes[:, :, 1] << 4), codes[:, :, 2] | (codes[:, :, 3] << 4)]
    return np.concatenate(parts, axis=-1).reshape(rows, -1)


def unpack(lay: Layout, raw: np.ndarray) -> np.ndarray:
    """The inverse of `pack`: repacked rows -> the base type's blocks."""
    rows = raw.shape[0]
    p = np.ascontiguousarray(raw, np.uint8).reshape(rows, -1, lay.quad_bytes)
    out = np.empty(p.shape[:2] + (QUAD, lay.bb), np.uint8)
    out[..., 0:2] = p[..., 0:8].reshape(rows, -1, QUAD, 2)
    at = 8
    if lay.offset:
        out[..., 2:4] = p[..., 8:16].reshape(rows, -1, QUAD, 2)
        at = 16
    if lay.fifth:
        h = p[:, :, None, at:at + 16]
        bits = np.concatenate([(h >> _K) & 1, (h >> (_K + 4)) & 1], axis=-1)
        out[..., lay.fifth:lay.fifth + 4] = np.packbits(bits, axis=-1, bitorder="little")
        at += 16
    nib = p[..., at:at + 64]
    codes = np.stack([nib[..., :32] & 15, nib[..., :32] >> 4,
                      nib[..., 32:] & 15, nib[..., 32:] >> 4], axis=2)
    out[..., -16:] = codes[..., :16] | (codes[..., 16:] << 4)
    return out.reshape(rows, -1)


_FORMATS: dict = {}


def repacked_format(name: str):
    """The storage format of a layout name (None for other names): the base type's
    quantizer and dequantizer with the bytes regrouped."""
    lay = LAYOUTS.get(name)
    if lay is None:
        return None
    if name not in _FORMATS:
        from .registry import get_format, layout_format
        _FORMATS[name] = layout_format(name, lay.base, partial(pack, lay), partial(unpack, lay),
                                       QUAD * get_format(lay.base).block_size, lay.quad_bytes)
    return _FORMATS[name]
