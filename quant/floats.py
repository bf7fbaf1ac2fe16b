"""Float storage formats: f32 -> f16 / bf16 encoders (bf16 rounds to nearest even)."""
from __future__ import annotations

import numpy as np


def to_bf16_bits(x: np.ndarray) -> np.ndarray:
    u = np.ascontiguousarray(x, np.float32).view(np.uint32)
    nan = (u & 0x7FFFFFFF) > 0x7F800000
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    return np.where(nan, np.uint16(0x7FC0), rounded)


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    return (b.astype(np.uint32) << 16).view(np.float32)


def encode(x: np.ndarray, dtype: str) -> bytes:
    """Raw little-endian bytes of `x` in storage type `dtype`."""
    if dtype == "f32":
        return np.ascontiguousarray(x, "<f4").tobytes()
    if dtype == "f16":
        return np.ascontiguousarray(x, np.float32).astype("<f2").tobytes()
    if dtype == "bf16":
        return to_bf16_bits(x).astype("<u2").tobytes()
    raise ValueError(f"unknown float storage type {dtype}")


def roundtrip(x: np.ndarray, dtype: str) -> np.ndarray:
    """What a weight reads back as after storage in `dtype` (for references and verification)."""
    if dtype == "f32":
        return np.asarray(x, np.float32)
    if dtype == "f16":
        return np.asarray(x, np.float32).astype(np.float16).astype(np.float32)
    return from_bf16_bits(to_bf16_bits(x))


ITEMSIZE = {"f32": 4, "f16": 2, "bf16": 2}
