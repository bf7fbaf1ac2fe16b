// Shared device helpers for every Ingot kernel. Kernels take their arguments as 64-bit words:
// a[i] an address or an integer, or a float32's bits in the low 32 bits (AF); d[0] = pos (the
// step's first position), d[1] = n (tokens in the step). The batched decode step (several
// sequences, one token each) adds its row table: d[2 + 2t] = row t's position, d[3 + 2t] = the
// byte offset of its sequence's KV cache from slot 0's (the step's state words).
#ifndef INGOT_SIM
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>  // WMMA (the simulator's: sim/shim.h)
#endif

typedef long long i64;
typedef unsigned char u8;
typedef unsigned short u16;

#define KARGS const i64 *__restrict__ a, const i64 *__restrict__ d
#define AF(i) __int_as_float((int)a[i])
#define AI(i) ((int)a[i])
#define AFP(i) ((const float *)a[i])
#define AOUT(i) ((float *)a[i])
#define FULL 0xffffffffu

// Row t's position and KV cache offset: one sequence's consecutive positions from d[0] in the
// cache the words name, or with ROWS (the batched step's kernels) from the row table.
template <bool ROWS> __device__ __forceinline__ i64 row_pos(const i64 *d, i64 t) {
    return ROWS ? d[2 + 2 * t] : d[0] + t;
}
template <bool ROWS> __device__ __forceinline__ i64 row_kv(const i64 *d, i64 t) {
    return ROWS ? d[3 + 2 * t] : 0;
}

__device__ __forceinline__ float h2f(u16 h) { return __half2float(__ushort_as_half(h)); }
__device__ __forceinline__ u16 f2h(float x) { return __half_as_ushort(__float2half_rn(x)); }
__device__ __forceinline__ float bf2f(u16 h) { return __int_as_float((int)((unsigned)h << 16)); }
__device__ __forceinline__ float ldh(const u8 *p) { return h2f(*(const u16 *)p); }

// Every thread of the block calls these the same number of times (the CPU harness runs a
// shuffle as a block-wide exchange).
__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(FULL, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(FULL, v, o));
    return v;
}
// Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float block_sum(float v, float *sh) {
    v = warp_sum(v);
    const int w = threadIdx.x >> 5, nw = blockDim.x >> 5;
    if ((threadIdx.x & 31) == 0) sh[w] = v;
    __syncthreads();
    float r = 0.0f;
    for (int i = 0; i < nw; i++) r += sh[i];  // same order in every thread: one value
    __syncthreads();
    return r;
}

// 32 bits from an address known to be A-byte aligned (block types are packed: 2 or 1).
template <int A> __device__ __forceinline__ unsigned ld32(const u8 *p) {
    if (A % 4 == 0) return *(const unsigned *)p;
    if (A % 2 == 0) return (unsigned)((const u16 *)p)[0] | ((unsigned)((const u16 *)p)[1] << 16);
    return (unsigned)p[0] | ((unsigned)p[1] << 8) | ((unsigned)p[2] << 16) | ((unsigned)p[3] << 24);
}
// Bits 0..3 of b to bit 4 of bytes 0..3 (a q5 code's fifth bit).
__device__ __forceinline__ unsigned spread4(unsigned b) {
    return ((b & 1u) | ((b & 2u) << 7) | ((b & 4u) << 14) | ((b & 8u) << 21)) << 4;
}
// Four 4-bit codes (byte k: nibble k of c, low first) through a 16-entry signed table.
__device__ __forceinline__ unsigned lut4(unsigned c, const signed char *t) {
    return (unsigned)(u8)t[c & 15] | ((unsigned)(u8)t[(c >> 8) & 15] << 8) |
           ((unsigned)(u8)t[(c >> 16) & 15] << 16) | ((unsigned)(u8)t[(c >> 24) & 15] << 24);
}

// Weight loaders for the float storage types: element i, or elements i..i+7 with one or two
// 16-byte loads (i a multiple of 8, the row 16-byte aligned).
struct LdF32 {
    __device__ static float ld(const void *p, i64 i) { return ((const float *)p)[i]; }
    __device__ static void ld8(const void *p, i64 i, float *v) {
        const float4 a = ((const float4 *)p)[i / 4], b = ((const float4 *)p)[i / 4 + 1];
        v[0] = a.x; v[1] = a.y; v[2] = a.z; v[3] = a.w;
        v[4] = b.x; v[5] = b.y; v[6] = b.z; v[7] = b.w;
    }
};
struct LdF16 {
    __device__ static float ld(const void *p, i64 i) { return h2f(((const u16 *)p)[i]); }
    __device__ static void ld8(const void *p, i64 i, float *v) {
        const uint4 u = ((const uint4 *)p)[i / 8];
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
        for (int k = 0; k < 4; k++) {
            v[2 * k] = h2f((u16)w[k]);
            v[2 * k + 1] = h2f((u16)(w[k] >> 16));
        }
    }
};
struct LdBF16 {
    __device__ static float ld(const void *p, i64 i) { return bf2f(((const u16 *)p)[i]); }
    __device__ static void ld8(const void *p, i64 i, float *v) {
        const uint4 u = ((const uint4 *)p)[i / 8];
        const unsigned w[4] = {u.x, u.y, u.z, u.w};
        for (int k = 0; k < 4; k++) {
            v[2 * k] = __int_as_float((int)(w[k] << 16));
            v[2 * k + 1] = __int_as_float((int)(w[k] & 0xffff0000u));
        }
    }
};

// Activations (targets/cpu/kernels.py ACT_CODES): 0 silu, 1 gelu (tanh), 2 gelu (erf).
__device__ __forceinline__ float act_fn(float x, int kind) {
    if (kind == 0) return x / (1.0f + expf(-x));
    if (kind == 1) {
        const float u = 0.7978845608028654f * (x + 0.044715f * x * x * x);
        return x / (1.0f + expf(-2.0f * u));
    }
    return 0.5f * x * (1.0f + erff(x * 0.7071067811865476f));
}
