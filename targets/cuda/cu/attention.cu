// The KV cache (compiler/ir.py kv_row_layout) and attention over it. Position p's row is
// p % ring (ring = the cache's rows: max_seq, or the window's ring). Each storage type says
// how to put one value of a head (given the 32-block's max |x|) and how to read one back.
struct KvF32 {
    __device__ static void put(u8 *row, i64 soff, i64 h, i64 D, i64 j, float v, float amax) {
        ((float *)row)[h * D + j] = v;
    }
    __device__ static float get(const u8 *row, i64 soff, i64 h, i64 D, i64 j) {
        return ((const float *)row)[h * D + j];
    }
};
struct KvF16 {
    __device__ static void put(u8 *row, i64 soff, i64 h, i64 D, i64 j, float v, float amax) {
        ((u16 *)row)[h * D + j] = f2h(v);
    }
    __device__ static float get(const u8 *row, i64 soff, i64 h, i64 D, i64 j) {
        return h2f(((const u16 *)row)[h * D + j]);
    }
};
// GGUF's Q8_0 per 32-block of a head (the last one shorter): d = max|x| / 127 as f16 (after
// the row's quants), codes round(x / d), halves away from zero, as the CPU cache.
struct KvQ8 {
    __device__ static void put(u8 *row, i64 soff, i64 h, i64 D, i64 j, float v, float amax) {
        const i64 nblk = (D + 31) / 32;
        const float dq = amax / 127.0f, inv = amax > 0.0f ? 1.0f / dq : 0.0f;
        if ((j & 31) == 0) ((u16 *)(row + soff))[h * nblk + j / 32] = f2h(dq);
        const float q = v * inv;
        ((signed char *)row)[h * D + j] = (signed char)(int)(q >= 0.0f ? q + 0.5f : q - 0.5f);
    }
    __device__ static float get(const u8 *row, i64 soff, i64 h, i64 D, i64 j) {
        const i64 nblk = (D + 31) / 32;
        const float sc = h2f(((const u16 *)(row + soff))[h * nblk + j / 32]);
        return sc * (float)((const signed char *)row)[h * D + j];
    }
};

// KV_STORE: k, ks, v, vs, rows, KV, D, kc, vc, ring, row_bytes, soff; grid (KV, rows), one
// warp: 32-blocks of the head in turn (the block's max |x| for q8_0). ROWS: each row into its
// own sequence's cache, at its own position (common.cuh row_pos, row_kv).
template <class F, bool ROWS> __device__ void kv_store(KARGS) {
    const i64 h = blockIdx.x, t = blockIdx.y, D = a[6], p = row_pos<ROWS>(d, t);
    const i64 o = row_kv<ROWS>(d, t) + (p % a[9]) * a[10];
    for (int which = 0; which < 2; which++) {
        const float *x = AFP(which ? 2 : 0) + t * a[which ? 3 : 1] + h * D;
        u8 *row = (u8 *)a[which ? 8 : 7] + o;
        for (i64 j0 = 0; j0 < D; j0 += 32) {
            const i64 j = j0 + threadIdx.x;
            const float v = j < D ? x[j] : 0.0f;
            const float amax = warp_max(fabsf(v));
            if (j < D) F::put(row, a[11], h, D, j, v, amax);
        }
    }
}

// ATTENTION: q, qs, rows, H, KV, D, kc, vc, ring, row_bytes, soff, scale, window, softcap, out;
// grid (H, rows), W warps (W <= 8: more for decode's long contexts, fewer for prefill's many
// short ones). Query t at position pos + t attends keys max(0, p - window + 1)..p; warp w
// takes keys w, w + W, ... with an online softmax (lane l holds dims l, l + 32, ...), then the
// warps' partial sums are merged. GQA: head h reads kv head h / (H / KV). ROWS: query t of
// its own sequence, at its own position (common.cuh row_pos, row_kv).
#define ATT_MAX_WARPS 8
#define ATT_MAX_D 512
// The warps' partial results: max, sum, and weighted values (s_acc[w * ATT_MAX_D + dim]).
struct AttShared { float m[ATT_MAX_WARPS], l[ATT_MAX_WARPS], acc[ATT_MAX_WARPS * ATT_MAX_D]; };

template <class F, int DL, bool ROWS> __device__ void attend(KARGS, AttShared &sh, i64 S) {
    float *s_m = sh.m, *s_l = sh.l, *s_acc = sh.acc;
    const i64 H = a[3], KV = a[4], D = a[5], h = blockIdx.x, t = blockIdx.y, g = h / (H / KV);
    const i64 ring = a[8], rb = a[9], soff = a[10], window = a[12], p = row_pos<ROWS>(d, t);
    const float scale = AF(11), cap = AF(13);
    const i64 slot = row_kv<ROWS>(d, t);
    const u8 *kc = (const u8 *)a[6] + slot, *vc = (const u8 *)a[7] + slot;
    const i64 start = (window > 0 && p - window + 1 > 0) ? p - window + 1 : 0, L = p + 1 - start;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, W = blockDim.x >> 5;
    const float *q = AFP(0) + t * a[1] + h * D;
    float qv[DL], acc[DL];
    for (int i = 0; i < DL; i++) {
        const i64 j = lane + 32 * i;
        qv[i] = j < D ? q[j] : 0.0f;
        acc[i] = 0.0f;
    }
    // Split S ways (blockIdx.z of S): this block takes keys [kb, ke) of the L.
    const i64 per = (L + S - 1) / S, kb = min(L, (i64)blockIdx.z * per), ke = min(L, kb + per);
    float m = -INFINITY, l = 0.0f;
    for (i64 j0 = kb; j0 < ke; j0 += W) {  // the same trip count in every warp
        const i64 jj = j0 + w;
        const bool ok = jj < ke;
        const i64 row = ((start + (ok ? jj : 0)) % ring) * rb;
        float s = 0.0f;
        if (ok)
            for (int i = 0; i < DL; i++)
                if (lane + 32 * i < D) s += qv[i] * F::get(kc + row, soff, g, D, lane + 32 * i);
        s = warp_sum(s) * scale;
        if (cap > 0.0f) s = cap * tanhf(s / cap);
        if (ok) {
            const float mn = fmaxf(m, s), c = expf(m - mn), e = expf(s - mn);
            l = l * c + e;
            for (int i = 0; i < DL; i++)
                if (lane + 32 * i < D)
                    acc[i] = acc[i] * c + e * F::get(vc + row, soff, g, D, lane + 32 * i);
            m = mn;
        }
    }
    if (lane == 0) { s_m[w] = m; s_l[w] = l; }
    for (int i = 0; i < DL; i++)
        if (lane + 32 * i < D) s_acc[w * ATT_MAX_D + lane + 32 * i] = acc[i];
    __syncthreads();
    float M = -INFINITY;
    for (int k = 0; k < W; k++) M = fmaxf(M, s_m[k]);
    float den = 0.0f, f[ATT_MAX_WARPS];
    for (int k = 0; k < W; k++) {
        f[k] = s_l[k] > 0.0f ? expf(s_m[k] - M) : 0.0f;  // a warp with no keys adds nothing
        den += s_l[k] * f[k];
    }
    if (S == 1) {
        float *out = AOUT(14) + (t * H + h) * D;
        for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
            float num = 0.0f;
            for (int k = 0; k < W; k++) num += f[k] * s_acc[k * ATT_MAX_D + j];
            out[j] = num / den;
        }
        return;
    }
    // A split's partial result for ingot_attention_merge: max, sum, unnormalised values.
    float *part = (float *)a[15] + ((t * H + h) * S + blockIdx.z) * (D + 2);
    if (threadIdx.x == 0) { part[0] = M; part[1] = den; }
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
        float num = 0.0f;
        for (int k = 0; k < W; k++) num += f[k] * s_acc[k * ATT_MAX_D + j];
        part[2 + j] = num;
    }
}
// S = 1: the whole softmax in one block per (token, head); S > 1 (decode over long contexts:
// grid z = S, args + partials' address, S): each block a contiguous S-th of the keys, merged
// by ingot_attention_merge.
template <class F, bool ROWS> __device__ void attention(KARGS, i64 S) {
    __shared__ AttShared sh;  // one copy for the kernel, whichever variant runs
    const i64 D = a[5];  // registers per lane for the head's dims
    if (D <= 64) attend<F, 2, ROWS>(a, d, sh, S);
    else if (D <= 128) attend<F, 4, ROWS>(a, d, sh, S);
    else if (D <= 256) attend<F, 8, ROWS>(a, d, sh, S);
    else attend<F, 16, ROWS>(a, d, sh, S);
}

// Prefill ATTENTION in tiles (one sequence, several tokens): attention's arguments, then HB;
// grid (H / HB, ceil(rows / (ATP_Q / HB))), ATP_Q warps. HB heads of one kv group (HB divides
// H / KV) share a block: warp w takes head blockIdx.x * HB + w % HB for query
// t = blockIdx.y * (ATP_Q / HB) + w / HB. The block walks the keys its queries need (from the
// first one's window start to the last one's position) ATP_K at a time: all threads read a
// tile of K and V of the group from the cache into shared memory once (decoded to float) for
// its ATP_Q (query, head) pairs, instead of each pair reading the cache itself. Scores: lane l
// takes key l % ATP_K over the dims of parity l / ATP_K (the two halves summed by one
// shuffle), so each lane does D / 2 products a tile and the warp reduces once a tile, not once
// a key; keys outside a query's window score -inf. Weighted values: lane l holds dims l,
// l + 32, ... as attend. Head dims up to ATP_MAX_D.
#define ATP_Q 8
#define ATP_K 16
#define ATP_MAX_D 256
#define ATP_KLD (ATP_MAX_D + 2)  // K rows: lanes k and k + 16 (the dim pairs) on distinct banks
struct AtpShared {
    float ks[ATP_K][ATP_KLD], vs[ATP_K][ATP_MAX_D], qs[ATP_Q][ATP_MAX_D], ps[ATP_Q][ATP_K];
};
template <class F, int DL> __device__ void attend_tiled(KARGS, AtpShared &sh) {
    float(*ks)[ATP_KLD] = sh.ks, (*vs)[ATP_MAX_D] = sh.vs, (*qs)[ATP_MAX_D] = sh.qs;
    float(*ps)[ATP_K] = sh.ps;
    const int lane = threadIdx.x & 31, w = threadIdx.x >> 5, kl = lane % ATP_K, par = lane / ATP_K;
    const i64 H = a[3], KV = a[4], D = a[5], n = a[2], HB = a[15], TB = ATP_Q / HB;
    const i64 h = blockIdx.x * HB + w % HB, g = h / (H / KV);
    const i64 ring = a[8], rb = a[9], soff = a[10], window = a[12];
    const float scale = AF(11), cap = AF(13);
    const u8 *kc = (const u8 *)a[6], *vc = (const u8 *)a[7];
    const i64 t0 = (i64)blockIdx.y * TB, t = t0 + w / HB, tl = min(n, t0 + TB) - 1;
    const bool live = t < n;
    const i64 p = d[0] + (live ? t : tl);  // this query's position (a spare warp: the last's)
    auto first = [&](i64 q) { return (window > 0 && q - window + 1 > 0) ? q - window + 1 : 0; };
    const i64 lo = first(p), kb = first(d[0] + t0), ke = d[0] + tl + 1;  // keys [kb, ke)
    for (i64 j = lane; j < D; j += 32) qs[w][j] = live ? AFP(0)[t * a[1] + h * D + j] : 0.0f;
    float acc[DL];
    for (int i = 0; i < DL; i++) acc[i] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    for (i64 k0 = kb; k0 < ke; k0 += ATP_K) {
        __syncthreads();  // the last tile's readers are done
        for (i64 e = threadIdx.x; e < ATP_K * D; e += blockDim.x) {
            const i64 k = e / D, j = e - k * D, key = k0 + k, row = (key % ring) * rb;
            ks[k][j] = key < ke ? F::get(kc + row, soff, g, D, j) : 0.0f;
            vs[k][j] = key < ke ? F::get(vc + row, soff, g, D, j) : 0.0f;
        }
        __syncthreads();
        const i64 key = k0 + kl;
        float s = 0.0f;
        for (i64 j = par; j < D; j += 2) s += qs[w][j] * ks[kl][j];
        s += __shfl_xor_sync(FULL, s, ATP_K);
        s *= scale;
        if (cap > 0.0f) s = cap * tanhf(s / cap);
        if (!live || key < lo || key > p) s = -INFINITY;
        const float mt = warp_max(s);
        const float mn = fmaxf(m, mt);  // -inf while no key of this query has come
        const float e = mn == -INFINITY ? 0.0f : expf(s - mn);
        const float c = mn == -INFINITY ? 1.0f : expf(m - mn);
        if (par == 0) ps[w][kl] = e;
        l = l * c + warp_sum(par == 0 ? e : 0.0f);
        m = mn;
        __syncwarp();
        for (int i = 0; i < DL; i++) {
            const i64 j = lane + 32 * i;
            if (j < D) {
                float v = acc[i] * c;
                for (int k = 0; k < ATP_K; k++) v += ps[w][k] * vs[k][j];
                acc[i] = v;
            }
        }
    }
    if (!live) return;
    float *out = AOUT(14) + (t * H + h) * D;
    for (int i = 0; i < DL; i++)
        if (lane + 32 * i < D) out[lane + 32 * i] = acc[i] / l;
}
template <class F> __device__ void attention_tiled(KARGS) {
    __shared__ AtpShared sh;  // one copy for the kernel, whichever variant runs
    const i64 D = a[5];
    if (D <= 64) attend_tiled<F, 2>(a, d, sh);
    else if (D <= 128) attend_tiled<F, 4>(a, d, sh);
    else attend_tiled<F, 8>(a, d, sh);
}

// ATTENTION_MERGE: part, rows, H, D, S, out; grid (H, rows): the S partial results of each
// (token, head) rescaled to their common max and normalised.
extern "C" __global__ void ingot_attention_merge(KARGS) {
    const i64 H = a[2], D = a[3], S = a[4], t = blockIdx.y, h = blockIdx.x;
    const float *part = AFP(0) + (t * H + h) * S * (D + 2);  // per split: max, sum, D values
    float M = -INFINITY, den = 0.0f;
    for (i64 z = 0; z < S; z++) M = fmaxf(M, part[z * (D + 2)]);
    for (i64 z = 0; z < S; z++) {
        const float *p = part + z * (D + 2);
        if (p[1] > 0.0f) den += p[1] * expf(p[0] - M);  // a split with no keys adds nothing
    }
    float *out = AOUT(5) + (t * H + h) * D;
    for (i64 j = threadIdx.x; j < D; j += blockDim.x) {
        float num = 0.0f;
        for (i64 z = 0; z < S; z++) {
            const float *p = part + z * (D + 2);
            if (p[1] > 0.0f) num += p[2 + j] * expf(p[0] - M);
        }
        out[j] = num / den;
    }
}
