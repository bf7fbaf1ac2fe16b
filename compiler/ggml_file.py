"""Reading legacy GGML files (ggjt v3, the last format before GGUF), with the checks that make bad
files one-line errors.

Layout, little-endian: magic u32 0x67676a74 ("tjgg" on disk), u32 version 3; seven i32
hyperparameters (n_vocab, n_embd, n_mult, n_head, n_layer, n_rot, ftype); n_vocab entries of
(u32 length, text bytes, f32 score); then tensors until the end of the file, each
(i32 n_dims, i32 name length, i32 ggml type, n_dims i32 dims innermost first, name bytes, zero
padding to a 32-byte file offset, data).

Only v3 is read: v2 stored q4/q5/q8 scales as f32 and v1 had other nibble orders, so their blocks
are not GGUF's; the older unversioned 'ggml' and 'ggmf' files have no alignment or scores.
"""
from __future__ import annotations

import pathlib
import struct
from dataclasses import dataclass

import numpy as np

from ..errors import IngotError
from ..quant.registry import by_gguf_type
from .gguf_file import read_rows_raw, rows_f32

MAGICS = {b"tjgg": "ggjt", b"fmgg": "ggmf", b"lmgg": "ggml (unversioned)", b"GGUF": "GGUF"}
HPARAMS = ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype")
ALIGN = 32
# ggml type ids a ggjt v3 file can hold (the ids GGUF kept): f32, f16, q4_0, q4_1, q5_0, q5_1,
# q8_0 and the K-quants q2_k..q6_k. Later ids (IQ types, bf16 ...) never existed in ggjt.
GGJT_TYPES = (0, 1, 2, 3, 6, 7, 8, 10, 11, 12, 13, 14)


class GGMLTensor:
    """A tensor as stored: `shape` in [rows, K] order, `qtype` the storage type name; `offset`
    is where its data start in the file (row ranges are read from there, as for GGUF)."""

    def __init__(self, path, name, shape, fmt, data, offset=None):
        self.path, self.name, self.shape, self.fmt, self._data = path, name, shape, fmt, data
        self.qtype = fmt.name
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


@dataclass
class GGMLFile:
    hparams: dict   # HPARAMS name -> int
    vocab: list     # (text bytes, score) per token id
    tensors: dict   # file tensor name -> GGMLTensor, in file order


class _Cursor:
    """Reads little-endian fields from the mapped file; running off the end is truncation."""

    def __init__(self, buf, path):
        self.buf, self.path, self.pos = buf, path, 0

    def take(self, n: int, what: str):
        if n < 0 or self.pos + n > len(self.buf):
            raise IngotError(f"{self.path} is truncated: {what} needs {n} bytes at offset "
                             f"{self.pos}, the file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def ints(self, fmt: str, what: str) -> tuple:
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt), what))


def read_ggml(path) -> GGMLFile:
    """Hyperparameters, vocabulary and tensors of a ggjt v3 file; raises IngotError for bad
    files."""
    path = pathlib.Path(path)
    try:
        size = path.stat().st_size
        buf = np.memmap(path, np.uint8, "r") if size else np.zeros(0, np.uint8)
    except (OSError, ValueError) as e:
        raise IngotError(f"{path}: cannot open ({getattr(e, 'strerror', None) or e})") from None
    cur = _Cursor(buf, path)
    _check_header(cur)
    hp = dict(zip(HPARAMS, cur.ints("7i", "the hyperparameters")))
    if hp["n_vocab"] <= 0 or hp["n_embd"] <= 0 or hp["n_head"] <= 0 or hp["n_layer"] <= 0:
        raise IngotError(f"{path}: implausible hyperparameters {hp}")
    vocab = []
    for i in range(hp["n_vocab"]):
        (n,) = cur.ints("I", f"vocabulary entry {i}")
        text = bytes(cur.take(n, f"vocabulary entry {i}"))
        (score,) = struct.unpack("<f", cur.take(4, f"vocabulary entry {i}"))
        vocab.append((text, score))
    tensors = {}
    while cur.pos < len(buf):
        t = _read_tensor(cur)
        tensors[t.name] = t
    return GGMLFile(hp, vocab, tensors)


def _check_header(cur: _Cursor) -> None:
    path = cur.path
    magic = bytes(cur.buf[:4])
    kind = MAGICS.get(magic)
    if kind is None:
        raise IngotError(f"{path}: not a GGML file (bad magic {magic!r})")
    if kind == "GGUF":
        raise IngotError(f"{path} is a GGUF file: use --format gguf")
    cur.take(4, "the magic")
    version = cur.ints("I", "the format version")[0] if kind != "ggml (unversioned)" else None
    if kind != "ggjt" or version != 3:
        seen = kind if version is None else f"{kind} v{version}"
        raise IngotError(f"{path} is {seen}: only ggjt v3 GGML files are supported (convert "
                         f"older files with llama.cpp's tools, or to GGUF)")


def _read_tensor(cur: _Cursor) -> GGMLTensor:
    path, at = cur.path, cur.pos
    n_dims, name_len, gtype = cur.ints("3i", f"the tensor header at offset {at}")
    if not 1 <= n_dims <= 4 or not 0 < name_len < 4096:
        raise IngotError(f"{path}: malformed tensor header at offset {at} ({n_dims} dims, "
                         f"name of {name_len} bytes)")
    dims = cur.ints(f"{n_dims}i", f"the tensor header at offset {at}")
    name = bytes(cur.take(name_len, f"the tensor name at offset {at}")).decode("utf-8", "replace")
    fmt = by_gguf_type(gtype) if gtype in GGJT_TYPES else None
    if fmt is None:
        raise IngotError(f"{path}: tensor '{name}' has ggml type {gtype}, which Ingot does not "
                         f"support in GGML files")
    if min(dims) <= 0 or dims[0] % fmt.block_size:
        raise IngotError(f"{path}: tensor '{name}' has dims {list(dims)}: rows must be a whole "
                         f"number of {fmt.name} blocks ({fmt.block_size})")
    shape = tuple(reversed(dims))  # innermost first on disk -> [rows, K]
    cur.take(-cur.pos % ALIGN, f"the padding of tensor '{name}'")
    offset = cur.pos
    data = cur.take(fmt.nbytes(shape), f"tensor '{name}'")
    return GGMLTensor(path, name, shape, fmt, data, offset)
