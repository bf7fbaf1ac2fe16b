"""Block formats as CUDA device code, from one table.

Each block type (quant/registry.py names; ggml's layouts, as targets/cpu/quant_kernels.py
reads them) becomes a struct with one decoder: `slice(b, s, q0, q1, d, m)` gives the 8 values
8s..8s+7 of the block at `b` as int8 codes (q0: values 0..3, q1: 4..7, byte k = value k) with
value = d * code + m. Slices of 8 never straddle a sub-block's scale (nor do aligned 16s, which
the tensor-core kernel takes with one d, m: sub-blocks are 16 values or more), so every type
fits this one shape, and the same codes feed the float kernels (codes to float, one FMA per
slice) and the integer-dot kernels (codes times 8-bit activations: dp4a, WMMA). `A` is the
block's alignment in bytes (gcd(bytes per block, 16); rows start 64-aligned in the weights
section).
"""
from __future__ import annotations

from math import gcd

# name -> C body of its slice decoder (values and bytes per block: quant/registry.py, the one
# description of each format's layout that the CPU kernels and the quantizers use too). Values
# of one block: see the CPU decoders for where each lives; v0 = 8 * s is the slice's first
# value.
FORMATS = {
    "q4_0": """  // f16 d, qs[16]: byte j holds values j (low nibble) and j + 16
    const unsigned sh = (s >> 1) * 4; const u8 *qs = b + 2 + (s & 1) * 8;
    q0 = (ld32<A>(qs) >> sh) & 0x0f0f0f0fu; q1 = (ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu;
    d = ldh(b); m = -8.0f * d;""",
    "q4_1": """  // f16 d, f16 m, qs[16] as q4_0
    const unsigned sh = (s >> 1) * 4; const u8 *qs = b + 4 + (s & 1) * 8;
    q0 = (ld32<A>(qs) >> sh) & 0x0f0f0f0fu; q1 = (ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu;
    d = ldh(b); m = ldh(b + 2);""",
    "q5_0": """  // f16 d, u32 qh (bit v: value v's fifth bit), qs[16] as q4_0
    const unsigned sh = (s >> 1) * 4, hb = (ld32<A>(b + 2) >> (8 * s)) & 255u;
    const u8 *qs = b + 6 + (s & 1) * 8;
    q0 = ((ld32<A>(qs) >> sh) & 0x0f0f0f0fu) | spread4(hb);
    q1 = ((ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu) | spread4(hb >> 4);
    d = ldh(b); m = -16.0f * d;""",
    "q5_1": """  // f16 d, f16 m, u32 qh, qs[16] as q5_0
    const unsigned sh = (s >> 1) * 4, hb = (ld32<A>(b + 4) >> (8 * s)) & 255u;
    const u8 *qs = b + 8 + (s & 1) * 8;
    q0 = ((ld32<A>(qs) >> sh) & 0x0f0f0f0fu) | spread4(hb);
    q1 = ((ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu) | spread4(hb >> 4);
    d = ldh(b); m = ldh(b + 2);""",
    "q8_0": """  // f16 d, i8 qs[32]
    q0 = ld32<A>(b + 2 + 8 * s); q1 = ld32<A>(b + 6 + 8 * s); d = ldh(b); m = 0.0f;""",
    "q8_1": """  // f16 d, f16 s (unused), i8 qs[32]: ggml's 36-byte block
    q0 = ld32<A>(b + 4 + 8 * s); q1 = ld32<A>(b + 8 + 8 * s); d = ldh(b); m = 0.0f;""",
    "iq4_nl": """  // f16 d, qs[16] of codebook indices laid out as q4_0
    const unsigned sh = (s >> 1) * 4; const u8 *qs = b + 2 + (s & 1) * 8;
    q0 = lut4((ld32<A>(qs) >> sh) & 0x0f0f0f0fu, IQ4_NL_VALUES);
    q1 = lut4((ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu, IQ4_NL_VALUES);
    d = ldh(b); m = 0.0f;""",
    "mxfp4": """  // u8 e8m0 exponent e, qs[16] of e2m1 codes laid out as q4_0
    const unsigned sh = (s >> 1) * 4, e = b[0]; const u8 *qs = b + 1 + (s & 1) * 8;
    q0 = lut4((ld32<A>(qs) >> sh) & 0x0f0f0f0fu, E2M1_X2);
    q1 = lut4((ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu, E2M1_X2);
    // half of 2^(e - 127), for the doubled e2m1 values, from its bits
    d = e >= 2 ? __int_as_float((int)((e - 1) << 23)) : __int_as_float(0x00200000 << e);
    m = 0.0f;""",
    "q2_k": """  // scales[16] (low nibble scale, high min), qs[64], f16 d, f16 dmin.
    // Value v: 2-bit field (v % 128) / 32 of qs byte (v / 128) * 32 + v % 32; scale byte v / 16.
    const int v0 = 8 * s, sc = b[v0 / 16];
    const unsigned sh = 2 * ((v0 & 127) >> 5); const u8 *qs = b + 16 + (v0 >> 7) * 32 + (v0 & 31);
    q0 = (ld32<A>(qs) >> sh) & 0x03030303u; q1 = (ld32<A>(qs + 4) >> sh) & 0x03030303u;
    d = ldh(b + 80) * (float)(sc & 15); m = -ldh(b + 82) * (float)(sc >> 4);""",
    "q3_k": """  // hmask[32], qs[64], scales[12] (6-bit signed, packed), f16 d.
    // Value v: 2-bit field f = (v % 128) / 32 of qs byte (v / 128) * 32 + v % 32, plus 4 if bit
    // 4 * (v / 128) + f of hmask byte v % 32; code - 4; scale k = v / 16.
    const int v0 = 8 * s, k = v0 / 16, f = (v0 & 127) >> 5, r = v0 & 31;
    const u8 *qs = b + 32 + (v0 >> 7) * 32 + r, *sc = b + 96;
    const unsigned hs = 4 * (v0 >> 7) + f;
    q0 = ((ld32<A>(qs) >> (2 * f)) & 0x03030303u) | (((ld32<A>(b + r) >> hs) & 0x01010101u) << 2);
    q1 = ((ld32<A>(qs + 4) >> (2 * f)) & 0x03030303u)
         | (((ld32<A>(b + r + 4) >> hs) & 0x01010101u) << 2);
    const int lo = k < 8 ? (sc[k] & 15) : (sc[k - 8] >> 4);
    const int hi = (sc[8 + (k & 3)] >> (2 * (k >> 2))) & 3;
    d = ldh(b + 108) * (float)((lo | (hi << 4)) - 32); m = -4.0f * d;""",
    "q4_k": """  // f16 d, f16 dmin, scales[12] (6-bit scale/min pairs), qs[128].
    // Value v: nibble ((v % 64) / 32) of qs byte (v / 64) * 32 + v % 32; sub-block v / 32.
    const int v0 = 8 * s; const u8 *qs = b + 16 + (v0 >> 6) * 32 + (v0 & 31);
    const unsigned sh = ((v0 & 63) >> 5) * 4;
    q0 = (ld32<A>(qs) >> sh) & 0x0f0f0f0fu; q1 = (ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu;
    k4_scale_min(b, v0 >> 5, d, m);""",
    "q5_k": """  // f16 d, f16 dmin, scales[12], qh[32], qs[128]: as q4_k, plus
    // fifth bit v / 32 of qh byte v % 32
    const int v0 = 8 * s, k = v0 >> 5; const u8 *qs = b + 48 + (v0 >> 6) * 32 + (v0 & 31);
    const unsigned sh = ((v0 & 63) >> 5) * 4;
    const unsigned h0 = ld32<A>(b + 16 + (v0 & 31)), h1 = ld32<A>(b + 20 + (v0 & 31));
    q0 = ((ld32<A>(qs) >> sh) & 0x0f0f0f0fu) | (((h0 >> k) & 0x01010101u) << 4);
    q1 = ((ld32<A>(qs + 4) >> sh) & 0x0f0f0f0fu) | (((h1 >> k) & 0x01010101u) << 4);
    k4_scale_min(b, k, d, m);""",
    "q6_k": """  // ql[128], qh[64], i8 scales[16], f16 d. Value v = 128h + 32f + r:
    // nibble f / 2 of ql byte 64h + 32(f % 2) + r, plus 16 * 2-bit field f of qh byte 32h + r;
    // code - 32; scale v / 16.
    const int v0 = 8 * s, h = v0 >> 7, f = (v0 & 127) >> 5, r = v0 & 31;
    const u8 *ql = b + 64 * h + 32 * (f & 1) + r, *qh = b + 128 + 32 * h + r;
    const unsigned sh = 4 * (f >> 1);
    q0 = ((ld32<A>(ql) >> sh) & 0x0f0f0f0fu) | (((ld32<A>(qh) >> (2 * f)) & 0x03030303u) << 4);
    q1 = ((ld32<A>(ql + 4) >> sh) & 0x0f0f0f0fu)
         | (((ld32<A>(qh + 4) >> (2 * f)) & 0x03030303u) << 4);
    d = ldh(b + 208) * (float)((const signed char *)b)[192 + v0 / 16]; m = -32.0f * d;""",
    "q8_k": """  // f32 d, i8 qs[256], i16 bsums[16] (unused)
    q0 = ld32<A>(b + 4 + 8 * s); q1 = ld32<A>(b + 8 + 8 * s); d = *(const float *)b; m = 0.0f;""",
}

PRELUDE = """// Block formats (targets/cuda/formats.py): slice s = values 8s..8s+7 as int8 codes.
__constant__ signed char IQ4_NL_VALUES[16] = {-127, -104, -83, -65, -49, -35, -22, -10,
                                              1, 13, 25, 38, 53, 69, 89, 113};
// twice the e2m1 value of each 4-bit code (sign bit, then 0, 0.5, 1, 1.5, 2, 3, 4, 6)
__constant__ signed char E2M1_X2[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};
// d * scale and -dmin * min of sub-block k of 8 (q4_k, q5_k): 12 bytes at b + 4; bytes 0..3
// scales, 4..7 mins, 8..11 low nibbles of sub-blocks 4..7 whose top bits top bytes 0..7.
__device__ __forceinline__ void k4_scale_min(const u8 *b, int k, float &d, float &m) {
    const u8 *p = b + 4;
    int sc, mn;
    if (k < 4) { sc = p[k] & 63; mn = p[k + 4] & 63; }
    else {
        sc = (p[k + 4] & 15) | ((p[k - 4] >> 6) << 4);
        mn = (p[k + 4] >> 4) | ((p[k] >> 6) << 4);
    }
    d = ldh(b) * (float)sc;
    m = -ldh(b + 2) * (float)mn;
}
"""


def block_size(name: str) -> int:
    from ...quant.registry import get_format
    return get_format(name).block_size


def block_bytes(name: str) -> int:
    from ...quant.registry import get_format
    return get_format(name).block_bytes


def struct_source(name: str) -> str:
    bs, bb, body = block_size(name), block_bytes(name), FORMATS[name]
    return (f"struct Q_{name} {{\n  static const int BS = {bs}, BB = {bb}, A = {gcd(bb, 16)};\n"
            f"  __device__ static __forceinline__ void slice(const u8 *b, int s, unsigned &q0, "
            f"unsigned &q1, float &d, float &m) {{\n  {body.strip()}\n  }}\n}};\n")


def formats_source(names) -> str:
    return PRELUDE + "".join(struct_source(n) for n in names)
