"""Which storage type each weight gets.

- Vectors (norms, biases) stay f32: tiny, and their precision matters.
- Without ISQ a matrix keeps its file's type (a GGUF's quantized blocks pass through as they
  are) or, for float files, the requested float type.
- With ISQ (`--isq Q4K` …) matrices take the ISQ type, except where the policy table keeps a
  role at higher precision (the embedding and output head by default; overridable with a
  JSON file of {glob pattern: type}). A K-quant needs rows that are a multiple of 256 wide:
  where they are not, the usual fallback of similar size is used.
"""
from __future__ import annotations

import fnmatch
import json
import pathlib

from ..errors import IngotError

FLOAT_TYPES = ("f32", "f16", "bf16")

# mistral.rs' ISQ names and numeric shorthand -> storage type.
ISQ_NAMES = {
    "q4_0": "q4_0", "q4_1": "q4_1", "q5_0": "q5_0", "q5_1": "q5_1", "q8_0": "q8_0",
    "q8_1": "q8_1", "q2k": "q2_k", "q3k": "q3_k", "q4k": "q4_k", "q5k": "q5_k", "q6k": "q6_k",
    "q8k": "q8_k", "q2_k": "q2_k", "q3_k": "q3_k", "q4_k": "q4_k", "q5_k": "q5_k",
    "q6_k": "q6_k", "q8_k": "q8_k",
    "2": "q2_k", "3": "q3_k", "4": "q4_k", "5": "q5_k", "6": "q6_k", "8": "q8_0",
}

# Roles kept at higher precision under ISQ, unless a policy file says otherwise. "keep" means
# the source's float type (or its own quantized type).
DEFAULT_POLICY = {
    "token_embd.weight": "q8_0",
    "output.weight": "q6_k",
}

# When a row width does not fit a K-quant's 256-wide super-blocks.
FALLBACK = {"q2_k": "iq4_nl", "q3_k": "iq4_nl", "q4_k": "q5_0", "q5_k": "q5_1",
            "q6_k": "q8_0", "q8_k": "q8_0"}

BITS = {"q2_k": 2.6, "q3_k": 3.4, "q4_0": 4.5, "q4_1": 5, "iq4_nl": 4.5, "q4_k": 4.5,
        "q5_0": 5.5, "q5_1": 6, "q5_k": 5.5, "q6_k": 6.6, "q8_0": 8.5, "q8_1": 10, "q8_k": 9.1,
        "mxfp4": 4.25, "bf16": 16, "f16": 16, "f32": 32}


def parse_isq(level) -> str | None:
    if level is None:
        return None
    key = str(level).strip().lower()
    if key not in ISQ_NAMES:
        raise IngotError(f"unknown --isq level '{level}' (use Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, "
                         f"Q2K, Q3K, Q4K, Q5K, Q6K, Q8K or 2, 3, 4, 5, 6, 8)")
    return ISQ_NAMES[key]


def load_policy(path) -> dict:
    if path is None:
        return dict(DEFAULT_POLICY)
    try:
        data = json.loads(pathlib.Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise IngotError(f"{path}: cannot read quantization policy ({e})") from None
    if not isinstance(data, dict) or not all(isinstance(v, str) for v in data.values()):
        raise IngotError(f"{path}: a policy is a JSON object of {{pattern: type}}")
    return data


def _fits(qtype: str, k: int) -> str:
    from .registry import get_format
    q = qtype
    while get_format(q).block_size > 1 and k % get_format(q).block_size:
        if q not in FALLBACK:
            return "f16"
        q = FALLBACK[q]
    return q


class Policy:
    def __init__(self, float_dtype: str | None, isq: str | None, table: dict | None = None):
        self.float_dtype = float_dtype
        self.isq = isq
        self.table = dict(DEFAULT_POLICY if table is None else table)

    def choose(self, role: str, shape: tuple, src_type: str) -> str:
        if len(shape) < 2:
            return "f32"
        if self.isq is None:
            if src_type in FLOAT_TYPES:
                return self.float_dtype or src_type
            return src_type
        want = self.isq
        for pat, t in self.table.items():
            if fnmatch.fnmatchcase(role, pat):
                t = src_type if t == "keep" else t
                # the table raises precision; it never drops below the ISQ level
                want = t if BITS.get(t, 99) >= BITS.get(want, 99) else want
                break
        if want in FLOAT_TYPES:
            return self.float_dtype or want
        return _fits(want, shape[-1])
