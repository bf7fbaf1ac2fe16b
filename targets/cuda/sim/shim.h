// Runs Ingot's CUDA kernels on the host: the same .cu source, compiled by a C++ compiler with
// this header first. A launch runs its blocks one after another; the threads of a block are
// cooperative fibers that switch only at __syncthreads, so a block's shared memory
// is plain static storage. A warp shuffle is a block-wide exchange through a slot array between
// two barriers: kernels must reach barriers and shuffles uniformly (every thread of the block
// the same number of times; a launch that does not fails with -4); so must WMMA calls.
#pragma once
#define INGOT_SIM 1
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <limits.h>
#include <type_traits>
#include <ucontext.h>

#define __global__
#define __device__
#define __host__
#define __constant__
#define __shared__ static
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

struct dim3 { unsigned x, y, z; };
struct float4 { float x, y, z, w; };
struct uint4 { unsigned x, y, z, w; };

namespace ingot_sim {
const int MAX_THREADS = 1024;
const size_t STACK = 128 * 1024;
struct State {
    dim3 grid, block, bidx;
    int nthreads, cur;
    int fault;  // a misused WMMA call (below): the launch's result
    ucontext_t main;  // (the portable switch; x86-64 switches stacks itself, below)
    ucontext_t ctx[MAX_THREADS];
    void *main_sp, *sp[MAX_THREADS];
    dim3 tidx[MAX_THREADS];
    bool done[MAX_THREADS];
    unsigned barriers[MAX_THREADS];  // __syncthreads reached, per thread of the block
    unsigned long long slot[MAX_THREADS];
    char *stacks;
    int nstacks;
    void (*kernel)(const long long *, const long long *);
    const long long *a, *d;
};
static State S;
}  // namespace ingot_sim

#define threadIdx (ingot_sim::S.tidx[ingot_sim::S.cur])
#define blockIdx (ingot_sim::S.bidx)
#define blockDim (ingot_sim::S.block)
#define gridDim (ingot_sim::S.grid)

// x86-64: a fiber switch saves the callee-saved registers and the SSE / x87 control words on
// the old stack and resumes the new one: no system call (swapcontext also saves the signal mask,
// one system call per switch). Elsewhere: ucontext.
#if defined(__x86_64__) && defined(__linux__)
#define INGOT_FAST_FIBERS 1
extern "C" void ingot_sim_switch(void **save_sp, void *to_sp);
asm(".text\n.hidden ingot_sim_switch\n.globl ingot_sim_switch\n"
    ".type ingot_sim_switch,@function\ningot_sim_switch:\n"
    "  pushq %rbp\n  pushq %rbx\n  pushq %r12\n  pushq %r13\n  pushq %r14\n  pushq %r15\n"
    "  subq $8, %rsp\n  stmxcsr (%rsp)\n  fnstcw 4(%rsp)\n"
    "  movq %rsp, (%rdi)\n  movq %rsi, %rsp\n"
    "  ldmxcsr (%rsp)\n  fldcw 4(%rsp)\n  addq $8, %rsp\n"
    "  popq %r15\n  popq %r14\n  popq %r13\n  popq %r12\n  popq %rbx\n  popq %rbp\n  ret\n"
    ".size ingot_sim_switch, .-ingot_sim_switch\n");
#endif

static inline void __syncthreads() {
    using namespace ingot_sim;
    S.barriers[S.cur]++;
#ifdef INGOT_FAST_FIBERS
    ingot_sim_switch(&S.sp[S.cur], S.main_sp);
#else
    swapcontext(&S.ctx[S.cur], &S.main);
#endif
}

// --- warp shuffles (a full warp is 32 consecutive threads of the block) ---
template <class T> static inline T ingot_exchange(T v, int src) {
    using namespace ingot_sim;
    unsigned long long bits = 0;
    memcpy(&bits, &v, sizeof(T));
    S.slot[S.cur] = bits;
    __syncthreads();
    bits = S.slot[src];
    __syncthreads();
    T r;
    memcpy(&r, &bits, sizeof(T));
    return r;
}
template <class T> static inline T __shfl_xor_sync(unsigned, T v, int mask, int width = 32) {
    const int t = ingot_sim::S.cur;
    return ingot_exchange(v, (t & ~(width - 1)) | ((t & (width - 1)) ^ mask));
}
template <class T> static inline T __shfl_down_sync(unsigned, T v, unsigned delta, int width = 32) {
    const int t = ingot_sim::S.cur, lane = t & (width - 1);
    return ingot_exchange(v, lane + (int)delta < width ? t + (int)delta : t);
}
template <class T> static inline T __shfl_sync(unsigned, T v, int src, int width = 32) {
    const int t = ingot_sim::S.cur;
    return ingot_exchange(v, (t & ~(width - 1)) | (src & (width - 1)));
}

// A warp's barrier: the block's (every thread of the block calls it the same number of times,
// as the shuffles above).
static inline void __syncwarp(unsigned = 0xffffffffu) { __syncthreads(); }

// --- integer and float intrinsics ---
static inline float __int_as_float(int i) { float f; memcpy(&f, &i, 4); return f; }
static inline int __float_as_int(float f) { int i; memcpy(&i, &f, 4); return i; }
static inline int __float2int_rn(float f) { return (int)nearbyintf(f); }
#define __expf(x) expf(x)  // glibc declares these names itself
#define __logf(x) logf(x)
#define __fdividef(a, b) ((a) / (b))
#define rsqrtf(x) (1.0f / sqrtf(x))
static inline int __dp4a(int a, int b, int c) {
    for (int k = 0; k < 4; k++)
        c += (int)(signed char)(a >> (8 * k)) * (int)(signed char)(b >> (8 * k));
    return c;
}
static inline int min(int a, int b) { return a < b ? a : b; }
static inline int max(int a, int b) { return a > b ? a : b; }
static inline unsigned min(unsigned a, unsigned b) { return a < b ? a : b; }
static inline unsigned max(unsigned a, unsigned b) { return a > b ? a : b; }
static inline long long min(long long a, long long b) { return a < b ? a : b; }
static inline long long max(long long a, long long b) { return a > b ? a : b; }
static inline float atomicAdd(float *p, float v) { float o = *p; *p = o + v; return o; }
static inline int atomicAdd(int *p, int v) { int o = *p; *p = o + v; return o; }
static inline int atomicMax(int *p, int v) { int o = *p; if (v > o) *p = v; return o; }
static inline int atomicExch(int *p, int v) { int o = *p; *p = v; return o; }

// --- IEEE half as its bits (round to nearest even, as the device's conversions) ---
struct __half { unsigned short x; };
static inline __half __ushort_as_half(unsigned short u) { __half h; h.x = u; return h; }
static inline unsigned short __half_as_ushort(__half h) { return h.x; }
static inline float __half2float(__half h) {
    const unsigned s = (h.x & 0x8000u) << 16, e = (h.x >> 10) & 31, m = h.x & 1023;
    unsigned bits;
    if (e == 31) bits = s | 0x7f800000u | (m << 13);
    else if (e) bits = s | ((e + 112) << 23) | (m << 13);
    else if (!m) bits = s;
    else return (s ? -1.0f : 1.0f) * (float)m * 5.9604644775390625e-8f;  // subnormal: m * 2^-24
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
static inline __half __float2half_rn(float f) {
    unsigned x;
    memcpy(&x, &f, 4);
    const unsigned s = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
    __half h;
    if (ax >= 0x7f800000u) { h.x = s | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0); return h; }
    if (ax >= 0x477ff000u) { h.x = s | 0x7c00u; return h; }  // rounds past 65504: inf
    if (ax < 0x38800000u) {  // below 2^-14: subnormal half, rounded at bit 2^-24
        const float q = __int_as_float((int)ax) * 16777216.0f;  // exact scale to units of 2^-24
        h.x = s | (unsigned short)nearbyintf(q);
        return h;
    }
    unsigned r = ax + 0xfffu + ((ax >> 13) & 1u);  // round to nearest even at bit 13
    h.x = s | (unsigned short)((r - 0x38000000u) >> 13);
    return h;
}

// --- bfloat16 as its bits (round to nearest even; NaN stays a quiet NaN) ---
struct __nv_bfloat16 { unsigned short x; };
static inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short u) {
    __nv_bfloat16 h; h.x = u; return h;
}
static inline float __bfloat162float(__nv_bfloat16 h) { return __int_as_float((int)((unsigned)h.x << 16)); }
static inline __nv_bfloat16 __float2bfloat16_rn(float f) {
    const unsigned x = (unsigned)__float_as_int(f);
    __nv_bfloat16 h;
    if ((x & 0x7fffffffu) > 0x7f800000u) { h.x = (unsigned short)((x >> 16) | 0x40u); return h; }
    h.x = (unsigned short)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
    return h;
}

// --- nvcuda::wmma: integer (int8 in, int32 out) and 16-bit float (f16 / bf16 in, float out)
// element types ---
// A fragment holds its whole tile, row by row, in every lane (the device spreads it over the
// lanes in a layout we never rely on). load / store / mma are warp-collective as on the
// device: each lane posts its arguments, a barrier, the warp's first lane checks that they
// agree (one pointer, stride and layout a warp, the pointer 256-bit aligned, the stride whole
// 16 bytes: else the launch fails with -5) and does the operation through a per-warp tile, a
// barrier, then each lane takes the result. Memory layouts as the CUDA programming guide:
// row_major (i, j) at p[i * ldm + j], col_major at p[i + j * ldm], ldm in elements.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

// Tile shape of each use: A is M x K, B is K x N, the accumulator M x N.
template <class Use, int M, int N, int K> struct tile;
template <int M, int N, int K> struct tile<matrix_a, M, N, K> { enum { R = M, C = K }; };
template <int M, int N, int K> struct tile<matrix_b, M, N, K> { enum { R = K, C = N }; };
template <int M, int N, int K> struct tile<accumulator, M, N, K> { enum { R = M, C = N }; };

template <class Use, int M, int N, int K, class T, class Layout = void> struct fragment {
    static_assert(std::is_integral<T>::value || std::is_same<T, float>::value ||
                      std::is_same<T, __half>::value || std::is_same<T, __nv_bfloat16>::value,
                  "the simulator's WMMA has integer, float, half and bfloat16 elements");
    typedef T element_type;
    enum { R = tile<Use, M, N, K>::R, C = tile<Use, M, N, K>::C, num_elements = R * C };
    T x[num_elements];
};
}  // namespace wmma
}  // namespace nvcuda

namespace ingot_sim {
struct WarpCall { const void *p; unsigned ldm; int layout; };
static WarpCall wcall[MAX_THREADS];
static double wtile[MAX_THREADS / 32][32 * 32];  // a warp's result in flight (exact for
                                                  // every integer result: |v| < 2^53)
// Elements to and from the tile's doubles.
template <class T> static inline double wide(T v) { return (double)v; }
static inline double wide(__half v) { return __half2float(v); }
static inline double wide(__nv_bfloat16 v) { return __bfloat162float(v); }
template <class T> static inline T narrow(double v) { return (T)v; }
template <> inline __half narrow<__half>(double v) { return __float2half_rn((float)v); }
template <> inline __nv_bfloat16 narrow<__nv_bfloat16>(double v) {
    return __float2bfloat16_rn((float)v);
}

// Runs `lead` once for the calling warp between two barriers (as above);
// mem: the call addresses memory (else only the lanes' agreement is checked).
template <class Fn> static inline void warp_call(WarpCall c, bool mem, unsigned elem, Fn lead) {
    const int t = S.cur, w0 = t & ~31;
    wcall[t] = c;
    __syncthreads();
    if (t == w0) {
        bool ok = w0 + 32 <= S.nthreads;
        if (mem) ok = ok && (uintptr_t)c.p % 32 == 0 && c.ldm * elem % 16 == 0;
        for (int i = w0; ok && i < w0 + 32; i++)
            ok = wcall[i].p == c.p && wcall[i].ldm == c.ldm && wcall[i].layout == c.layout;
        if (ok) lead();
        else S.fault = -5;
    }
    __syncthreads();
}
template <class F> static inline double *warp_tile() {
    static_assert(F::num_elements <= 32 * 32, "WMMA tile too large for the simulator");
    return wtile[S.cur >> 5];
}
template <class F> static inline void take_tile(F &f) {
    const double *w = warp_tile<F>();
    for (int i = 0; i < F::num_elements; i++) f.x[i] = narrow<typename F::element_type>(w[i]);
}
// Offset of element (i, j) in memory of the given layout.
static inline long long wmma_at(int i, int j, unsigned ldm, bool row) {
    return row ? (long long)i * ldm + j : i + (long long)j * ldm;
}
}  // namespace ingot_sim

namespace nvcuda {
namespace wmma {
template <class Use, int M, int N, int K, class T, class L, class V>
static inline void fill_fragment(fragment<Use, M, N, K, T, L> &f, const V &v) {
    for (int i = 0; i < f.num_elements; i++) f.x[i] = ingot_sim::narrow<T>((double)v);
}

template <class F, class T>
static inline void load_tile(F &f, const T *p, unsigned ldm, bool row) {
    using namespace ingot_sim;
    warp_call({p, ldm, row}, true, sizeof(T), [&] {
        double *w = warp_tile<F>();
        for (int i = 0; i < F::R; i++)
            for (int j = 0; j < F::C; j++) w[i * F::C + j] = wide(p[wmma_at(i, j, ldm, row)]);
    });
    take_tile(f);
}
// A and B: the layout is the fragment's; the accumulator: given with the call.
template <class Use, int M, int N, int K, class T, class L>
static inline void load_matrix_sync(fragment<Use, M, N, K, T, L> &f, const T *p, unsigned ldm) {
    static_assert(std::is_same<L, row_major>::value || std::is_same<L, col_major>::value,
                  "matrix_a / matrix_b fragments name their layout");
    load_tile(f, p, ldm, std::is_same<L, row_major>::value);
}
template <int M, int N, int K, class T>
static inline void load_matrix_sync(fragment<accumulator, M, N, K, T> &f, const T *p,
                                    unsigned ldm, layout_t layout) {
    load_tile(f, p, ldm, layout == mem_row_major);
}
template <int M, int N, int K, class T>
static inline void store_matrix_sync(T *p, const fragment<accumulator, M, N, K, T> &f,
                                     unsigned ldm, layout_t layout) {
    const bool row = layout == mem_row_major;
    ingot_sim::warp_call({p, ldm, row}, true, sizeof(T), [&] {
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) p[ingot_sim::wmma_at(i, j, ldm, row)] = f.x[i * N + j];
    });
}
// D = A B + C: integers exact in 64 bits, then wrapped to the accumulator type (satf:
// clamped); 16-bit floats with each product exact and the sum in double, rounded once to the
// float accumulator (the device sums in float in an unspecified order: within rounding).
template <int M, int N, int K, class TA, class LA, class TB, class LB, class TC>
static inline void mma_sync(fragment<accumulator, M, N, K, TC> &d,
                            const fragment<matrix_a, M, N, K, TA, LA> &a,
                            const fragment<matrix_b, M, N, K, TB, LB> &b,
                            const fragment<accumulator, M, N, K, TC> &c, bool satf = false) {
    typedef fragment<accumulator, M, N, K, TC> FC;
    ingot_sim::warp_call({nullptr, 0, 0}, false, 1, [&] {
        double *w = ingot_sim::warp_tile<FC>();
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++) {
                if constexpr (std::is_integral<TA>::value) {
                    long long s = c.x[i * N + j];
                    for (int k = 0; k < K; k++) s += (long long)a.x[i * K + k] * b.x[k * N + j];
                    if (satf) s = s > INT_MAX ? INT_MAX : s < INT_MIN ? INT_MIN : s;
                    w[i * N + j] = (double)(TC)s;
                } else {
                    double s = ingot_sim::wide(c.x[i * N + j]);
                    for (int k = 0; k < K; k++)
                        s += ingot_sim::wide(a.x[i * K + k]) * ingot_sim::wide(b.x[k * N + j]);
                    w[i * N + j] = (double)(TC)s;
                }
            }
    });
    ingot_sim::take_tile(d);
}
}  // namespace wmma
}  // namespace nvcuda

// --- the launcher ---
namespace ingot_sim {
static void trampoline() {
    S.kernel(S.a, S.d);
    S.done[S.cur] = true;
#ifdef INGOT_FAST_FIBERS
    ingot_sim_switch(&S.sp[S.cur], S.main_sp);  // never resumed
    abort();
#endif
}
// A fresh fiber: a stack whose first switch "returns" into trampoline as if it had been called
// (control words as at start-up, zeroed registers).
static void start(int i) {
#ifdef INGOT_FAST_FIBERS
    unsigned long long *top = (unsigned long long *)(S.stacks + STACK * (i + 1));
    *--top = 0;                                // trampoline's return address (never used)
    *--top = (unsigned long long)trampoline;   // popped by ret: at entry rsp % 16 == 8
    for (int k = 0; k < 6; k++) *--top = 0;    // rbp rbx r12 r13 r14 r15
    *--top = 0x037f00001f80ull;                // mxcsr 0x1f80, x87 control word 0x037f
    S.sp[i] = top;
#else
    getcontext(&S.ctx[i]);
    S.ctx[i].uc_stack.ss_sp = S.stacks + STACK * i;
    S.ctx[i].uc_stack.ss_size = STACK;
    S.ctx[i].uc_link = &S.main;
    makecontext(&S.ctx[i], trampoline, 0);
#endif
}
static void resume(int i) {
    S.cur = i;
#ifdef INGOT_FAST_FIBERS
    ingot_sim_switch(&S.main_sp, S.sp[i]);
#else
    swapcontext(&S.main, &S.ctx[i]);
#endif
}
static int launch(void (*k)(const long long *, const long long *), const unsigned g[3],
                  const unsigned b[3], const long long *a, const long long *d) {
    const long long nt = (long long)b[0] * b[1] * b[2];
    if (nt < 1 || nt > MAX_THREADS) return -2;
    if (nt > S.nstacks) {
        free(S.stacks);
        S.stacks = (char *)malloc(STACK * nt);
        if (!S.stacks) { S.nstacks = 0; return -3; }
        S.nstacks = (int)nt;
    }
    S.kernel = k; S.a = a; S.d = d;
    S.grid = dim3{g[0], g[1], g[2]};
    S.block = dim3{b[0], b[1], b[2]};
    S.nthreads = (int)nt;
    S.fault = 0;
    for (unsigned z = 0; z < g[2]; z++)
        for (unsigned y = 0; y < g[1]; y++)
            for (unsigned x = 0; x < g[0]; x++) {
                S.bidx = dim3{x, y, z};
                for (int i = 0; i < S.nthreads; i++) {
                    S.tidx[i] = dim3{i % b[0], i / b[0] % b[1], i / (b[0] * b[1])};
                    S.done[i] = false;
                    S.barriers[i] = 0;
                    start(i);
                }
                for (bool alive = true; alive;) {  // one round = up to the next barrier
                    alive = false;
                    for (int i = 0; i < S.nthreads; i++)
                        if (!S.done[i]) {
                            resume(i);
                            alive = alive || !S.done[i];
                        }
                }
                // A barrier or shuffle that only some threads reached: the kernel would
                // misbehave on the device (or the harness paired the wrong threads).
                for (int i = 1; i < S.nthreads; i++)
                    if (S.barriers[i] != S.barriers[0]) return -4;
                if (S.fault) return S.fault;
            }
    return 0;
}
}  // namespace ingot_sim
