"""Rotary position embedding tables, built at compile time (numpy only).

Every variant turns a RopeSpec into inverse frequencies `inv_freq[i]` (i < rot_dim/2) and an
attention factor; the table row for position p is factor * cos/sin(p * inv_freq).

Numerics follow Hugging Face transformers, the reference these tables are tested against: it
computes inv_freq in float32 and rounds p * inv_freq to float32 before taking cos/sin. We round at
the same steps (basic ops in float32 are exactly IEEE, like torch's; pow and cos/sin are taken in
float64 and rounded once), so rows agree with transformers to a few float32 ulps at any position.
Exact float64 angles would instead drift from it by up to p * 2**-24 radians.

Variants (the `rope_type` of `rope.scaling`):
  default, linear, dynamic (NTK), yarn, llama3, longrope.
Per-variant notes:
  dynamic  -- row p uses the frequencies transformers picks when decoding token by token, i.e.
              those for seq_len = p + 1 once that exceeds the original max positions.
  longrope -- transformers picks short or long factors for a whole call by whether its length
              exceeds original_max_position_embeddings; a table of max_seq_len rows uses
              short_factor if max_seq_len <= original max, else long_factor. The arch file must
              put a config's top-level original_max_position_embeddings (Phi-3) into the dict.
"""
from __future__ import annotations

import math

import numpy as np

from .spec import RopeSpec

F32 = np.float32


def _rot_dim(rope: RopeSpec, head_dim: int) -> int:
    dim = int(rope.rot_dim or head_dim)
    if dim <= 0 or dim % 2 or dim > head_dim:
        raise ValueError(f"rotary dim {dim} must be even and in (0, head_dim={head_dim}]")
    return dim


def _pow32(base, exp) -> np.ndarray:
    """float32 base ** float32 exp, evaluated in float64 and rounded once to float32."""
    return (np.asarray(base, F32).astype(np.float64) ** np.asarray(exp, F32).astype(np.float64)).astype(F32)


def _exponents(dim: int) -> np.ndarray:
    # 2i / dim, rounded to float32 as the reference does
    return np.arange(0, dim, 2, dtype=F32) / F32(dim)


def _base_inv_freq(theta: float, dim: int) -> np.ndarray:
    return F32(1.0) / _pow32(F32(theta), _exponents(dim))


def _orig_max(rope: RopeSpec, sc: dict) -> int:
    return int(sc.get("original_max_position_embeddings") or rope.max_position_embeddings)


def _factor(rope: RopeSpec, sc: dict) -> float:
    # Some configs (DeepSeek-V3 yarn, Phi-3 longrope) omit `factor`: it is then the context stretch.
    f = sc.get("factor")
    return float(f) if f is not None else rope.max_position_embeddings / _orig_max(rope, sc)


# --- variants: (rope, scaling dict, rot dim, seq_len) -> (inv_freq float32 [dim/2], factor) ---

def _default(rope, sc, dim, seq_len):
    return _base_inv_freq(rope.theta, dim), 1.0


def _linear(rope, sc, dim, seq_len):
    # positions divided by factor == frequencies divided by factor
    return _base_inv_freq(rope.theta, dim) / F32(sc["factor"]), 1.0


def _dynamic_inv(rope, sc, dim, seq_lens: np.ndarray) -> np.ndarray:
    """NTK-aware base growth for each sequence length (all > original max): [len(seq_lens), dim/2]."""
    factor, orig = float(sc["factor"]), _orig_max(rope, sc)
    grow = (F32(factor) * np.asarray(seq_lens, F32)) / F32(orig) - F32(factor - 1.0)
    base = F32(rope.theta) * _pow32(grow, F32(dim / (dim - 2)))
    return F32(1.0) / _pow32(base[:, None], _exponents(dim)[None, :])


def _dynamic(rope, sc, dim, seq_len):
    if seq_len is None or seq_len <= _orig_max(rope, sc):
        return _base_inv_freq(rope.theta, dim), 1.0  # within the trained range: no rescaling
    return _dynamic_inv(rope, sc, dim, np.array([seq_len]))[0], 1.0


def _yarn(rope, sc, dim, seq_len):
    theta, orig = float(rope.theta), _orig_max(rope, sc)
    factor = _factor(rope, sc)

    def mscale(scale, m=1.0):
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    att = sc.get("attention_factor")
    if att is None:
        m, m_all = sc.get("mscale"), sc.get("mscale_all_dim")
        att = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    # Dimension index at which a frequency completes `turns` rotations over the original context.
    def dim_at(turns):
        return dim * math.log(orig / (turns * 2 * math.pi)) / (2 * math.log(theta))

    lo, hi = dim_at(sc.get("beta_fast") or 32), dim_at(sc.get("beta_slow") or 1)
    if sc.get("truncate", True):
        lo, hi = math.floor(lo), math.ceil(hi)
    lo, hi = max(lo, 0), min(hi, dim - 1)
    if lo == hi:
        hi += 0.001  # avoid a zero-width ramp
    ramp = np.clip((np.arange(dim // 2, dtype=F32) - F32(lo)) / F32(hi - lo), F32(0), F32(1))
    keep = F32(1) - ramp  # 1: high-frequency dims extrapolate (unchanged); 0: interpolate

    freqs = _pow32(F32(theta), _exponents(dim))
    extrapolated = F32(1) / freqs
    interpolated = F32(1) / (F32(factor) * freqs)
    inv = interpolated * (F32(1) - keep) + extrapolated * keep
    return inv, float(att)


def _llama3(rope, sc, dim, seq_len):
    inv = _base_inv_freq(rope.theta, dim)
    factor = F32(sc["factor"])
    low, high = float(sc["low_freq_factor"]), float(sc["high_freq_factor"])
    orig = float(_orig_max(rope, sc))
    # wavelength = 2*pi / inv, rounded as reciprocal-then-multiply like the reference
    wavelen = (F32(1) / inv) * F32(2 * math.pi)
    long_wave = wavelen > F32(orig / low)    # low frequencies: fully interpolated
    short_wave = wavelen < F32(orig / high)  # high frequencies: untouched
    scaled = np.where(long_wave, inv / factor, inv)
    smooth = ((F32(1) / wavelen) * F32(orig) - F32(low)) / F32(high - low)
    blended = (F32(1) - smooth) * scaled / factor + smooth * scaled
    return np.where(~long_wave & ~short_wave, blended, scaled).astype(F32), 1.0


def _longrope(rope, sc, dim, seq_len):
    orig = _orig_max(rope, sc)
    factor = _factor(rope, sc)
    att = sc.get("attention_factor")
    if att is None:
        att = 1.0 if factor <= 1.0 else math.sqrt(1 + math.log(factor) / math.log(orig))
    ext = sc["long_factor"] if seq_len and seq_len > orig else sc["short_factor"]
    ext = np.asarray(ext, F32)
    if ext.shape != (dim // 2,):
        raise ValueError(f"longrope factors have {ext.size} entries, rotary dim {dim} needs {dim // 2}")
    return F32(1) / (ext * _pow32(F32(rope.theta), _exponents(dim))), float(att)


_VARIANTS = {
    "default": _default,
    "linear": _linear,
    "dynamic": _dynamic,
    "yarn": _yarn,
    "llama3": _llama3,
    "longrope": _longrope,
}


def _variant(rope: RopeSpec) -> tuple[str, dict]:
    sc = rope.scaling or {}
    kind = sc.get("rope_type", sc.get("type", "default")) if sc else "default"
    if kind not in _VARIANTS:
        raise ValueError(f"unsupported rope scaling type '{kind}'")
    return kind, sc


def inv_freq_and_factor(rope: RopeSpec, head_dim: int, seq_len: int | None = None) -> tuple[np.ndarray, float]:
    """float32 inverse frequencies [rot_dim/2] and the cos/sin multiplier for a sequence of
    `seq_len` tokens (None: the frequencies a model starts with). Only `dynamic` and `longrope`
    depend on seq_len."""
    kind, sc = _variant(rope)
    inv, att = _VARIANTS[kind](rope, sc, _rot_dim(rope, head_dim), seq_len)
    return inv.astype(F32), float(att)


def rope_tables(rope: RopeSpec, head_dim: int, max_seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 (cos, sin), each [max_seq_len, rot_dim/2]: row p = factor * cos/sin(p * inv_freq)."""
    kind, sc = _variant(rope)
    dim = _rot_dim(rope, head_dim)
    inv, att = inv_freq_and_factor(rope, head_dim, max_seq_len)
    inv = np.broadcast_to(inv, (max_seq_len, dim // 2)).copy()
    if kind == "dynamic":
        # token-by-token decoding: row p sees a sequence of p + 1 tokens
        orig = _orig_max(rope, sc)
        inv[:orig] = inv_freq_and_factor(rope, head_dim)[0]
        if max_seq_len > orig:
            inv[orig:] = _dynamic_inv(rope, sc, dim, np.arange(orig + 1, max_seq_len + 1))
    angle = np.arange(max_seq_len, dtype=F32)[:, None] * inv  # float32 product, as the reference
    angle = angle.astype(np.float64)
    return ((np.cos(angle) * att).astype(F32), (np.sin(angle) * att).astype(F32))
