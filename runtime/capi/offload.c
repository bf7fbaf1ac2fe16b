/* Layer streaming; see offload.h. Mirrors runtime/offload.py: keep the rules the same. */
#define _GNU_SOURCE
#include "offload.h"

#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#include "ingot.h"
#include "util.h"

#define MIB (1024.0 * 1024.0)

/* plan_residency: units kept resident largest first (ties: plan order, as Python's stable
 * sort), each only while the budget still holds `slots` of the largest streamed ones. */
static void residency(const ingot_plan *p, uint64_t fixed, uint64_t budget, int slots,
                      uint8_t *res) {
    int n = (int)p->n_units;
    int order[PLAN_MAX_UNITS];
    for (int i = 0; i < n; i++) order[i] = i, res[i] = 0;
    for (int i = 1; i < n; i++) /* stable insertion sort by bytes, largest first */
        for (int j = i; j > 0 && p->unit_bytes[order[j]] > p->unit_bytes[order[j - 1]]; j--) {
            int t = order[j]; order[j] = order[j - 1]; order[j - 1] = t;
        }
    uint64_t used = fixed;
    for (int a = 0; a < n; a++) {
        int i = order[a];
        int64_t top[2] = {-1, -1}; /* the two largest streamed units other than i */
        for (int j = 0; j < n; j++) {
            if (res[j] || j == i) continue;
            int64_t b = p->unit_bytes[j];
            if (b > top[0]) top[1] = top[0], top[0] = b;
            else if (b > top[1]) top[1] = b;
        }
        if (top[0] < 0) continue;
        uint64_t hold = (uint64_t)top[0] + (slots > 1 && top[1] > 0 ? (uint64_t)top[1] : 0);
        if (used + (uint64_t)p->unit_bytes[i] + hold <= budget) {
            res[i] = 1;
            used += (uint64_t)p->unit_bytes[i];
        }
    }
}

int offload_choose(const ingot_plan *p, int threads, uint64_t budget, int read_ahead_ok,
                   const char *path, offload_plan *o, char *err, size_t en) {
    memset(o, 0, sizeof *o);
    uint64_t units = 0, big[2] = {0, 0};
    for (int64_t i = 0; i < p->n_units; i++) {
        uint64_t b = (uint64_t)p->unit_bytes[i];
        units += b;
        if (b > big[0]) big[1] = big[0], big[0] = b;
        else if (b > big[1]) big[1] = b;
    }
    o->fixed = (uint64_t)p->arena_bytes + (uint64_t)threads * (uint64_t)p->scratch_bytes +
               (uint64_t)p->state_bytes * (uint64_t)p->max_batch + (uint64_t)p->weights_bytes -
               units;
    o->full = o->fixed + units;
    o->floor = o->fixed + big[0];
    o->budget = budget;
    for (int64_t i = 0; i < p->n_units; i++) o->resident[i] = 1;
    if (!budget || o->full <= budget) return INGOT_OK;
    if (!p->n_units || budget < o->floor)
        return ingot_fail(err, en, INGOT_E_BUDGET, "%s: memory_budget %.1f MiB cannot hold the "
                          "arena, caches and shared weights (%.1f MiB) plus one streamed unit; "
                          "the smallest budget that works is %.1f MiB (all resident: %.1f MiB)",
                          path, budget / MIB, o->fixed / MIB, o->floor / MIB, o->full / MIB);
    /* plan_streaming: read-ahead holds two streamed units, so it needs room for two. */
    o->read_ahead = read_ahead_ok && p->units_signal && budget >= o->fixed + big[0] + big[1];
    residency(p, o->fixed, budget, o->read_ahead ? 2 : 1, o->resident);
    for (int64_t i = 0; i < p->n_units; i++) o->n_streamed += !o->resident[i];
    if (!o->n_streamed) o->read_ahead = 0;
    return INGOT_OK;
}

/* ---------------------------------------------------------------- the read-ahead thread */

#define CHUNK (256 << 10)
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22 /* Linux 5.14: fault the range in, reading the file */
#endif

static void fault_in(offload_reader *r, const uint8_t *at, size_t n) {
    if (r->populate_ok) {
        if (madvise((void *)at, n, MADV_POPULATE_READ) == 0) return;
        r->populate_ok = 0; /* an older kernel: touch a byte per page instead */
    }
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < n; i += 4096) sink ^= at[i];
    (void)sink;
}

/* Waits for the step's thread 0 to name the next streamed unit (unit_enter), then faults it in
 * a chunk at a time, stopping once the step has moved on (the wanted word changed). */
static void *reader_main(void *arg) {
    offload_reader *r = arg;
    for (;;) {
        uint64_t v;
        if (read(r->efd, &v, sizeof v) != sizeof v) continue;
        if (__atomic_load_n(&r->sig[0], __ATOMIC_ACQUIRE) == 0) return NULL; /* closing */
        int64_t k = __atomic_load_n(&r->sig[1], __ATOMIC_ACQUIRE);
        if (k < 0 || k >= r->plan->n_units) continue;
        const uint8_t *base = r->weights + r->plan->unit_offset[k];
        size_t n = (size_t)r->plan->unit_bytes[k];
        for (size_t a = 0; a < n && __atomic_load_n(&r->sig[1], __ATOMIC_ACQUIRE) == k;
             a += CHUNK)
            fault_in(r, base + a, n - a < CHUNK ? n - a : CHUNK);
    }
}

int reader_start(offload_reader *r, int64_t *sig, const uint8_t *weights, const ingot_plan *p) {
    memset(r, 0, sizeof *r);
    r->efd = eventfd(0, EFD_CLOEXEC);
    if (r->efd < 0) return -1;
    r->sig = sig;
    r->weights = weights;
    r->plan = p;
    r->populate_ok = 1;
    sig[1] = -1;
    sig[2] = 1;
    __atomic_store_n(&sig[0], (int64_t)r->efd, __ATOMIC_RELEASE);
    if (pthread_create(&r->thread, NULL, reader_main, r)) {
        sig[0] = 0;
        close(r->efd);
        r->efd = -1;
        return -1;
    }
    r->started = 1;
    return 0;
}

void reader_stop(offload_reader *r) {
    if (!r->started) return;
    __atomic_store_n(&r->sig[0], 0, __ATOMIC_RELEASE); /* the step stops signalling */
    uint64_t one = 1;
    while (write(r->efd, &one, sizeof one) != sizeof one) {}
    pthread_join(r->thread, NULL);
    close(r->efd);
    r->started = 0;
}
