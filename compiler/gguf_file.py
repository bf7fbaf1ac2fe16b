"""Reading GGUF files (v2 and v3), with the checks that make bad files one-line errors: magic
and version, metadata types, known tensor types, and tensor extents.

The header is parsed here rather than through gguf-py's GGUFReader, which builds a numpy view
per array element: a 262k-token vocabulary took it ~20 s; numeric arrays are read here as one
numpy view and strings in one pass. Tensor data are views of one read-only memory map.
"""
from __future__ import annotations

import pathlib
import struct

import numpy as np

from ..errors import IngotError
from ..quant.registry import by_gguf_type

# GGUF value types -> (struct code, numpy dtype); 7 bool, 8 string, 9 array are special.
_SCALARS = {0: ("<B", np.uint8), 1: ("<b", np.int8), 2: ("<H", np.uint16),
            3: ("<h", np.int16), 4: ("<I", np.uint32), 5: ("<i", np.int32),
            6: ("<f", np.float32), 10: ("<Q", np.uint64), 11: ("<q", np.int64),
            12: ("<d", np.float64)}
_BOOL, _STRING, _ARRAY = 7, 8, 9


class _Truncated(Exception):
    pass


class _Cursor:
    def __init__(self, buf):
        self.buf, self.pos = buf, 0

    def take(self, n: int) -> memoryview:
        if n < 0 or self.pos + n > len(self.buf):
            raise _Truncated()
        v = self.buf[self.pos:self.pos + n]
        self.pos += n
        return v

    def unpack(self, code: str):
        size = struct.calcsize(code)
        return struct.unpack(code, self.take(size))[0]

    def string(self) -> str:
        return bytes(self.take(self.unpack("<Q"))).decode("utf-8", errors="replace")

    def strings(self, count: int) -> list:
        """A string array in one tight loop (a vocabulary holds hundreds of thousands)."""
        buf, pos, end = self.buf, self.pos, len(self.buf)
        length = struct.Struct("<Q").unpack_from
        out = []
        append = out.append
        for _ in range(count):
            if pos + 8 > end:
                raise _Truncated()
            n = length(buf, pos)[0]
            pos += 8
            if pos + n > end:
                raise _Truncated()
            append(str(buf[pos:pos + n], "utf-8", "replace"))
            pos += n
        self.pos = pos
        return out

    def value(self, vtype: int):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype][0])
        if vtype == _BOOL:
            return bool(self.unpack("<B"))
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            etype, count = self.unpack("<I"), self.unpack("<Q")
            if etype in _SCALARS:
                dt = np.dtype(_SCALARS[etype][1]).newbyteorder("<")
                return np.frombuffer(self.take(count * dt.itemsize), dt).tolist()
            if etype == _STRING:
                return self.strings(count)
            return [self.value(etype) for _ in range(count)]
        raise ValueError(f"unknown metadata value type {vtype}")


class GGUFTensor:
    """A tensor as stored: `shape` in [rows, K] order, `qtype` the storage type name.

    `raw()` is a view of the file's memory map; `raw_rows` / `read_rows` read a run of rows
    from the file instead (`offset`: where the data start), so that copying a large model's
    tensors leaves no mapped pages behind to count in the compiler's memory.
    """

    def __init__(self, path, name, shape, fmt, data, offset=None):
        self.path, self.name, self.fmt = path, name, fmt
        self.qtype = fmt.name
        self.shape = shape
        self._data = data
        self.offset = offset

    def raw(self) -> np.ndarray:
        return self._data

    def raw_rows(self, r0: int, r1: int) -> np.ndarray:
        return read_rows_raw(self, r0, r1)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        return rows_f32(self, self.raw_rows(r0, r1))

    def read_f32(self) -> np.ndarray:
        k = self.shape[-1]
        rows = int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1
        data = self.raw().reshape(rows, self.fmt.row_bytes(k))
        return self.fmt.dequantize(data).reshape(self.shape).astype(np.float32, copy=False)


def read_rows_raw(t, r0: int, r1: int) -> np.ndarray:
    """Stored bytes of rows [r0, r1) of a GGUF/GGML tensor `t` (a vector is one row): read from
    `t.path` at `t.offset` (a copy, bounded by the rows asked for), or sliced from `t.raw()`
    when the offset is not known."""
    rb = t.fmt.row_bytes(t.shape[-1])
    if t.offset is None:
        return np.array(t.raw()[r0 * rb:r1 * rb])
    n = (r1 - r0) * rb
    data = np.fromfile(t.path, np.uint8, count=n, offset=t.offset + r0 * rb)
    if data.size != n:
        raise IngotError(f"{t.path} is truncated: tensor '{t.name}' ends early")
    return data


def rows_f32(t, raw: np.ndarray) -> np.ndarray:
    """Stored rows of `t` -> float32 [rows, K]."""
    rb = t.fmt.row_bytes(t.shape[-1])
    return t.fmt.dequantize(raw.reshape(-1, rb)).astype(np.float32, copy=False)


def _parse(buf, path) -> tuple[dict, list, int]:
    """(metadata, [(name, ggml dims, type, offset)], data start) from the header."""
    c = _Cursor(buf)
    c.take(4)
    version = c.unpack("<I")
    if version not in (2, 3):
        raise IngotError(f"{path}: GGUF version {version} is not supported (2 and 3 are)")
    n_tensors, n_kv = c.unpack("<Q"), c.unpack("<Q")
    meta = {}
    for _ in range(n_kv):
        key = c.string()
        meta[key] = c.value(c.unpack("<I"))
    infos = []
    for _ in range(n_tensors):
        name = c.string()
        n_dims = c.unpack("<I")
        dims = [c.unpack("<Q") for _ in range(n_dims)]
        infos.append((name, dims, c.unpack("<I"), c.unpack("<Q")))
    align = meta.get("general.alignment", 32)
    if not isinstance(align, int) or align <= 0:
        raise IngotError(f"{path}: metadata 'general.alignment' has the wrong type or value")
    return meta, infos, (c.pos + align - 1) // align * align


def read_gguf(path) -> tuple[dict, dict]:
    """(metadata dict, tensors by name) of a GGUF file; raises IngotError for bad files."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise IngotError(f"{path}: cannot open ({e.strerror})") from None
    if magic != b"GGUF":
        raise IngotError(f"{path}: not a GGUF file (bad magic {magic!r})")
    mm = np.memmap(path, np.uint8, mode="r")
    try:
        meta, infos, start = _parse(memoryview(mm), path)
    except _Truncated:
        raise IngotError(f"{path}: invalid or truncated GGUF (the header ends early)") from None
    except (ValueError, OverflowError, MemoryError) as e:
        raise IngotError(f"{path}: invalid or truncated GGUF ({e})") from None
    size = len(mm)
    tensors, extents = {}, []
    for name, dims, ttype, offset in infos:
        fmt = by_gguf_type(ttype)
        if fmt is None:
            raise IngotError(f"{path}: tensor '{name}' has unknown tensor type {ttype}, which "
                             f"Ingot does not support")
        shape = tuple(int(d) for d in reversed(dims))
        k = shape[-1] if shape else 0
        if not shape or k % fmt.block_size:
            raise IngotError(f"{path}: tensor '{name}' rows of {k} are not a whole number of "
                             f"{fmt.name} blocks ({fmt.block_size})")
        want = fmt.nbytes(shape)
        at = start + offset
        if at + want > size:
            raise IngotError(f"{path} is truncated: tensor '{name}' needs {want} bytes at "
                             f"offset {offset}")
        extents.append((offset, want, name))
        tensors[name] = GGUFTensor(path, name, shape, fmt, mm[at:at + want], at)
    extents.sort()
    for (a, n, name), (b, _, nxt) in zip(extents, extents[1:]):
        if a + n > b:
            raise IngotError(f"{path}: tensor '{name}' ({n} bytes) overlaps '{nxt}': its byte "
                             f"size does not match its type and shape")
    return meta, tensors


def gguf_metadata(path) -> dict:
    """Only the key/value metadata of a GGUF file, as plain Python values."""
    return read_gguf(path)[0]
