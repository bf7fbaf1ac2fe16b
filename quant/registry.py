"""The quant-format registry: each storage type implements only block (de)quantization.

Names are GGUF's type names in lower case ("q4_k", "q8_0", "f16" ...). A weight matrix
[rows, K] of a block type is stored row-major, each row `K // block_size` blocks of
`block_bytes`; K must be a multiple of `block_size`.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class QuantFormat:
    name: str          # "q4_k"
    gguf_type: int     # gguf.GGMLQuantizationType value
    block_size: int    # weights per block
    block_bytes: int   # bytes per block
    # [rows, K] float32 -> [rows, K // block_size * block_bytes] uint8 (None: cannot make it)
    quantize: Optional[Callable[[np.ndarray], np.ndarray]]
    # [rows, K // block_size * block_bytes] uint8 -> [rows, K] float32
    dequantize: Callable[[np.ndarray], np.ndarray]
    # A CPU build's regrouped layout of a GGUF type (quant/repack.py): that type's name, and
    # its rows' bytes to and from this layout's (the same values, bits moved).
    base: Optional[str] = None
    from_base: Optional[Callable[[np.ndarray], np.ndarray]] = None
    to_base: Optional[Callable[[np.ndarray], np.ndarray]] = None
    # Layouts that move bits across rows (quant/interleave.py) convert whole groups of this
    # many rows at a time; 1: any run of rows.
    group_rows: int = 1

    def row_bytes(self, k: int) -> int:
        return k // self.block_size * self.block_bytes

    def nbytes(self, shape: tuple) -> int:
        rows = 1
        for s in shape[:-1]:
            rows *= s
        return rows * self.row_bytes(shape[-1])


FORMATS: dict = {}


def layout_format(name: str, base_name: str, pack, unpack, block_size: int, block_bytes: int,
                  group_rows: int = 1) -> QuantFormat:
    """A CPU layout of a GGUF type: the base type's quantizer and dequantizer with the bytes
    moved by `pack` ([rows, bytes] of the base type -> the layout's) and `unpack`."""
    base = get_format(base_name)
    return QuantFormat(name, -1, block_size, block_bytes,
                       lambda x: pack(base.quantize(x)), lambda raw: base.dequantize(unpack(raw)),
                       base=base_name, from_base=pack, to_base=unpack, group_rows=group_rows)


def register(fmt: QuantFormat) -> QuantFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(name: str) -> QuantFormat:
    """A GGUF type, or a CPU build's regrouped layout of one (stored weights only: they are
    not in FORMATS, which lists the types a file or --isq can name)."""
    _load_all()
    if name in FORMATS:
        return FORMATS[name]
    from .interleave import interleaved_format
    from .repack import repacked_format
    fmt = repacked_format(name) or interleaved_format(name)
    if fmt is None:
        raise KeyError(name)
    return fmt


def base_type(name: str) -> str:
    """The GGUF type a stored type holds: itself, or a CPU layout's base (q5_0x8 -> q5_0)."""
    return get_format(name).base or name


def by_gguf_type(t: int) -> Optional[QuantFormat]:
    _load_all()
    return next((f for f in FORMATS.values() if f.gguf_type == t), None)


def _load_all() -> None:
    # Importing a module registers its formats; this is the one list of them.
    from . import floats_fmt, kquants, legacy, nonlinear  # noqa: F401
