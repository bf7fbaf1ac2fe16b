"""Q4_K and Q6_K rows interleaved eight at a time for the CPU kernels: q4_kx8 and q6_kx8.

The same idea as quant/interleave.py's 32-value blocks (read that first): per 32 values of
a super-block, eight 32-byte vectors whose byte j is row j // 4's value 4i + j % 4, so that a
kernel's eight int32 lanes are the eight rows' sums (targets/cpu/xk_kernels.py). The
super-block's scales are stored so that a few byte operations unpack all eight rows' scales
at once. Per group of 8 rows, super-block b (values 256b..256b+255):

  q4_kx8 (8 x 144 bytes)
    d[8] f16 | dmin[8] f16
    the 6-bit scales and mins, s = sub-block (32 values) * 8 + row, 0..63:
      A: byte k = scale k's low 4 bits | scale k+32's low 4 bits << 4   (32 bytes)
      B: the same for the mins                                           (32 bytes)
      C: byte k = the top 2 bits of scale k, scale k+32, min k, min k+32 at bits 0, 2, 4, 6
    per sub-block 0..7: its eight vectors of 4-bit codes as nibbles (128 bytes, as q4_0x8)
  q6_kx8 (8 x 210 bytes)
    d[8] f16 | int8 scales, byte 8s + row for 16-value sub-block s (128 bytes)
    per 32 values 0..7: the low 4 bits of its eight vectors as nibbles (128 bytes)
    per 32 values 0..7: the top 2 bits: two 32-byte planes, plane h byte j holding vector
      4h + i's bits at bits 2i, 2i + 1 (64 bytes)

Values are ggml's exactly (`pack` / `unpack` only move bits): q4_k's 12 scale bytes are 16
six-bit numbers, and q6_k's 192 code bytes are 256 six-bit codes, both one to one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .interleave import ROWS, from_nibbles, from_vectors, to_nibbles, to_vectors

SB = 256  # values per super-block


@dataclass(frozen=True)
class InterleavedK:
    base: str
    bb: int        # bytes of one base super-block
    bits: int      # 4 (q4_k) or 6 (q6_k)
    superblock = True

    @property
    def group_block_bytes(self) -> int:
        return ROWS * self.bb


K_INTERLEAVED = {
    "q4_kx8": InterleavedK("q4_k", 144, 4),
    "q6_kx8": InterleavedK("q6_k", 210, 6),
}


# --- ggml's super-blocks, field by field ([..., bb] bytes) ---

def _q4_k_scales(q: np.ndarray):
    """q4_k's 12 scale bytes -> (scales [..., 8], mins [..., 8]), six bits each."""
    sc = np.empty((*q.shape[:-1], 8), np.uint8)
    m = np.empty_like(sc)
    sc[..., :4] = q[..., 0:4] & 63
    m[..., :4] = q[..., 4:8] & 63
    sc[..., 4:] = (q[..., 8:12] & 15) | ((q[..., 0:4] >> 6) << 4)
    m[..., 4:] = (q[..., 8:12] >> 4) | ((q[..., 4:8] >> 6) << 4)
    return sc, m


def _q4_k_scale_bytes(sc: np.ndarray, m: np.ndarray) -> np.ndarray:
    """The inverse of `_q4_k_scales`."""
    q = np.empty((*sc.shape[:-1], 12), np.uint8)
    q[..., 0:4] = sc[..., :4] | ((sc[..., 4:] >> 4) << 6)
    q[..., 4:8] = m[..., :4] | ((m[..., 4:] >> 4) << 6)
    q[..., 8:12] = (sc[..., 4:] & 15) | ((m[..., 4:] & 15) << 4)
    return q


def _q4_k_codes(qs: np.ndarray) -> np.ndarray:
    """128 code bytes -> [..., 256] codes: bytes 32l..32l+31 hold values 64l.. (low nibbles)
    and 64l + 32.. (high nibbles)."""
    q = qs.reshape(*qs.shape[:-1], 4, 1, 32)
    return np.concatenate([q & 15, q >> 4], axis=-2).reshape(*qs.shape[:-1], SB)


def _q4_k_code_bytes(u: np.ndarray) -> np.ndarray:
    q = u.reshape(*u.shape[:-1], 4, 2, 32)
    return (q[..., 0, :] | (q[..., 1, :] << 4)).reshape(*u.shape[:-1], 128)


def _q6_k_codes(ql: np.ndarray, qh: np.ndarray) -> np.ndarray:
    """ql[128], qh[64] -> [..., 256] six-bit codes: per half n (128 values), quarter c
    (32 values) takes ql[64n + 32 (c % 2) + l]'s low (c < 2) or high nibble and qh[32n + l]'s
    bits 2c, 2c + 1."""
    lead = ql.shape[:-1]
    l4 = ql.reshape(*lead, 2, 2, 32)                       # [half, c % 2, l]
    low = np.stack([l4 & 15, l4 >> 4], axis=-3)            # [half, c // 2, c % 2, l]
    low = low.reshape(*lead, 2, 4, 32)
    h = qh.reshape(*lead, 2, 1, 32)
    hi = (h >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3  # [half, c, l]
    return (low | (hi << 4)).reshape(*lead, SB)


def _q6_k_code_bytes(u: np.ndarray):
    """The inverse of `_q6_k_codes`: (ql, qh)."""
    lead = u.shape[:-1]
    c = u.reshape(*lead, 2, 4, 32)
    low = (c & 15).reshape(*lead, 2, 2, 2, 32)             # [half, c // 2, c % 2, l]
    ql = (low[..., 0, :, :] | (low[..., 1, :, :] << 4)).reshape(*lead, 128)
    hi = c >> 4
    qh = (hi[..., 0, :] | (hi[..., 1, :] << 2) | (hi[..., 2, :] << 4) | (hi[..., 3, :] << 6))
    return ql, qh.reshape(*lead, 64)


# --- group super-blocks: b [groups, super-blocks, 8 rows, bb] <-> [groups, sbs, 8 * bb] ---

def _halves(a: np.ndarray) -> np.ndarray:
    """[g, nb, 8 rows, 2] f16 bytes -> [g, nb, 16]: the rows' halves side by side."""
    return a.reshape(*a.shape[:2], 2 * ROWS)


def _per_row(a: np.ndarray) -> np.ndarray:
    """[g, nb, 8 rows, n] -> [g, nb, n * 8]: byte n_i * 8 + row."""
    return a.swapaxes(-1, -2).reshape(*a.shape[:2], -1)


def _rows_of(a: np.ndarray) -> np.ndarray:
    """The inverse of `_per_row`."""
    return a.reshape(*a.shape[:2], -1, ROWS).swapaxes(-1, -2)


def _code_vectors(u: np.ndarray) -> np.ndarray:
    """[g, nb, 8 rows, 256] -> [g, nb, 8 blocks of 32, 8 vectors, 32]."""
    g, nb = u.shape[:2]
    return to_vectors(u.reshape(g, nb, ROWS, 8, 32).swapaxes(2, 3))


def _codes_of(v: np.ndarray) -> np.ndarray:
    g, nb = v.shape[:2]
    return from_vectors(v).swapaxes(2, 3).reshape(g, nb, ROWS, SB)


def pack_group_blocks(lay: InterleavedK, b: np.ndarray) -> np.ndarray:
    g, nb = b.shape[:2]
    if lay.bits == 4:
        sc, m = (_per_row(x) for x in _q4_k_scales(b[..., 4:16]))   # [g, nb, 64]
        hi = lambda x: x >> 4  # noqa: E731
        parts = [_halves(b[..., 0:2]), _halves(b[..., 2:4]),
                 (sc[..., :32] & 15) | ((sc[..., 32:] & 15) << 4),
                 (m[..., :32] & 15) | ((m[..., 32:] & 15) << 4),
                 hi(sc[..., :32]) | (hi(sc[..., 32:]) << 2) | (hi(m[..., :32]) << 4)
                 | (hi(m[..., 32:]) << 6),
                 to_nibbles(_code_vectors(_q4_k_codes(b[..., 16:144]))).reshape(g, nb, -1)]
    else:
        v = _code_vectors(_q6_k_codes(b[..., 0:128], b[..., 128:192]))  # [g, nb, 8, 8, 32]
        top = (v >> 4).reshape(g, nb, 8, 2, 4, 32)
        planes = (top[..., 0, :] | (top[..., 1, :] << 2) | (top[..., 2, :] << 4)
                  | (top[..., 3, :] << 6))
        parts = [_halves(b[..., 208:210]), _per_row(b[..., 192:208]),
                 to_nibbles(v & 15).reshape(g, nb, -1), planes.reshape(g, nb, -1)]
    return np.concatenate(parts, axis=-1)


def unpack_group_blocks(lay: InterleavedK, p: np.ndarray) -> np.ndarray:
    """[groups, sbs, 8 * bb] -> ggml's [groups, sbs, 8 rows, bb]."""
    g, nb = p.shape[:2]
    out = np.empty((g, nb, ROWS, lay.bb), np.uint8)
    if lay.bits == 4:
        out[..., 0:2] = p[..., 0:16].reshape(g, nb, ROWS, 2)
        out[..., 2:4] = p[..., 16:32].reshape(g, nb, ROWS, 2)
        a, bm, c = p[..., 32:64], p[..., 64:96], p[..., 96:128]
        sc = np.concatenate([(a & 15) | ((c & 3) << 4), (a >> 4) | ((c & 12) << 2)], axis=-1)
        m = np.concatenate([(bm & 15) | (c & 48), (bm >> 4) | ((c >> 2) & 48)], axis=-1)
        out[..., 4:16] = _q4_k_scale_bytes(_rows_of(sc), _rows_of(m))
        v = from_nibbles(p[..., 128:].reshape(g, nb, 8, 128))
        out[..., 16:144] = _q4_k_code_bytes(_codes_of(v))
    else:
        out[..., 208:210] = p[..., 0:16].reshape(g, nb, ROWS, 2)
        out[..., 192:208] = _rows_of(p[..., 16:144])
        v = from_nibbles(p[..., 144:1168].reshape(g, nb, 8, 128))
        planes = p[..., 1168:1680].reshape(g, nb, 8, 2, 1, 32)
        top = (planes >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3  # [.., 2, 4, 32]
        v |= top.reshape(g, nb, 8, 8, 32) << 4
        ql, qh = _q6_k_code_bytes(_codes_of(v))
        out[..., 0:128] = ql
        out[..., 128:192] = qh
    return out
