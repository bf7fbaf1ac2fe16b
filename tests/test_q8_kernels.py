"""Integer-dot linear kernels (8-bit activations) against the gguf package's dequantizers.

Two checks per type:
- exact arithmetic: the reference quantizes x as the kernel does (blocks of 32, dx = amax/127,
  codes rint(x/dx)) and multiplies the dequantized codes with gguf's dequantized weights in
  float64; the only difference left is float32 summation order, so the bound is 1e-4 of the
  sum of the products' sizes (as for the float kernels);
- the stated bound against unquantized x: each code is off by at most half a step, so
  |error| <= sum over 32-blocks of dx/2 * sum |w| over the block (plus the summation term).
"""
from __future__ import annotations

import numpy as np
import pytest

from ingot.quant.repack import LAYOUTS, pack
from ingot.targets.cpu.q8_kernels import Q8_BLOCK_TYPES, Q8_LINEAR, q8_row_bytes
from test_quant_kernels import random_rows as gguf_rows
from q8_activations import quantize_like_kernel

GUARD = 256  # bytes / floats past every buffer that must stay untouched
pytestmark = pytest.mark.xdist_group("q8_kernels")  # one worker JIT-compiles each kernel once


def random_rows(name, N, K, rng):
    """A kernel type's rows and gguf's dequantization of them: a CPU build's regrouped
    layout (quant/repack.py) gets its base type's rows, regrouped."""
    if name in LAYOUTS:
        raw, deq = gguf_rows(LAYOUTS[name].base, N, K, rng)
        return np.ascontiguousarray(pack(LAYOUTS[name], raw)), deq
    return gguf_rows(name, N, K, rng)


def _run(kernel, raw, N, K, x, xs, n, bias, nth):
    y = np.full(n * N + GUARD, np.nan, np.float32)
    used = n * q8_row_bytes(K)
    scratch = np.full(used + GUARD, 7, np.uint8)
    b = bias.ctypes.data if bias is not None else 0
    for tid in range(nth):
        kernel(x.ctypes.data, xs, n, K, raw.ctypes.data, N, b, y.ctypes.data,
               scratch.ctypes.data, tid, nth)
    assert np.isnan(y[n * N:]).all(), "wrote past y"
    assert (scratch[used:] == 7).all(), "wrote past scratch"
    return y[:n * N].reshape(n, N)


def check_against_gguf(kernel, raw, deq, N, K, rng, label, tokens=((1, 0), (5, 3))):
    """The kernel on rows `raw` (gguf's dequantization `deq`) within both bounds of the module
    docstring, for each (tokens, row padding), with and without bias, at 1 and 3 threads."""
    w64 = deq.astype(np.float64)
    for n, pad in tokens:
        xs = K + pad
        x = np.full((n, xs), np.nan, np.float32)  # columns past K must not be read
        x[:, :K] = rng.standard_normal((n, K)) * rng.uniform(0.1, 10, (n, 1))
        x[0, :min(K, 32)] = 0.0  # an all-zero block: dx = 0
        xq, dx = quantize_like_kernel(x[:, :K])
        x64 = x[:, :K].astype(np.float64)
        for with_bias in (False, True):
            bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
            b64 = bias.astype(np.float64) if with_bias else np.zeros(N)
            exact = xq @ w64.T + b64
            tol = 1e-4 * (np.abs(xq) @ np.abs(w64).T + np.abs(b64)) + 1e-30
            # Half a code step per activation, weighted by the block's |w|.
            wabs = np.abs(w64).reshape(N, K // 32, 32).sum(axis=2)  # [N, blocks]
            bound = (dx / 2) @ wabs.T + tol
            for nth in (1, 3):
                got = _run(kernel, raw, N, K, x, xs, n, bias, nth)
                err = np.abs(got - exact)
                assert (err <= tol).all(), (
                    f"{label} N={N} K={K} n={n} bias={with_bias} nth={nth}: max err "
                    f"{err.max():.3g}, worst ratio {(err / tol).max():.3g}")
                assert (np.abs(got - (x64 @ w64.T + b64)) <= bound).all()


@pytest.mark.parametrize("name", sorted(Q8_LINEAR))
def test_q8_linear_matches_gguf(name):
    bs = Q8_BLOCK_TYPES[name][1]
    rng = np.random.default_rng(100 + sorted(Q8_LINEAR).index(name))
    for N in (1, 7, 37):
        for nblocks in (1, 3):
            K = nblocks * bs
            raw, deq = random_rows(name, N, K, rng)
            check_against_gguf(Q8_LINEAR[name], raw, deq, N, K, rng, name)


def test_q8_types_cover_the_integer_formats():
    from ingot.targets.cpu.quant_kernels import BLOCK_TYPES
    # iq4_nl and mxfp4 (codebook values) keep the float kernels.
    assert set(Q8_BLOCK_TYPES) == set(BLOCK_TYPES) - {"iq4_nl", "mxfp4"} | set(LAYOUTS)
    for name, (_, bs, bb) in Q8_BLOCK_TYPES.items():
        lay = LAYOUTS.get(name)  # regrouped layouts: a quad of four base blocks per block
        assert (bs, bb) == ((128, lay.quad_bytes) if lay else BLOCK_TYPES[name][1:])


@pytest.mark.parametrize("name", sorted(Q8_LINEAR))
def test_a_token_gets_the_same_bits_alone_and_in_a_tile(name):
    """A 9-token call runs a tile of eight and one token alone, a 13-token call tiles of eight
    and five: each row equals the call with that token alone, bit for bit (batched sequences
    answer as they would alone)."""
    bs = Q8_BLOCK_TYPES[name][1]
    rng = np.random.default_rng(7 + sorted(Q8_LINEAR).index(name))
    N, K = 9, (3 if bs == 32 else 2) * bs  # 32-value types: a partial quad too
    raw, _ = random_rows(name, N, K, rng)
    check_alone_equals_tile(Q8_LINEAR[name], raw, N, K, rng, name)


def check_alone_equals_tile(kernel, raw, N, K, rng, label, nth=1):
    """9 and 13 tokens in one call (`nth` threads): each row is, bit for bit, the call with
    that token alone."""
    for n in (9, 13):
        x = (rng.standard_normal((n, K)) * rng.uniform(0.1, 10, (n, 1))).astype(np.float32)
        together = _run(kernel, raw, N, K, x, K, n, None, nth)
        for t in range(n):
            alone = _run(kernel, raw, N, K, np.ascontiguousarray(x[t:t + 1]), K, 1, None, 1)
            assert np.array_equal(alone[0], together[t]), f"{label}: n={n} token {t} differs"
