"""An Ingot artefact as a model source (`--from-uqff`): its weights are reused exactly as
stored — already quantized — to compile again for another context length, chunk or target."""
from __future__ import annotations

import pathlib

import numpy as np

from ..arch.registry import family_named
from ..arch.spec import LayerSpec, ModelSpec, RopeSpec
from ..errors import IngotError
from ..quant.registry import get_format
from ..runtime.artefact import Artefact
from .source import ModelSource


class ArtefactTensor:
    """Rows [row0, row0 + rows) of a stored weight. `raw()` is a view of the artefact's map;
    `raw_rows` / `read_rows` read a run of rows from the file (`base`: where the weights section
    starts), so that recompiling leaves no mapped pages behind. A CPU build's regrouped
    layout reads as its GGUF type (the bytes moved back, so `raw()` is then a copy): every
    target takes that."""

    def __init__(self, weights: memoryview, entry: dict, name: str, row0: int, rows: int,
                 path=None, base=None):
        stored = get_format(entry["dtype"])
        self._to_base = stored.to_base
        self._group = stored.group_rows
        if stored.group_rows > 1 and (row0 % stored.group_rows or rows % stored.group_rows):
            raise IngotError(f"{path or 'artefact'}: tensor {name} is stored in {stored.name} "
                             f"groups of {stored.group_rows} rows but is read from row {row0} "
                             f"({rows} rows)")
        self.name, self.qtype = name, stored.base or stored.name
        self.fmt = get_format(self.qtype)
        k = entry["shape"][-1]
        self.shape = (rows, k) if len(entry["shape"]) > 1 else (k,)
        rb = self.fmt.row_bytes(k)
        start = entry["offset"] + row0 * rb
        self._bytes = weights[start:start + rows * rb]
        self._rb = rb
        self.path = path
        self.offset = None if base is None else base + start

    def _as_base(self, data: np.ndarray) -> np.ndarray:
        if self._to_base is None:
            return data
        return self._to_base(data.reshape(-1, self._rb)).reshape(-1)

    def raw(self) -> np.ndarray:
        return self._as_base(self._stored())

    def raw_rows(self, r0: int, r1: int) -> np.ndarray:
        g = self._group
        if g > 1 and (r0 % g or (r1 % g and r1 != self.shape[0])):
            # A layout across rows converts whole groups: read those, keep the rows asked for.
            g0, g1 = r0 // g * g, min(-(-r1 // g) * g, self.shape[0])
            return self.raw_rows(g0, g1)[(r0 - g0) * self._rb:(r1 - g0) * self._rb]
        n = (r1 - r0) * self._rb
        if self.offset is None:
            return self._as_base(np.array(self._stored()[r0 * self._rb:r0 * self._rb + n]))
        data = np.fromfile(self.path, np.uint8, count=n, offset=self.offset + r0 * self._rb)
        if data.size != n:
            raise IngotError(f"{self.path}: artefact weights are truncated")
        return self._as_base(data)

    def _stored(self) -> np.ndarray:
        return np.frombuffer(self._bytes, np.uint8)

    def read_rows(self, r0: int, r1: int) -> np.ndarray:
        return self.fmt.dequantize(self.raw_rows(r0, r1).reshape(-1, self._rb))

    def read_f32(self) -> np.ndarray:
        rows = self.shape[0] if len(self.shape) > 1 else 1
        return self.fmt.dequantize(self.raw().reshape(rows, self._rb)).reshape(self.shape)


def spec_from_json(d: dict) -> ModelSpec:
    d = dict(d)
    d["ropes"] = {k: RopeSpec(**v) for k, v in d["ropes"].items()}
    d["layers"] = [LayerSpec(**v) for v in d["layers"]]
    return ModelSpec(**d)


def open_artefact(path) -> ModelSource:
    path = pathlib.Path(path)
    art = Artefact(path)
    plan = art.json("plan")
    if "tensors" not in plan or "spec" not in plan:
        raise IngotError(f"{path}: this artefact does not record its tensors; recompile it")
    weights = art.section("weights", check=False)
    base = next(sec["offset"] for sec in art.section_info() if sec["name"] == "weights")
    index = {}
    for e in plan["tensors"]:
        row = 0
        for name, rows in e["parts"]:
            index[name] = (e, row, rows)
            row += rows

    def lookup(role):
        if role not in index:
            return None
        e, row0, rows = index[role]
        return ArtefactTensor(weights, e, role, row0, rows, path, base)

    sections = {n: bytes(art.section(n)) for n in ("tokenizer", "tokenizer_config",
                                                   "generation_config") if art.has(n)}
    template = art.json("chat_template") if art.has("chat_template") else None
    return ModelSource(art.header.get("model", path.stem), family_named(plan["family"]),
                       spec_from_json(plan["spec"]), lookup, sections, template, [path])
