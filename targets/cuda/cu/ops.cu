// Row-wise and element-wise kernels; argument lists mirror targets/cpu/kernels.py (outputs are
// dense rows unless a stride is passed). Grids: y = the row, x = a column range or group.

// EMBED (float tables): tok, rows, table, dim, scale, y; grid (ceil(dim / 256), rows).
template <class L> __device__ void embed_float(KARGS) {
    const int *tok = (const int *)a[0];
    const i64 dim = a[3], t = blockIdx.y, j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < dim) AOUT(5)[t * dim + j] = L::ld((const void *)a[2], (i64)tok[t] * dim + j) * AF(4);
}

// RMSNORM: x, xs, rows, cols, group, w, eps, unit, y, ys; grid (cols / group, rows).
extern "C" __global__ void ingot_rmsnorm(KARGS) {
    __shared__ float sh[32];
    const i64 group = a[4], t = blockIdx.y, g = blockIdx.x;
    const float *x = AFP(0) + t * a[1] + g * group, *w = AFP(5);
    float *y = AOUT(8) + t * a[9] + g * group;
    const float unit = AF(7);
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < group; j += blockDim.x) ss += x[j] * x[j];
    ss = block_sum(ss, sh);
    const float r = 1.0f / sqrtf(ss / (float)group + AF(6));
    for (i64 j = threadIdx.x; j < group; j += blockDim.x) y[j] = x[j] * r * (w[j] + unit);
}

// ADD_RMSNORM: a, b, rows, cols, w, eps, unit, s, y: s = a + b, y = rmsnorm(s); grid (1, rows).
extern "C" __global__ void ingot_add_rmsnorm(KARGS) {
    __shared__ float sh[32];
    const i64 cols = a[3], o = (i64)blockIdx.y * cols;
    const float *A = AFP(0) + o, *B = AFP(1) + o, *w = AFP(4);
    float *S = AOUT(7) + o, *y = AOUT(8) + o;
    const float unit = AF(6);
    float ss = 0.0f;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) {
        const float v = A[j] + B[j];
        S[j] = v;
        ss += v * v;
    }
    ss = block_sum(ss, sh);
    const float r = 1.0f / sqrtf(ss / (float)cols + AF(5));
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) y[j] = S[j] * r * (w[j] + unit);
}

// LAYERNORM: x, xs, rows, cols, w, b, eps, y; grid (1, rows). Two passes: a stable variance.
extern "C" __global__ void ingot_layernorm(KARGS) {
    __shared__ float sh[32];
    const i64 cols = a[3], t = blockIdx.y;
    const float *x = AFP(0) + t * a[1], *w = AFP(4), *b = AFP(5);
    float *y = AOUT(7) + t * cols;
    float s = 0.0f;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) s += x[j];
    const float mean = block_sum(s, sh) / (float)cols;
    float v = 0.0f;
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x) v += (x[j] - mean) * (x[j] - mean);
    const float r = 1.0f / sqrtf(block_sum(v, sh) / (float)cols + AF(6));
    for (i64 j = threadIdx.x; j < cols; j += blockDim.x)
        y[j] = (x[j] - mean) * r * w[j] + (b ? b[j] : 0.0f);
}

// ACT: x, xs, rows, cols, kind, y; grid (ceil(cols / 256), rows).
extern "C" __global__ void ingot_act(KARGS) {
    const i64 cols = a[3], t = blockIdx.y, j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < cols) AOUT(5)[t * cols + j] = act_fn(AFP(0)[t * a[1] + j], AI(4));
}

// MUL_ACT / SWIGLU: a, as, b, bs, rows, cols, kind, y: y = act(a) * b.
extern "C" __global__ void ingot_mul_act(KARGS) {
    const i64 cols = a[5], t = blockIdx.y, j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < cols)
        AOUT(7)[t * cols + j] = act_fn(AFP(0)[t * a[1] + j], AI(6)) * AFP(2)[t * a[3] + j];
}

// ADD: a, as, b, bs, rows, cols, y.
extern "C" __global__ void ingot_add(KARGS) {
    const i64 cols = a[5], t = blockIdx.y, j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < cols) AOUT(6)[t * cols + j] = AFP(0)[t * a[1] + j] + AFP(2)[t * a[3] + j];
}

// SCALE / SOFTCAP: x, xs, rows, cols, c, softcap, y: c * x, or c * tanh(x / c).
extern "C" __global__ void ingot_scale(KARGS) {
    const i64 cols = a[3], t = blockIdx.y, j = (i64)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= cols) return;
    const float c = AF(4), v = AFP(0)[t * a[1] + j];
    AOUT(6)[t * cols + j] = a[5] ? c * tanhf(v / c) : c * v;
}

// ROPE: x, xs, rows, heads, hd, rot, neox, cos, sin, y; row t at position pos + t (ROWS: its
// row table entry); grid (heads, rows). Pairs (i, i + rot/2) (neox) or (2i, 2i + 1); columns
// past rot are copied.
template <bool ROWS> __device__ void rope(KARGS) {
    const i64 heads = a[3], hd = a[4], rot = a[5], half = rot / 2, t = blockIdx.y, h = blockIdx.x;
    const float *x = AFP(0) + t * a[1] + h * hd, *C = AFP(7), *S = AFP(8);
    float *y = AOUT(9) + t * heads * hd + h * hd;
    const i64 co = row_pos<ROWS>(d, t) * half;
    for (i64 i = threadIdx.x; i < half; i += blockDim.x) {
        const i64 ia = a[6] ? i : 2 * i, ib = a[6] ? i + half : 2 * i + 1;
        const float c = C[co + i], s = S[co + i], va = x[ia], vb = x[ib];
        y[ia] = va * c - vb * s;
        y[ib] = vb * c + va * s;
    }
    for (i64 i = rot + threadIdx.x; i < hd; i += blockDim.x) y[i] = x[i];
}
