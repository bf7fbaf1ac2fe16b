"""How each graph op becomes CUDA kernel launches, and the kernel library's source.

The renderer table mirrors targets/cpu/step_source.py's: the same arguments in the same order,
as 64-bit words a launch resolves at run time (Word: a base plus c0 + c1 * n), with grids that
may grow with n, the step's token count (Dim). The kernels' source: source.py.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol

from ...compiler.ir import Op, Tensor, kv_row_layout
from ...errors import IngotError
from ..cpu.kernels import ACT_CODES
from .formats import FORMATS, block_size
from .source import CU_DIR, FLOATS, HALVES, KERNELS, KV, kernel_source

__all__ = ["Word", "Dim", "Launch", "Ctx", "RENDERERS", "kernel_source", "scratch_bytes",
           "linear_launches", "attention_splits", "q8_row", "KERNELS", "CU_DIR", "Q8_FORMATS"]


@dataclass(frozen=True)
class Word:
    """resolved = base[kind] + c0 + c1 * n; kind "i" integer (base 0), "f" float32 bits
    (c1 == 0), "w" weights, "a" arena, "k" KV/state, "s" scratch."""
    kind: str
    c0: int | float
    c1: int = 0


@dataclass(frozen=True)
class Dim:
    """ceil((c0 + c1 * n) / div)."""
    c0: int
    c1: int = 0
    div: int = 1


@dataclass(frozen=True)
class Launch:
    kernel: str
    args: tuple   # of Word
    grid: tuple   # 3 Dim
    block: tuple  # 3 ints
    shared: int   # dynamic shared-memory bytes


class Ctx(Protocol):
    def act(self, t) -> Word: ...
    def weight(self, w) -> Word: ...
    def state(self, t) -> Word: ...


# Block types whose matrices take 8-bit activations and integer dots (dp4a, WMMA): the CPU's
# q8 kernels' set (the codebook types keep float activations there too, so both targets round
# alike).
Q8_FORMATS = tuple(f for f in FORMATS if f not in ("iq4_nl", "mxfp4"))
LIN_WARPS, LIN_TILE, TQ_TILE, ATT_MAX_D = 4, 8, 64, 512  # as cu/matrix.cu, cu/attention.cu
ATP_Q, ATP_MAX_D = 8, 256  # prefill attention in tiles: (query, head) pairs a block, head dims
ATT_WARPS = {"decode": 8, "prefill": 4}  # per (token, head): a lone token's keys split 8 ways
# Decode over caches of ATT_SPLIT_MIN_KEYS rows or more: keys split across up to
# ATT_MAX_SPLITS blocks a head, for about ATT_SPLIT_BLOCKS blocks in all.
ATT_SPLIT_MIN_KEYS, ATT_MAX_SPLITS, ATT_SPLIT_BLOCKS = 1024, 16, 64


def q8_row(k: int) -> int:
    """Scratch bytes of one row of 8-bit activations (matrix.cu q8_row)."""
    return (k + k // 8 + 15) // 16 * 16


def scratch_bytes(graph, max_tokens: int, decode_rows: int = 1) -> int:
    """Global scratch, used by one node at a time: the largest step's 8-bit activation rows,
    or the split attention partials of a decode step's `decode_rows` rows (the batched step's
    rows split too)."""
    need = [max_tokens * q8_row(n.weights["w"].shape[1]) for n in graph.nodes
            if n.op is Op.LINEAR and n.weights["w"].dtype in Q8_FORMATS]
    need += [4 * decode_rows * n.attrs["n_heads"] * attention_splits(n.attrs)
             * (n.attrs["head_dim"] + 2) for n in graph.nodes if n.op is Op.ATTENTION]
    return max(need, default=0)


# --- renderers ---

def _rows(t: Tensor) -> Word:
    return Word("i", 0, 1) if t.rows == "T" else Word("i", int(t.rows))


def _rows_dim(t: Tensor, div: int = 1) -> Dim:
    return Dim(0, 1, div) if t.rows == "T" else Dim(int(t.rows), 0, div)


def _per_row(c) -> bool:
    """Each row is one token of its own sequence's decode (the decode and batched steps): the
    single-row kernels (a warp a matrix row, attention split 8 warps and across blocks)."""
    return getattr(c, "fixed_n", None) == 1 or getattr(c, "batch", False)


def _placed(c) -> str:
    """The kernel name suffix of the batched step's variants that read each row's position
    and KV slot from the row table (source.py ROW_VARIANTS)."""
    return "_rows" if getattr(c, "batch", False) else ""


def _i(v) -> Word:
    return Word("i", int(v))


def _f(v) -> Word:
    return Word("f", float(v))


def _threads(cols: int) -> int:
    """A block for one row's reduction: whole warps, up to 256 threads."""
    return min(256, (cols + 31) // 32 * 32)


def _launch(kernel, args, grid, block) -> Launch:
    grid = tuple(grid) + (Dim(1),) * (3 - len(grid))
    return Launch(kernel, tuple(args), grid, (int(block), 1, 1), 0)


def _cols_grid(t: Tensor, cols: int):
    return (Dim(cols, 0, 256), _rows_dim(t))


def _embed(c, n):
    w, tok, y = n.weights["w"], n.inputs[0], n.outputs[0]
    dim = w.shape[1]
    args = (c.act(tok), _rows(tok), c.weight(w), _i(dim), _f(n.attrs.get("scale", 1.0)),
            c.act(y))
    if w.dtype in FLOATS:
        return [_launch(f"ingot_embed_{w.dtype}", args, _cols_grid(tok, dim), 256)]
    if w.dtype in FORMATS:
        _whole_blocks(w, dim)
        return [_launch(f"ingot_embed_{w.dtype}", args, (Dim(dim // 8, 0, 128), _rows_dim(tok)),
                        128)]
    raise IngotError(f"the CUDA target has no embedding kernel for {w.dtype} tables")


def _whole_blocks(w, k: int) -> None:
    if k % block_size(w.dtype):
        raise IngotError(f"weight {w.name}: rows of {k} values are not whole {w.dtype} blocks "
                         f"of {block_size(w.dtype)}")


def _linear(c, n):
    # Prefill over the step's tokens takes the tiled kernel; decode, the batched step's few
    # rows and the one row of logits, the warp-per-row kernel.
    tiled = not _per_row(c) and n.inputs[0].rows == "T"
    return linear_launches(c, n, n.weights["w"].dtype in Q8_FORMATS, tiled)


def linear_launches(c, n, q8: bool, tiled: bool = False, mma: bool = True) -> list:
    """A LINEAR node's launches: with q8 (block types only), quantize the activations to 8 bits
    into scratch, then an integer-dot kernel; else a float kernel. Tiled: 64 rows x 64 tokens a
    block (prefill), with q8 on int8 tensor cores (WMMA) unless not mma (then dp4a), f16 and
    bf16 weights on 16-bit tensor cores unless not mma (then float FMA); else a
    warp a row (decode, single rows: dp4a)."""
    x, y, w = n.inputs[0], n.outputs[0], n.weights["w"]
    N, K = w.shape
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(K), c.weight(w), _i(N),
            c.weight(n.weights.get("b")), c.act(y))
    grid = (Dim(N, 0, LIN_WARPS), _rows_dim(x, LIN_TILE))
    if w.dtype in FORMATS:
        _whole_blocks(w, K)
    if q8 and w.dtype in FORMATS:
        q = Word("s", 0)
        quant = _launch("ingot_quantize_q8", (c.act(x), _i(x.row_stride), _rows(x), _i(K), q),
                        (Dim(K, 0, 256), _rows_dim(x)), 256)
        if tiled:
            kernel = f"ingot_linear_q8{'m' if mma else 't'}_{w.dtype}"
            return [quant, _launch(kernel, args + (q,), (Dim(N, 0, TQ_TILE), _rows_dim(x, TQ_TILE)),
                                   256)]
        return [quant, _launch(f"ingot_linear_q8_{w.dtype}", args + (q,), grid, 32 * LIN_WARPS)]
    if w.dtype in HALVES and tiled and mma:  # f16 / bf16 tensor cores
        return [_launch(f"ingot_linear_h_{w.dtype}", args,
                        (Dim(N, 0, TQ_TILE), _rows_dim(x, TQ_TILE)), 256)]
    if (w.dtype in FLOATS or w.dtype in FORMATS) and tiled:
        return [_launch(f"ingot_linear_t_{w.dtype}", args,
                        (Dim(N, 0, TQ_TILE), _rows_dim(x, TQ_TILE)), 256)]
    if w.dtype in FLOATS or w.dtype in FORMATS:
        return [_launch(f"ingot_linear_{w.dtype}", args, grid, 32 * LIN_WARPS)]
    raise IngotError(f"the CUDA target has no matrix kernel for {w.dtype} weights")


def _rmsnorm(c, n):
    x, y, a = n.inputs[0], n.outputs[0], n.attrs
    group = a.get("group") or x.cols
    if x.cols % group:
        raise IngotError(f"RMSNorm over groups of {group} of {x.cols} columns")
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(x.cols), _i(group),
            c.weight(n.weights["w"]), _f(a["eps"]), _f(1.0 if a.get("unit_offset") else 0.0),
            c.act(y), _i(y.row_stride))
    return [_launch("ingot_rmsnorm", args, (Dim(x.cols // group), _rows_dim(x)), _threads(group))]


def _add_rmsnorm(c, n):
    (p, q), (s, y), a = n.inputs, n.outputs, n.attrs
    args = (c.act(p), c.act(q), _rows(p), _i(p.cols), c.weight(n.weights["w"]), _f(a["eps"]),
            _f(1.0 if a.get("unit_offset") else 0.0), c.act(s), c.act(y))
    return [_launch("ingot_add_rmsnorm", args, (Dim(1), _rows_dim(p)), _threads(p.cols))]


def _layernorm(c, n):
    x, y = n.inputs[0], n.outputs[0]
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(x.cols), c.weight(n.weights["w"]),
            c.weight(n.weights.get("b")), _f(n.attrs["eps"]), c.act(y))
    return [_launch("ingot_layernorm", args, (Dim(1), _rows_dim(x)), _threads(x.cols))]


def _act(c, n):
    x = n.inputs[0]
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(x.cols), _i(ACT_CODES[n.attrs["act"]]),
            c.act(n.outputs[0]))
    return [_launch("ingot_act", args, _cols_grid(x, x.cols), 256)]


def _rope(c, n):
    x, y, a = n.inputs[0], n.outputs[0], n.attrs
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(a["n_heads"]), _i(a["head_dim"]),
            _i(a["rot_dim"]), _i(bool(a["neox"])), c.weight(n.weights["cos"]),
            c.weight(n.weights["sin"]), c.act(y))
    return [_launch(f"ingot_rope{_placed(c)}", args, (Dim(a["n_heads"]), _rows_dim(x)), 64)]


def attention_splits(attrs) -> int:
    """Blocks per (token, head) for decode: a long cache's keys split so that the heads fill
    about ATT_SPLIT_BLOCKS blocks (merged by a second launch); short caches take one."""
    if attrs["ring"] < ATT_SPLIT_MIN_KEYS:
        return 1
    return max(1, min(ATT_MAX_SPLITS, -(-ATT_SPLIT_BLOCKS // attrs["n_heads"])))


def _attention(c, n):
    q, k, v = n.inputs
    a = n.attrs
    kcs, vcs = n.states["k_cache"], n.states["v_cache"]
    dt, H, KVH, D = kcs.dtype, a["n_heads"], a["n_kv_heads"], a["head_dim"]
    if dt not in KV:
        raise IngotError(f"the CUDA target has no KV cache of type {dt}")
    if D > ATT_MAX_D or H % KVH:
        raise IngotError(f"CUDA attention: head_dim {D} (at most {ATT_MAX_D}) and {H} heads "
                         f"over {KVH} kv heads are not supported")
    row_bytes, soff = kv_row_layout(dt, KVH, D)
    decode, sfx = _per_row(c), _placed(c)
    warps = ATT_WARPS["decode" if decode else "prefill"]
    cache = (_i(int(a["ring"])), _i(row_bytes), _i(soff))
    store = (c.act(k), _i(k.row_stride), c.act(v), _i(v.row_stride), _rows(q), _i(KVH), _i(D),
             c.state(kcs), c.state(vcs)) + cache
    attend = (c.act(q), _i(q.row_stride), _rows(q), _i(H), _i(KVH), _i(D), c.state(kcs),
              c.state(vcs)) + cache + (_f(a["scale"]), _i(a["window"] or 0),
                                       _f(a["softcap"] or 0.0), c.act(n.outputs[0]))
    launches = [_launch(f"ingot_kv_store{sfx}_{dt}", store, (Dim(KVH), _rows_dim(q)), 32)]
    if not decode and D <= ATP_MAX_D:  # prefill: K and V tiles shared by ATP_Q queries
        hb = next(b for b in (8, 4, 2, 1) if (H // KVH) % b == 0)  # heads of a group a block
        return launches + [_launch(f"ingot_attention_t_{dt}", attend + (_i(hb),),
                                   (Dim(H // hb), _rows_dim(q, ATP_Q // hb)), 32 * ATP_Q)]
    S = attention_splits(a) if decode else 1
    if S == 1:
        return launches + [_launch(f"ingot_attention{sfx}_{dt}", attend, (Dim(H), _rows_dim(q)),
                                   32 * warps)]
    part = Word("s", 0)  # S partial results per (token, head): max, sum, D values
    merge = (part, _rows(q), _i(H), _i(D), _i(S), c.act(n.outputs[0]))
    return launches + [
        _launch(f"ingot_attention_split{sfx}_{dt}", attend + (part, _i(S)),
                (Dim(H), _rows_dim(q), Dim(S)), 32 * warps),
        _launch("ingot_attention_merge", merge, (Dim(H), _rows_dim(q)), 128)]


def _mul_act(c, n):
    p, q = n.inputs
    args = (c.act(p), _i(p.row_stride), c.act(q), _i(q.row_stride), _rows(p), _i(p.cols),
            _i(ACT_CODES[n.attrs.get("act", "silu")]), c.act(n.outputs[0]))
    return [_launch("ingot_mul_act", args, _cols_grid(p, p.cols), 256)]


def _swiglu(c, n):
    x = n.inputs[0]
    f = x.cols // 2
    base = c.act(x)
    up = Word(base.kind, base.c0 + 4 * f, base.c1)
    args = (base, _i(x.row_stride), up, _i(x.row_stride), _rows(x), _i(f),
            _i(ACT_CODES[n.attrs.get("act", "silu")]), c.act(n.outputs[0]))
    return [_launch("ingot_mul_act", args, _cols_grid(x, f), 256)]


def _add(c, n):
    p, q = n.inputs
    args = (c.act(p), _i(p.row_stride), c.act(q), _i(q.row_stride), _rows(p), _i(p.cols),
            c.act(n.outputs[0]))
    return [_launch("ingot_add", args, _cols_grid(p, p.cols), 256)]


def _scale(c, n, softcap: bool):
    x = n.inputs[0]
    args = (c.act(x), _i(x.row_stride), _rows(x), _i(x.cols), _f(n.attrs["c"]), _i(softcap),
            c.act(n.outputs[0]))
    return [_launch("ingot_scale", args, _cols_grid(x, x.cols), 256)]


RENDERERS: dict[Op, Callable] = {
    Op.EMBED: _embed, Op.LINEAR: _linear, Op.RMSNORM: _rmsnorm, Op.ADD_RMSNORM: _add_rmsnorm,
    Op.LAYERNORM: _layernorm, Op.ACT: _act, Op.ROPE: _rope, Op.ATTENTION: _attention,
    Op.MUL_ACT: _mul_act, Op.SWIGLU: _swiglu, Op.ADD: _add,
    Op.SCALE: lambda c, n: _scale(c, n, False), Op.SOFTCAP: lambda c, n: _scale(c, n, True),
}
