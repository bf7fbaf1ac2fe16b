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

/* The offload units (runtime/offload.py reads the same), inside the weights section. */
static int read_units(ingot_plan *p, mj_val pl, char *err, size_t n) {
    mj_val units = mj_get(pl, "units");
    p->n_units = count(units);
    if (p->n_units > PLAN_MAX_UNITS)
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: %lld offload units, more than "
                          "libingot's %d", (long long)p->n_units, PLAN_MAX_UNITS);
    mj_val wb = mj_get(pl, "weights_bytes");
    if (wb.p ? mj_int(wb, &p->weights_bytes) || p->weights_bytes < 0 || p->weights_bytes > BIG
             : p->n_units > 0)
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: bad weights_bytes");
    if (mj_int(mj_get(pl, "max_memory_hint"), &p->max_memory_hint) || p->max_memory_hint < 0)
        p->max_memory_hint = 0; /* null: no compile-time budget */
    const char *it = NULL;
    mj_val u;
    int64_t sum = 0;
    for (int k = 0; mj_next(units, &it, &u); k++) {
        int64_t off, nb;
        if (mj_int(mj_get(u, "offset"), &off) || mj_int(mj_get(u, "bytes"), &nb) || off < 0 ||
            nb < 0 || nb > BIG || off > p->weights_bytes - nb)
            return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: unit %d lies outside the "
                              "weights", k);
        p->unit_offset[k] = off;
        p->unit_bytes[k] = nb;
        sum += nb;
    }
    if (sum > p->weights_bytes)
        return ingot_fail(err, n, INGOT_E_FORMAT, "artefact plan: units exceed the weights");
    return INGOT_OK;
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
    if ((rc = read_units(p, pl, err, n))) return rc;
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

#if defined(__aarch64__)
#include <sys/auxv.h>
/* The kernel's names for the AT_HWCAP and AT_HWCAP2 bits, in bit order (what /proc/cpuinfo's
 * Features line shows). Read from the auxiliary vector, which an emulator such as qemu-user
 * fills in for the CPU it emulates, while its /proc/cpuinfo is the host's. */
static const char *const HWCAP_NAMES[] = {
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32", "atomics", "fphp",
    "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc", "dcpop", "sha3", "sm3", "sm4",
    "asimddp", "sha512", "sve", "asimdfhm", "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb",
    "paca", "pacg"};
static const char *const HWCAP2_NAMES[] = {
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2",
    "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh", "rng", "bti"};

static char *cpu_flags_line(void) {
    char *line = calloc(1, 1024);
    unsigned long caps[2] = {getauxval(AT_HWCAP), getauxval(AT_HWCAP2)};
    const char *const *names[2] = {HWCAP_NAMES, HWCAP2_NAMES};
    size_t counts[2] = {sizeof HWCAP_NAMES / sizeof *HWCAP_NAMES,
                        sizeof HWCAP2_NAMES / sizeof *HWCAP2_NAMES};
    for (int w = 0; line && w < 2; w++)
        for (size_t b = 0; b < counts[w]; b++)
            if (caps[w] >> b & 1) strcat(strcat(line, " "), names[w][b]);
    return line;
}
#else
/* The first flags line of /proc/cpuinfo (malloc'd), or NULL. */
static char *cpu_flags_line(void) {
    char *line = NULL;
    size_t cap = 0;
    FILE *f = fopen("/proc/cpuinfo", "r");
    while (f && getline(&line, &cap, f) > 0)
        if (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8)) break;
    int found = f && line && (!strncmp(line, "flags", 5) || !strncmp(line, "Features", 8));
    if (f) fclose(f);
    if (!found) free(line);
    return found ? line : NULL;
}
#endif

/* Whether a CPU flags line names `flag` as a whole word. */
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
    char *line = cpu_flags_line();
    int found = line != NULL;
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
