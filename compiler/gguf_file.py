"""Reading GGUF files through the gguf package, with the checks that make bad files one-line
errors: magic and version, metadata types, known tensor types, and tensor extents."""
from __future__ import annotations

import pathlib

import numpy as np

from ..errors import IngotError
from ..quant.registry import by_gguf_type


class GGUFTensor:
    """A tensor as stored: `shape` in [rows, K] order, `qtype` the storage type name."""

    def __init__(self, path, t, fmt):
        self.path, self.name, self._t, self.fmt = path, t.name, t, fmt
        self.qtype = fmt.name
        self.shape = tuple(int(d) for d in reversed(t.shape.tolist()))

    def raw(self) -> np.ndarray:
        return np.asarray(self._t.data).reshape(-1).view(np.uint8)

    def read_f32(self) -> np.ndarray:
        k = self.shape[-1]
        rows = int(np.prod(self.shape[:-1])) if len(self.shape) > 1 else 1
        data = self.raw().reshape(rows, self.fmt.row_bytes(k))
        return self.fmt.dequantize(data).reshape(self.shape).astype(np.float32, copy=False)


def gguf_metadata(reader) -> dict:
    """A ``gguf.GGUFReader``'s key/value fields as plain Python values (str, int, float, bool,
    lists of those)."""
    from gguf import GGUFValueType

    def scalar(part, vtype):
        if vtype == GGUFValueType.STRING:
            return bytes(part).decode("utf-8", errors="replace")
        value = part.tolist()[0]
        return bool(value) if vtype == GGUFValueType.BOOL else value

    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or not field.types:  # header counts, not metadata
            continue
        if field.types[0] == GGUFValueType.ARRAY:
            # field.data indexes the parts holding the elements (one part per element).
            meta[name] = [scalar(field.parts[i], field.types[-1]) for i in field.data]
        else:
            meta[name] = scalar(field.parts[-1], field.types[0])
    return meta


def read_gguf(path) -> tuple[dict, dict]:
    """(metadata dict, tensors by name) of a GGUF file; raises IngotError for bad files."""
    from gguf import GGUFReader
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
    except OSError as e:
        raise IngotError(f"{path}: cannot open ({e.strerror})") from None
    if magic != b"GGUF":
        raise IngotError(f"{path}: not a GGUF file (bad magic {magic!r})")
    try:
        reader = GGUFReader(path, "r")
    except ValueError as e:
        msg = str(e)
        if "is not a valid GGMLQuantizationType" in msg:
            raise IngotError(f"{path}: unknown tensor type ({msg})") from None
        raise IngotError(f"{path}: invalid or truncated GGUF ({msg})") from None
    except (IndexError, OverflowError, EOFError, TypeError) as e:
        raise IngotError(f"{path}: invalid or truncated GGUF ({type(e).__name__}: {e})") from None
    try:
        meta = gguf_metadata(reader)
    except (IndexError, ValueError) as e:
        raise IngotError(f"{path}: malformed metadata ({e})") from None
    size = path.stat().st_size
    tensors, extents = {}, []
    for t in reader.tensors:
        fmt = by_gguf_type(int(t.tensor_type))
        if fmt is None:
            raise IngotError(f"{path}: tensor '{t.name}' has type {t.tensor_type.name}, which "
                             f"Ingot does not support")
        k = int(t.shape[0])
        if k % fmt.block_size:
            raise IngotError(f"{path}: tensor '{t.name}' rows of {k} are not a whole number of "
                             f"{fmt.name} blocks ({fmt.block_size})")
        want = fmt.nbytes(tuple(int(d) for d in reversed(t.shape.tolist())))
        if t.data_offset + want > size or np.asarray(t.data).nbytes != want:
            raise IngotError(f"{path} is truncated: tensor '{t.name}' needs {want} bytes at "
                             f"offset {t.data_offset}")
        extents.append((t.data_offset, want, t.name))
        tensors[t.name] = GGUFTensor(path, t, fmt)
    extents.sort()
    for (a, n, name), (b, _, nxt) in zip(extents, extents[1:]):
        if a + n > b:
            raise IngotError(f"{path}: tensor '{name}' ({n} bytes) overlaps '{nxt}': its byte "
                             f"size does not match its type and shape")
    return meta, tensors
