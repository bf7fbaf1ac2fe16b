"""CPU builds' regrouped rows of the 32-value types (quant/repack.py).

- `pack` and `unpack` only move bits: inverse on any bytes, and the regrouped fields mean
  what the layout says (checked field by field against ggml's block layout);
- the kernels on regrouped rows give the base type's kernels' outputs bit for bit (the same
  codes and scale vectors reach the same sink), at decode and in prefill tiles: the base
  kernels are tested against the gguf package's dequantizers (test_q8_kernels);
- which matrices a CPU build regroups (compiler/cpu_layouts.py); that a compile stores the
  file's bytes, moved, and that --from-uqff reads them back: on the real Gemma artefact
  (test_gemma3_gguf::test_q5_0_matrices_are_stored_regrouped).
"""
from __future__ import annotations

import numpy as np
import pytest

from ingot.quant.registry import get_format
from ingot.quant.repack import LAYOUTS, REPACKED, pack, unpack
from test_q8_kernels import _run
from test_quant_kernels import random_rows

pytestmark = pytest.mark.xdist_group("q8_kernels")  # shares test_q8_kernels' compiled kernels


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_pack_is_a_permutation_of_bits(name):
    lay = LAYOUTS[name]
    rng = np.random.default_rng(3)
    raw = rng.integers(0, 256, (5, 3 * lay.quad_bytes), dtype=np.uint8)
    packed = pack(lay, raw)
    assert packed.shape == raw.shape and np.array_equal(unpack(lay, packed), raw)
    assert np.unpackbits(packed).sum() == np.unpackbits(raw).sum()
    blocks = raw.reshape(5, 3, 4, lay.bb)
    quads = packed.reshape(5, 3, lay.quad_bytes)
    assert np.array_equal(quads[..., :8], blocks[..., :2].reshape(5, 3, 8))  # scales d
    at = 8
    if lay.offset:
        assert np.array_equal(quads[..., 8:16], blocks[..., 2:4].reshape(5, 3, 8))
        at = 16
    if lay.fifth:
        qh = np.ascontiguousarray(blocks[..., lay.fifth:lay.fifth + 4]).view("<u4")[..., 0]
        for k in range(4):
            for j in range(32):
                got = (quads[..., at + j % 16] >> (k + 4 * (j // 16))) & 1
                assert np.array_equal(got, (qh[..., k] >> j) & 1), (k, j)
        at += 16
    for k in range(4):
        nib = quads[..., at + 32 * (k // 2):at + 32 * (k // 2) + 32]
        codes = (nib >> 4) if k % 2 else (nib & 15)
        qs = blocks[..., k, -16:]  # ggml: value j < 16 in the low nibble of byte j, j + 16 high
        assert np.array_equal(codes, np.concatenate([qs & 15, qs >> 4], axis=-1))


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_repacked_format_holds_the_base_values(name):
    fmt, base = get_format(name), get_format(LAYOUTS[name].base)
    assert (fmt.block_size, fmt.block_bytes) == (128, 4 * base.block_bytes)
    x = np.random.default_rng(4).standard_normal((3, 384)).astype(np.float32)
    assert np.array_equal(fmt.quantize(x), pack(LAYOUTS[name], base.quantize(x)))
    assert np.array_equal(fmt.dequantize(fmt.quantize(x)), base.dequantize(base.quantize(x)))
    assert fmt.to_base(fmt.from_base(base.quantize(x))).tobytes() == base.quantize(x).tobytes()


@pytest.mark.parametrize("name", sorted(LAYOUTS))
def test_kernel_on_repacked_rows_gives_the_base_kernels_bits(name):
    from ingot.targets.cpu.q8_kernels import Q8_LINEAR
    lay = LAYOUTS[name]
    rng = np.random.default_rng(5)
    N, K = 37, 640
    raw, _ = random_rows(lay.base, N, K, rng)
    packed = np.ascontiguousarray(pack(lay, raw))
    for n in (1, 11):  # decode; a tile of eight and three tokens alone
        x = (rng.standard_normal((n, K)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        bias = rng.standard_normal(N).astype(np.float32)
        for nth in (1, 3):
            want = _run(Q8_LINEAR[lay.base], raw, N, K, x, K, n, bias, nth)
            got = _run(Q8_LINEAR[name], packed, N, K, x, K, n, bias, nth)
            assert np.array_equal(got, want), f"{name} n={n} nth={nth}"


def test_every_repacked_base_has_a_layout():
    assert set(REPACKED) == {"q4_0", "q4_1", "q5_0", "q5_1"}
    assert all(LAYOUTS[v].base == k for k, v in REPACKED.items())


def test_which_matrices_a_cpu_build_regroups():
    """Read by LINEAR (a table the embedding lookup also reads, tied, keeps ggml's blocks
    unless the lookup reads the layout: q8_0x8): Q4_0 / Q5_0 / Q8_0 / Q4_K / Q6_K with rows in whole groups of eight, in every
    fused part, are interleaved (quant/interleave.py, interleave_k.py); otherwise the 32-value types with rows a multiple of
    128 wide are regrouped four blocks at a time; other types and widths keep ggml's."""
    from ingot.compiler.cpu_layouts import regroup_for_cpu
    from ingot.compiler.ir import Graph, Node, Op, Tensor, Weight

    def weight(name, dtype, k, rows=8, source=("array", None)):
        return Weight(name, (rows, k), dtype, source)
    x = Tensor("x", "T", 256)
    parts = [weight("a", "q5_0", 256, 12), weight("b", "q5_0", 256, 12)]
    ws = {"tied": weight("tied", "q4_0", 256), "q5": weight("q5", "q5_1", 384),
          "narrow": weight("narrow", "q5_0", 96), "k": weight("k", "q4_k", 256),
          "k odd rows": weight("k odd rows", "q6_k", 256, 12), "q5_k": weight("q5_k", "q5_k", 256),
          "q8": weight("q8", "q8_0", 256), "odd rows": weight("odd rows", "q4_0", 256, 12),
          "odd narrow": weight("odd narrow", "q4_0", 96, 12),
          "fused": weight("fused", "q5_0", 256, 24, ("concat", parts))}
    ws["tied q8"] = weight("tied q8", "q8_0", 256)  # the lookup reads q8_0x8 in place
    nodes = [Node(Op.EMBED, [x], [x], weights={"w": ws["tied"]}),
             Node(Op.EMBED, [x], [x], weights={"w": ws["tied q8"]})]
    nodes += [Node(Op.LINEAR, [x], [x], weights={"w": w}) for w in ws.values()]
    assert regroup_for_cpu(Graph(nodes, {}, {}, [])) == 7
    assert {n: w.dtype for n, w in ws.items()} == {
        "tied": "q4_0", "q5": "q5_1r", "narrow": "q5_0x8", "k": "q4_kx8", "q8": "q8_0x8",
        "k odd rows": "q6_k", "q5_k": "q5_k", "tied q8": "q8_0x8",
        "odd rows": "q4_0r", "odd narrow": "q4_0", "fused": "q5_0r"}
