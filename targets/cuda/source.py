"""The CUDA kernel library's source: shared templates in cu/*.cu (and the block formats'
decoders from formats.py), instantiated per storage type as extern "C" entry points."""
from __future__ import annotations

from pathlib import Path

from ...errors import IngotError
from .formats import FORMATS, formats_source

FLOATS = {"f32": "LdF32", "f16": "LdF16", "bf16": "LdBF16"}  # weight loaders (cu/common.cuh)
HALVES = {"f16": "HalfF16", "bf16": "HalfBF16"}  # 16-bit weights on tensor cores (cu/matrix.cu)
KV = {"f32": "KvF32", "f16": "KvF16", "q8_0": "KvQ8"}  # KV cache types (cu/attention.cu)
FIXED = ("ingot_rmsnorm", "ingot_add_rmsnorm", "ingot_layernorm", "ingot_act", "ingot_mul_act",
         "ingot_add", "ingot_scale", "ingot_quantize_q8", "ingot_attention_merge")
# Kernels that place rows by position and KV slot, each in two variants of one template: one
# sequence (positions d[0] + t) and "_rows", the batched decode step's (a row table in d).
ROW_VARIANTS = (("", "false"), ("_rows", "true"))


def _lin(name: str, body: str, T: str) -> str:
    """A matrix kernel: decode (one token) keeps one accumulator, prefill tiles of LIN_TILE
    tokens; the branch is the same for every thread of the launch."""
    return (f'extern "C" __global__ void {name}(KARGS) {{ if (a[2] == 1) {body}<{T}, 1>(a, d); '
            f'else {body}<{T}, LIN_TILE>(a, d); }}')


def _entries() -> dict:
    """kernel name -> the line that instantiates it from a template."""
    ext = 'extern "C" __global__ void {}(KARGS) {{ {}(a, d); }}'
    e = {}
    for t, ld in FLOATS.items():
        e[f"ingot_embed_{t}"] = ext.format(f"ingot_embed_{t}", f"embed_float<{ld}>")
        e[f"ingot_linear_{t}"] = _lin(f"ingot_linear_{t}", "lin_warp", f"FloatRows<{ld}>")
        e[f"ingot_linear_t_{t}"] = ext.format(f"ingot_linear_t_{t}",
                                              f"lin_float_tiled<FloatRows<{ld}> >")
    for t, h in HALVES.items():
        e[f"ingot_linear_h_{t}"] = ext.format(f"ingot_linear_h_{t}", f"lin_half_wmma<{h}>")
    for q in FORMATS:
        e[f"ingot_embed_{q}"] = ext.format(f"ingot_embed_{q}", f"embed_quant<Q_{q}>")
        e[f"ingot_linear_{q}"] = _lin(f"ingot_linear_{q}", "lin_warp", f"BlockRows<Q_{q}>")
        e[f"ingot_linear_q8_{q}"] = _lin(f"ingot_linear_q8_{q}", "lin_q8_tile", f"Q_{q}")
        e[f"ingot_linear_q8t_{q}"] = ext.format(f"ingot_linear_q8t_{q}", f"lin_q8_tiled<Q_{q}>")
        e[f"ingot_linear_q8m_{q}"] = ext.format(f"ingot_linear_q8m_{q}", f"lin_q8_wmma<Q_{q}>")
        e[f"ingot_linear_t_{q}"] = ext.format(f"ingot_linear_t_{q}",
                                              f"lin_float_tiled<BlockRows<Q_{q}> >")
    call = 'extern "C" __global__ void {}(KARGS) {{ {}; }}'
    for sfx, rows in ROW_VARIANTS:
        e[f"ingot_rope{sfx}"] = ext.format(f"ingot_rope{sfx}", f"rope<{rows}>")
        for t, kv in KV.items():
            e[f"ingot_kv_store{sfx}_{t}"] = ext.format(f"ingot_kv_store{sfx}_{t}",
                                                       f"kv_store<{kv}, {rows}>")
            e[f"ingot_attention{sfx}_{t}"] = call.format(f"ingot_attention{sfx}_{t}",
                                                         f"attention<{kv}, {rows}>(a, d, 1)")
            if not sfx:  # one sequence's prefill
                e[f"ingot_attention_t_{t}"] = ext.format(f"ingot_attention_t_{t}",
                                                         f"attention_tiled<{kv}>")
            e[f"ingot_attention_split{sfx}_{t}"] = call.format(
                f"ingot_attention_split{sfx}_{t}", f"attention<{kv}, {rows}>(a, d, a[16])")
    return e


ENTRIES = _entries()
KERNELS = FIXED + tuple(ENTRIES)
CU_DIR = Path(__file__).with_name("cu")


def kernel_source(used_kernels=None) -> str:
    """The .cu text: shared code, then an entry point for each used kernel (all when None)."""
    used = set(KERNELS) if used_kernels is None else set(used_kernels)
    unknown = sorted(used - set(KERNELS))
    if unknown:
        raise IngotError(f"CUDA kernel library: no kernel named {', '.join(unknown)}")
    parts = [(CU_DIR / "common.cuh").read_text(), (CU_DIR / "ops.cu").read_text(),
             (CU_DIR / "attention.cu").read_text(), formats_source(FORMATS),
             (CU_DIR / "matrix.cu").read_text(), "// Entry points\n"]
    parts += [ENTRIES[k] + "\n" for k in ENTRIES if k in used]
    return "\n".join(parts)
