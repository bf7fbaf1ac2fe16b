"""CPU builds' eight-row interleaved Q4_0 / Q5_0 / Q8_0 matrices (quant/interleave.py) and
their kernels (targets/cpu/x8_kernels.py); the K-quant layouts: test_interleave_k.

- `pack` and `unpack` only move bits: inverse on any bytes, and every interleaved field means
  what the layout says (checked value by value against ggml's block layout);
- the kernels against the gguf package's dequantizers, with test_q8_kernels' two bounds
  (float32 summation order against the exact product of the quantized activations; half a
  code step per activation against unquantized x), at 1 and 3 threads, with and without bias;
- a token gets the same bits alone and in a prefill tile (batched sequences answer as alone);
- the largest codes against the largest activations stay exact: the unsigned kernels add their
  byte products in int16 before widening (simd.dot4_u8_bcast / dot8_u8_bcast), which is exact
  only while the codes stay in range.
Which matrices a build interleaves: test_repack; the real Gemma artefact's interleaved tensors:
test_gemma3_gguf::test_matrices_are_stored_interleaved.
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from ingot.quant.interleave import INTERLEAVED, ROWS, pack, unpack
from ingot.quant.registry import get_format
from ingot.targets.cpu.q8_kernels import q8_row_bytes
from ingot.targets.cpu.x8_kernels import X8_LINEAR
from test_q8_kernels import check_against_gguf, check_alone_equals_tile
from test_quant_kernels import random_rows

pytestmark = pytest.mark.xdist_group("q8_kernels")  # shares test_q8_kernels' compiled helpers
BLOCK32 = sorted(n for n, lay in INTERLEAVED.items() if not lay.superblock)


def check_pack_moves_bits(lay, rng):
    """pack / unpack are inverse on any bytes and keep every bit: (raw, packed)."""
    raw = rng.integers(0, 256, (16, 3 * lay.bb), dtype=np.uint8)
    packed = pack(lay, raw)
    assert packed.shape == raw.shape and np.array_equal(unpack(lay, packed), raw)
    assert np.unpackbits(packed).sum() == np.unpackbits(raw).sum()
    return raw, packed


def check_extremes_exact(kernel, stored, deq, N, K):
    """Activations all +-3 (quantized to +-127 exactly), one token and a tile: the kernel's
    output against the float64 product within float32 rounding."""
    for sign in (1.0, -1.0):
        for n in (1, 3):
            x = np.full((n, K), sign * 3.0, np.float32)
            y = np.zeros(n * N, np.float32)
            scratch = np.zeros(n * q8_row_bytes(K), np.uint8)
            kernel(x.ctypes.data, K, n, K, stored.ctypes.data, N, 0, y.ctypes.data,
                   scratch.ctypes.data, 0, 1)
            want = x.astype(np.float64) @ deq.T.astype(np.float64)
            np.testing.assert_allclose(y.reshape(n, N), want, rtol=1e-5)


def _rows(name, N, K, rng):
    raw, deq = random_rows(INTERLEAVED[name].base, N, K, rng)
    return np.ascontiguousarray(pack(INTERLEAVED[name], raw)), deq, raw


@pytest.mark.parametrize("name", BLOCK32)
def test_pack_is_a_permutation_of_bits(name):
    lay = INTERLEAVED[name]
    raw, packed = check_pack_moves_bits(lay, np.random.default_rng(11))
    blocks = raw.reshape(2, ROWS, 3, lay.bb)                  # [group, row, block, bytes]
    stored = packed.reshape(2, 3, lay.group_block_bytes)      # [group, block, bytes]
    qs = blocks[..., -16:]  # ggml: value j < 16 in the low nibble of byte j, j + 16 high
    u = np.concatenate([qs & 15, qs >> 4], axis=-1).astype(np.int32)
    if lay.bits == 8:  # q8_0: int8 codes after d
        u = blocks[..., 2:].astype(np.int32)
    if lay.fifth:
        qh = np.ascontiguousarray(blocks[..., 2:6]).view("<u4")[..., 0]
        u |= ((qh[..., None] >> np.arange(32)) & 1).astype(np.int32) << 4
    assert np.array_equal(stored[..., :16].reshape(2, 3, ROWS, 2),
                          blocks[..., 0:2].transpose(0, 2, 1, 3))  # the rows' scales d
    nib = stored[..., -128:]
    for i in range(8):        # vector i, byte j: row j // 4, value 4i + j % 4
        for j in range(32):
            want = u[:, j // 4, :, 4 * i + j % 4]             # [group, block]
            if lay.bits == 8:
                assert np.array_equal(stored[..., 16 + 32 * i + j], want), (i, j)
                continue
            byte = nib[..., 32 * (i // 2) + j]
            got = (byte >> 4) if i % 2 else (byte & 15)
            if lay.fifth:
                got = got | (((stored[..., 16 + j] >> i) & 1) << 4)
            assert np.array_equal(got, want), (i, j)


@pytest.mark.parametrize("name", BLOCK32)
def test_interleaved_format_holds_the_base_values(name):
    fmt, base = get_format(name), get_format(INTERLEAVED[name].base)
    assert (fmt.block_size, fmt.block_bytes, fmt.group_rows) == (32, base.block_bytes, ROWS)
    x = np.random.default_rng(4).standard_normal((16, 96)).astype(np.float32)
    assert np.array_equal(fmt.dequantize(fmt.quantize(x)), base.dequantize(base.quantize(x)))
    with pytest.raises(ValueError, match="groups of 8"):
        fmt.quantize(x[:12])


@pytest.mark.parametrize("name", sorted(X8_LINEAR))
def test_x8_linear_matches_gguf(name):
    rng = np.random.default_rng(300 + sorted(X8_LINEAR).index(name))
    for N in (8, 40):
        for K in (32, 96, 640):
            raw, deq, _ = _rows(name, N, K, rng)
            # decode; a tile of eight and three alone, rows padded
            check_against_gguf(X8_LINEAR[name], raw, deq, N, K, rng, name,
                               tokens=((1, 0), (11, 3)))


@pytest.mark.parametrize("name", sorted(X8_LINEAR))
def test_a_token_gets_the_same_bits_alone_and_in_a_tile(name):
    rng = np.random.default_rng(17)
    N, K = 24, 160
    raw, _, _ = _rows(name, N, K, rng)
    check_alone_equals_tile(X8_LINEAR[name], raw, N, K, rng, name, nth=2)


@pytest.mark.parametrize("name", ["q4_0x8", "q5_0x8"])
def test_extreme_codes_stay_exact(name):
    """Every code at its largest (15 or 31) or zero, activations all +-x (quantized to
    +-127): the int16 partial sums reach their bound (8 x 2 x 15 x 127 or 4 x 2 x 31 x 127,
    just under 32768); a wrapped sum would be off by 65536 code units."""
    base = INTERLEAVED[name].base
    bs, bb = 32, get_format(base).block_bytes
    N, K = 16, 256
    blocks = np.full((N * K // bs, bb), 0xFF, np.uint8)
    blocks[N * K // bs // 2:, 2:] = 0  # the second half of the rows: every code 0
    blocks[:, 0:2] = np.array([0.5], np.float16).view(np.uint8)
    raw = blocks.reshape(N, -1)
    deq = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[base.upper()]).reshape(N, K)
    x8 = np.ascontiguousarray(pack(INTERLEAVED[name], raw))
    check_extremes_exact(X8_LINEAR[name], x8, deq, N, K)


def test_tied_q8_0_table_is_looked_up_in_place():
    """A tied Q8_0 table stored q8_0x8 for the output head: the lookup reads its rows in place
    with the same bits as from ggml's blocks (and gguf's values times the scale)."""
    from ingot.targets.cpu.quant_embed import QUANT_EMBED
    rng = np.random.default_rng(5)
    N, K = 24, 96
    raw, deq, ggml = _rows("q8_0x8", N, K, rng)  # interleaved, gguf's values, ggml's blocks
    tok = np.array([0, 13, 23, 5, 13], np.int32)
    got = {}
    for name, table in (("q8_0x8", raw), ("q8_0", ggml)):
        y = np.full(len(tok) * K + 8, np.nan, np.float32)
        for tid in range(2):
            QUANT_EMBED[name](tok.ctypes.data, len(tok), table.ctypes.data, K, 1.7,
                              y.ctypes.data, tid, 2)
        assert np.isnan(y[len(tok) * K:]).all()
        got[name] = y[:len(tok) * K].reshape(len(tok), K)
    assert np.array_equal(got["q8_0x8"], got["q8_0"])
    np.testing.assert_allclose(got["q8_0x8"], deq[tok] * np.float32(1.7), rtol=1e-6)
