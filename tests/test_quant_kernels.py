"""Fused dequantize-and-multiply kernels against the gguf package's dequantizers.

Rows come from gguf.quants.quantize where gguf can make the type, else from random bytes (valid
blocks for every type here) with the scale fields set to finite values of 0.01..1 in size.
gguf has no dequantizer for q8_1 and q8_k (d * int8 quants): those blocks get an f16 d, and the
reference is gguf's q8_0 dequantizer over the same (d, quants).
"""
from __future__ import annotations

import gguf
import numpy as np
import pytest

from ingot.targets.cpu.quant_kernels import BLOCK_TYPES, QUANT_LINEAR

QT = gguf.GGMLQuantizationType
MADE_BY_GGUF = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "mxfp4"}
# Byte offsets of the f16 scale fields in a block, for the types made from random bytes.
F16_SCALES = {"q2_k": (80, 82), "q3_k": (108,), "q4_k": (0, 2), "q5_k": (0, 2),
              "q6_k": (208,), "iq4_nl": (0,)}
GUARD = 64  # floats past every output and scratch buffer that must stay untouched


def _scales(rng, size):
    mag = rng.uniform(0.01, 1.0, size) * rng.choice([-1.0, 1.0], size)
    return mag.astype(np.float16)


def _q8_rows(name, N, K, rng):
    """q8_1 (f16 d, f16 s, i8[32]) or q8_k (f32 d, i8[256], i16 bsums[16]) rows, and the
    float matrix from gguf's q8_0 dequantizer over (d, quants) in blocks of 32."""
    bs, bb = BLOCK_TYPES[name][1:]
    nb = N * K // bs
    d = _scales(rng, nb)
    q = rng.integers(-128, 128, (nb, bs), dtype=np.int8)
    if name == "q8_1":
        s = (d.astype(np.float32) * q.sum(axis=1, dtype=np.float32)).astype(np.float16)
        blocks = np.concatenate([d.view(np.uint8).reshape(nb, 2),
                                 s.view(np.uint8).reshape(nb, 2), q.view(np.uint8)], axis=1)
    else:
        sums = q.reshape(nb, 16, 16).sum(axis=2, dtype=np.int16)
        blocks = np.concatenate([d.astype(np.float32).view(np.uint8).reshape(nb, 4),
                                 q.view(np.uint8), sums.view(np.uint8)], axis=1)
    assert blocks.shape[1] == bb
    d32 = np.repeat(d, bs // 32)  # one q8_0 block per 32 quants, same scale
    q80 = np.concatenate([d32.view(np.uint8).reshape(-1, 2),
                          q.reshape(-1, 32).view(np.uint8)], axis=1)
    deq = gguf.quants.dequantize(q80.reshape(N, -1), QT.Q8_0)
    return blocks.reshape(N, -1), deq


def random_rows(name, N, K, rng):
    """(uint8 [N, row_bytes], float32 [N, K] as gguf dequantizes it)."""
    bs, bb = BLOCK_TYPES[name][1:]
    qt = QT[name.upper()]
    if name in ("q8_1", "q8_k"):
        return _q8_rows(name, N, K, rng)
    if name in MADE_BY_GGUF:
        raw = gguf.quants.quantize(rng.standard_normal((N, K)).astype(np.float32), qt)
    else:
        blocks = rng.integers(0, 256, (N * K // bs, bb), dtype=np.uint8)
        for off in F16_SCALES[name]:
            blocks[:, off:off + 2] = _scales(rng, len(blocks)).view(np.uint8).reshape(-1, 2)
        raw = blocks.reshape(N, -1)
    raw = np.ascontiguousarray(raw)
    assert raw.shape == (N, K // bs * bb)
    return raw, gguf.quants.dequantize(raw, qt).reshape(N, K)


def test_block_sizes_are_ggmls():
    # gguf-py still sizes q8_1 as 40 bytes (an old f32 d, s layout); ggml's block is 36.
    for name, (_, bs, bb) in BLOCK_TYPES.items():
        want = (32, 36) if name == "q8_1" else gguf.GGML_QUANT_SIZES[QT[name.upper()]]
        assert (bs, bb) == want, name


def _run(kernel, raw, N, K, x, xs, n, bias, nth, block_size):
    """Call the kernel over every thread's share; check it wrote only y[:n*N] and kept to
    scratch[:max(K, block_size)]."""
    y = np.full(n * N + GUARD, np.nan, np.float32)
    scratch = np.full(max(K, block_size) + GUARD, 7.0, np.float32)
    b = bias.ctypes.data if bias is not None else 0
    for tid in range(nth):
        kernel(x.ctypes.data, xs, n, K, raw.ctypes.data, N, b, y.ctypes.data,
               scratch.ctypes.data, tid, nth)
    assert np.isnan(y[n * N:]).all(), "wrote past y"
    assert (scratch[max(K, block_size):] == 7.0).all(), "wrote past scratch"
    return y[:n * N].reshape(n, N)


@pytest.mark.parametrize("name", sorted(QUANT_LINEAR))
def test_quant_linear_matches_gguf(name):
    kernel = QUANT_LINEAR[name]
    bs = BLOCK_TYPES[name][1]
    rng = np.random.default_rng(sorted(QUANT_LINEAR).index(name))
    for N in (1, 7, 37):
        for nblocks in (1, 2, 3):
            K = nblocks * bs
            raw, deq = random_rows(name, N, K, rng)
            assert np.isfinite(deq).all()
            w64 = deq.astype(np.float64)
            for n, pad in ((1, 0), (5, 0), (5, 3)):
                xs = K + pad
                # Columns past K are NaN: reading them would poison the result.
                x = np.full((n, xs), np.nan, np.float32)
                x[:, :K] = rng.standard_normal((n, K))
                x64 = x[:, :K].astype(np.float64)
                for with_bias in (False, True):
                    bias = rng.standard_normal(N).astype(np.float32) if with_bias else None
                    b64 = bias.astype(np.float64) if with_bias else np.zeros(N)
                    want = x64 @ w64.T + b64
                    # f32 sums of K products in another order than float64's: error grows
                    # with the sum of the terms' sizes, not with the (possibly cancelled) result.
                    tol = 1e-4 * (np.abs(x64) @ np.abs(w64).T + np.abs(b64)) + 1e-30
                    for nth in (1, 3):
                        got = _run(kernel, raw, N, K, x, xs, n, bias, nth, bs)
                        err = np.abs(got - want)
                        assert (err <= tol).all(), (
                            f"{name} N={N} K={K} n={n} xs={xs} bias={with_bias} nth={nth}: "
                            f"max err {err.max():.3g}, worst ratio {(err / tol).max():.3g}")


def test_mxfp4_exponent_range():
    """Random mxfp4 bytes: exponents from 0 (a subnormal scale) to 200, which gguf's quantizer
    of N(0, 1) data never makes."""
    rng = np.random.default_rng(99)
    N, K = 7, 96
    blocks = rng.integers(0, 256, (N * K // 32, 17), dtype=np.uint8)
    blocks[:, 0] = rng.integers(0, 201, len(blocks))
    blocks[:3, 0] = [0, 1, 2]
    raw = np.ascontiguousarray(blocks.reshape(N, -1))
    w64 = gguf.quants.dequantize(raw, QT.MXFP4).reshape(N, K).astype(np.float64)
    for n in (1, 5):
        x = rng.standard_normal((n, K)).astype(np.float32)
        x64 = x.astype(np.float64)
        got = _run(QUANT_LINEAR["mxfp4"], raw, N, K, x, K, n, None, 1, 32)
        tol = 1e-4 * (np.abs(x64) @ np.abs(w64).T)
        assert (np.abs(got - x64 @ w64.T) <= tol).all()


def test_step_globals_name_quant_kernels():
    from ingot.targets.cpu.step_source import kernel_globals
    from ingot.targets.cpu.q8_kernels import Q8_LINEAR
    g = kernel_globals()
    for name, kernel in QUANT_LINEAR.items():
        assert g[f"LINEAR_{name}"] is Q8_LINEAR.get(name, kernel)
