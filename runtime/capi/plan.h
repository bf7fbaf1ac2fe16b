/* What libingot needs from an artefact's plan (runtime/model.py reads the same fields), its
 * header's "target", and its end-of-sequence ids.
 *
 * Why a JSON reader rather than a binary plan section: the artefact's own section table is JSON
 * (runtime/artefact.py), so C must read JSON anyway; reading the plan the same way keeps one
 * source of truth, needs no compiler change and runs every artefact already built. */
#ifndef INGOT_PLAN_H
#define INGOT_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "artefact.h"

#define PLAN_MAX_EOS 16
#define PLAN_MAX_UNITS 1024 /* offload units (layers, head); a model has far fewer */

typedef struct {
    int64_t vocab_size, max_seq_len, prefill_chunk, max_batch;
    int64_t arena_bytes, scratch_bytes, state_bytes, tokens_offset, logits_offset;
    int64_t n_units, units_ctl_offset, n_profile_calls;
    int64_t weights_bytes;       /* the weights section (shared weights + every unit) */
    int64_t max_memory_hint;     /* the compile-time --max-memory; 0: none */
    int64_t unit_offset[PLAN_MAX_UNITS], unit_bytes[PLAN_MAX_UNITS]; /* in the weights */
    int units_signal;
    int32_t bos;                 /* -1: none */
    int32_t eos[PLAN_MAX_EOS];
    int n_eos;
    char prefill[64], decode[64];
} ingot_plan;

/* Reads and checks the plan (every offset inside the arena). */
int plan_read(const art_file *a, ingot_plan *p, char *err, size_t err_size);
/* Refuses a target compiled for another machine or for CPU features this host lacks. */
int plan_check_host(const art_file *a, const char *path, char *err, size_t err_size);

#endif
