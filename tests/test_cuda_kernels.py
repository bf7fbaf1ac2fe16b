"""The CUDA kernels' numerics, on the CPU harness (the same .cu source built by g++ with the
thread shim), against numpy float64 references on odd shapes.

Each test builds graph nodes, renders them with the CUDA renderer table, resolves the launches'
words against numpy buffers (every address an "i" word: an absolute host address) and runs
them. Tolerances, float32 against float64:
- sums of K products accumulate K float32 roundings (|err| <= K * 2^-24 * sum |products|, about
  1.3e-5 of it for K = 224): the bound is 1e-4 of the sum of the products' sizes, as the CPU
  kernel tests use; norms likewise over their row;
- element-wise ops go through expf / tanhf / erff (a few ulp): 1e-5 relative, 1e-6 absolute;
- 8-bit activations: the CPU q8 tests' two bounds (tests/test_q8_kernels.py): exact against
  the quantized activations' float64 product, and half a code step of each block against the
  unquantized one.
"""
from __future__ import annotations

import ctypes
import math
import struct

import numpy as np
import pytest

from ingot.compiler.ir import Node, Op, Tensor, Weight, kv_row_layout
from ingot.targets.cuda.formats import FORMATS, block_size
from ingot.targets.cuda.kernel_table import (CU_DIR, Q8_FORMATS, RENDERERS, Word,
                                             kernel_source, linear_launches, q8_row)
from ingot.targets.cuda.sim.build import build_sim
from q8_activations import quantize_like_kernel

pytestmark = pytest.mark.xdist_group("cuda_sim")  # one worker builds the harness once
GUARD = 64  # floats past every output that must stay untouched


@pytest.fixture(scope="session")
def sim(tmp_path_factory):
    lib = ctypes.CDLL(str(build_sim(kernel_source(), tmp_path_factory.mktemp("cuda_sim"))))
    lib.ingot_sim_launch.restype = ctypes.c_int
    return lib


class Ctx:
    """Renderer context over numpy buffers: tensors, weights and states by absolute address."""

    def __init__(self):
        self.buf = {}  # id(tensor / weight) -> ndarray

    def put(self, obj, arr):
        self.buf[id(obj)] = arr
        return arr

    def act(self, t):
        root = t.root
        off = self.buf[id(root)].ctypes.data + 4 * t.col_offset
        if t.last_row:
            return Word("i", off - 4 * t.row_stride, 4 * t.row_stride)
        return Word("i", off)

    def weight(self, w):
        return Word("i", 0) if w is None else Word("i", self.buf[id(w)].ctypes.data)

    def state(self, t):
        return Word("i", self.buf[id(t)].ctypes.data)


def run(sim, launches, n, pos=0, scratch=None):
    """Resolve and launch in order (words: base + c0 + c1 * n; "s" words from `scratch`)."""
    sb = scratch.ctypes.data if scratch is not None else 0
    d = np.array([pos, n], np.int64)
    u3 = ctypes.c_uint * 3
    for l in launches:
        words = []
        for w in l.args:
            if w.kind == "f":
                words.append(struct.unpack("<i", struct.pack("<f", w.c0))[0])
            else:
                words.append({"i": 0, "s": sb}[w.kind] + int(w.c0) + int(w.c1) * n)
        a = np.array(words, np.int64)
        grid = [-(-(g.c0 + g.c1 * n) // g.div) for g in l.grid]
        rc = sim.ingot_sim_launch(l.kernel.encode(), u3(*grid), u3(*l.block), l.shared,
                                  ctypes.c_void_p(a.ctypes.data), ctypes.c_void_p(d.ctypes.data))
        assert rc == 0, f"{l.kernel}: launch failed ({rc})"


def out(ctx, t, n):
    """A fresh output buffer for t (NaN-filled, with a guard)."""
    rows = n if t.rows == "T" else t.rows
    return ctx.put(t, np.full(rows * t.cols + GUARD, np.nan, np.float32))


def act_in(ctx, t, n, rng, stride=None):
    """Random input rows for t with row stride `stride` (a wider root: columns past cols must
    not be read, so they are NaN)."""
    stride = stride or t.cols
    a = np.full((n, stride), np.nan, np.float32)
    a[:, :t.cols] = rng.standard_normal((n, t.cols))
    if stride != t.cols:
        root = Tensor(t.name + ".root", "T", stride)
        t.base, t.col_offset = root, 0
        ctx.put(root, a.reshape(-1))
    else:
        ctx.put(t, a.reshape(-1))
    return a[:, :t.cols].astype(np.float64)


def check(got, want, tol, what):
    err = np.abs(got - want)
    assert (err <= tol).all(), \
        f"{what}: max err {err.max():.3g}, worst ratio {(err / tol).max():.3g}"


def weight(ctx, name, arr, dtype="f32", shape=None):
    """A weight stored as `dtype` from float values, or (block types) from its raw bytes with
    the float `shape` given."""
    w = Weight(name, shape or arr.shape, dtype, ("array", arr))
    if dtype == "f32":
        data = arr.astype(np.float32)
    elif dtype == "f16":
        data = arr.astype(np.float16)
    elif dtype == "bf16":
        data = (arr.astype(np.float32).view(np.uint32) >> 16).astype(np.uint16)
    else:
        data = arr  # raw block bytes
    ctx.put(w, np.ascontiguousarray(data))
    return w


def widened(ctx, w):
    """The float64 values of a float-typed weight as stored."""
    a = ctx.buf[id(w)]
    if w.dtype == "bf16":
        return (a.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
    return a.astype(np.float64)


NS = (1, 3, 17)


def test_every_op_has_a_renderer():
    assert set(RENDERERS) == set(Op)


def test_shapes_the_kernels_cannot_take_are_one_line_errors():
    from ingot.errors import IngotError
    ctx = Ctx()
    x, y = Tensor("x", "T", 100), Tensor("y", "T", 5)
    ctx.put(x, np.zeros(100, np.float32)), ctx.put(y, np.zeros(5, np.float32))
    w = weight(ctx, "w", np.zeros((5, 18 * 3), np.uint8), "q4_0", (5, 100))
    with pytest.raises(IngotError, match="not whole q4_0 blocks"):
        RENDERERS[Op.LINEAR](ctx, Node(Op.LINEAR, [x], [y], {}, {"w": w}))
    w = weight(ctx, "w", np.zeros((5, 100), np.float32), "f8")
    with pytest.raises(IngotError, match="no matrix kernel for f8"):
        RENDERERS[Op.LINEAR](ctx, Node(Op.LINEAR, [x], [y], {}, {"w": w}))


# --- norms ---

@pytest.mark.parametrize("n", NS)
def test_rmsnorm_rows_and_groups(sim, n):
    rng = np.random.default_rng(n)
    for cols, group, unit, stride in ((200, None, False, 232), (96, 24, True, 96),
                                      (300, 300, True, 300)):
        ctx = Ctx()
        x, y = Tensor("x", "T", cols), Tensor("y", "T", cols)
        xv = act_in(ctx, x, n, rng, stride)
        g = group or cols
        w = weight(ctx, "w", rng.standard_normal(g).astype(np.float32))
        node = Node(Op.RMSNORM, [x], [y], {"eps": 1e-5, "group": group, "unit_offset": unit},
                    {"w": w})
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.RMSNORM](ctx, node), n)
        xg = xv.reshape(n, cols // g, g)
        r = 1 / np.sqrt((xg ** 2).mean(axis=2, keepdims=True) + 1e-5)
        want = (xg * r * (widened(ctx, w) + unit)).reshape(n, cols)
        check(yb[:n * cols].reshape(n, cols), want, 1e-4 * np.abs(want) + 1e-6, "rmsnorm")
        assert np.isnan(yb[n * cols:]).all()


@pytest.mark.parametrize("n", NS)
def test_add_rmsnorm_and_layernorm(sim, n):
    rng = np.random.default_rng(10 + n)
    cols = 232
    ctx = Ctx()
    p, q, s, y = (Tensor(k, "T", cols) for k in "pqsy")
    pv, qv = act_in(ctx, p, n, rng), act_in(ctx, q, n, rng)
    w = weight(ctx, "w", rng.standard_normal(cols).astype(np.float32))
    node = Node(Op.ADD_RMSNORM, [p, q], [s, y], {"eps": 1e-6, "unit_offset": True}, {"w": w})
    sb, yb = out(ctx, s, n), out(ctx, y, n)
    run(sim, RENDERERS[Op.ADD_RMSNORM](ctx, node), n)
    sw = pv + qv
    want = sw / np.sqrt((sw ** 2).mean(axis=1, keepdims=True) + 1e-6) * (widened(ctx, w) + 1)
    check(sb[:n * cols].reshape(n, cols), sw, 1e-6 * np.abs(sw), "add_rmsnorm sum")
    check(yb[:n * cols].reshape(n, cols), want, 1e-4 * np.abs(want) + 1e-6, "add_rmsnorm")
    for with_bias in (False, True):
        ctx = Ctx()
        x, y = Tensor("x", "T", cols), Tensor("y", "T", cols)
        act_in(ctx, x, n, rng, cols + 40)
        root = ctx.buf[id(x.root)]
        root[:] = root * 3 + 5  # an offset: the variance must be taken about the mean
        xv = root.reshape(n, -1)[:, :cols].astype(np.float64)
        w = weight(ctx, "w", rng.standard_normal(cols).astype(np.float32))
        b = weight(ctx, "b", rng.standard_normal(cols).astype(np.float32)) if with_bias else None
        node = Node(Op.LAYERNORM, [x], [y], {"eps": 1e-5}, {"w": w, "b": b})
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.LAYERNORM](ctx, node), n)
        c = xv - xv.mean(axis=1, keepdims=True)
        want = c / np.sqrt((c ** 2).mean(axis=1, keepdims=True) + 1e-5) * widened(ctx, w)
        if with_bias:
            want = want + widened(ctx, b)
        check(yb[:n * cols].reshape(n, cols), want, 1e-4 * np.abs(want) + 1e-5, "layernorm")


# --- element-wise ---

ACTS = {
    "silu": lambda x: x / (1 + np.exp(-x)),
    "gelu_tanh": lambda x: 0.5 * x * (1 + np.tanh(0.7978845608028654 * (x + 0.044715 * x ** 3))),
    "gelu": lambda x: 0.5 * x * (1 + np.vectorize(math.erf)(x / np.sqrt(2))),
}


@pytest.mark.parametrize("n", NS)
def test_elementwise_ops(sim, n):
    rng = np.random.default_rng(20 + n)
    cols = 300
    for act, f in ACTS.items():
        # ACT on a strided view; MUL_ACT on two inputs; SWIGLU on one fused [gate | up].
        ctx = Ctx()
        x, y = Tensor("x", "T", cols), Tensor("y", "T", cols)
        xv = act_in(ctx, x, n, rng, cols + 8)
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.ACT](ctx, Node(Op.ACT, [x], [y], {"act": act})), n)
        want = f(xv)
        check(yb[:n * cols].reshape(n, cols), want, 1e-5 * np.abs(want) + 1e-6, act)
        assert np.isnan(yb[n * cols:]).all()
        ctx = Ctx()
        g, u = Tensor("g", "T", cols), Tensor("u", "T", cols)
        gv, uv = act_in(ctx, g, n, rng, cols + 3), act_in(ctx, u, n, rng)
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.MUL_ACT](ctx, Node(Op.MUL_ACT, [g, u], [y], {"act": act})), n)
        want = f(gv) * uv
        check(yb[:n * cols].reshape(n, cols), want, 1e-5 * np.abs(want) + 1e-6, "mul " + act)
        ctx = Ctx()
        gu = Tensor("gu", "T", 2 * cols)
        guv = act_in(ctx, gu, n, rng)
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.SWIGLU](ctx, Node(Op.SWIGLU, [gu], [y], {"act": act})), n)
        want = f(guv[:, :cols]) * guv[:, cols:]
        check(yb[:n * cols].reshape(n, cols), want, 1e-5 * np.abs(want) + 1e-6, "swiglu " + act)
    ctx = Ctx()
    p, q, y = Tensor("p", "T", cols), Tensor("q", "T", cols), Tensor("y", "T", cols)
    pv, qv = act_in(ctx, p, n, rng, cols + 5), act_in(ctx, q, n, rng, cols + 7)
    yb = out(ctx, y, n)
    run(sim, RENDERERS[Op.ADD](ctx, Node(Op.ADD, [p, q], [y])), n)
    check(yb[:n * cols].reshape(n, cols), pv + qv, 1e-6 * np.abs(pv + qv), "add")
    for op, want in ((Op.SCALE, 2.5 * pv), (Op.SOFTCAP, 2.5 * np.tanh(pv / 2.5))):
        yb = out(ctx, y, n)
        run(sim, RENDERERS[op](ctx, Node(op, [p], [y], {"c": 2.5})), n)
        check(yb[:n * cols].reshape(n, cols), want, 1e-5 * np.abs(want) + 1e-6, op.value)


@pytest.mark.parametrize("n", NS)
def test_rope(sim, n):
    rng = np.random.default_rng(30 + n)
    heads, hd, pos, max_pos = 3, 40, 5, 64
    for neox, rot in ((True, 40), (False, 40), (True, 24), (False, 16)):
        ctx = Ctx()
        half = rot // 2
        ang = np.arange(max_pos)[:, None] * (10000.0 ** (-np.arange(half) / half))[None, :]
        cos = weight(ctx, "cos", np.cos(ang).astype(np.float32))
        sin = weight(ctx, "sin", np.sin(ang).astype(np.float32))
        x, y = Tensor("x", "T", heads * hd), Tensor("y", "T", heads * hd)
        xv = act_in(ctx, x, n, rng, heads * hd + 16).reshape(n, heads, hd)
        yb = out(ctx, y, n)
        node = Node(Op.ROPE, [x], [y], {"n_heads": heads, "head_dim": hd, "rot_dim": rot,
                                        "neox": neox}, {"cos": cos, "sin": sin})
        run(sim, RENDERERS[Op.ROPE](ctx, node), n, pos=pos)
        c = widened(ctx, cos)[pos:pos + n][:, None, :]
        s = widened(ctx, sin)[pos:pos + n][:, None, :]
        ia = np.arange(half) if neox else 2 * np.arange(half)
        ib = ia + half if neox else ia + 1
        want = xv.copy()
        want[:, :, ia] = xv[:, :, ia] * c - xv[:, :, ib] * s
        want[:, :, ib] = xv[:, :, ib] * c + xv[:, :, ia] * s
        check(yb[:n * heads * hd].reshape(n, heads, hd), want, 1e-5 * np.abs(want) + 1e-6,
              f"rope neox={neox} rot={rot}")


# --- embedding and matrices ---

def test_block_formats_are_the_cpu_kernels():
    """The CUDA decoders cover the CPU kernels' block types, whose sizes agree with the
    registry's (where the CUDA structs take theirs from)."""
    from ingot.quant.registry import get_format
    from ingot.targets.cpu.quant_kernels import BLOCK_TYPES
    from ingot.targets.cuda.formats import struct_source
    assert set(FORMATS) == set(BLOCK_TYPES)
    for name in FORMATS:
        fmt = get_format(name)
        assert (fmt.block_size, fmt.block_bytes) == BLOCK_TYPES[name][1:], name
        assert f"BS = {fmt.block_size}, BB = {fmt.block_bytes}," in struct_source(name), name


def quant_rows(name, N, K, rng):
    from test_quant_kernels import random_rows
    return random_rows(name, N, K, rng)


def test_embed_every_table_type(sim):
    rng = np.random.default_rng(40)
    V, n = 11, 17
    for dtype in ("f32", "f16", "bf16", *FORMATS):
        ctx = Ctx()
        if dtype in FORMATS:
            dim = 3 * block_size(dtype)
            raw, table = quant_rows(dtype, V, dim, rng)
            w = weight(ctx, "emb", raw, dtype, (V, dim))
            table = table.astype(np.float64)
        else:
            dim = 200
            w = weight(ctx, "emb", rng.standard_normal((V, dim)).astype(np.float32), dtype)
            table = widened(ctx, w).reshape(V, dim)
        tok = Tensor("tok", "T", 1, "input", "i32")
        ids = rng.integers(0, V, n).astype(np.int32)
        ids[:2] = (V - 1, V - 1)
        ctx.put(tok, ids)
        y = Tensor("y", "T", dim)
        yb = out(ctx, y, n)
        run(sim, RENDERERS[Op.EMBED](ctx, Node(Op.EMBED, [tok], [y], {"scale": 1.5}, {"w": w})), n)
        want = table[ids] * np.float32(1.5)
        check(yb[:n * dim].reshape(n, dim), want, 1e-6 * np.abs(want) + 1e-30, "embed " + dtype)
        assert np.isnan(yb[n * dim:]).all()


def linear_case(ctx, rng, w, N, K, n, with_bias, last_row):
    """A LINEAR node over a strided x (a NaN-padded wider root); with last_row, x is the last
    row of an n-row matrix and y has one row. Returns (node, x as float64, y buffer, rows of
    y, bias weight or None)."""
    x = Tensor("x", "T", K)
    xv = act_in(ctx, x, n, rng, K + 24)
    if last_row:
        x = Tensor("x[-1]", 1, K, base=x.root, col_offset=x.col_offset, last_row=True)
        xv = xv[-1:]
    rows = xv.shape[0]
    y = Tensor("y", "T" if not last_row else 1, N)
    b = weight(ctx, "b", rng.standard_normal(N).astype(np.float32)) if with_bias else None
    return Node(Op.LINEAR, [x], [y], {}, {"w": w, "b": b}), xv, out(ctx, y, n), rows, b


# (tokens, bias, x the last row of its matrix): 17 tokens are two tiles of 8 and one alone.
CASES = [(n, bias, last) for n in NS for bias in (False, True) for last in (False, True)
         if not (last and n == 1)]


# The 16-bit tensor-core prefill rounds each activation to the weights' type: a product is then
# off by at most its unit roundoff (f16 also by 2^-25 absolute below 2^-14, its subnormals).
HALF_UNIT = {"f16": (2.0 ** -11, 2.0 ** -25), "bf16": (2.0 ** -8, 0.0)}


@pytest.mark.parametrize("dtype", ("f32", "f16", "bf16"))
@pytest.mark.parametrize("K", (192, 44))  # 16-byte loads; K % 8 != 0: one value at a time
def test_linear_float_weights(sim, dtype, K):
    """A warp a row (decode), float FMA tiles and, for f16 / bf16 weights, 16-bit tensor-core
    tiles (WMMA), which a prefill step renders."""
    rng = np.random.default_rng(50 + K)
    N = 37
    for n, with_bias, last in CASES:
        ctx = Ctx()
        w = weight(ctx, "w", rng.standard_normal((N, K)).astype(np.float32), dtype)
        node, xv, yb, rows, b = linear_case(ctx, rng, w, N, K, n, with_bias, last)
        w64 = widened(ctx, w).reshape(N, K)
        b64 = widened(ctx, b) if with_bias else np.zeros(N)
        want = xv @ w64.T + b64
        tol = 1e-4 * (np.abs(xv) @ np.abs(w64).T + np.abs(b64)) + 1e-30
        if rows > 1:
            prefill = RENDERERS[Op.LINEAR](ctx, node)[-1].kernel
            assert prefill == (f"ingot_linear_h_{dtype}" if dtype in HALF_UNIT
                               else f"ingot_linear_t_{dtype}")
        for tiled, mma in ((False, True), (True, False), (True, True)):
            if mma and tiled and dtype not in HALF_UNIT:
                continue
            t = tol
            if tiled and mma:
                u, sub = HALF_UNIT[dtype]
                t = tol + u * (np.abs(xv) @ np.abs(w64).T) + sub * np.abs(w64).sum(1)
            yb[:] = np.nan
            launches = linear_launches(ctx, node, False, tiled, mma)
            run(sim, launches, n)
            check(yb[:rows * N].reshape(rows, N), want, t,
                  f"{dtype} n={n} bias={with_bias} {launches[-1].kernel}")
            assert np.isnan(yb[rows * N:]).all(), "wrote past y"


@pytest.mark.parametrize("name", sorted(FORMATS))
def test_linear_block_formats_float_and_dp4a(sim, name):
    """Every block type through each matrix kernel: float activations (dequantize and FMA)
    and 8-bit activations (dp4a; tiled also on int8 tensor cores, WMMA), a warp a row and
    tiled; a prefill step renders one of them (the WMMA one where the CPU takes 8-bit
    activations too)."""
    rng = np.random.default_rng(60 + sorted(FORMATS).index(name))
    bs = block_size(name)
    N, K = 37, (96 + 32 * 3 if bs == 32 else 3 * bs)
    raw, deq = quant_rows(name, N, K, rng)
    w64 = deq.astype(np.float64)
    for n, with_bias, last in CASES:
        ctx = Ctx()
        w = weight(ctx, "w", raw, name, (N, K))
        node, xv, yb, rows, b = linear_case(ctx, rng, w, N, K, n, with_bias, last)
        if rows > 1:
            xr = ctx.buf[id(node.inputs[0].root)].reshape(n, -1)
            xr[0, :32] = 0.0  # an all-zero 32-block: dx = 0
            xv[0, :32] = 0.0
        b64 = widened(ctx, b) if with_bias else np.zeros(N)
        default = RENDERERS[Op.LINEAR](ctx, node)  # (a prefill step's)
        fl, q8 = linear_launches(ctx, node, False), linear_launches(ctx, node, True)
        flt, q8m = (linear_launches(ctx, node, q, tiled=not last) for q in (False, True))
        q8t = linear_launches(ctx, node, True, tiled=not last, mma=False)
        assert default == (q8m if name in Q8_FORMATS else flt)
        what = f"{name} n={n} bias={with_bias} last_row={last}"
        want = xv @ w64.T + b64
        tol = 1e-4 * (np.abs(xv) @ np.abs(w64).T + np.abs(b64)) + 1e-30
        for kind, launches in (("float", fl), ("float tiled", flt)):
            yb[:] = np.nan
            run(sim, launches, n)
            check(yb[:rows * N].reshape(rows, N), want, tol, f"{kind} {what}")
            assert np.isnan(yb[rows * N:]).all(), "wrote past y"
        xq, dx = quantize_like_kernel(xv)
        exact = xq @ w64.T + b64
        tol = 1e-4 * (np.abs(xq) @ np.abs(w64).T + np.abs(b64)) + 1e-30
        # Half a code step per activation, weighted by the block's |w|.
        wabs = np.abs(w64).reshape(N, K // 32, 32).sum(axis=2)
        q8s = (("dp4a", q8), ("dp4a tiled", q8t)) + ((("wmma", q8m),) if not last else ())
        for kind, launches in q8s:
            scratch = np.full(n * q8_row(K) + 256, 7, np.uint8)
            yb[:] = np.nan
            run(sim, launches, n, scratch=scratch)
            assert (scratch[rows * q8_row(K):] == 7).all(), "wrote past scratch"
            assert np.isnan(yb[rows * N:]).all(), "wrote past y"
            got = yb[:rows * N].reshape(rows, N)
            check(got, exact, tol, f"{kind} {what}")
            check(got, want, (dx / 2) @ wabs.T + tol, f"{kind} (unquantized x) {what}")


# --- KV cache and attention ---

def kv_quantize(x):
    """The q8_0 cache row of a head (float32 [D]) as the CPU writes it: per 32-block (the last
    shorter) d = max|x| / 127 as f16, codes round-half-away(x * (1 / d)). (codes, f16 scales)"""
    codes, scales = [], []
    for j in range(0, len(x), 32):
        blk = x[j:j + 32].astype(np.float32)
        amax = np.float32(np.abs(blk).max())
        dq = np.float32(amax / np.float32(127))
        inv = np.float32(1) / dq if amax > 0 else np.float32(0)
        v = blk * inv
        codes.append(np.trunc(np.where(v >= 0, v + np.float32(0.5), v - np.float32(0.5))))
        scales.append(np.float16(dq))
    return np.concatenate(codes).astype(np.int8), np.array(scales, np.float16)


def cache_values(cache, dt, rows, KV, D):
    """[rows, KV, D] float64 of a cache buffer, read back independently of the kernels."""
    row_bytes, soff = kv_row_layout(dt, KV, D)
    raw = cache[:rows * row_bytes].reshape(rows, row_bytes)
    if dt == "f32":
        return raw.view(np.float32).reshape(rows, KV, D).astype(np.float64)
    if dt == "f16":
        return raw.view(np.float16).reshape(rows, KV, D).astype(np.float64)
    nblk = (D + 31) // 32
    q = raw[:, :KV * D].view(np.int8).reshape(rows, KV, D).astype(np.float64)
    s = raw[:, soff:soff + 2 * KV * nblk].view(np.float16).reshape(rows, KV, nblk)
    return q * np.repeat(s.astype(np.float64), 32, axis=2)[:, :, :D]


ATT_CASES = [  # (cache type, window, ring rows, softcap, head_dim, query heads over 2 kv
    # heads): each head_dim class; 3 heads a group (a tiled block takes one head), 4 and 2
    ("f32", 0, 40, 0.0, 40, 8), ("f16", 0, 40, 5.0, 96, 6), ("q8_0", 0, 40, 0.0, 256, 4),
    ("f32", 6, 22, 0.0, 300, 6), ("q8_0", 6, 22, 3.0, 40, 8), ("f16", 6, 22, 0.0, 72, 6),
]


@pytest.mark.parametrize("dt,window,ring,cap,D,H", ATT_CASES)
def test_kv_store_and_attention(sim, monkeypatch, dt, window, ring, cap, D, H):
    """Three steps into one cache (17 tokens from position 0, 8 from 17, one at 25; a window's
    ring of 22 rows wraps), GQA (H query heads over 2 kv heads), head dims that end in a short
    q8_0 block, one for each of the kernel's register layouts (up to 64, 128, 256, 512). The
    decode step splits its keys across blocks (as long caches do; some splits get none); the
    prefill steps run the tiled kernel (blocks of 8 (query, head) pairs: 8 queries of one head,
    4 of 2 heads or 2 of 4 heads of a group; the last block part-filled; keys in tiles of 16,
    the last part-filled) but for head_dim 300 (the untiled one)."""
    from ingot.targets.cuda import kernel_table
    monkeypatch.setattr(kernel_table, "ATT_SPLIT_MIN_KEYS", 0)
    rng = np.random.default_rng(70 + ATT_CASES.index((dt, window, ring, cap, D, H)))
    KVH, scale = 2, 1 / np.sqrt(D)
    row_bytes, soff = kv_row_layout(dt, KVH, D)
    ctx = Ctx()
    kc = Tensor("k_cache", ring, KVH * D, "state", dt)
    vc = Tensor("v_cache", ring, KVH * D, "state", dt)
    ctx.put(kc, np.zeros(ring * row_bytes + 64, np.uint8))
    ctx.put(vc, np.zeros(ring * row_bytes + 64, np.uint8))
    hist_k, hist_v = {}, {}
    for pos, n in ((0, 17), (17, 8), (25, 1)):
        ctx.fixed_n = 1 if n == 1 else None  # the decode step's launch: 8 warps
        q, k, v = (Tensor(c, "T", cols) for c, cols in (("q", H * D), ("k", KVH * D),
                                                        ("v", KVH * D)))
        qv = act_in(ctx, q, n, rng, H * D + 8).reshape(n, H, D)
        kv_in = act_in(ctx, k, n, rng, KVH * D + 16).reshape(n, KVH, D)
        vv = act_in(ctx, v, n, rng).reshape(n, KVH, D) * 2
        ctx.buf[id(v)][:] *= 2
        o = Tensor("o", "T", H * D)
        ob = out(ctx, o, n)
        node = Node(Op.ATTENTION, [q, k, v], [o],
                    {"n_heads": H, "n_kv_heads": KVH, "head_dim": D, "ring": ring,
                     "window": window, "softcap": cap, "scale": scale},
                    states={"k_cache": kc, "v_cache": vc})
        launches = RENDERERS[Op.ATTENTION](ctx, node)
        assert len(launches) == (3 if n == 1 else 2)  # store, attend (split, merge)
        if n > 1:  # prefill: in tiles of K and V shared by 8 queries, up to head_dim 256
            tiled = f"ingot_attention_t_{dt}"
            assert (launches[1].kernel == tiled) == (D <= 256), launches[1].kernel
        used = H * kernel_table.attention_splits(node.attrs) * (D + 2)  # floats, one token
        scratch = np.full(used + GUARD, np.nan, np.float32)
        run(sim, launches, n, pos=pos, scratch=scratch)
        assert np.isnan(scratch[used:]).all(), "wrote past the partials"
        # The store: this step's rows, bit for bit for q8_0 (the CPU's rounding).
        kcv = cache_values(ctx.buf[id(kc)], dt, ring, KVH, D)
        vcv = cache_values(ctx.buf[id(vc)], dt, ring, KVH, D)
        for t in range(n):
            p = pos + t
            hist_k[p], hist_v[p] = kcv[p % ring], vcv[p % ring]
            if dt == "q8_0":
                raw = ctx.buf[id(kc)][(p % ring) * row_bytes:][:row_bytes]
                for h in range(KVH):
                    codes, sc = kv_quantize(kv_in[t, h].astype(np.float32))
                    assert np.array_equal(raw[h * D:(h + 1) * D].view(np.int8), codes)
                    nb = len(sc)
                    assert np.array_equal(raw[soff + 2 * h * nb:soff + 2 * (h + 1) * nb]
                                          .view(np.float16), sc)
            else:  # f16: rounded to nearest even, as numpy's conversion
                cast = np.float16 if dt == "f16" else np.float32
                assert np.array_equal(hist_k[p], kv_in[t].astype(np.float32).astype(cast))
                assert np.array_equal(hist_v[p], vv[t].astype(np.float32).astype(cast))
        # Attention over positions max(0, p - window + 1)..p, as stored.
        want = np.zeros((n, H, D))
        wv = np.zeros((n, H))
        for t in range(n):
            p = pos + t
            js = range(max(0, p - window + 1) if window else 0, p + 1)
            K_ = np.stack([hist_k[j] for j in js])
            V_ = np.stack([hist_v[j] for j in js])
            for h in range(H):
                g = h // (H // KVH)
                s = K_[:, g] @ qv[t, h] * scale
                if cap:
                    s = cap * np.tanh(s / cap)
                e = np.exp(s - s.max())
                pr = e / e.sum()
                want[t, h] = pr @ V_[:, g]
                wv[t, h] = np.abs(V_[:, g]).max()
        got = ob[:n * H * D].reshape(n, H, D)
        # float32 scores (D products: about D * 2^-24 * |q||k|, which exp turns into that
        # relative error of the weights) and weighted sums: 1e-5 of the largest value times
        # (1 + sum |q|) covers both with room.
        tol = 1e-5 * wv[:, :, None] * (1 + np.abs(qv).sum(axis=2, keepdims=True))
        check(got, want, tol,
              f"attention {dt} window={window} cap={cap} pos={pos}")
        assert np.isnan(ob[n * H * D:]).all()


def test_shim_half_conversions_round_to_nearest_even(tmp_path):
    """The harness's f32 -> f16 -> f32 (shim.h) bit for bit against numpy: ties, subnormals,
    overflow to inf, NaN, signed zeros."""
    common = (CU_DIR / "common.cuh").read_text()
    src = common + """
extern "C" __global__ void ingot_halves(KARGS) {
    const i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < a[0]) { const u16 h = f2h(AFP(1)[i]); ((u16 *)a[2])[i] = h; AOUT(3)[i] = h2f(h); }
}"""
    lib = ctypes.CDLL(str(build_sim(src, tmp_path)))
    rng = np.random.default_rng(5)
    bits = np.concatenate([rng.integers(0, 2 ** 32, 20000, dtype=np.uint64).astype(np.uint32),
                           np.arange(0x33000000, 0x33800000, 4099, dtype=np.uint32),
                           np.arange(0x47000000, 0x47800000, 4099, dtype=np.uint32)])
    ties = (np.arange(-2048, 2048, dtype=np.int64) * 8192 + 4096 + 0x3c000000).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32), ties.view(np.float32),
                        np.float32([0.0, -0.0, np.inf, -np.inf, np.nan, 65504, 65520, 65519.99,
                                    6e-8, 2.98e-8, 2.99e-8, -1e-8])])
    n = len(x)
    h = np.zeros(n, np.uint16)
    back = np.zeros(n, np.float32)
    a = np.array([n, x.ctypes.data, h.ctypes.data, back.ctypes.data], np.int64)
    u3 = ctypes.c_uint * 3
    assert lib.ingot_sim_launch(b"ingot_halves", u3(-(-n // 256), 1, 1), u3(256, 1, 1), 0,
                                ctypes.c_void_p(a.ctypes.data), None) == 0
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    nan = np.isnan(want)
    assert np.isnan(back[nan]).all() and (h[nan] & 0x7c00 == 0x7c00).all()
    assert np.array_equal(h[~nan], want[~nan].view(np.uint16))
    assert np.array_equal(back[~nan], want[~nan].astype(np.float32))


def test_shim_shuffles_and_its_refusals(tmp_path):
    """Warp shuffles pair the lanes the device does; a kernel whose threads reach different
    numbers of barriers fails (-4), as do unknown kernels (-1) and oversized blocks (-2)."""
    src = (CU_DIR / "common.cuh").read_text() + """
extern "C" __global__ void ingot_shuffles(KARGS) {
    const int t = threadIdx.x;
    int *o = (int *)a[0] + 4 * t;
    o[0] = __shfl_xor_sync(FULL, t, 5);
    o[1] = __shfl_down_sync(FULL, t, 3);
    o[2] = __shfl_sync(FULL, t, 7);
    o[3] = (int)block_sum(1.0f, (float *)a[1]);
}
extern "C" __global__ void ingot_diverges(KARGS) {
    if (threadIdx.x < 16) __syncthreads();
}"""
    lib = ctypes.CDLL(str(build_sim(src, tmp_path)))
    o = np.zeros((64, 4), np.int32)
    sh = np.zeros(32, np.float32)
    a = np.array([o.ctypes.data, sh.ctypes.data], np.int64)
    u3 = ctypes.c_uint * 3
    pa = ctypes.c_void_p(a.ctypes.data)

    def launch(name, threads):
        return lib.ingot_sim_launch(name, u3(1, 1, 1), u3(threads, 1, 1), 0, pa, None)
    assert launch(b"ingot_shuffles", 64) == 0
    t = np.arange(64)
    lane, base = t % 32, t - t % 32
    assert (o[:, 0] == base + (lane ^ 5)).all()
    assert (o[:, 1] == np.where(lane + 3 < 32, t + 3, t)).all()
    assert (o[:, 2] == base + 7).all() and (o[:, 3] == 64).all()
    assert launch(b"ingot_diverges", 32) == -4
    assert launch(b"ingot_nope", 32) == -1
    assert launch(b"ingot_shuffles", 2048) == -2


@pytest.mark.parametrize("name", ("q4_0", "q6_k", "mxfp4", "f16", "bf16"))
def test_tiled_prefill_crosses_tiles(sim, name):
    """70 rows and 67 tokens: a second tile of each, both partial (the other tests fit one)."""
    rng = np.random.default_rng(90)
    N, n = 70, 67
    ctx = Ctx()
    if name in FORMATS:
        K = 2 * block_size(name)
        raw, deq = quant_rows(name, N, K, rng)
        w = weight(ctx, "w", raw, name, (N, K))
        w64 = deq.astype(np.float64)
    else:
        K = 44  # not a whole chunk of 32, nor of 8
        w = weight(ctx, "w", rng.standard_normal((N, K)).astype(np.float32), name)
        w64 = widened(ctx, w).reshape(N, K)
    node, xv, yb, rows, b = linear_case(ctx, rng, w, N, K, n, True, False)
    launches = RENDERERS[Op.LINEAR](ctx, node)
    kind = 'q8m' if name in Q8_FORMATS else 'h' if name in HALF_UNIT else 't'
    assert launches[-1].kernel == f"ingot_linear_{kind}_{name}"
    run(sim, launches, n, scratch=np.zeros(n * q8_row(K), np.uint8))
    xq = quantize_like_kernel(xv)[0] if name in Q8_FORMATS else xv
    b64 = widened(ctx, b)
    tol = 1e-4 * (np.abs(xq) @ np.abs(w64).T + np.abs(b64)) + 1e-30
    if name in HALF_UNIT:  # activations rounded to the weights' 16-bit type
        u, sub = HALF_UNIT[name]
        tol = tol + u * (np.abs(xq) @ np.abs(w64).T) + sub * np.abs(w64).sum(1)
    check(yb[:n * N].reshape(n, N), xq @ w64.T + b64, tol, f"tiled {name}")
    assert np.isnan(yb[n * N:]).all()


@pytest.mark.parametrize("name", ("q4_0", "q8_0", "q4_k", "q6_k"))
def test_wmma_prefill_is_the_dp4a_kernel(sim, name):
    """The tensor-core prefill kernel (WMMA) against numpy and the tiled dp4a kernel: 70 rows
    and 37 tokens (partial 64-tiles, and not whole 16 x 16 products either). Both kernels take
    the same exact int32 dots; they differ in the float algebra's order only (per 32-block
    d * dot + m * sum over two halves of 16, not four slices of 8, then the same running sum
    of blocks): a few roundings (2^-24 each) per block of terms up to |d code| + |m| a value
    (several |w| for the offset types), so 1e-6 of sum |x| |w| (measured: under 1e-7)."""
    rng = np.random.default_rng(95)
    N, n = 70, 37
    K = 2 * block_size(name) if block_size(name) > 32 else 160
    ctx = Ctx()
    raw, deq = quant_rows(name, N, K, rng)
    w = weight(ctx, "w", raw, name, (N, K))
    w64 = deq.astype(np.float64)
    node, xv, yb, rows, b = linear_case(ctx, rng, w, N, K, n, True, False)
    mma, dp4a = (linear_launches(ctx, node, True, tiled=True, mma=m) for m in (True, False))
    assert mma == RENDERERS[Op.LINEAR](ctx, node) and mma[-1].kernel == f"ingot_linear_q8m_{name}"
    got = {}
    for kind, launches in (("wmma", mma), ("dp4a", dp4a)):
        yb[:] = np.nan
        run(sim, launches, n, scratch=np.zeros(n * q8_row(K), np.uint8))
        assert np.isnan(yb[n * N:]).all(), "wrote past y"
        got[kind] = yb[:n * N].reshape(n, N).astype(np.float64)
    xq = quantize_like_kernel(xv)[0]
    b64 = widened(ctx, b)
    size = np.abs(xq) @ np.abs(w64).T
    check(got["wmma"], xq @ w64.T + b64, 1e-4 * (size + np.abs(b64)) + 1e-30, f"wmma {name}")
    check(got["wmma"], got["dp4a"], 1e-6 * size + 1e-30, f"wmma against dp4a {name}")


WMMA_TEST = """
// D = A B + C per warp (its operands w * a[8] elements on), A and B as the template says, C
// read column-major, D written row-major; lda, ldb, ldc, ldd in a[4..7]. A's pointer moves
// a[9] bytes, and a[10] more in odd lanes (misuses the simulator refuses).
template <class LA, class LB> __device__ void product(KARGS) {
    using namespace nvcuda;
    const i64 o = (threadIdx.x >> 5) * a[8];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, LA> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, LB> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> fc;
    wmma::load_matrix_sync(fa, (const signed char *)a[0] + o + a[9] + (threadIdx.x & 1) * a[10],
                           (unsigned)a[4]);
    wmma::load_matrix_sync(fb, (const signed char *)a[1] + o, (unsigned)a[5]);
    wmma::load_matrix_sync(fc, (const int *)a[2] + o, (unsigned)a[6], wmma::mem_col_major);
    wmma::mma_sync(fc, fa, fb, fc);
    wmma::store_matrix_sync((int *)a[3] + o, fc, (unsigned)a[7], wmma::mem_row_major);
}
extern "C" __global__ void ingot_wmma_rc(KARGS) { product<nvcuda::wmma::row_major,
                                                          nvcuda::wmma::col_major>(a, d); }
extern "C" __global__ void ingot_wmma_cr(KARGS) { product<nvcuda::wmma::col_major,
                                                          nvcuda::wmma::row_major>(a, d); }
"""


def test_shim_wmma_against_numpy(tmp_path):
    """The simulator's WMMA (sim/shim.h) as the CUDA programming guide lays out memory: a
    16x16x16 int8 product per warp, two warps, with each operand layout and leading dimensions
    past 16 (elements between the tiles' rows or columns stay untouched); a call whose lanes
    disagree or whose pointer is not 256-bit aligned fails the launch (-5)."""
    lib = ctypes.CDLL(str(build_sim((CU_DIR / "common.cuh").read_text() + WMMA_TEST, tmp_path)))
    rng = np.random.default_rng(7)
    u3 = ctypes.c_uint * 3
    lds, span = (48, 32, 20, 24), 1024  # lda ldb ldc ldd; each warp's operands span apart

    def launch(kernel, A, B, C, D, bad=(0, 0)):
        a = np.array([A.ctypes.data, B.ctypes.data, C.ctypes.data, D.ctypes.data, *lds, span,
                      *bad], np.int64)
        return lib.ingot_sim_launch(kernel, u3(1, 1, 1), u3(64, 1, 1), 0,
                                    ctypes.c_void_p(a.ctypes.data), None)

    def at(i, j, ld, row):  # element (i, j)'s index: row-major or column-major
        return i * ld + j if row else i + j * ld

    def aligned(v):  # a copy 256-bit aligned, as WMMA's pointers must be
        raw = np.zeros(v.nbytes + 32, np.uint8)
        out = raw[-raw.ctypes.data % 32:][:v.nbytes].view(v.dtype)
        out[:] = v
        return out

    i, j = np.meshgrid(np.arange(16), np.arange(16), indexing="ij")
    for kernel, a_row in ((b"ingot_wmma_rc", True), (b"ingot_wmma_cr", False)):
        A = aligned(rng.integers(-128, 128, 2 * span).astype(np.int8))
        B = aligned(rng.integers(-128, 128, 2 * span).astype(np.int8))
        C = aligned(rng.integers(-2 ** 20, 2 ** 20, 2 * span).astype(np.int32))
        D = aligned(np.full(2 * span, 12345, np.int32))
        assert launch(kernel, A, B, C, D) == 0
        for w in range(2):
            o = w * span
            a = A[o + at(i, j, lds[0], a_row)].astype(np.int64)     # (row i, k j)
            b = B[o + at(i, j, lds[1], not a_row)].astype(np.int64)  # (k i, column j)
            c = C[o + at(i, j, lds[2], False)]
            want = D.copy()
            want[o + at(i, j, lds[3], True)] = a @ b + c
            assert np.array_equal(D[o:o + span], want[o:o + span]), f"{kernel} warp {w}"
    assert launch(b"ingot_wmma_rc", A, B, C, D, (16, 0)) == -5  # 128-bit aligned only
    assert launch(b"ingot_wmma_rc", A, B, C, D, (0, 32)) == -5  # lanes disagree
