"""Producing weight data: float32 values from the model files, and the stored bytes.

A weight whose storage type equals its file's type is copied byte for byte (a GGUF's Q4_K
blocks go into the artefact untouched); otherwise it is read as float32 and encoded.

Both happen in runs of whole rows (`weight_raw_chunks`), never a whole tensor at once: the
storage formats quantize each row on its own (blocks run along the last axis), so the bytes are
the same as for the whole tensor, and the compiler's memory stays a small multiple of
CHUNK_BYTES however large a tensor or the model is. A tensor reference that can read a range of
rows (`read_rows(r0, r1)` -> float32 [r1 - r0, K], `raw_rows(r0, r1)` -> stored bytes) is
read a chunk at a time; one that cannot is read whole (small computed tables).
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

from ..quant.registry import get_format
from .ir import Weight

# The float32 bytes of one run of rows (a single row when a row is larger). The quantizers keep
# up to ~11 temporaries of a run's size alive (q4_k's scale search; q6_k ~8, q8_0 ~5), so what a
# compile holds for weights is a few MiB, for any tensor and any model. Runs this small also stay
# in the CPU caches: q4_k and q6_k quantize about twice as fast as in 16 MiB runs (3.8 against
# 1.9 Mparam/s for q4_k); below ~128 KiB numpy's per-call cost takes over.
CHUNK_BYTES = 512 << 10


def _rows_k(shape: tuple) -> tuple[int, int]:
    """A weight as [rows, K] (a vector is one row)."""
    rows = 1
    for s in shape[:-1]:
        rows *= s
    return rows, shape[-1]


def _step(row_bytes: int) -> int:
    return max(1, CHUNK_BYTES // max(1, row_bytes))


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


def _f32_chunks(w: Weight) -> Iterator[np.ndarray]:
    """The weight's float32 values as [rows, K] runs of rows, in order."""
    kind, src = w.source
    rows, k = _rows_k(w.shape)
    if kind == "file" and hasattr(src, "read_rows"):
        step = _step(4 * k)
        for r0 in range(0, rows, step):
            yield np.asarray(src.read_rows(r0, min(rows, r0 + step)), np.float32).reshape(-1, k)
    elif kind == "concat":
        for p in src:  # fused weights stack their parts' rows
            yield from _f32_chunks(p)
    else:
        yield weight_f32(w).reshape(rows, k)


def _passthrough(w: Weight) -> bool:
    kind, src = w.source
    if kind == "file":
        return src.qtype == w.dtype
    if kind == "concat":
        return all(p.dtype == w.dtype and _passthrough(p) for p in src)
    return False


def _raw_chunks(w: Weight) -> Iterator[np.ndarray]:
    """A passthrough weight's stored bytes, copied from the file a run of rows at a time."""
    kind, src = w.source
    if kind == "concat":
        for p in src:
            yield from _raw_chunks(p)
        return
    rows, k = _rows_k(w.shape)
    if not hasattr(src, "raw_rows"):
        yield np.asarray(src.raw(), np.uint8).reshape(-1)
        return
    step = _step(max(4 * k, get_format(w.dtype).row_bytes(k)))
    for r0 in range(0, rows, step):
        yield np.asarray(src.raw_rows(r0, min(rows, r0 + step)), np.uint8).reshape(-1)


def _whole_groups(chunks, group_bytes: int) -> Iterator[np.ndarray]:
    """The same bytes re-cut into runs of whole groups (the last run holds what is left)."""
    held = np.empty(0, np.uint8)
    for raw in chunks:
        held = np.concatenate([held, raw]) if held.size else raw
        cut = held.size // group_bytes * group_bytes
        if cut:
            yield held[:cut]
            held = held[cut:]
    if held.size:
        yield held


def weight_raw_chunks(w: Weight) -> Iterator[np.ndarray]:
    """The stored bytes (flat uint8 arrays) in runs of whole rows, each from at most
    CHUNK_BYTES of float32 values (or one row); together they are `weight_raw(w)`."""
    fmt = get_format(w.dtype)
    if fmt.base is not None:  # a CPU build's regrouped layout: the base type's bytes, moved
        base = Weight(w.name, w.shape, fmt.base, w.source)
        rb = get_format(fmt.base).row_bytes(w.shape[-1])
        chunks = weight_raw_chunks(base)
        if fmt.group_rows > 1:  # a layout across rows: runs of whole groups
            chunks = _whole_groups(chunks, fmt.group_rows * rb)
        for raw in chunks:
            yield fmt.from_base(raw.reshape(-1, rb)).reshape(-1)
        return
    if len(w.shape) < 2:
        # A vector is one row, whole (the parts of a fused bias are not rows; a block may
        # straddle them): a vector is small.
        if _passthrough(w):
            parts = list(_raw_chunks(w))
            yield parts[0] if len(parts) == 1 else np.concatenate(parts)
        else:
            x = weight_f32(w).reshape(1, -1)
            yield np.ascontiguousarray(get_format(w.dtype).quantize(x)).reshape(-1).view(np.uint8)
        return
    if _passthrough(w):
        yield from _raw_chunks(w)
        return
    quantize = get_format(w.dtype).quantize
    for rows in _f32_chunks(w):
        yield np.ascontiguousarray(quantize(rows)).reshape(-1).view(np.uint8)


def weight_raw(w: Weight) -> np.ndarray:
    """The stored bytes (uint8), row-major in the storage type's blocks."""
    chunks = list(weight_raw_chunks(w))
    return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)


def weight_stored(w: Weight) -> np.ndarray:
    """The values the runtime will see: the stored bytes decoded to float32."""
    fmt = get_format(w.dtype)
    rows, k = _rows_k(w.shape)
    rb = fmt.row_bytes(k)
    out = np.empty((rows, k), np.float32)
    r = 0
    for raw in weight_raw_chunks(w):
        n = raw.size // rb
        out[r:r + n] = fmt.dequantize(raw.reshape(n, rb))
        r += n
    return out.reshape(w.shape)


def weight_nbytes(w: Weight) -> int:
    return get_format(w.dtype).nbytes(w.shape)
