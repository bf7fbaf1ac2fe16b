"""GGUF K-quants: super-blocks of 256 weights with sub-block scales stored as small integers.

  q2_k: 16 x 16 weights, codes 0..3,  x = d*sc*q - dmin*m   (sc, m: 4 bit)
  q3_k: 16 x 16 weights, codes -4..3, x = d*sc*q            (sc: 6 bit signed)
  q4_k:  8 x 32 weights, codes 0..15, x = d*sc*q - dmin*m   (sc, m: 6 bit)
  q5_k:  8 x 32 weights, codes 0..31, x = d*sc*q - dmin*m   (sc, m: 6 bit)
  q6_k: 16 x 16 weights, codes -32..31, x = d*sc*q          (sc: 8 bit signed)
  q8_k: 256 int8 with an f32 d and 16 sums of 16 codes (the activation side of K-quant dots)

The quantizer is Ingot's own, from the least-squares view of the problem. Per sub-block:
try a grid of scales around range/nmax; for each, round to codes, then solve the weighted
least-squares problem for the best (scale, offset) given those codes, and keep the best;
polish by re-rounding with the winner. Then the sub-block scales are themselves quantized
against one f16 super-block scale, the super-block scale(s) are re-fitted by least squares
given the integer scales and codes, and the weights are re-rounded with the final scales.
Everything is vectorised over all sub-blocks of the matrix at once.
"""
from __future__ import annotations

import numpy as np
from gguf import GGMLQuantizationType as T

from .legacy import (as_blocks, as_raw_blocks, f16_at, f16_bytes, pack_nibbles, rows_of,
                     signed_max, unpack_nibbles)
from .registry import QuantFormat, register

QK_K = 256
F32 = np.float32


# ---- sub-block fits --------------------------------------------------------------------------

def _affine_solve(x, w, L, sw, sx):
    """Weighted least squares for x ~ s*L + m with s >= 0, m <= 0; returns s, m, error ([n]).
    `w` None: unit weights (the same numbers, without multiplying by ones)."""
    wl = L if w is None else w * L
    t = wl * L  # one scratch array for the products (in place: the same operations, in order)
    sl, sl2 = wl.sum(-1), t.sum(-1)
    sxl = np.multiply(wl, x, out=t).sum(-1)
    det = sw * sl2 - sl * sl
    with np.errstate(divide="ignore", invalid="ignore"):
        s = (sw * sxl - sx * sl) / det
        m = (sl2 * sx - sl * sxl) / det
        # The format can only subtract an offset; when every code is equal (det = 0) the
        # pair is not identifiable either: then fit the scale alone.
        scale_only = (m > 0) | ~(det > 0)
        s = np.where(scale_only, np.where(sl2 > 0, sxl / sl2, 0), s)
        m = np.where(scale_only, 0, m)
    s = np.maximum(s, 0)
    np.multiply(s[:, None], L, out=t)
    t += m[:, None]
    t -= x
    np.square(t, out=t)
    if w is not None:
        t *= w
    return s.astype(F32), m.astype(F32), t.sum(-1)


def _codes(v, lo, hi):
    """clip(rint(v), lo, hi), in place in v (a temporary)."""
    return np.clip(np.rint(v, out=v), lo, hi, out=v)


def _weight_sums(x, w):
    """sum(w) and sum(w * x) per row; `w` None: unit weights."""
    if w is None:
        return np.full(x.shape[0], x.shape[1], F32), x.sum(-1)
    return w.sum(-1), (w * x).sum(-1)


def fit_affine(x, w, nmax, steps):
    """Per row of x [n, g]: scale >= 0 and offset <= 0 so that x ~ scale*L + offset, L in 0..nmax.
    `w`: per-weight importance [n, g], or None for unit weights."""
    lo, hi = np.minimum(x.min(-1), 0), x.max(-1)
    span = hi - lo
    flat = span <= 0
    inv_span = np.where(flat, 0, 1 / np.where(flat, 1, span)).astype(F32)
    sw, sx = _weight_sums(x, w)
    xs = x - lo[:, None]
    best_s, best_m, best_e = np.zeros_like(lo), lo.copy(), np.full(lo.shape, np.inf, F32)

    def consider(L):
        nonlocal best_s, best_m, best_e
        s, m, e = _affine_solve(x, w, L, sw, sx)
        better = e < best_e
        best_s, best_m, best_e = (np.where(better, s, best_s), np.where(better, m, best_m),
                                  np.where(better, e, best_e))

    for t in steps:
        consider(_codes(xs * ((nmax + t) * inv_span)[:, None], 0, nmax))
    for _ in range(2):
        inv = np.where(best_s > 0, 1 / np.where(best_s > 0, best_s, 1), 0).astype(F32)
        consider(_codes((x - best_m[:, None]) * inv[:, None], 0, nmax))
    # A flat sub-block keeps scale 0 and offset = its (non-positive) value.
    return np.where(flat, 0, best_s).astype(F32), np.where(flat, lo, best_m).astype(F32)


def fit_signed(x, w, nmax, steps):
    """Per row of x [n, g]: scale s so that x ~ s*L, L in -nmax..nmax-1 (the extreme value maps
    to -nmax, the side with the extra code, so s carries the opposite sign of that value).
    `w`: per-weight importance [n, g], or None for unit weights."""
    top = signed_max(x)[:, 0]
    zero = top == 0
    inv_top = np.where(zero, 0, 1 / np.where(zero, 1, top)).astype(F32)
    best_s, best_g = np.zeros_like(top), np.zeros_like(top)

    def consider(L):
        nonlocal best_s, best_g
        wl = L if w is None else w * L
        t = wl * x
        sxl, sl2 = t.sum(-1), np.multiply(wl, L, out=t).sum(-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            gain = np.where(sl2 > 0, sxl * sxl / sl2, 0)   # error = sum w x^2 - gain
            s = np.where(sl2 > 0, sxl / sl2, 0)
        better = gain > best_g
        best_s, best_g = np.where(better, s, best_s), np.where(better, gain, best_g)

    for t in steps:
        consider(_codes(x * (-(nmax + t) * inv_top)[:, None], -nmax, nmax - 1))
    for _ in range(2):
        inv = np.where(best_s != 0, 1 / np.where(best_s != 0, best_s, 1), 0).astype(F32)
        consider(_codes(x * inv[:, None], -nmax, nmax - 1))
    return best_s.astype(F32)


# ---- super-block scale encoding --------------------------------------------------------------

def _f16(v):
    return np.asarray(v, F32).astype(np.float16).astype(F32)


def _int_scales(v, top):
    """Unsigned per-sub-block values v [nb, s] -> f16 step d [nb] and integers 0..top."""
    d = _f16(v.max(-1) / top)
    inv = np.where(d > 0, 1 / np.where(d > 0, d, 1), 0).astype(F32)
    return d, np.clip(np.rint(v * inv[:, None]), 0, top)


def _signed_int_scales(v, lo, hi):
    """Signed per-sub-block scales -> f16 d [nb] and integers lo..hi; the extreme maps to lo."""
    d = _f16(signed_max(v)[:, 0] / lo)
    inv = np.where(d != 0, 1 / np.where(d != 0, d, 1), 0).astype(F32)
    return d, np.clip(np.rint(v * inv[:, None]), lo, hi)


def _refit_affine(x, a, b, d, dmin):
    """Least squares for one (d, dmin) per super-block with x ~ d*a - dmin*b, a = sc*L, b = m
    (both columns, or whichever is non-zero); keeps the old value where it has no solution."""
    saa, sab, sbb = (a * a).sum(-1), (a * b).sum(-1), (b * b).sum(-1)
    sxa, sxb = (x * a).sum(-1), (x * b).sum(-1)
    det = saa * sbb - sab * sab
    with np.errstate(divide="ignore", invalid="ignore"):
        nd = np.where(sbb == 0, sxa / saa, (sxa * sbb - sxb * sab) / det)
        nm = np.where(saa == 0, -sxb / sbb, (sxa * sab - sxb * saa) / det)
    both = (det > 1e-6 * saa * sbb) | (saa == 0) | (sbb == 0)
    nd = np.where(both & (saa > 0) & (nd > 0), nd, np.where(saa == 0, 0, d))
    nm = np.where(both & (sbb > 0) & (nm > 0), nm, np.where(sbb == 0, 0, dmin))
    return _f16(nd), _f16(nm)


def _refit_signed(x, a, d):
    saa, sxa = (a * a).sum(-1), (x * a).sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        nd = np.where(saa > 0, sxa / saa, d)
    return _f16(nd)


def _codes_affine(x, scale, offset, nmax):
    """Nearest codes for x ~ scale*L - offset; x [nb, s, g], scale/offset [nb, s]."""
    inv = np.where(scale > 0, 1 / np.where(scale > 0, scale, 1), 0).astype(F32)
    return np.clip(np.rint((x + offset[..., None]) * inv[..., None]), 0, nmax)


def _codes_signed(x, scale, nmax):
    inv = np.where(scale != 0, 1 / np.where(scale != 0, scale, 1), 0).astype(F32)
    return np.clip(np.rint(x * inv[..., None]), -nmax, nmax - 1)


def _keep_better(x, cand_a, cand_b, decode):
    """Per super-block, whichever of two candidate encodings decodes closer to x."""
    ea = np.square(decode(*cand_a) - x).sum(-1)
    eb = np.square(decode(*cand_b) - x).sum(-1)
    pick = (eb < ea)[:, None]
    return tuple(np.where(pick.reshape(pick.shape + (1,) * (a.ndim - 2)), b, a)
                 for a, b in zip(cand_a, cand_b))


def quantize_affine(x, group, nmax, scale_top, steps):
    """Super-blocks [nb, 256] -> d, dmin [nb, 1] (f16 values), sc, m [nb, s], codes [nb, s, group]."""
    nb = x.shape[0]
    g = x.reshape(-1, group)
    s, off = fit_affine(g, None, nmax, steps)
    d, sc = _int_scales(s.reshape(nb, -1), scale_top)
    dmin, m = _int_scales(-off.reshape(nb, -1), scale_top)
    xg = x.reshape(nb, -1, group)

    def encode(d, dmin):
        return d[:, None], dmin[:, None], _codes_affine(xg, d[:, None] * sc, dmin[:, None] * m, nmax)

    def decode(d, dmin, L):
        return ((d * sc)[..., None] * L - (dmin * m)[..., None]).reshape(nb, -1)

    first = encode(d, dmin)
    a, b = (sc[..., None] * first[2]).reshape(nb, -1), np.repeat(m, group, axis=1)
    d, dmin, L = _keep_better(x, first, encode(*_refit_affine(x, a, b, d, dmin)), decode)
    return d, dmin, sc.astype(np.uint8), m.astype(np.uint8), L.astype(np.uint8)


def quantize_signed(x, group, nmax, lo, hi, steps):
    """Super-blocks [nb, 256] -> d [nb, 1] (f16 value), sc [nb, s] in lo..hi, codes -nmax..nmax-1."""
    nb = x.shape[0]
    g = x.reshape(-1, group)
    s = fit_signed(g, None, nmax, steps)
    d, sc = _signed_int_scales(s.reshape(nb, -1), lo, hi)
    xg = x.reshape(nb, -1, group)

    def encode(d):
        return d[:, None], _codes_signed(xg, d[:, None] * sc, nmax)

    def decode(d, L):
        return ((d * sc)[..., None] * L).reshape(nb, -1)

    first = encode(d)
    refit = _refit_signed(x, (sc[..., None] * first[1]).reshape(nb, -1), d)
    d, L = _keep_better(x, first, encode(refit), decode)
    return d, sc.astype(np.int8), L.astype(np.int8)


# ---- bit layouts -----------------------------------------------------------------------------

_SHIFT2 = np.array([0, 2, 4, 6], np.uint8)[:, None]


def _pack2(L):
    """[nb, 256] 2-bit codes -> 64 bytes: byte 32h+l holds codes 128h + 32k + l at bits 2k."""
    q = L.reshape(-1, 2, 4, 32).astype(np.uint8) << _SHIFT2
    return np.bitwise_or.reduce(q, axis=2).reshape(-1, 64)


def _unpack2(b):
    return ((b.reshape(-1, 2, 1, 32) >> _SHIFT2) & 3).reshape(-1, QK_K)


def _pack_high(bit):
    """[nb, 256] bits -> 32 bytes: bit k of byte l is weight 32k + l."""
    q = bit.reshape(-1, 8, 32).astype(np.uint8) << np.arange(8, dtype=np.uint8)[:, None]
    return np.bitwise_or.reduce(q, axis=1)


def _unpack_high(b):
    return ((b[:, None, :] >> np.arange(8, dtype=np.uint8)[:, None]) & 1).reshape(-1, QK_K)


def _pack_scales6(sc, m):
    """8 six-bit scales and 8 six-bit mins -> the 12-byte q4_k/q5_k scale field."""
    lo4 = sc[:, :4] | ((sc[:, 4:] >> 4) << 6)
    mid4 = m[:, :4] | ((m[:, 4:] >> 4) << 6)
    hi4 = (sc[:, 4:] & 15) | ((m[:, 4:] & 15) << 4)
    return np.concatenate([lo4, mid4, hi4], axis=1)


def _unpack_scales6(b):
    sc = np.concatenate([b[:, 0:4] & 63, (b[:, 8:12] & 15) | ((b[:, 0:4] >> 6) << 4)], axis=1)
    m = np.concatenate([b[:, 4:8] & 63, (b[:, 8:12] >> 4) | ((b[:, 4:8] >> 6) << 4)], axis=1)
    return sc, m


def _pack_scales3(l):
    """16 six-bit biased scales -> q3_k's 12 bytes: low nibbles in 0..7, high pairs in 8..11."""
    low = (l[:, :8] & 15) | ((l[:, 8:] & 15) << 4)
    hi = ((l.reshape(-1, 4, 4) >> 4) & 3) << (2 * np.arange(4, dtype=np.uint8))[:, None]
    return np.concatenate([low, np.bitwise_or.reduce(hi, axis=1)], axis=1)


def _unpack_scales3(b):
    low = np.concatenate([b[:, :8] & 15, b[:, :8] >> 4], axis=1)
    hi = (b[:, None, 8:12] >> (2 * np.arange(4, dtype=np.uint8))[:, None]) & 3
    return (low | (hi.reshape(-1, 16) << 4)).astype(np.int8) - np.int8(32)


def _scaled(vals, d, sc, group):
    """(d * sc) per sub-block times vals, in float32 in that order (as gguf's dequantizer)."""
    ds = (d * sc.astype(F32))[..., None]
    return ds * vals.astype(F32).reshape(vals.shape[0], -1, group)


# ---- the formats -----------------------------------------------------------------------------

_STEPS_Q2 = np.arange(-0.5, 1.01, 0.1)
_STEPS_Q4 = np.arange(-1.0, 1.01, 0.1)
_STEPS_Q3 = np.arange(-0.9, 0.91, 0.1)


def q2_k_quantize(x):
    xb = as_blocks(x, QK_K)
    d, dmin, sc, m, L = quantize_affine(xb, 16, 3, 15, _STEPS_Q2)
    out = [sc | (m << 4), _pack2(L), f16_bytes(d), f16_bytes(dmin)]
    return rows_of(np.concatenate(out, axis=1), x.shape[0])


def q2_k_dequantize(raw):
    b = as_raw_blocks(raw, 84)
    d, dmin, sc = f16_at(b, 80), f16_at(b, 82), b[:, :16]
    q = _scaled(_unpack2(b[:, 16:80]), d, sc & 15, 16) - (dmin * (sc >> 4).astype(F32))[..., None]
    return rows_of(q, raw.shape[0])


def q3_k_quantize(x):
    xb = as_blocks(x, QK_K)
    d, sc, L = quantize_signed(xb, 16, 4, -32, 31, _STEPS_Q3)
    u = (L.reshape(-1, QK_K) + 4).astype(np.uint8)
    out = [_pack_high(u >> 2), _pack2(u & 3), _pack_scales3((sc + 32).astype(np.uint8)), f16_bytes(d)]
    return rows_of(np.concatenate(out, axis=1), x.shape[0])


def q3_k_dequantize(raw):
    b = as_raw_blocks(raw, 110)
    q = _unpack2(b[:, 32:96]).astype(np.int8) - ((_unpack_high(b[:, :32]) ^ 1) << 2).astype(np.int8)
    return rows_of(_scaled(q, f16_at(b, 108), _unpack_scales3(b[:, 96:108]), 16), raw.shape[0])


def _q45_quantize(bits):
    def quantize(x):
        xb = as_blocks(x, QK_K)
        d, dmin, sc, m, L = quantize_affine(xb, 32, (1 << bits) - 1, 63, _STEPS_Q4)
        L = L.reshape(-1, 4, 64)
        out = [f16_bytes(d), f16_bytes(dmin), _pack_scales6(sc, m)]
        if bits == 5:
            out.append(_pack_high(L.reshape(-1, QK_K) >> 4))
        out.append(pack_nibbles(L & 15).reshape(-1, 128))
        return rows_of(np.concatenate(out, axis=1), x.shape[0])
    return quantize


def _q45_dequantize(bits):
    nbytes = 144 if bits == 4 else 176

    def dequantize(raw):
        b = as_raw_blocks(raw, nbytes)
        sc, m = _unpack_scales6(b[:, 4:16])
        q = unpack_nibbles(b[:, -128:].reshape(-1, 4, 32)).reshape(-1, QK_K)
        if bits == 5:
            q = q | (_unpack_high(b[:, 16:48]) << 4)
        dm = (f16_at(b, 2) * m.astype(F32))[..., None]
        return rows_of(_scaled(q, f16_at(b, 0), sc, 32) - dm, raw.shape[0])
    return dequantize


def q6_k_quantize(x):
    xb = as_blocks(x, QK_K)
    d, sc, L = quantize_signed(xb, 16, 32, -128, 127, _STEPS_Q3)
    u = (L.reshape(-1, QK_K) + 32).astype(np.uint8)
    ql = pack_nibbles((u & 15).reshape(-1, 2, 128)).reshape(-1, 128)
    qh = np.bitwise_or.reduce((u >> 4).reshape(-1, 2, 4, 32) << _SHIFT2, axis=2).reshape(-1, 64)
    out = [ql, qh, sc.view(np.uint8), f16_bytes(d)]
    return rows_of(np.concatenate(out, axis=1), x.shape[0])


def q6_k_dequantize(raw):
    b = as_raw_blocks(raw, 210)
    low = unpack_nibbles(b[:, :128].reshape(-1, 2, 64)).reshape(-1, QK_K)
    q = (low | (_unpack2(b[:, 128:192]) << 4)).astype(np.int8) - np.int8(32)
    sc = np.ascontiguousarray(b[:, 192:208]).view(np.int8)
    return rows_of(_scaled(q, f16_at(b, 208), sc, 16), raw.shape[0])


def q8_k_quantize(x):
    xb = as_blocks(x, QK_K)
    amax = np.abs(xb).max(axis=1, keepdims=True)
    inv = np.where(amax > 0, F32(127) / np.where(amax > 0, amax, 1), 0).astype(F32)
    q = np.clip(np.rint(xb * inv), -127, 127).astype(np.int8)
    d = np.where(inv > 0, 1 / np.where(inv > 0, inv, 1), 0).astype("<f4")
    sums = q.reshape(-1, 16, 16).sum(-1, dtype=np.int16).astype("<i2")
    out = [d.view(np.uint8), q.view(np.uint8), sums.view(np.uint8)]
    return rows_of(np.concatenate(out, axis=1), x.shape[0])


def q8_k_dequantize(raw):
    b = as_raw_blocks(raw, 292)
    d = np.ascontiguousarray(b[:, :4]).view("<f4").astype(F32)
    q = np.ascontiguousarray(b[:, 4:260]).view(np.int8)
    return rows_of(d * q.astype(F32), raw.shape[0])


register(QuantFormat("q2_k", int(T.Q2_K), QK_K, 84, q2_k_quantize, q2_k_dequantize))
register(QuantFormat("q3_k", int(T.Q3_K), QK_K, 110, q3_k_quantize, q3_k_dequantize))
register(QuantFormat("q4_k", int(T.Q4_K), QK_K, 144, _q45_quantize(4), _q45_dequantize(4)))
register(QuantFormat("q5_k", int(T.Q5_K), QK_K, 176, _q45_quantize(5), _q45_dequantize(5)))
register(QuantFormat("q6_k", int(T.Q6_K), QK_K, 210, q6_k_quantize, q6_k_dequantize))
register(QuantFormat("q8_k", int(T.Q8_K), QK_K, 292, q8_k_quantize, q8_k_dequantize))
