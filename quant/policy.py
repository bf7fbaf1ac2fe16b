"""Which storage type each weight gets. Vectors (norms, biases) stay f32: they are tiny and
their precision matters; matrices take the requested type."""
from __future__ import annotations

FLOAT_TYPES = ("f32", "f16", "bf16")


def storage_dtype(role: str, shape: tuple, requested: str) -> str:
    if len(shape) < 2:
        return "f32"
    return requested
