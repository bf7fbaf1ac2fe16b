"""f32 / f16 / bf16 as registry formats: one weight per 'block', stored little-endian."""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from . import floats
from .registry import QuantFormat, register


def _quantizer(dtype: str):
    def quantize(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, np.float32)
        raw = np.frombuffer(floats.encode(x, dtype), np.uint8)
        return raw.reshape(x.shape[0], -1)
    return quantize


def _dequantizer(dtype: str):
    def dequantize(raw: np.ndarray) -> np.ndarray:
        raw = np.ascontiguousarray(raw, np.uint8)
        if dtype == "f32":
            return raw.view("<f4").astype(np.float32)
        if dtype == "f16":
            return raw.view("<f2").astype(np.float32)
        return floats.from_bf16_bits(raw.view("<u2"))
    return dequantize


for _name, _type in (("f32", T.F32), ("f16", T.F16), ("bf16", T.BF16)):
    register(QuantFormat(_name, int(_type), 1, floats.ITEMSIZE[_name],
                         _quantizer(_name), _dequantizer(_name)))
