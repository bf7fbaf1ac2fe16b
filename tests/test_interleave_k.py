"""CPU builds' eight-row interleaved Q4_K and Q6_K matrices (quant/interleave_k.py) and their
kernels (targets/cpu/xk_kernels.py), as test_interleave does for the 32-value types:

- `pack` and `unpack` only move bits: inverse on any bytes, and every field means what the
  layout's docstring says: a reader written from the docstring alone gives, value by value,
  what the gguf package's dequantizer gives for ggml's super-blocks;
- the kernels against gguf's dequantizers with test_q8_kernels' two bounds (float32 summation
  order against the exact product of the quantized activations; half a code step per
  activation against unquantized x), at 1 and 3 threads, with and without bias, decode and a
  tile of eight plus three;
- a token gets the same bits alone and in a prefill tile;
- the largest codes and scales against the largest activations stay exact (the int16 sums
  and int32 scale products are at their bounds).
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from ingot.quant.interleave import INTERLEAVED, ROWS, pack
from ingot.quant.registry import get_format
from ingot.targets.cpu.xk_kernels import XK_LINEAR
from test_interleave import check_extremes_exact, check_pack_moves_bits
from test_q8_kernels import check_against_gguf, check_alone_equals_tile
from test_quant_kernels import random_rows

pytestmark = pytest.mark.xdist_group("q8_kernels")  # shares test_q8_kernels' compiled helpers
KX8 = sorted(XK_LINEAR)


def _qt(base):
    return gguf.GGMLQuantizationType[base.upper()]


def read_layout(name, stored, N, K):
    """Values [N, K] of an interleaved matrix, read as the interleave_k docstring says."""
    lay = INTERLEAVED[name]
    p = stored.reshape(N // ROWS, K // 256, lay.group_block_bytes).astype(np.int64)
    out = np.zeros((N, K))
    r = np.arange(32) // 4                        # vector byte j: row j // 4 ...
    for g, s, j, i in np.ndindex(N // ROWS, K // 256, 8, 8):
        q = p[g, s]
        v = 256 * s + 32 * j + 4 * i + np.arange(32) % 4   # ... value 4i + j % 4
        d = q[0:16].astype(np.uint8).view(np.float16).astype(np.float64)[r]
        at = (128 if lay.bits == 4 else 144) + 128 * j + 32 * (i // 2) + np.arange(32)
        code = (q[at] >> 4) if i % 2 else (q[at] & 15)
        if lay.bits == 4:
            dmin = q[16:32].astype(np.uint8).view(np.float16).astype(np.float64)[r]
            k = 8 * j + r                        # scale / min number
            lo, sh = k % 32, np.where(k >= 32, 4, 0)
            sc = ((q[32 + lo] >> sh) & 15) | (((q[96 + lo] >> (sh // 2)) & 3) << 4)
            mn = ((q[64 + lo] >> sh) & 15) | (((q[96 + lo] >> (4 + sh // 2)) & 3) << 4)
            val = d * sc * code - dmin * mn
        else:
            plane = q[1168 + 64 * j + 32 * (i // 4) + np.arange(32)]
            code = code | (((plane >> (2 * (i % 4))) & 3) << 4)
            sc = q[16 + 8 * ((v % 256) // 16) + r].astype(np.uint8).view(np.int8)
            val = d * sc * (code - 32)
        out[ROWS * g + r, v] = val
    return out


@pytest.mark.parametrize("name", KX8)
def test_pack_moves_bits_and_fields_mean_what_the_docstring_says(name):
    lay = INTERLEAVED[name]
    rng = np.random.default_rng(11)
    check_pack_moves_bits(lay, rng)
    raw, deq = random_rows(lay.base, 16, 512, rng)   # finite scales
    got = read_layout(name, np.ascontiguousarray(pack(lay, raw)), 16, 512)
    np.testing.assert_allclose(got, deq, rtol=1e-6, atol=0)


@pytest.mark.parametrize("name", KX8)
def test_interleaved_format_holds_the_base_values(name):
    fmt, base = get_format(name), get_format(INTERLEAVED[name].base)
    assert (fmt.block_size, fmt.block_bytes, fmt.group_rows) == (256, base.block_bytes, ROWS)
    x = np.random.default_rng(4).standard_normal((16, 512)).astype(np.float32)
    assert np.array_equal(fmt.dequantize(fmt.quantize(x)), base.dequantize(base.quantize(x)))
    with pytest.raises(ValueError, match="groups of 8"):
        fmt.quantize(x[:12])


@pytest.mark.parametrize("name", KX8)
def test_xk_linear_matches_gguf(name):
    rng = np.random.default_rng(400 + KX8.index(name))
    for N, K in ((8, 256), (40, 768)):
        raw, deq = random_rows(INTERLEAVED[name].base, N, K, rng)
        stored = np.ascontiguousarray(pack(INTERLEAVED[name], raw))
        check_against_gguf(XK_LINEAR[name], stored, deq, N, K, rng, name,
                           tokens=((1, 0), (11, 3)))


@pytest.mark.parametrize("name", KX8)
def test_a_token_gets_the_same_bits_alone_and_in_a_tile(name):
    rng = np.random.default_rng(17)
    N, K = 24, 512
    raw, _ = random_rows(INTERLEAVED[name].base, N, K, rng)
    check_alone_equals_tile(XK_LINEAR[name], np.ascontiguousarray(pack(INTERLEAVED[name], raw)),
                            N, K, rng, name, nth=2)


def _extreme_rows(base, N, K):
    """Super-blocks with every code at its largest (first half of the rows) or zero, every
    scale at its largest magnitude (q4_k: 63, and mins 63; q6_k: -128), d = dmin = 0.5."""
    bb = get_format(base).block_bytes
    b = np.zeros((N, K // 256, bb), np.uint8)
    half = np.array([0.5], np.float16).view(np.uint8)
    if base == "q4_k":
        b[..., 0:2] = half                   # d
        b[..., 2:4] = half                   # dmin
        b[..., 4:16] = 0xFF                  # every six-bit scale and min 63
        b[:N // 2, :, 16:] = 0xFF            # codes 15
    else:
        b[..., 208:210] = half
        b[..., 192:208] = 0x80               # scales -128
        b[:N // 2, :, 0:192] = 0xFF          # codes 63
    raw = b.reshape(N, -1)
    return raw, gguf.quants.dequantize(raw, _qt(base)).reshape(N, K)


@pytest.mark.parametrize("name", KX8)
def test_extreme_codes_stay_exact(name):
    """q4_k: eight 4-bit vectors in int16 reach 8 x 2 x 15 x 127 = 30480; q6_k: two 6-bit ones
    2 x 2 x 63 x 127 = 32004 (under 32768); a wrapped sum would be off by 65536 code units."""
    N, K = 16, 512
    raw, deq = _extreme_rows(INTERLEAVED[name].base, N, K)
    stored = np.ascontiguousarray(pack(INTERLEAVED[name], raw))
    check_extremes_exact(XK_LINEAR[name], stored, deq, N, K)
