"""Block formats whose codes index a fixed non-uniform value table: iq4_nl and mxfp4.

iq4_nl: 32 weights = f16 d + 16 bytes of 4-bit indices into a 16-entry table that is denser
  near zero (it follows the shape of a bell-curve distribution); x = d * table[i].
mxfp4 (OCP microscaling): 32 weights = one E8M0 byte e (the scale 2^(e-127)) + 16 bytes of
  FP4 E2M1 codes (sign, 2-bit exponent, 1-bit mantissa: 0, .5, 1, 1.5, 2, 3, 4, 6).
Both pack weight j in the low nibble of byte j and weight j+16 in the high nibble.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .legacy import (as_blocks, as_raw_blocks, f16_at, f16_bytes, pack_nibbles, rows_of,
                     signed_max, unpack_nibbles)
from .registry import QuantFormat, register

QK = 32
F32 = np.float32

# ---- iq4_nl ----------------------------------------------------------------------------------

IQ4_TABLE = np.array([-127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113], np.int8)
_IQ4_VALUES = IQ4_TABLE.astype(F32)
_IQ4_MIDS = (_IQ4_VALUES[1:] + _IQ4_VALUES[:-1]) / 2
# Scales tried per block: the extreme weight lands on table entry -127 + t.
_IQ4_STEPS = np.arange(-7, 8)


def _iq4_nearest(v):
    """Index of the table entry nearest to each v (ties to the lower entry)."""
    return np.searchsorted(_IQ4_MIDS, v, side="left").astype(np.uint8)


def iq4_nl_quantize(x):
    b = as_blocks(x, QK)
    top = signed_max(b)
    # Search on blocks scaled so the extreme weight is -1: sums stay in range for any input.
    inv_top = np.where(top == 0, 0, 1 / np.where(top == 0, 1, top)).astype(F32)
    u = b * inv_top
    best_d, best_gain = np.zeros_like(top), np.zeros_like(top)

    def consider(idx):
        nonlocal best_d, best_gain
        q = _IQ4_VALUES[idx]
        sxq, sq2 = (u * q).sum(-1, keepdims=True), (q * q).sum(-1, keepdims=True)
        gain = sxq * sxq / sq2                 # squared error = sum u^2 - gain at d = sxq/sq2
        better = gain > best_gain
        best_d, best_gain = np.where(better, sxq / sq2, best_d), np.where(better, gain, best_gain)

    for t in _IQ4_STEPS:
        consider(_iq4_nearest(u * (t + _IQ4_VALUES[0])))
    inv = np.where(best_d == 0, 0, 1 / np.where(best_d == 0, 1, best_d)).astype(F32)
    consider(_iq4_nearest(u * inv))           # polish: re-round with the fitted scale
    d = (best_d * top).astype(np.float16).astype(F32)  # final codes: nearest for the stored d
    inv = np.where(d == 0, 0, 1 / np.where(d == 0, 1, d)).astype(F32)
    idx = _iq4_nearest(b * inv)
    return rows_of(np.concatenate([f16_bytes(d), pack_nibbles(idx)], axis=1), x.shape[0])


def iq4_nl_dequantize(raw):
    b = as_raw_blocks(raw, 18)
    return rows_of(f16_at(b, 0) * _IQ4_VALUES[unpack_nibbles(b[:, 2:])], raw.shape[0])


# ---- mxfp4 -----------------------------------------------------------------------------------

# E2M1 magnitudes in units of half the block scale, so all are integers; codes 8..15 negate.
_FP4_HALF_UNITS = np.array([0, 1, 2, 3, 4, 6, 8, 12], F32)
_FP4_SIGNED = np.concatenate([_FP4_HALF_UNITS, -_FP4_HALF_UNITS])


def _half_scale(e):
    """2^(e-127) / 2 as float32, for E8M0 bytes e (exact: subnormal for e < 2)."""
    return np.ldexp(F32(1), e.astype(np.int32) - 128).astype(F32)


def mxfp4_quantize(x):
    b = as_blocks(x, QK)
    amax = np.abs(b).max(axis=1, keepdims=True)
    # Shared exponent: floor(log2 amax) - 2, so amax / 2^e lies in [4, 8) and 6 (the largest FP4
    # value) is near the top. log2 is rounded to float32 first, as the single-precision
    # reference computes it (it can round up to an integer just below a power of two).
    with np.errstate(divide="ignore"):
        exp = np.floor(np.log2(amax.astype(np.float64)).astype(F32))
    e = np.where(amax > 0, np.clip(exp + 125, 0, 254), 0).astype(np.uint8)
    half = _half_scale(e)
    # Nearest magnitude; ties go to the smaller one (the first in table order).
    err = np.abs(half[..., None] * _FP4_HALF_UNITS - np.abs(b)[..., None])
    code = err.argmin(axis=-1).astype(np.uint8)
    code = np.where((b < 0) & (code > 0), code + 8, code).astype(np.uint8)
    return rows_of(np.concatenate([e, pack_nibbles(code)], axis=1), x.shape[0])


def mxfp4_dequantize(raw):
    b = as_raw_blocks(raw, 17)
    return rows_of(_half_scale(b[:, :1]) * _FP4_SIGNED[unpack_nibbles(b[:, 1:])], raw.shape[0])


register(QuantFormat("iq4_nl", int(T.IQ4_NL), QK, 18, iq4_nl_quantize, iq4_nl_dequantize))
register(QuantFormat("mxfp4", int(T.MXFP4), QK, 17, mxfp4_quantize, mxfp4_dequantize))
