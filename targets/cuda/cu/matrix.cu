// LINEAR: y[t, r] = sum_k x[t, k] W[r, k] (+ b[r]); args x, xs, rows, K, w, N, b, y (and for
// 8-bit activations the quantized rows' address). The warp kernels: one warp per output row,
// a block of LIN_WARPS rows, grid (ceil(N / LIN_WARPS), ceil(rows / LIN_TILE)); a warp reads
// its weight row once per tile of up to LIN_TILE tokens (decode: one token, NT = 1). Prefill
// takes the tiled kernels (below) instead.
#define LIN_WARPS 4
#define LIN_TILE 8

// A slice's 8 values as floats: d * code + m.
__device__ __forceinline__ void widen8(unsigned q0, unsigned q1, float d, float m, float *v) {
    for (int j = 0; j < 4; j++) {
        v[j] = d * (float)(signed char)(q0 >> (8 * j)) + m;
        v[j + 4] = d * (float)(signed char)(q1 >> (8 * j)) + m;
    }
}

// Weight rows as floats, 8 values of row r from k0 at a time (zeros past K): float storage
// types through their loader (16-byte loads when rows are whole 8s), block types through their
// slice decoder (K is whole blocks).
template <class L> struct FloatRows {
    __device__ static void get8(const u8 *w, i64 r, i64 k0, i64 K, float *v) {
        if (K % 8 == 0 && k0 < K) { L::ld8(w, r * K + k0, v); return; }
        for (int j = 0; j < 8; j++) v[j] = k0 + j < K ? L::ld(w, r * K + k0 + j) : 0.0f;
    }
};
template <class F> struct BlockRows {
    __device__ static void get8(const u8 *w, i64 r, i64 k0, i64 K, float *v) {
        unsigned q0, q1;
        float dd, mm;
        const i64 s = k0 / 8;
        F::slice(w + r * (K / F::BS * F::BB) + (s / (F::BS / 8)) * F::BB, (int)(s % (F::BS / 8)),
                 q0, q1, dd, mm);
        widen8(q0, q1, dd, mm, v);
    }
};

// Float activations, a warp a row: each lane takes 8 values at a time (lane, lane + 32, ...
// of the row's 8s), widened once for all the tile's tokens.
template <class R, int NT> __device__ void lin_warp(KARGS) {
    const i64 K = a[3], N = a[5], r = (i64)blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    const i64 t0 = (i64)blockIdx.y * LIN_TILE, nt = min((i64)NT, a[2] - t0);
    const int lane = threadIdx.x & 31;
    const float *x = AFP(0) + t0 * a[1];
    float acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    if (r < N)
        for (i64 k0 = 8 * lane; k0 < K; k0 += 256) {
            float wv[8];
            R::get8((const u8 *)a[4], r, k0, K, wv);
            const int m = (int)min((i64)8, K - k0);  // x has no columns past K
            for (int t = 0; t < NT; t++)
                if (t < nt)
                    for (int j = 0; j < m; j++) acc[t] += x[t * a[1] + k0 + j] * wv[j];
        }
    for (int t = 0; t < NT; t++) acc[t] = warp_sum(acc[t]);
    if (r < N && lane == 0) {
        const float bias = a[6] ? AFP(6)[r] : 0.0f;
        for (int t = 0; t < NT; t++)
            if (t < nt) AOUT(7)[(t0 + t) * N + r] = acc[t] + bias;
    }
}

// 8-bit activations (as the CPU's q8 kernels): row t of K values at q + t * q8_row(K): K int8
// codes, then K / 32 float scales dx = max|x| / 127, codes rint(x / dx).
__host__ __device__ __forceinline__ i64 q8_row(i64 K) { return (K + K / 8 + 15) / 16 * 16; }

// QUANTIZE_Q8: x, xs, rows, K, q; grid (ceil(K / 256), rows), 8 warps: a 32-block each.
extern "C" __global__ void ingot_quantize_q8(KARGS) {
    const i64 K = a[3], t = blockIdx.y, blk = (i64)blockIdx.x * 8 + (threadIdx.x >> 5);
    const bool ok = blk * 32 < K;
    const float v = ok ? AFP(0)[t * a[1] + blk * 32 + (threadIdx.x & 31)] : 0.0f;
    const float amax = warp_max(fabsf(v));
    if (!ok) return;
    u8 *q = (u8 *)a[4] + t * q8_row(K);
    const float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    q[blk * 32 + (threadIdx.x & 31)] = (u8)(signed char)__float2int_rn(v * inv);
    if ((threadIdx.x & 31) == 0) ((float *)(q + K))[blk] = amax / 127.0f;
}

// Block types, 8-bit activations: per slice two dp4a for the codes and two for the
// activations' sum (the term a block's offset or minimum multiplies); exact integers, then
// dx * (d * sum(code * a) + m * sum(a)).
template <class F, int NT> __device__ void lin_q8_tile(KARGS) {
    const i64 K = a[3], N = a[5], r = (i64)blockIdx.x * LIN_WARPS + (threadIdx.x >> 5);
    const i64 t0 = (i64)blockIdx.y * LIN_TILE, nt = min((i64)NT, a[2] - t0), qr = q8_row(K);
    const int lane = threadIdx.x & 31, spb = F::BS / 8;
    const u8 *xq = (const u8 *)a[8] + t0 * qr;
    float acc[NT];
    for (int t = 0; t < NT; t++) acc[t] = 0.0f;
    if (r < N) {
        const u8 *row = (const u8 *)a[4] + r * (K / F::BS * F::BB);
        for (i64 s = lane; s < K / 8; s += 32) {
            unsigned q0, q1;
            float dd, mm;
            F::slice(row + (s / spb) * F::BB, (int)(s % spb), q0, q1, dd, mm);
            for (int t = 0; t < NT; t++)
                if (t < nt) {
                    const u8 *c = xq + t * qr;
                    const int a0 = *(const int *)(c + 8 * s), a1 = *(const int *)(c + 8 * s + 4);
                    const int dot = __dp4a((int)q0, a0, __dp4a((int)q1, a1, 0));
                    const int sum = __dp4a(0x01010101, a0, __dp4a(0x01010101, a1, 0));
                    acc[t] += ((const float *)(c + K))[s / 4] * (dd * (float)dot + mm * (float)sum);
                }
        }
    }
    for (int t = 0; t < NT; t++) acc[t] = warp_sum(acc[t]);
    if (r < N && lane == 0) {
        const float bias = a[6] ? AFP(6)[r] : 0.0f;
        for (int t = 0; t < NT; t++)
            if (t < nt) AOUT(7)[(t0 + t) * N + r] = acc[t] + bias;
    }
}

// The 64 x 64 tiles' loaders: slice s (8 values) of weight row r, decoded (zeros past N), and
// of token t's 8-bit activations with its block's dx (zeros past the step's n tokens).
template <class F>
__device__ __forceinline__ void tile_w_slice(const u8 *w, i64 rb, i64 N, i64 r, i64 s,
                                             unsigned &q0, unsigned &q1, float &dd, float &mm) {
    q0 = q1 = 0;
    dd = mm = 0.0f;
    if (r < N)
        F::slice(w + r * rb + (s / (F::BS / 8)) * F::BB, (int)(s % (F::BS / 8)), q0, q1, dd, mm);
}
__device__ __forceinline__ void tile_x_slice(const u8 *x, i64 qr, i64 K, i64 n, i64 t, i64 s,
                                             int &a0, int &a1, float &dx) {
    a0 = a1 = 0;
    dx = 0.0f;
    if (t >= n) return;
    const u8 *c = x + t * qr;
    a0 = *(const int *)(c + 8 * s);
    a1 = *(const int *)(c + 8 * s + 4);
    dx = ((const float *)(c + K))[s / 4];
}

// A 64 x 64 tile's epilogue: this thread's 4 rows x 4 tokens from (r0 + ri, t0 + tj), plus
// the bias, where inside the matrix and the step's tokens.
__device__ __forceinline__ void store_tile4(KARGS, const float (&acc)[4][4], i64 r0, i64 t0,
                                            int ri, int tj) {
    const i64 N = a[5], n = a[2];
    for (int i = 0; i < 4; i++) {
        const i64 r = r0 + ri + i;
        if (r >= N) continue;
        const float bias = a[6] ? AFP(6)[r] : 0.0f;
        for (int j = 0; j < 4; j++)
            if (t0 + tj + j < n) AOUT(7)[(t0 + tj + j) * N + r] = acc[i][j] + bias;
    }
}

// Prefill, block types, 8-bit activations: a block of 256 threads computes a tile of 64 rows
// x 64 tokens (each thread 4 rows x 4 tokens), one 32-value activation block at a time: the
// tile's weight slices are decoded once into shared memory (codes, d, m) with the tokens'
// codes and sums, so each weight is read once per 64 tokens (the warp kernel: once per 8).
// Args as lin_q8_tile; grid (ceil(N / 64), ceil(rows / 64)).
#define TQ_ROWS 64
#define TQ_TOKS 64
template <class F> __device__ void lin_q8_tiled(KARGS) {
    __shared__ unsigned wq[4][TQ_ROWS][2], xq[4][TQ_TOKS][2];
    __shared__ float wd[4][TQ_ROWS], wm[4][TQ_ROWS], xs[4][TQ_TOKS], xd[TQ_TOKS];
    const i64 K = a[3], N = a[5], n = a[2], qr = q8_row(K), rb = K / F::BS * F::BB;
    const i64 r0 = (i64)blockIdx.x * TQ_ROWS, t0 = (i64)blockIdx.y * TQ_TOKS;
    const int tid = threadIdx.x, ld_i = tid >> 2, ld_s = tid & 3;  // loader: (row/token, slice)
    const int ri = (tid >> 4) * 4, tj = (tid & 15) * 4;            // this thread's outputs
    const u8 *w = (const u8 *)a[4], *x = (const u8 *)a[8];
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (i64 kb = 0; kb < K / 32; kb++) {
        const i64 s = kb * 4 + ld_s;  // the loaders' slice of the row
        unsigned q0, q1;
        float dd, mm;
        tile_w_slice<F>(w, rb, N, r0 + ld_i, s, q0, q1, dd, mm);
        wq[ld_s][ld_i][0] = q0; wq[ld_s][ld_i][1] = q1; wd[ld_s][ld_i] = dd; wm[ld_s][ld_i] = mm;
        int a0, a1;
        float dx;
        tile_x_slice(x, qr, K, n, t0 + ld_i, s, a0, a1, dx);
        xq[ld_s][ld_i][0] = (unsigned)a0; xq[ld_s][ld_i][1] = (unsigned)a1;
        xs[ld_s][ld_i] = (float)__dp4a(0x01010101, a0, __dp4a(0x01010101, a1, 0));
        if (ld_s == 0) xd[ld_i] = dx;
        __syncthreads();
        float part[4][4];
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) part[i][j] = 0.0f;
        for (int sl = 0; sl < 4; sl++)
            for (int i = 0; i < 4; i++) {
                const int w0 = (int)wq[sl][ri + i][0], w1 = (int)wq[sl][ri + i][1];
                const float di = wd[sl][ri + i], mi = wm[sl][ri + i];
                for (int j = 0; j < 4; j++) {
                    const int dot = __dp4a(w0, (int)xq[sl][tj + j][0],
                                           __dp4a(w1, (int)xq[sl][tj + j][1], 0));
                    part[i][j] += di * (float)dot + mi * xs[sl][tj + j];
                }
            }
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] += xd[tj + j] * part[i][j];
        __syncthreads();
    }
    store_tile4(a, d, acc, r0, t0, ri, tj);
}

// The same tiles on int8 tensor cores (WMMA, sm_72+): a 32-block's codes as two halves of 16
// values, each one k = 16 product (every format's sub-blocks are 16 values or more, so one
// (d, m) per half: the even slice's). Warp w multiplies the 16 rows from 16 (w / 2) by 32
// tokens from 32 (w % 2); the exact int32 dots go through shared memory to the float algebra
// of lin_q8_tiled. Codes stored [half][row or token][16 bytes]: every 16 x 16 operand tile
// starts 256-bit aligned, as WMMA requires.
#define TQ_DLD (TQ_TOKS + 4)  // the dots' row stride (whole 16 bytes; rows 4 banks apart)
template <class F> __device__ void lin_q8_wmma(KARGS) {
    using namespace nvcuda;
    __shared__ __align__(32) unsigned wq[2][TQ_ROWS][4], xq[2][TQ_TOKS][4];
    __shared__ __align__(32) int dot[2][TQ_ROWS][TQ_DLD];
    __shared__ float wd[2][TQ_ROWS], wm[2][TQ_ROWS], xs[4][TQ_TOKS], xd[TQ_TOKS];
    const i64 K = a[3], N = a[5], n = a[2], qr = q8_row(K), rb = K / F::BS * F::BB;
    const i64 r0 = (i64)blockIdx.x * TQ_ROWS, t0 = (i64)blockIdx.y * TQ_TOKS;
    const int tid = threadIdx.x, ld_i = tid >> 2, ld_s = tid & 3, h = ld_s >> 1, o = (ld_s & 1) * 2;
    const int ri = (tid >> 4) * 4, tj = (tid & 15) * 4;
    const int mr = (tid >> 6) * 16, mt = ((tid >> 5) & 1) * 32;  // this warp's products
    const u8 *w = (const u8 *)a[4], *x = (const u8 *)a[8];
    wmma::fragment<wmma::matrix_a, 16, 16, 16, signed char, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, signed char, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, int> fc;
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (i64 kb = 0; kb < K / 32; kb++) {
        const i64 s = kb * 4 + ld_s;
        unsigned q0, q1;
        float dd, mm;
        tile_w_slice<F>(w, rb, N, r0 + ld_i, s, q0, q1, dd, mm);
        wq[h][ld_i][o] = q0; wq[h][ld_i][o + 1] = q1;
        if (o == 0) { wd[h][ld_i] = dd; wm[h][ld_i] = mm; }
        int a0, a1;
        float dx;
        tile_x_slice(x, qr, K, n, t0 + ld_i, s, a0, a1, dx);
        xq[h][ld_i][o] = (unsigned)a0; xq[h][ld_i][o + 1] = (unsigned)a1;
        xs[ld_s][ld_i] = (float)__dp4a(0x01010101, a0, __dp4a(0x01010101, a1, 0));
        if (ld_s == 0) xd[ld_i] = dx;
        __syncthreads();
        for (int hh = 0; hh < 2; hh++) {
            wmma::load_matrix_sync(fa, (const signed char *)wq[hh][mr], 16);
            for (int c = 0; c < 32; c += 16) {
                wmma::load_matrix_sync(fb, (const signed char *)xq[hh][mt + c], 16);
                wmma::fill_fragment(fc, 0);
                wmma::mma_sync(fc, fa, fb, fc);
                wmma::store_matrix_sync(&dot[hh][mr][mt + c], fc, TQ_DLD, wmma::mem_row_major);
            }
        }
        __syncthreads();
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) {
                float part = 0.0f;
                for (int hh = 0; hh < 2; hh++)
                    part += wd[hh][ri + i] * (float)dot[hh][ri + i][tj + j] +
                            wm[hh][ri + i] * (xs[2 * hh][tj + j] + xs[2 * hh + 1][tj + j]);
                acc[i][j] += xd[tj + j] * part;
            }
        __syncthreads();
    }
    store_tile4(a, d, acc, r0, t0, ri, tj);
}

// Prefill, float activations (float weights, and the block types that keep float
// activations): the same 64 x 64 tiles over chunks of 32 values, weights widened to float in
// shared memory.
template <class R> __device__ void lin_float_tiled(KARGS) {
    __shared__ float ws[32][TQ_ROWS + 1], xs[32][TQ_TOKS + 1];  // [k][row or token]
    const i64 K = a[3], N = a[5], n = a[2], xst = a[1];
    const i64 r0 = (i64)blockIdx.x * TQ_ROWS, t0 = (i64)blockIdx.y * TQ_TOKS;
    const int tid = threadIdx.x, ld_i = tid >> 2, ld_k = (tid & 3) * 8;
    const int ri = (tid >> 4) * 4, tj = (tid & 15) * 4;
    const u8 *w = (const u8 *)a[4];
    const float *x = AFP(0);
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = 0.0f;
    for (i64 k0 = 0; k0 < K; k0 += 32) {
        float v[8];
        for (int j = 0; j < 8; j++) v[j] = 0.0f;
        if (r0 + ld_i < N) R::get8(w, r0 + ld_i, k0 + ld_k, K, v);
        for (int j = 0; j < 8; j++) ws[ld_k + j][ld_i] = v[j];
        for (int j = 0; j < 8; j++) {
            const i64 k = k0 + ld_k + j;
            xs[ld_k + j][ld_i] = t0 + ld_i < n && k < K ? x[(t0 + ld_i) * xst + k] : 0.0f;
        }
        __syncthreads();
        for (int k = 0; k < 32; k++)
            for (int i = 0; i < 4; i++)
                for (int j = 0; j < 4; j++) acc[i][j] += ws[k][ri + i] * xs[k][tj + j];
        __syncthreads();
    }
    store_tile4(a, d, acc, r0, t0, ri, tj);
}

// Prefill with f16 or bf16 weights on tensor cores (WMMA, float accumulators): the weights'
// own 16-bit values, the activations rounded to the same type, their only rounding (so each
// product is off by at most that type's unit roundoff, 2^-11 or 2^-8, relative). The same
// 64 x 64 tiles as lin_float_tiled over chunks of 32 values; warp w multiplies the 16 rows
// from 16 (w / 2) by the 32 tokens from 32 (w % 2), its two accumulators held across the
// whole K loop, then handed to store_tile4 through shared memory.
#define TH_LD 40              // a chunk row's stride in 16-bit values: 256-bit tile starts
#define TH_OLD (TQ_TOKS + 4)  // the results' row stride in floats
struct HalfF16 {
    typedef __half T;
    __device__ static T bits(u16 b) { return __ushort_as_half(b); }
    __device__ static T from(float v) { return __float2half_rn(v); }
};
struct HalfBF16 {
    typedef __nv_bfloat16 T;
    __device__ static T bits(u16 b) { return __ushort_as_bfloat16(b); }
    __device__ static T from(float v) { return __float2bfloat16_rn(v); }
};
template <class H> __device__ void lin_half_wmma(KARGS) {
    using namespace nvcuda;
    typedef typename H::T T;
    __shared__ __align__(32) T ws[TQ_ROWS][TH_LD], xs[TQ_TOKS][TH_LD];  // [row or token][k]
    __shared__ __align__(32) float res[TQ_ROWS][TH_OLD];
    const i64 K = a[3], N = a[5], n = a[2], xst = a[1];
    const i64 r0 = (i64)blockIdx.x * TQ_ROWS, t0 = (i64)blockIdx.y * TQ_TOKS;
    const int tid = threadIdx.x, ld_i = tid >> 2, ld_k = (tid & 3) * 8;
    const int ri = (tid >> 4) * 4, tj = (tid & 15) * 4;
    const int mr = (tid >> 6) * 16, mt = ((tid >> 5) & 1) * 32;  // this warp's products
    const u16 *w = (const u16 *)a[4];
    const float *x = AFP(0);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, T, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, T, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> fc[2];
    wmma::fill_fragment(fc[0], 0.0f);
    wmma::fill_fragment(fc[1], 0.0f);
    for (i64 k0 = 0; k0 < K; k0 += 32) {
        for (int j = 0; j < 8; j++) {  // zeros past the rows, tokens and K
            const i64 k = k0 + ld_k + j;
            ws[ld_i][ld_k + j] = H::bits(r0 + ld_i < N && k < K ? w[(r0 + ld_i) * K + k] : 0);
            xs[ld_i][ld_k + j] = H::from(t0 + ld_i < n && k < K ? x[(t0 + ld_i) * xst + k]
                                                                 : 0.0f);
        }
        __syncthreads();
        for (int kk = 0; kk < 32; kk += 16) {
            wmma::load_matrix_sync(fa, &ws[mr][kk], TH_LD);
            for (int c = 0; c < 2; c++) {
                wmma::load_matrix_sync(fb, &xs[mt + 16 * c][kk], TH_LD);
                wmma::mma_sync(fc[c], fa, fb, fc[c]);
            }
        }
        __syncthreads();
    }
    for (int c = 0; c < 2; c++)
        wmma::store_matrix_sync(&res[mr][mt + 16 * c], fc[c], TH_OLD, wmma::mem_row_major);
    __syncthreads();
    float acc[4][4];
    for (int i = 0; i < 4; i++)
        for (int j = 0; j < 4; j++) acc[i][j] = res[ri + i][tj + j];
    store_tile4(a, d, acc, r0, t0, ri, tj);
}

// EMBED from a block-quantized table: tok, rows, table, dim, scale, y; grid
// (ceil(dim / 8 / 128), rows): a thread decodes one slice of 8 values of the token's row.
template <class F> __device__ void embed_quant(KARGS) {
    const i64 dim = a[3], t = blockIdx.y, s = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (s >= dim / 8) return;
    const int spb = F::BS / 8;
    const u8 *row = (const u8 *)a[2] + (i64)((const int *)a[0])[t] * (dim / F::BS * F::BB);
    unsigned q0, q1;
    float dd, mm, v[8];
    F::slice(row + (s / spb) * F::BB, (int)(s % spb), q0, q1, dd, mm);
    widen8(q0, q1, dd, mm, v);
    float *y = AOUT(5) + t * dim + 8 * s;
    for (int j = 0; j < 8; j++) y[j] = v[j] * AF(4);
}
