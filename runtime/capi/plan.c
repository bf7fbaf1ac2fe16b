/* Reading the plan, the target and the end ids; see plan.h. */
#define _GNU_SOURCE
#include "plan.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>

#include "ingot.h"
#include "util.h"

#define BIG ((int64_t)1 << 46) /* no plan size comes near; keeps sums below free of overflow */


static int count(mj_val arr) {
    const char *it = NULL;
    mj_val e;
    int k = 0;
    while (mj_next(arr, &it, &e)) k++;
    return k;
}

static int entry_name(mj_val eps, const char *key, char *out, size_t cap) {
    if (mj_str(mj_get(eps, key), out, cap)) return -1;
    for (const char *c = out; *c; c++)
        if (!(*c == '_' || (*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'z') ||
              (*c >= 'A' && *c <= 'Z')))
            return -1;
    return out[0] ? 0 : -1;
}

/* An id or a list of ids (generation_config's eos_token_id), appended to p->eos. */
static void add_ids(ingot_plan *p, mj_val v) {
    int64_t x;
    if (!mj_int(v, &x)) {
        if (x >= 0 && x < p->vocab_size && p->n_eos < PLAN_MAX_EOS) p->eos[p->n_eos++] = (int32_t)x;
        return;
    }
    const char *it = NULL;
    mj_val e;
    while (mj_next(v, &it, &e))
        if (!mj_int(e, &x) && x >= 0 && x < p->vocab_size && p->n_eos < PLAN_MAX_EOS)
            p->eos[p->n_eos++] = (int32_t)x;
}

static void read_eos(const art_file *a, ingot_plan *p, mj_val plan) {
    const uint8_t *g;
    size_t gn;
    /* As runtime/model.py: generation_config's ids when it names any, else the plan's. */
    if (art_has(a, "generation_config") &&
        art_section_get(a, "generation_config", 1, &g, &gn, NULL, 0) == INGOT_OK)
        add_ids(p, mj_get(mj_root((const char *)g, gn), "eos_token_id"));
    if (p->n_eos == 0) add_ids(p, mj_get(plan, "eos_token_ids"));
}

int plan_read(const art_file *a, ingot_plan *p, char *err, size_t n) {
    const uint8_t *data;
    size_t size;
    memset(p, 0, sizeof *p);
    int rc = art_section_get(a, "plan", 1, &data, &size, err, n);
    if (rc) return rc;
    mj_val pl = mj_root((const char *)data, size);
    struct { const char *key; int64_t *dst; } req[] = {
        {"vocab_size", &p->vocab_size}, {"max_seq_len", &p->max_seq_len},
        {"prefill_chunk", &p->prefill_chunk}, {"arena_bytes", &p->arena_bytes},
        {"scratch_bytes_per_thread", &p->scratch_bytes}, {"state_bytes", &p->state_bytes},
        {"tokens_offset", &p->tokens_offset}, {"logits_offset", &p->logits_offset}};
    for (size_t i = 0; i < sizeof req / sizeof req[0]; i++)
        if (mj_int(mj_get(pl, req[i].key), req[i].dst) || *req[i].dst < 0 || *req[i].dst > BIG)
            return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: '%s' is missing or out of range",
                        req[i].key);
    if (p->vocab_size < 1 || p->vocab_size > INT32_MAX || p->max_seq_len < 1 ||
        p->max_seq_len > INT32_MAX || p->prefill_chunk < 1 || p->arena_bytes < 1)
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: vocabulary, context, chunk or arena "
                    "size out of range");
    p->max_batch = 1;
    mj_val mb = mj_get(pl, "max_batch");
    if (mb.p && (mj_int(mb, &p->max_batch) || p->max_batch < 1 || p->max_batch > 4096))
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: bad max_batch");
    mj_val eps = mj_get(pl, "entry_points");
    if (entry_name(eps, "prefill", p->prefill, sizeof p->prefill) ||
        entry_name(eps, "decode", p->decode, sizeof p->decode))
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: bad entry_points");
    p->n_units = count(mj_get(pl, "units"));
    p->n_profile_calls = count(mj_get(pl, "profile_calls"));
    if (mj_bool(mj_get(pl, "units_signal"), &p->units_signal)) p->units_signal = 0;
    if (p->n_units &&
        (mj_int(mj_get(pl, "units_ctl_offset"), &p->units_ctl_offset) ||
         p->units_ctl_offset < 0 || p->units_ctl_offset % 8 ||
         p->units_ctl_offset + 8 * (p->n_units + (p->units_signal ? 3 : 0)) > p->arena_bytes))
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: units_ctl_offset out of range");
    if (p->tokens_offset % 4 || p->tokens_offset + 4 * p->prefill_chunk > p->arena_bytes ||
        p->logits_offset % 4 || p->logits_offset + 4 * p->vocab_size > p->arena_bytes)
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: token or logits buffer outside the "
                    "arena");
    int64_t bos;
    p->bos = mj_int(mj_get(pl, "bos_token_id"), &bos) || bos < 0 || bos >= p->vocab_size
                 ? -1 : (int32_t)bos;
    read_eos(a, p, pl);
    return INGOT_OK;
}

/* Whether the first flags line of /proc/cpuinfo names `flag` as a whole word. */
static int has_flag(const char *line, const char *flag) {
    size_t k = strlen(flag);
    for (const char *s = line; (s = strstr(s, flag)) != NULL; s += k)
        if ((s == line || s[-1] == ' ' || s[-1] == '\t' || s[-1] == ':') &&
            (s[k] == ' ' || s[k] == '\n' || s[k] == 0))
            return 1;
    return 0;
}

int plan_check_host(const art_file *a, const char *path, char *err, size_t n) {
    mj_val t = mj_get(a->header, "target");
    char machine[64], name[64] = "?", cpu[64] = "?";
    struct utsname u;
    mj_str(mj_get(t, "name"), name, sizeof name);
    mj_str(mj_get(t, "cpu"), cpu, sizeof cpu);
    if (!mj_str(mj_get(t, "machine"), machine, sizeof machine) && machine[0] &&
        uname(&u) == 0 && strcmp(machine, u.machine) != 0)
        return ingot_fail(err, n, INGOT_E_HOST, "%s: artefact was compiled for %s (target '%s'), this "
                    "host is %s", path, machine, name, u.machine);
    mj_val flags = mj_get(t, "required_flags");
    if (!count(flags)) return INGOT_OK;
    char *line = NULL;
    size_t cap = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && getline(&line, &cap, f) > 0)
        if (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8)) break;
    int found = f && line && (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8));
    if (f) fclose(f);
    char missing[256] = "";
    const char *it = NULL;
    mj_val e;
    while (mj_next(flags, &it, &e)) {
        char flag[64];
        if (mj_str(e, flag, sizeof flag)) continue;
        if (!found || !has_flag(strchr(line, ':') ? strchr(line, ':') : line, flag)) {
            size_t m = strlen(missing);
            snprintf(missing + m, sizeof missing - m, "%s%s", m ? ", " : "", flag);
        }
    }
    free(line);
    if (missing[0])
        return ingot_fail(err, n, INGOT_E_HOST, "%s: this CPU lacks %s, which the artefact's target "
                    "'%s' (%s) requires", path, missing, name, cpu);
    return INGOT_OK;
}
