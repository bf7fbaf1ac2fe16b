"""Producing weight data: float32 values from the model files, and the stored bytes."""
from __future__ import annotations

import numpy as np

from ..quant import floats
from .ir import Weight


def weight_f32(w: Weight) -> np.ndarray:
    """The weight's float32 values before storage rounding."""
    kind, src = w.source
    if kind == "file":
        return src.read_f32().reshape(w.shape)
    if kind == "concat":
        return np.concatenate([weight_f32(p) for p in src], axis=0)
    if kind == "array":
        return np.asarray(src, np.float32)
    raise ValueError(f"unknown weight source {kind}")


def weight_stored(w: Weight) -> np.ndarray:
    """The values the runtime will see: rounded through the storage type."""
    return floats.roundtrip(weight_f32(w), w.dtype)


def weight_bytes(w: Weight) -> bytes:
    return floats.encode(weight_f32(w), w.dtype)


def weight_nbytes(w: Weight) -> int:
    return w.numel * floats.ITEMSIZE[w.dtype]
