"""GGUF's 32-weight block formats: q4_0, q4_1, q5_0, q5_1, q8_0, q8_1.

Each block is one f16 scale (plus an f16 offset or sum) and 32 small integers. The
quantizers follow llama.cpp's reference rounding, so their bytes equal gguf-py's:
  *_0 (4/5 bit): d = m / -2^(b-1) where m is the signed value of largest magnitude, so m maps
                 to code 0; q = trunc(x/d + 2^(b-1) + 0.5), capped at the top code.
  *_1 (4/5 bit): d = (max - min) / (2^b - 1), offset = min; q = trunc((x - min)/d + 0.5).
  q8_0 / q8_1:   d = amax / 127; q = x/d rounded half away from zero.
All scale arithmetic is float32 (d, then 1/d, then x * (1/d)), as in the reference.
The helpers here are shared by the other block-format modules.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .registry import QuantFormat, register

QK = 32


# ---- shared block helpers -------------------------------------------------------------------

def as_blocks(x: np.ndarray, block: int) -> np.ndarray:
    """[rows, K] float -> [rows * K/block, block] float32."""
    x = np.asarray(x, np.float32)
    if x.ndim != 2 or x.shape[1] % block:
        raise ValueError(f"expected [rows, K] with K a multiple of {block}, got {x.shape}")
    return x.reshape(-1, block)


def as_raw_blocks(raw: np.ndarray, nbytes: int) -> np.ndarray:
    raw = np.ascontiguousarray(raw, np.uint8)
    if raw.ndim != 2 or raw.shape[1] % nbytes:
        raise ValueError(f"expected [rows, n * {nbytes}] bytes, got {raw.shape}")
    return raw.reshape(-1, nbytes)


def f16_bytes(v: np.ndarray) -> np.ndarray:
    """float32 [n] -> [n, 2] little-endian f16 bytes (round to nearest even)."""
    return np.asarray(v, np.float32).astype("<f2").reshape(-1, 1).view(np.uint8)


def f16_at(raw: np.ndarray, offset: int) -> np.ndarray:
    """The f16 at byte `offset` of each block, as float32 [n, 1]."""
    return np.ascontiguousarray(raw[:, offset:offset + 2]).view("<f2").astype(np.float32)


def round_half_away(v: np.ndarray) -> np.ndarray:
    # Exact: compares the fraction, never adds 0.5 (which itself can round up).
    a = np.abs(v)
    f = np.floor(a)
    return np.copysign(f + (a - f >= 0.5), v)


def pack_nibbles(q: np.ndarray) -> np.ndarray:
    """[n, 2m] codes < 16 -> [n, m] bytes: the first half in the low nibbles."""
    m = q.shape[-1] // 2
    q = q.astype(np.uint8)
    return q[..., :m] | (q[..., m:] << 4)


def unpack_nibbles(b: np.ndarray) -> np.ndarray:
    return np.concatenate([b & 0x0F, b >> 4], axis=-1)


def pack_bit4(q: np.ndarray) -> np.ndarray:
    """[n, 32] codes < 32 -> [n, 4] bytes: bit 4 of code j is bit j of a little-endian u32."""
    return np.packbits((q.astype(np.uint8) >> 4) & 1, axis=-1, bitorder="little")


def unpack_bit4(b: np.ndarray) -> np.ndarray:
    return np.unpackbits(b, axis=-1, bitorder="little") << 4


def signed_max(x: np.ndarray) -> np.ndarray:
    """Per row, the value of largest magnitude with its sign (first one on ties), [n, 1]."""
    return np.take_along_axis(x, np.abs(x).argmax(axis=-1)[:, None], axis=-1)


def safe_inverse(d: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.where(d == 0, np.float32(0), np.float32(1) / d).astype(np.float32)


def rows_of(blocks: np.ndarray, rows: int) -> np.ndarray:
    return np.ascontiguousarray(blocks).reshape(rows, -1)


# ---- symmetric: q4_0, q5_0 ------------------------------------------------------------------

def _sym_quantize(bits: int):
    half, top = 1 << (bits - 1), (1 << bits) - 1

    def quantize(x: np.ndarray) -> np.ndarray:
        b = as_blocks(x, QK)
        d = signed_max(b) / np.float32(-half)
        q = np.floor(b * safe_inverse(d) + np.float32(half + 0.5))
        q = np.clip(q, 0, top).astype(np.uint8)
        parts = [f16_bytes(d)] + ([pack_bit4(q)] if bits == 5 else []) + [pack_nibbles(q & 15)]
        return rows_of(np.concatenate(parts, axis=1), x.shape[0])
    return quantize


def _sym_dequantize(bits: int):
    half = 1 << (bits - 1)
    nbytes = 2 + (4 if bits == 5 else 0) + 16

    def dequantize(raw: np.ndarray) -> np.ndarray:
        b = as_raw_blocks(raw, nbytes)
        q = unpack_nibbles(b[:, -16:])
        if bits == 5:
            q |= unpack_bit4(b[:, 2:6])
        d = f16_at(b, 0)
        return rows_of(d * (q.astype(np.float32) - np.float32(half)), raw.shape[0])
    return dequantize


# ---- with offset: q4_1, q5_1 ----------------------------------------------------------------

def _affine_quantize(bits: int):
    top = (1 << bits) - 1

    def quantize(x: np.ndarray) -> np.ndarray:
        b = as_blocks(x, QK)
        lo = b.min(axis=1, keepdims=True)
        d = (b.max(axis=1, keepdims=True) - lo) / np.float32(top)
        q = np.floor((b - lo) * safe_inverse(d) + np.float32(0.5))
        q = np.clip(q, 0, top).astype(np.uint8)
        parts = [f16_bytes(d), f16_bytes(lo)] + ([pack_bit4(q)] if bits == 5 else [])
        return rows_of(np.concatenate(parts + [pack_nibbles(q & 15)], axis=1), x.shape[0])
    return quantize


def _affine_dequantize(bits: int):
    nbytes = 4 + (4 if bits == 5 else 0) + 16

    def dequantize(raw: np.ndarray) -> np.ndarray:
        b = as_raw_blocks(raw, nbytes)
        q = unpack_nibbles(b[:, -16:])
        if bits == 5:
            q |= unpack_bit4(b[:, 4:8])
        return rows_of(f16_at(b, 0) * q.astype(np.float32) + f16_at(b, 2), raw.shape[0])
    return dequantize


# ---- 8 bit: q8_0, q8_1 (q8_1 also stores s = d * sum(q), for kernels that fold an offset) ----

def _q8_codes(b: np.ndarray):
    d = np.abs(b).max(axis=1, keepdims=True) / np.float32(127)
    return d, round_half_away(b * safe_inverse(d)).astype(np.int8)


def q8_0_quantize(x: np.ndarray) -> np.ndarray:
    d, q = _q8_codes(as_blocks(x, QK))
    return rows_of(np.concatenate([f16_bytes(d), q.view(np.uint8)], axis=1), x.shape[0])


def q8_1_quantize(x: np.ndarray) -> np.ndarray:
    d, q = _q8_codes(as_blocks(x, QK))
    s = d * q.sum(axis=1, keepdims=True, dtype=np.int32).astype(np.float32)
    return rows_of(np.concatenate([f16_bytes(d), f16_bytes(s), q.view(np.uint8)], axis=1),
                   x.shape[0])


def _q8_dequantize(head: int):
    def dequantize(raw: np.ndarray) -> np.ndarray:
        b = as_raw_blocks(raw, head + QK)
        q = np.ascontiguousarray(b[:, head:]).view(np.int8).astype(np.float32)
        return rows_of(q * f16_at(b, 0), raw.shape[0])
    return dequantize


register(QuantFormat("q4_0", int(T.Q4_0), QK, 18, _sym_quantize(4), _sym_dequantize(4)))
register(QuantFormat("q5_0", int(T.Q5_0), QK, 22, _sym_quantize(5), _sym_dequantize(5)))
register(QuantFormat("q4_1", int(T.Q4_1), QK, 20, _affine_quantize(4), _affine_dequantize(4)))
register(QuantFormat("q5_1", int(T.Q5_1), QK, 24, _affine_quantize(5), _affine_dequantize(5)))
register(QuantFormat("q8_0", int(T.Q8_0), QK, 34, q8_0_quantize, _q8_dequantize(2)))
# ggml's q8_1 block is 36 bytes (f16 d, f16 s, 32 int8); gguf-py's size table still says 40,
# from an older layout with f32 d and s.
register(QuantFormat("q8_1", int(T.Q8_1), QK, 36, q8_1_quantize, _q8_dequantize(4)))
