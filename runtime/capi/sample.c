/* The sampler; see sample.h. */
#include "sample.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int sampler_init(ingot_sampler *s, int32_t n) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->x = malloc((size_t)n * sizeof *s->x);
    s->ids = malloc((size_t)n * sizeof *s->ids);
    s->seen = calloc((size_t)n, 1);
    return s->x && s->ids && s->seen ? 0 : -1;
}

void sampler_free(ingot_sampler *s) {
    free(s->x);
    free(s->ids);
    free(s->seen);
    memset(s, 0, sizeof *s);
}

/* splitmix64 expands the seed; xorshift128+ draws (small, fast, and good enough for sampling) */
static uint64_t splitmix(uint64_t *x) {
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

void sampler_seed(ingot_sampler *s, uint64_t seed) {
    uint64_t x = seed;
    s->seeded = 1;
    s->seed = seed;
    s->rng[0] = splitmix(&x);
    s->rng[1] = splitmix(&x);
    if (!s->rng[0] && !s->rng[1]) s->rng[1] = 1;
}

static double uniform(ingot_sampler *s) { /* [0, 1) with 53 random bits */
    uint64_t a = s->rng[0], b = s->rng[1];
    s->rng[0] = b;
    a ^= a << 23;
    s->rng[1] = a ^ b ^ (a >> 17) ^ (b >> 26);
    return (double)((s->rng[1] + b) >> 11) * (1.0 / 9007199254740992.0);
}

const char *sampler_check(const ingot_sampling *p) {
    if (!(p->temperature >= 0) || p->top_k < 0 || !(p->top_p > 0 && p->top_p <= 1) ||
        !(p->min_p >= 0 && p->min_p <= 1) || !(p->repetition_penalty > 0))
        return "bad sampling parameters: need temperature >= 0, top_k >= 0, 0 < top_p <= 1, "
               "0 <= min_p <= 1, repetition_penalty > 0";
    if (p->n_history && !p->history) return "history is NULL but n_history is not 0";
    return NULL;
}

static void penalize(ingot_sampler *s, const int32_t *h, size_t n, float rp) {
    for (size_t i = 0; i < n; i++) {
        int32_t t = h[i];
        if (t < 0 || t >= s->n || s->seen[t]) continue; /* ids past the head cannot be made */
        s->seen[t] = 1;
        s->x[t] = s->x[t] < 0 ? s->x[t] * rp : s->x[t] / rp;
    }
    for (size_t i = 0; i < n; i++)
        if (h[i] >= 0 && h[i] < s->n) s->seen[h[i]] = 0;
}

static int32_t argmax(const float *x, int32_t n) {
    int32_t best = 0;
    for (int32_t i = 1; i < n; i++)
        if (x[i] > x[best] || (isnan(x[i]) && !isnan(x[best]))) best = i; /* numpy: NaN wins */
    return best;
}

static _Thread_local const float *sort_key; /* qsort takes no context */
static int by_value_desc(const void *a, const void *b) {
    float x = sort_key[*(const int32_t *)a], y = sort_key[*(const int32_t *)b];
    if (x != y) return x > y ? -1 : 1;
    return *(const int32_t *)a < *(const int32_t *)b ? -1 : 1;
}

/* Moves the k largest of x[ids[0..m)] to the front (quickselect on the index array). */
static void select_top(const float *x, int32_t *ids, int32_t m, int32_t k) {
    int32_t lo = 0, hi = m - 1;
    while (lo < hi) {
        float pivot = x[ids[(lo + hi) / 2]];
        int32_t i = lo, j = hi;
        while (i <= j) {
            while (x[ids[i]] > pivot) i++;
            while (x[ids[j]] < pivot) j--;
            if (i <= j) {
                int32_t t = ids[i]; ids[i] = ids[j]; ids[j] = t;
                i++, j--;
            }
        }
        if (k - 1 <= j) hi = j;
        else if (k - 1 >= i) lo = i;
        else break;
    }
}

int32_t sampler_filter(ingot_sampler *s, const float *logits, const ingot_sampling *p,
                       const int32_t *history, size_t n_history) {
    float *x = s->x;
    memcpy(x, logits, (size_t)s->n * sizeof *x);
    if (n_history && p->repetition_penalty != 1.0f)
        penalize(s, history, n_history, p->repetition_penalty);
    if (p->temperature == 0) {
        s->ids[0] = argmax(x, s->n);
        x[s->ids[0]] = 1.0f;
        return 1;
    }
    if (p->temperature != 1.0f) {
        /* 1/T rounded once from double, as sampling.py's np.float32(1.0 / temperature) */
        float inv = (float)(1.0 / (double)p->temperature);
        for (int32_t i = 0; i < s->n; i++) x[i] *= inv;
    }
    int32_t m = s->n;
    for (int32_t i = 0; i < m; i++) s->ids[i] = i;
    if (p->top_k > 0 && p->top_k < m) {
        select_top(x, s->ids, m, p->top_k);
        m = p->top_k;
    }
    float top = x[s->ids[0]];
    for (int32_t i = 1; i < m; i++) top = x[s->ids[i]] > top ? x[s->ids[i]] : top;
    double mass = 0;
    for (int32_t i = 0; i < m; i++) {
        x[s->ids[i]] = expf(x[s->ids[i]] - top);
        mass += x[s->ids[i]];
    }
    if (p->top_p < 1.0f) {
        sort_key = x;
        qsort(s->ids, (size_t)m, sizeof *s->ids, by_value_desc);
        double cum = 0, want = (double)p->top_p * mass;
        int32_t keep = m;
        for (int32_t i = 0; i < m; i++) {
            cum += x[s->ids[i]];
            if (cum >= want) { keep = i + 1; break; }
        }
        m = keep;
    }
    if (p->min_p > 0) {
        float floor_p = p->min_p; /* the most likely token's probability is exp(0) = 1 here */
        int32_t k = 0;
        for (int32_t i = 0; i < m; i++)
            if (x[s->ids[i]] >= floor_p) s->ids[k++] = s->ids[i];
        m = k;
    }
    return m;
}

int32_t sampler_pick(ingot_sampler *s, const float *logits, const ingot_sampling *p,
                     const int32_t *history, size_t n_history) {
    int32_t m = sampler_filter(s, logits, p, history, n_history);
    if (p->temperature == 0) return s->ids[0]; /* greedy: no draw */
    const float *x = s->x;
    double total = 0;
    for (int32_t i = 0; i < m; i++) total += x[s->ids[i]];
    double r = uniform(s) * total, cum = 0;
    for (int32_t i = 0; i < m; i++) {
        cum += x[s->ids[i]];
        if (r < cum) return s->ids[i];
    }
    for (int32_t i = m - 1; i > 0; i--) /* rounding put the draw at the top: the last live one */
        if (x[s->ids[i]] > 0) return s->ids[i];
    return s->ids[0];
}
