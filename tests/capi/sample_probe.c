/* Exposes libingot's sampler filters (runtime/capi/sample.c, hidden inside libingot.so) to
 * tests/test_capi_sample.py: the candidate ids and their probabilities for one row of logits. */
#include <string.h>

#include "sample.h"

/* Returns the number of candidates (ids and normalised probabilities in ids/probs), or -1. */
int probe_filter(const float *logits, int32_t n, float temperature, int32_t top_k, float top_p,
                 float min_p, float penalty, const int32_t *history, size_t n_history,
                 int32_t *ids, double *probs) {
    ingot_sampler s;
    ingot_sampling p;
    memset(&p, 0, sizeof p);
    p.size = sizeof p;
    p.temperature = temperature, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p;
    p.repetition_penalty = penalty;
    if (sampler_check(&p) || sampler_init(&s, n)) return -1;
    int32_t m = sampler_filter(&s, logits, &p, history, n_history);
    double total = 0;
    for (int32_t i = 0; i < m; i++) total += s.x[s.ids[i]];
    for (int32_t i = 0; i < m; i++) ids[i] = s.ids[i], probs[i] = s.x[s.ids[i]] / total;
    sampler_free(&s);
    return m;
}
