/* Choosing the next token from a row of logits, with runtime/sampling.py's definitions:
 * repetition penalty (each distinct id once), temperature, top-k, top-p (the smallest prefix of
 * the sorted candidates whose mass reaches top_p), min-p (relative to the most likely), then one
 * draw. Temperature 0 is argmax with the lowest id on ties, exactly as numpy's argmax.
 * All buffers are made once (sampler_init) for the vocabulary size. */
#ifndef INGOT_SAMPLE_H
#define INGOT_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

#include "ingot.h"

typedef struct {
    int32_t n;
    float *x;       /* the penalised, scaled logits; then probabilities */
    int32_t *ids;   /* candidate ids */
    uint8_t *seen;  /* penalty marks, cleared after use */
    uint64_t rng[2];
    int seeded;     /* the generator was started, from `seed` */
    uint64_t seed;
} ingot_sampler;

int sampler_init(ingot_sampler *s, int32_t n_vocab);
void sampler_free(ingot_sampler *s);
/* Restarts the draws from `seed`. */
void sampler_seed(ingot_sampler *s, uint64_t seed);
/* The candidates the filters leave: returns m, with their ids in ids[0..m) and their weights
 * (unnormalised probabilities, the top one 1) in x[id]. Greedy: the argmax alone. */
int32_t sampler_filter(ingot_sampler *s, const float *logits, const ingot_sampling *p,
                       const int32_t *history, size_t n_history);
/* Returns the chosen id (sampler_filter, then one draw). history: the ids the penalty looks
 * at. */
int32_t sampler_pick(ingot_sampler *s, const float *logits, const ingot_sampling *p,
                     const int32_t *history, size_t n_history);
/* A message for bad parameters, or NULL when they are valid. */
const char *sampler_check(const ingot_sampling *p);

#endif
