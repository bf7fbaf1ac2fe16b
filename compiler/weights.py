"""Producing weight data: float32 values from the model files, and the stored bytes.

A weight whose storage type equals its file's type is copied byte for byte (a GGUF's Q4_K
blocks go into the artefact untouched); otherwise it is read as float32 and encoded, one tensor
at a time.
"""
from __future__ import annotations

import numpy as np

from ..quant.registry import get_format
from .ir import Weight


def weight_f32(w: Weight) -> np.ndarray:
    """The weight's float32 values as the model files hold them (before storage rounding)."""
    kind, src = w.source
    if kind == "file":
        return src.read_f32().reshape(w.shape)
    if kind == "concat":
        return np.concatenate([weight_f32(p) for p in src], axis=0)
    if kind == "array":
        return np.asarray(src, np.float32)
    raise ValueError(f"unknown weight source {kind}")


def _passthrough(w: Weight) -> bool:
    kind, src = w.source
    if kind == "file":
        return src.qtype == w.dtype
    if kind == "concat":
        return all(p.dtype == w.dtype and _passthrough(p) for p in src)
    return False


def weight_raw(w: Weight) -> np.ndarray:
    """The stored bytes (uint8), row-major in the storage type's blocks."""
    kind, src = w.source
    if _passthrough(w):
        if kind == "file":
            return src.raw()
        return np.concatenate([weight_raw(p) for p in src])
    x = weight_f32(w)
    rows = x.reshape(-1, w.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
    return np.ascontiguousarray(get_format(w.dtype).quantize(rows)).reshape(-1).view(np.uint8)


def weight_stored(w: Weight) -> np.ndarray:
    """The values the runtime will see: the stored bytes decoded to float32."""
    fmt = get_format(w.dtype)
    k = w.shape[-1]
    raw = weight_raw(w).reshape(-1, fmt.row_bytes(k))
    return fmt.dequantize(raw).reshape(w.shape).astype(np.float32, copy=False)


def weight_nbytes(w: Weight) -> int:
    return get_format(w.dtype).nbytes(w.shape)
