"""Every block format against references nobody here wrote.

- layout: gguf-py's dequantizer reads our bytes to exactly our floats (every format it knows);
- q4_0 .. q8_0 and mxfp4: our bytes equal gguf-py's quantizer (llama.cpp's reference rounding);
- K-quants: our error is within 10 % of llama.cpp's reference quantizer, whose figures
  tools/kquant_reference.py measured into tests/data/kquant_reference_rmse.json.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as T
from gguf.quants import dequantize as gguf_dequantize, quantize as gguf_quantize

from ingot.quant.registry import FORMATS, by_gguf_type, get_format

ALL = ["f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1",
       "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_k", "iq4_nl", "mxfp4"]
LEGACY = ["q4_0", "q4_1", "q5_0", "q5_1", "q8_0"]
KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
# gguf-py has no dequantizer for these two (activation-side formats): checked by definition.
NO_GGUF_DEQUANT = {"q8_1", "q8_k"}
# ggml's q8_1 block is 36 bytes (f16 d, f16 s); gguf-py's table still lists an old 40-byte one.
GGML_BYTES = {"q8_1": 36}

REFERENCE = json.loads((Path(__file__).parent / "data" / "kquant_reference_rmse.json").read_text())
REAL_KEY = "gemma3_token_embd_q8_0_dequant_rows0_512"


def _gauss(rows, k, seed=0):
    return np.random.default_rng(seed).standard_normal((rows, k)).astype(np.float32)


def _rel_rmse(x, y):
    x = x.astype(np.float64)
    return float(np.linalg.norm(x - y) / np.linalg.norm(x))


def test_registry_lists_every_format():
    get_format("f32")
    assert sorted(FORMATS) == sorted(ALL)
    for name in ALL:
        f = get_format(name)
        assert by_gguf_type(f.gguf_type) is f and f.gguf_type == int(T[name.upper()])
        assert (f.block_size, f.block_bytes) == (
            GGML_QUANT_SIZES[T[name.upper()]][0],
            GGML_BYTES.get(name, GGML_QUANT_SIZES[T[name.upper()]][1]))


@pytest.mark.parametrize("rows", [1, 3, 7])
@pytest.mark.parametrize("blocks", [2, 3])
@pytest.mark.parametrize("name", ALL)
def test_layout_matches_gguf(name, blocks, rows):
    f = get_format(name)
    k = blocks * f.block_size
    x = _gauss(rows, k, seed=rows * 10 + blocks) * 3
    raw = f.quantize(x)
    assert raw.dtype == np.uint8 and raw.shape == (rows, f.row_bytes(k))
    y = f.dequantize(raw)
    assert y.dtype == np.float32 and y.shape == (rows, k)
    if name in NO_GGUF_DEQUANT:
        return  # see test_q8_1_definition / test_q8_k_definition
    ref = gguf_dequantize(raw, T[name.upper()])
    assert ref.shape == (rows, k)
    assert np.array_equal(y.view(np.uint32), ref.astype(np.float32).view(np.uint32))


def _awkward_rows():
    """Zero rows, tiny and huge magnitudes, exact .5 ties, a single spike, all-equal blocks."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((9, 128)).astype(np.float32)
    x[0] = 0
    x[1] *= np.float32(1e-6)                       # f16 scale goes subnormal
    x[2] *= np.float32(1e-30)                      # f16 scale flushes to zero
    x[3] *= np.float32(1e3)                        # large, still within f16 for every scale
    x[4] = np.round(x[4] * 8) / 8                  # values on the code grid: rounding ties
    x[5, :] = 0
    x[5, 5] = -2.5                                 # one spike per row
    x[6, :64] = 1.25                               # all-equal blocks
    x[6, 64:] = -0.75
    x[7] = -np.abs(x[7])
    x[8] = np.abs(x[8]) + 1
    return x


@pytest.mark.parametrize("name", LEGACY + ["mxfp4"])
def test_bytes_match_gguf_quantizer(name):
    f = get_format(name)
    for x in (_awkward_rows(), _gauss(37, 256, seed=11) * 0.02):
        assert np.array_equal(f.quantize(x), gguf_quantize(x, T[name.upper()])), name


@pytest.mark.parametrize("name", ["f16", "bf16"])
def test_float_bytes_match_gguf(name):
    x = np.concatenate([_awkward_rows(), _gauss(3, 128) * 1e5], axis=0)   # some overflow f16
    with np.errstate(over="ignore"):
        ours = get_format(name).quantize(x)
        theirs = np.ascontiguousarray(gguf_quantize(x, T[name.upper()])).view(np.uint8)
    assert np.array_equal(ours, theirs.reshape(x.shape[0], -1))


@pytest.mark.parametrize("name", [n for n in ALL if get_format(n).block_size > 1])
def test_awkward_blocks(name):
    # Zero, tiny, flat and spiky blocks: finite output, gguf reads it the same, and no row comes
    # back further from the input than all zeros would be (f16 scales cannot hold 1e-30 rows).
    f = get_format(name)
    x = np.tile(_awkward_rows(), 2)
    with np.errstate(under="ignore"):
        raw = f.quantize(x)
        y = f.dequantize(raw)
    assert np.all(np.isfinite(y))
    if name not in NO_GGUF_DEQUANT:
        assert np.array_equal(y, gguf_dequantize(raw, T[name.upper()]))
    err = np.linalg.norm(y - x, axis=1)
    assert np.all(err <= np.linalg.norm(x, axis=1) * (1 + 1e-6))
    assert np.all(y[0] == 0)


def test_q8_1_definition():
    # Blocks of 32: f16 d = amax/127, f16 s = d * sum(q), int8 q = round(x/d) -- its layout
    # equals llama.cpp's quantize_row_q8_1_ref (checked by hand through ctypes).
    f = get_format("q8_1")
    x = _awkward_rows()
    b = f.quantize(x).reshape(-1, 36)
    d = b[:, 0:2].copy().view("<f2").astype(np.float32)
    s = b[:, 2:4].copy().view("<f2").astype(np.float32)
    q = b[:, 4:].copy().view(np.int8)
    q8_0 = get_format("q8_0").quantize(x).reshape(-1, 34)        # same d and codes as q8_0
    assert np.array_equal(b[:, :2], q8_0[:, :2]) and np.array_equal(b[:, 4:], q8_0[:, 2:])
    d32 = np.abs(x.reshape(-1, 32)).max(1, keepdims=True) / np.float32(127)
    expect_s = (d32 * q.sum(1, keepdims=True).astype(np.float32)).astype(np.float16).astype(np.float32)
    assert np.array_equal(s, expect_s)
    assert np.array_equal(f.dequantize(f.quantize(x)), (q * d).reshape(x.shape))


def test_q8_k_definition():
    # f32 d, 256 int8 codes with |q| <= 127 and d = amax/127, 16 int16 sums of 16 codes.
    f = get_format("q8_k")
    x = np.concatenate([_gauss(5, 512), np.zeros((1, 512), np.float32)])
    b = f.quantize(x).reshape(-1, 292)
    d = b[:, :4].copy().view("<f4")
    q = b[:, 4:260].copy().view(np.int8).astype(np.int32)
    sums = b[:, 260:].copy().view("<i2")
    assert np.array_equal(sums, q.reshape(-1, 16, 16).sum(-1))
    xb = x.reshape(-1, 256)
    assert np.allclose(d[:, 0], np.abs(xb).max(1) / 127, rtol=1e-6)
    assert np.abs(q).max() <= 127
    y = f.dequantize(f.quantize(x)).reshape(-1, 256)
    assert np.all(np.abs(y - xb) <= d / 2 * (1 + 1e-5) + 1e-30)   # nearest code: half a step


# ---- K-quant quality against llama.cpp's reference quantizer ---------------------------------

def _gemma_rows():
    """Gemma 3 270M token_embd rows 0..512 (Q8_0 in the file, read back to f32), cut into rows
    of 1280 as the reference tool does (640 is not a multiple of 256)."""
    from ingot.default_model import default_model_path
    from ingot.errors import IngotError
    try:
        path = str(default_model_path())
    except IngotError:  # the default-model package is not installed
        return None
    from gguf import GGUFReader
    t = next(t for t in GGUFReader(path).tensors if t.name == "token_embd.weight")
    rows = gguf_dequantize(np.asarray(t.data[:512]), T.Q8_0)
    return np.ascontiguousarray(rows, np.float32).reshape(-1, 1280)


@functools.cache
def _data(which):
    return _gauss(256, 4096) if which == "gaussian" else _gemma_rows()


@functools.cache
def _our_rmse(name, which):
    f, x = get_format(name), _data(which)
    return _rel_rmse(x, f.dequantize(f.quantize(x)))


@pytest.mark.parametrize("name", KQUANTS)
def test_kquant_error_within_10pct_of_llamacpp(name):
    assert _our_rmse(name, "gaussian") <= 1.10 * REFERENCE["gaussian"][name]
    # Real weights only where the Gemma GGUF (or its package) is on this machine; without it
    # this checks the Gaussian figure alone, by design, not by accident.
    if _data("real") is not None:
        assert _our_rmse(name, "real") <= 1.10 * REFERENCE[REAL_KEY][name]


def test_error_falls_with_bits():
    errs = [_our_rmse(n, "gaussian") for n in KQUANTS + ["q8_0"]]
    assert all(a > b for a, b in zip(errs, errs[1:])), errs


# ---- non-linear formats: error bounds --------------------------------------------------------

def test_iq4_nl_error_bound():
    # Codes are the nearest table entries for the stored d, so inside the table's span
    # [-127, 113]*d the error is at most half the widest gap between entries (24/2 = 12) times
    # |d|; outside it, the distance to the end entry. Plus float32 rounding of d*entry.
    f = get_format("iq4_nl")
    x = np.concatenate([_gauss(64, 256), np.tile(_awkward_rows(), 2)])
    b = f.quantize(x).reshape(-1, 18)
    d = b[:, :2].copy().view("<f2").astype(np.float32)
    xb = x.reshape(-1, 32)
    err = np.abs(f.dequantize(f.quantize(x)).reshape(-1, 32) - xb)
    u = xb / np.where(d == 0, 1, d)                      # in units of d
    outside = np.maximum(np.maximum(-127 - u, u - 113), 0) * np.abs(d)
    bound = np.maximum(12 * np.abs(d), outside) * (1 + 1e-5) + 1e-30
    ok = d[:, 0] != 0
    assert np.all(err[ok] <= bound[ok])
    assert np.all(np.abs(xb[~ok]) < 1e-4)                 # d is 0 only when f16 cannot hold it
    # 4.5 bits per weight like q4_0, but a better-shaped grid: less error on a bell curve.
    g = _gauss(256, 1024)
    assert _rel_rmse(g, f.dequantize(f.quantize(g))) < 0.9 * _rel_rmse(
        g, get_format("q4_0").dequantize(get_format("q4_0").quantize(g)))


def test_mxfp4_error_bound():
    # Shared scale D = 2^(e-127) with e from floor(log2 amax) - 2: amax/D lies in [4, 8). FP4
    # magnitudes are {0, .5, 1, 1.5, 2, 3, 4, 6}*D, gaps at most 2D below 6D, so rounding
    # to nearest errs by at most D there; above 6D values clip to 6D, erring by |x| - 6D < 2D.
    f = get_format("mxfp4")
    x = np.concatenate([_gauss(64, 256), np.tile(_awkward_rows(), 2)])
    b = f.quantize(x).reshape(-1, 17)
    D = np.ldexp(np.float32(1), b[:, :1].astype(np.int32) - 127)
    xb = x.reshape(-1, 32)
    amax = np.abs(xb).max(1, keepdims=True)
    live = amax[:, 0] > 0
    assert np.all((amax[live] / D[live] >= 4) & (amax[live] / D[live] <= 8))
    err = np.abs(f.dequantize(f.quantize(x)).reshape(-1, 32) - xb)
    assert np.all(err <= np.maximum(D, np.abs(xb) - 6 * D) * (1 + 1e-6))
