/* The worker team; see team.h. */
#include "team.h"

#include <stdlib.h>
#include <string.h>

typedef struct { ingot_team *t; int tid; } worker_arg;

static void call(ingot_team *t, int tid) {
    int64_t rc = t->fn(t->wb, t->ab, t->kb, t->scratch + tid * t->stride, t->n, t->pos, tid,
                       t->nth, t->sync);
    if (rc != 0) {
        pthread_mutex_lock(&t->mu);
        if (t->status == 0) t->status = rc;
        pthread_mutex_unlock(&t->mu);
    }
}

static void *worker(void *p) {
    worker_arg a = *(worker_arg *)p;
    free(p);
    ingot_team *t = a.t;
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        while (t->job == seen && !t->stop) pthread_cond_wait(&t->go, &t->mu);
        if (t->stop) {
            pthread_mutex_unlock(&t->mu);
            return NULL;
        }
        seen = t->job;
        pthread_mutex_unlock(&t->mu);
        call(t, a.tid);
        pthread_mutex_lock(&t->mu);
        if (++t->finished == t->nth - 1) pthread_cond_signal(&t->done);
        pthread_mutex_unlock(&t->mu);
    }
}

int team_start(ingot_team *t, int nth, int64_t scratch, int64_t stride, int64_t sync) {
    memset(t, 0, sizeof *t);
    t->nth = nth;
    t->scratch = scratch;
    t->stride = stride;
    t->sync = sync;
    if (pthread_mutex_init(&t->mu, NULL)) return -1;
    if (pthread_cond_init(&t->go, NULL) || pthread_cond_init(&t->done, NULL)) return -1;
    t->threads = calloc((size_t)nth, sizeof *t->threads);
    if (!t->threads) return -1;
    for (int i = 1; i < nth; i++) {
        worker_arg *a = malloc(sizeof *a);
        if (!a) return -1;
        a->t = t;
        a->tid = i;
        if (pthread_create(&t->threads[i], NULL, worker, a)) {
            free(a);
            return -1;
        }
        t->started = i;
    }
    return 0;
}

int64_t team_run(ingot_team *t, ingot_step_fn fn, int64_t wb, int64_t ab, int64_t kb, int64_t n,
                 int64_t pos) {
    pthread_mutex_lock(&t->mu);
    t->fn = fn;
    t->wb = wb, t->ab = ab, t->kb = kb, t->n = n, t->pos = pos;
    t->status = 0;
    t->finished = 0;
    t->job++;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    call(t, 0);
    pthread_mutex_lock(&t->mu);
    while (t->finished < t->nth - 1) pthread_cond_wait(&t->done, &t->mu);
    int64_t rc = t->status;
    pthread_mutex_unlock(&t->mu);
    return rc;
}

void team_close(ingot_team *t) {
    if (!t->threads) return;
    pthread_mutex_lock(&t->mu);
    t->stop = 1;
    pthread_cond_broadcast(&t->go);
    pthread_mutex_unlock(&t->mu);
    for (int i = 1; i <= t->started; i++) pthread_join(t->threads[i], NULL);
    free(t->threads);
    t->threads = NULL;
    pthread_cond_destroy(&t->go);
    pthread_cond_destroy(&t->done);
    pthread_mutex_destroy(&t->mu);
}

