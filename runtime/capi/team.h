/* The worker team that runs a native step: every thread calls the same entry point with its own
 * tid and scratch slice (runtime/native.py's ThreadTeam, in C). Thread 0 is the caller; the
 * others are persistent pthreads released for each step by a condition variable. The kernels
 * synchronise among themselves inside the call (the sync words). */
#ifndef INGOT_TEAM_H
#define INGOT_TEAM_H

#include <pthread.h>
#include <stdint.h>

/* The entry points' signature: (wb, ab, kb, sb, n, pos, tid, nth, sync) -> status. */
typedef int64_t (*ingot_step_fn)(int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t,
                                 int64_t, int64_t);

typedef struct {
    int nth;
    pthread_t *threads;
    int started;
    pthread_mutex_t mu;
    pthread_cond_t go, done;
    uint64_t job;
    int finished, stop;
    int64_t scratch, stride, sync;
    ingot_step_fn fn;
    int64_t wb, ab, kb, n, pos;
    int64_t status; /* the first nonzero status of the step */
} ingot_team;

/* 0 on success; on failure the team is left stopped (team_close is still safe). */
int team_start(ingot_team *t, int nth, int64_t scratch, int64_t stride, int64_t sync);
/* Runs fn on every thread; returns the first nonzero status any thread reported, else 0. */
int64_t team_run(ingot_team *t, ingot_step_fn fn, int64_t wb, int64_t ab, int64_t kb, int64_t n,
                 int64_t pos);
void team_close(ingot_team *t);

#endif
