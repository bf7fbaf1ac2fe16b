/* Layer streaming under a memory budget, as runtime/offload.py: which weight units stay
 * resident (plan_streaming's choice, byte for byte the same rule) and the read-ahead thread that
 * faults the next streamed unit in while the step computes. The step itself (the artefact's
 * unit_enter/unit_leave) drops a streamed unit's pages once every thread is past it. */
#ifndef INGOT_OFFLOAD_H
#define INGOT_OFFLOAD_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "plan.h"

typedef struct {
    uint8_t resident[PLAN_MAX_UNITS]; /* per unit, plan order */
    int read_ahead;                   /* streamed units are read one ahead (two held at once) */
    int n_streamed;
    uint64_t budget;                  /* 0: none */
    uint64_t fixed, full, floor;      /* offload.py's fixed_bytes; all resident; the smallest */
} offload_plan;

/* The residency for `budget` bytes (0: none) with `threads` workers; INGOT_E_BUDGET (and the
 * smallest budget that works, in err) when even streaming cannot fit. */
int offload_choose(const ingot_plan *p, int threads, uint64_t budget, int read_ahead_ok,
                   const char *path, offload_plan *o, char *err, size_t err_size);

typedef struct {
    pthread_t thread;
    int started, efd, populate_ok;
    int64_t *sig;          /* [eventfd, wanted unit, 1] after the control words */
    const uint8_t *weights;
    const ingot_plan *plan;
} offload_reader;

/* Starts the read-ahead thread on the signal words; 0 on success. */
int reader_start(offload_reader *r, int64_t *sig, const uint8_t *weights, const ingot_plan *p);
void reader_stop(offload_reader *r);

#endif
