"""Reads safetensors headers and maps tensors lazily, one at a time (no full-model load).

The format is an 8-byte little-endian header length, a JSON header, then raw tensor bytes; we
parse it ourselves so truncation and bad headers become clear errors that name the file.
"""
from __future__ import annotations

import json
import pathlib
import struct

import numpy as np

from ..errors import IngotError

_DTYPES = {"F32": ("f32", np.float32), "F16": ("f16", np.float16), "BF16": ("bf16", np.uint16),
           "F64": ("f64", np.float64)}


class TensorRef:
    __slots__ = ("file", "name", "dtype", "shape", "start", "end")

    def __init__(self, file, name, dtype, shape, start, end):
        self.file, self.name, self.dtype, self.shape = file, name, dtype, tuple(shape)
        self.start, self.end = start, end

    @property
    def qtype(self) -> str:
        return _DTYPES[self.dtype][0]

    def raw(self) -> np.ndarray:
        """The stored bytes, as they are in the file."""
        data = np.fromfile(self.file, dtype=np.uint8, count=self.end - self.start,
                           offset=self.start)
        if data.size != self.end - self.start:
            raise IngotError(f"{self.file.name}: tensor '{self.name}' is truncated")
        return data

    def _rows_k(self) -> tuple[int, int]:
        rows = 1
        for d in self.shape[:-1]:
            rows *= d
        return rows, (self.shape[-1] if self.shape else 1)

    def _read(self, np_dtype, first: int, count: int) -> np.ndarray:
        itemsize = np.dtype(np_dtype).itemsize
        data = np.fromfile(self.file, dtype=np_dtype, count=count,
                           offset=self.start + first * itemsize)
        if data.size != count:
            raise IngotError(f"{self.file.name}: tensor '{self.name}' is truncated")
        return data

    def raw_rows(self, r0: int, r1: int) -> np.ndarray:
        """The stored bytes of rows [r0, r1) (a vector is one row), read from the file."""
        k = self._rows_k()[1] * np.dtype(_DTYPES[self.dtype][1]).itemsize
        return self._read(np.uint8, r0 * k, (r1 - r0) * k)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        """Rows [r0, r1) as float32 [r1 - r0, K] (bf16 widened exactly, f16 exactly)."""
        kind, np_dtype = _DTYPES[self.dtype]
        k = self._rows_k()[1]
        raw = self._read(np_dtype, r0 * k, (r1 - r0) * k)
        if kind == "bf16":
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(-1, k)
        return raw.astype(np.float32).reshape(-1, k)

    def read_f32(self) -> np.ndarray:
        """The tensor as float32 (bf16 widened exactly, f16 exactly)."""
        return self.read_rows(0, self._rows_k()[0]).reshape(self.shape)


def _read_header(path: pathlib.Path) -> dict:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise IngotError(f"{path.name}: not a safetensors file (too short)")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8 or n > 100 * 2**20:
            raise IngotError(f"{path.name}: safetensors header length {n} exceeds the file")
        try:
            header = json.loads(f.read(n))
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise IngotError(f"{path.name}: malformed safetensors header ({e})") from None
    data_start, data_len = 8 + n, size - 8 - n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info.get("dtype")
        if dtype not in _DTYPES:
            raise IngotError(f"{path.name}: tensor '{name}' has unsupported dtype {dtype}")
        a, b = info["data_offsets"]
        if b > data_len:
            raise IngotError(f"{path.name} is truncated: tensor '{name}' ends at byte "
                             f"{data_start + b} but the file has {size}")
        out[name] = TensorRef(path, name, dtype, info["shape"], data_start + a, data_start + b)
    return out


def index_folder(folder: pathlib.Path) -> dict:
    """All tensors of a model folder, by name; honours model.safetensors.index.json shards."""
    idx = folder / "model.safetensors.index.json"
    if idx.exists():
        try:
            weight_map = json.loads(idx.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError) as e:
            raise IngotError(f"{idx}: malformed shard index ({e})") from None
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if not (folder / f).exists()]
        if missing:
            raise IngotError(f"{folder}: missing safetensors shard '{missing[0]}' "
                             f"(listed in model.safetensors.index.json)")
    else:
        files = sorted(p.name for p in folder.glob("*.safetensors"))
        if not files:
            raise IngotError(f"{folder}: no *.safetensors files found")
    tensors = {}
    for f in files:
        tensors.update(_read_header(folder / f))
    return tensors
