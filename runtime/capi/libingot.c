/* libingot's public API (ingot.h): a model handle owns the mapped artefact, its loaded native
 * code, the arena, KV cache, worker team, tokenizer and sampler — all made in ingot_open, the
 * same layout as runtime/model.py builds. */
#define _GNU_SOURCE
#include "ingot.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "artefact.h"
#include "chat.h"
#include "hugepages.h"
#include "offload.h"
#include "plan.h"
#include "sample.h"
#include "team.h"
#include "tokenizer.h"

#define MODEL_MAGIC 0x4C444F4D544F474Eull
#define SYNC_BYTES 128 /* runtime/model.py's _SYNC_BYTES: the barrier words */
#define MAX_THREADS 1024
#define ERR 512

struct ingot_model {
    uint64_t magic;
    struct ingot_model *next; /* the registry of live handles */
    art_file art;
    ingot_plan plan;
    char path[256];
    int memfd;
    void *lib;
    ingot_step_fn prefill, decode;
    uint8_t *arena, *kv, *huge; /* huge: the weights in huge pages, or NULL (the file map) */
    size_t arena_len, kv_len, huge_len;
    int64_t wb, ab, kb;
    int32_t *tokens;
    float *logits;
    int threads, team_ok, has_logits;
    int32_t ctx, pos;
    ingot_team team;
    ingot_tok *tok;
    char *piece;
    size_t piece_cap;
    ingot_sampler sampler;
    int32_t *history;
    offload_plan offload;   /* which units stay resident under the budget */
    offload_reader reader;  /* faults the next streamed unit in (when read_ahead) */
    chat_cfg chat;
    char err[ERR];
};

static _Thread_local char tl_err[ERR];
static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static ingot_model *live;

/* ---------------------------------------------------------------- errors and handles */

static int set_err(char *buf, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, ERR, fmt, ap);
    va_end(ap);
    return code;
}

/* Whether m is a handle ingot_open made and ingot_close has not yet released. Only pointer
 * values are compared until it is found, so a stale pointer is never read. */
static int alive(const ingot_model *m) {
    int found = 0;
    pthread_mutex_lock(&reg_mu);
    for (ingot_model *x = live; x; x = x->next)
        if (x == m) found = x->magic == MODEL_MAGIC;
    pthread_mutex_unlock(&reg_mu);
    return found;
}

static int check_handle(const ingot_model *m) {
    if (!m) return set_err(tl_err, INGOT_E_HANDLE, "model handle is NULL");
    if (!alive(m))
        return set_err(tl_err, INGOT_E_HANDLE, "model handle is closed or was not made by "
                       "ingot_open");
    return INGOT_OK;
}

#define HANDLE(m)                             \
    do {                                      \
        int rc_ = check_handle(m);            \
        if (rc_) return rc_;                  \
        (m)->err[0] = 0;                      \
    } while (0)

int ingot_abi_version(void) { return INGOT_ABI_VERSION; }

const char *ingot_status_name(int s) {
    static const char *names[] = {
        "ok", "bad argument", "bad handle", "i/o error", "bad artefact format",
        "checksum mismatch", "host cannot run this artefact", "out of memory",
        "cannot load native code", "context overflow", "token outside the vocabulary",
        "buffer too small", "no native tokenizer", "text refused", "native step failed",
        "no logits yet", "memory budget too small", "no native chat template"};
    return s <= 0 && -s < (int)(sizeof names / sizeof names[0]) ? names[-s] : "unknown status";
}

const char *ingot_last_error(const ingot_model *m) {
    if (m && alive(m)) return m->err;
    return tl_err;
}

void ingot_options_default(ingot_options *o) {
    if (!o) return;
    memset(o, 0, sizeof *o);
    o->size = sizeof *o;
}

void ingot_sampling_default(ingot_sampling *s) {
    if (!s) return;
    memset(s, 0, sizeof *s);
    s->size = sizeof *s;
    s->top_p = 1.0f;
    s->repetition_penalty = 1.0f;
}

/* ---------------------------------------------------------------- open / close */

static void release(ingot_model *m) {
    if (m->team_ok) team_close(&m->team);
    reader_stop(&m->reader); /* before the arena that holds its signal words goes */
    ingot_tok_free(m->tok);
    sampler_free(&m->sampler);
    free(m->piece);
    free(m->history);
    if (m->arena) munmap(m->arena, m->arena_len);
    if (m->kv) munmap(m->kv, m->kv_len);
    if (m->huge) munmap(m->huge, m->huge_len);
    if (m->lib) dlclose(m->lib);
    if (m->memfd >= 0) close(m->memfd);
    art_close(&m->art);
    m->magic = 0;
    free(m);
}

/* The code section, loaded from an anonymous in-memory file (no file on disk). The fd stays
 * open while the library is loaded: the loader knows libraries by path. */
static int load_code(ingot_model *m) {
    const uint8_t *code;
    size_t n;
    int rc = art_section_get(&m->art, "code", 1, &code, &n, m->err, ERR);
    if (rc) return rc;
    m->memfd = memfd_create("ingot-code", MFD_CLOEXEC);
    if (m->memfd < 0) return set_err(m->err, INGOT_E_CODE, "memfd_create failed (%s)",
                                     strerror(errno));
    for (size_t done = 0; done < n;) {
        ssize_t w = write(m->memfd, code + done, n - done);
        if (w <= 0) return set_err(m->err, INGOT_E_CODE, "cannot stage the native code (%s)",
                                   strerror(errno));
        done += (size_t)w;
    }
    char name[64];
    snprintf(name, sizeof name, "/proc/self/fd/%d", m->memfd);
    m->lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
    if (!m->lib) return set_err(m->err, INGOT_E_CODE, "cannot load the artefact's native code: %s",
                                dlerror());
    const char *names[2] = {m->plan.prefill, m->plan.decode};
    void *fns[2];
    for (int i = 0; i < 2; i++) {
        fns[i] = dlsym(m->lib, names[i]);
        if (!fns[i]) return set_err(m->err, INGOT_E_CODE, "artefact code has no entry point "
                                    "'%s'", names[i]);
    }
    /* POSIX: a dlsym result converts to a function pointer. */
    memcpy(&m->prefill, &fns[0], sizeof m->prefill);
    memcpy(&m->decode, &fns[1], sizeof m->decode);
    return INGOT_OK;
}

static void *zeroed(size_t n) { /* page-aligned, zero, committed lazily (as numpy's zeros) */
    void *p = mmap(NULL, n, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

/* Arena (activations, per-thread scratch, sync words + profile stamps) and KV cache, laid out
 * as runtime/model.py does. */
static int make_buffers(ingot_model *m, uint64_t budget, int map_only) {
    const ingot_plan *p = &m->plan;
    size_t sync = SYNC_BYTES + 8 * ((size_t)p->n_profile_calls + 1);
    m->arena_len = (size_t)p->arena_bytes + (size_t)m->threads * (size_t)p->scratch_bytes + sync;
    m->kv_len = (size_t)p->state_bytes * (size_t)p->max_batch;
    if (m->kv_len < 64) m->kv_len = 64;
    const uint8_t *w;
    size_t wn = 0;
    int rc = art_section_get(&m->art, "weights", 0, &w, &wn, m->err, ERR);
    if (rc) return rc;
    if ((uint64_t)p->weights_bytes > wn)
        return set_err(m->err, INGOT_E_FORMAT, "artefact plan: weights_bytes %lld exceeds the "
                       "weights section (%zu bytes)", (long long)p->weights_bytes, wn);
    /* 0: the compile-time --max-memory, as the Python runtime does. */
    uint64_t limit = budget ? budget : (uint64_t)p->max_memory_hint;
    if ((rc = offload_choose(p, m->threads, limit, 1, m->path, &m->offload, m->err, ERR)))
        return rc;
    m->arena = zeroed(m->arena_len);
    m->kv = zeroed(m->kv_len);
    if (!m->arena || !m->kv)
        return set_err(m->err, INGOT_E_NOMEM, "cannot allocate the arena and KV cache "
                       "(%zu + %zu bytes)", m->arena_len, m->kv_len);
    if (!map_only && m->offload.n_streamed == 0 && wn &&
        (m->huge = huge_read(m->art.fd, (uint64_t)(w - m->art.map), wn, &m->huge_len)))
        w = m->huge;
    m->wb = wn ? (int64_t)(intptr_t)w : 0;
    m->ab = (int64_t)(intptr_t)m->arena;
    m->kb = (int64_t)(intptr_t)m->kv;
    m->tokens = (int32_t *)(m->arena + p->tokens_offset);
    m->logits = (float *)(m->arena + p->logits_offset);
    /* Control words (runtime/model.py's): 1 resident; 0 streamed and read ahead; 2 streamed.
     * The signal words after them stay 0 (no eventfd) unless the reader runs. */
    int64_t *ctl = (int64_t *)(m->arena + p->units_ctl_offset);
    for (int64_t u = 0; u < p->n_units; u++)
        ctl[u] = m->offload.resident[u] ? 1 : m->offload.read_ahead ? 0 : 2;
    if (m->offload.read_ahead && reader_start(&m->reader, ctl + p->n_units, w, p))
        return set_err(m->err, INGOT_E_NOMEM, "cannot start the read-ahead thread");
    return INGOT_OK;
}

static int make_tokenizer(ingot_model *m) {
    if (!art_has(&m->art, "vocab_native")) return INGOT_OK; /* ids only; tokenize says why */
    const uint8_t *v;
    size_t n;
    int rc = art_section_get(&m->art, "vocab_native", 1, &v, &n, m->err, ERR);
    if (rc) return rc;
    char msg[200];
    if (ingot_tok_create(v, n, 0, &m->tok, msg, sizeof msg) != INGOT_TOK_OK)
        return set_err(m->err, INGOT_E_FORMAT, "artefact vocabulary: %s", msg);
    size_t longest = 0, len;
    for (int32_t i = 0; i < ingot_tok_vocab_size(m->tok); i++)
        if (ingot_tok_token_bytes(m->tok, i, &len) && len > longest) longest = len;
    m->piece_cap = longest + 16;
    m->piece = malloc(m->piece_cap);
    if (!m->piece) return set_err(m->err, INGOT_E_NOMEM, "out of memory");
    if (m->plan.n_eos == 0 && ingot_tok_eos(m->tok) >= 0) /* as Model.eos_ids */
        m->plan.eos[m->plan.n_eos++] = ingot_tok_eos(m->tok);
    return INGOT_OK;
}

static int host_threads(void) {
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0) return CPU_COUNT(&set);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

static int open_model(ingot_model *m, const char *path, const ingot_options *o) {
    int rc = art_open(&m->art, path, m->err, ERR);
    if (!rc) rc = plan_check_host(&m->art, path, m->err, ERR);
    if (!rc) rc = plan_read(&m->art, &m->plan, m->err, ERR);
    if (rc) return rc;
    if (o->context > m->plan.max_seq_len)
        return set_err(m->err, INGOT_E_CONTEXT, "context %d is more than the compiled "
                       "max_seq_len %lld", o->context, (long long)m->plan.max_seq_len);
    m->ctx = o->context ? o->context : (int32_t)m->plan.max_seq_len;
    if ((rc = load_code(m)) || (rc = make_buffers(m, o->memory_budget, o->mmap)) ||
        (rc = make_tokenizer(m)))
        return rc;
    chat_load(&m->art, &m->chat);
    m->history = malloc(((size_t)m->ctx + 1) * sizeof *m->history); /* + the unfed last */
    if (!m->history || sampler_init(&m->sampler, (int32_t)m->plan.vocab_size))
        return set_err(m->err, INGOT_E_NOMEM, "out of memory");
    int64_t scratch = m->ab + m->plan.arena_bytes;
    m->team_ok = 1;
    if (team_start(&m->team, m->threads, scratch, m->plan.scratch_bytes,
                   scratch + m->threads * m->plan.scratch_bytes))
        return set_err(m->err, INGOT_E_NOMEM, "cannot start %d worker threads", m->threads);
    return INGOT_OK;
}

int ingot_open(const char *path, const ingot_options *opt, ingot_model **out) {
    if (out) *out = NULL;
    if (!path || !out) return set_err(tl_err, INGOT_E_ARG, "ingot_open: path and out must not "
                                      "be NULL");
    ingot_options o;
    ingot_options_default(&o);
    if (opt) {
        /* A program built against an older ingot.h passes a shorter struct (before `mmap`):
         * the fields it lacks keep their defaults. */
        if (opt->size < offsetof(ingot_options, mmap))
            return set_err(tl_err, INGOT_E_ARG, "ingot_options.size is %u, expected %zu (call "
                           "ingot_options_default first)", opt->size, sizeof o);
        memcpy(&o, opt, opt->size < sizeof o ? opt->size : sizeof o);
    }
    if (o.threads < 0 || o.threads > MAX_THREADS || o.context < 0)
        return set_err(tl_err, INGOT_E_ARG, "options: threads must be 0..%d and context >= 0",
                       MAX_THREADS);
    ingot_model *m = calloc(1, sizeof *m);
    if (!m) return set_err(tl_err, INGOT_E_NOMEM, "out of memory");
    m->memfd = -1;
    m->art.fd = -1;
    m->threads = o.threads ? o.threads : host_threads();
    snprintf(m->path, sizeof m->path, "%s", path);
    int rc = open_model(m, path, &o);
    if (rc) {
        snprintf(tl_err, ERR, "%s", m->err);
        release(m);
        return rc;
    }
    m->magic = MODEL_MAGIC;
    pthread_mutex_lock(&reg_mu);
    m->next = live;
    live = m;
    pthread_mutex_unlock(&reg_mu);
    *out = m;
    return INGOT_OK;
}

int ingot_close(ingot_model *m) {
    if (!m) return INGOT_OK;
    int found = 0;
    pthread_mutex_lock(&reg_mu);
    for (ingot_model **x = &live; *x; x = &(*x)->next)
        if (*x == m) {
            *x = m->next;
            found = 1;
            break;
        }
    pthread_mutex_unlock(&reg_mu);
    if (!found)
        return set_err(tl_err, INGOT_E_HANDLE, "ingot_close: handle is closed or was not made "
                       "by ingot_open");
    release(m);
    return INGOT_OK;
}

/* ---------------------------------------------------------------- facts */

int32_t ingot_vocab_size(const ingot_model *m) {
    return check_handle(m) ? -1 : (int32_t)m->plan.vocab_size;
}
int32_t ingot_context(const ingot_model *m) { return check_handle(m) ? -1 : m->ctx; }
int32_t ingot_position(const ingot_model *m) { return check_handle(m) ? -1 : m->pos; }
int32_t ingot_bos(const ingot_model *m) {
    if (check_handle(m)) return -1;
    return m->plan.bos >= 0 ? m->plan.bos : (m->tok ? ingot_tok_bos(m->tok) : -1);
}

static int is_eos(const ingot_model *m, int32_t t) {
    for (int i = 0; i < m->plan.n_eos; i++)
        if (m->plan.eos[i] == t) return 1;
    return 0;
}
int ingot_is_eos(const ingot_model *m, int32_t t) { return check_handle(m) ? 0 : is_eos(m, t); }

/* ---------------------------------------------------------------- text */

static int tok_status(ingot_model *m, int rc) {
    if (rc == INGOT_TOK_OK) return INGOT_OK;
    int code = rc == INGOT_TOK_E_SMALL ? INGOT_E_SMALL
             : rc == INGOT_TOK_E_UTF8 || rc == INGOT_TOK_E_TOO_LONG ? INGOT_E_TEXT
             : rc == INGOT_TOK_E_ID ? INGOT_E_TOKEN : INGOT_E_ARG;
    return set_err(m->err, code, "%s", ingot_tok_last_error(m->tok));
}

static int need_tok(ingot_model *m) {
    if (m->tok) return INGOT_OK;
    return set_err(m->err, INGOT_E_NO_TOKENIZER, "%s: artefact carries no native vocabulary "
                   "(vocab_native section); recompile it or pass token ids", m->path);
}

int ingot_tokenize(ingot_model *m, const char *text, size_t len, int add_special, int32_t *ids,
                   size_t cap, size_t *needed) {
    HANDLE(m);
    int rc = need_tok(m);
    if (rc) return rc;
    if ((!text && len) || (!ids && cap))
        return set_err(m->err, INGOT_E_ARG, "ingot_tokenize: NULL text or ids");
    size_t need = 0;
    rc = tok_status(m, ingot_tok_encode(m->tok, text, len,
                                        add_special ? INGOT_TOK_ADD_SPECIAL : 0, ids, cap, &need));
    if (needed) *needed = need;
    return rc;
}

int ingot_detokenize(ingot_model *m, const int32_t *ids, size_t n, char *out, size_t cap,
                     size_t *needed) {
    HANDLE(m);
    int rc = need_tok(m);
    if (rc) return rc;
    if ((!ids && n) || (!out && cap))
        return set_err(m->err, INGOT_E_ARG, "ingot_detokenize: NULL ids or out");
    size_t need = 0;
    rc = tok_status(m, ingot_tok_decode(m->tok, ids, n, INGOT_TOK_SKIP_SPECIAL, out, cap, &need));
    if (needed) *needed = need;
    return rc;
}

/* ---------------------------------------------------------------- chat */

int ingot_chat_apply(ingot_model *m, const ingot_message *msgs, size_t n,
                     int add_generation_prompt, char *out, size_t cap, size_t *needed) {
    HANDLE(m);
    return chat_render(&m->chat, msgs, n, add_generation_prompt, out, cap, needed, m->err, ERR);
}

/* ---------------------------------------------------------------- memory */

int ingot_memory_info(ingot_model *m, ingot_memory *out, uint8_t *resident, size_t cap) {
    HANDLE(m);
    if (!out || out->size < offsetof(ingot_memory, huge_page_bytes))
        return set_err(m->err, INGOT_E_ARG, "ingot_memory_info: out is NULL or out->size is not "
                       "sizeof(ingot_memory)");
    const offload_plan *o = &m->offload;
    uint64_t held = o->fixed, big[2] = {0, 0};
    for (int64_t i = 0; i < m->plan.n_units; i++) {
        uint64_t b = (uint64_t)m->plan.unit_bytes[i];
        if (o->resident[i]) held += b;
        else if (b > big[0]) big[1] = big[0], big[0] = b;
        else if (b > big[1]) big[1] = b;
    }
    out->n_units = (int32_t)m->plan.n_units;
    out->n_streamed = o->n_streamed;
    out->read_ahead = o->read_ahead;
    out->budget = o->budget;
    out->fixed_bytes = o->fixed;
    out->peak_bytes = held + big[0] + (o->read_ahead ? big[1] : 0);
    out->full_bytes = o->full;
    out->floor_bytes = o->floor;
    if (out->size >= sizeof *out) /* not in an older caller's shorter struct */
        out->huge_page_bytes = m->huge ? m->huge_len : 0;
    if (resident && cap < (size_t)m->plan.n_units)
        return set_err(m->err, INGOT_E_SMALL, "ingot_memory_info: %lld units, room for %zu",
                       (long long)m->plan.n_units, cap);
    if (resident) memcpy(resident, o->resident, (size_t)m->plan.n_units);
    return INGOT_OK;
}

/* ---------------------------------------------------------------- the step */

static int check_ids(ingot_model *m, const int32_t *ids, size_t n) {
    if (!ids || n == 0) return set_err(m->err, INGOT_E_ARG, "eval needs at least one token");
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->plan.vocab_size)
            return set_err(m->err, INGOT_E_TOKEN, "token id %d is outside the vocabulary "
                           "(0..%lld)", ids[i], (long long)m->plan.vocab_size - 1);
    if (n > (size_t)(m->ctx - m->pos))
        return set_err(m->err, INGOT_E_CONTEXT, "context overflow: %d + %zu tokens exceed the "
                       "context of %d", m->pos, n, m->ctx);
    return INGOT_OK;
}

static int step(ingot_model *m, ingot_step_fn fn, const int32_t *ids, int64_t n) {
    memcpy(m->tokens, ids, (size_t)n * sizeof *ids);
    int64_t st = team_run(&m->team, fn, m->wb, m->ab, m->kb, n, m->pos);
    if (st != 0) {
        m->has_logits = 0;
        return set_err(m->err, INGOT_E_STEP, "native step failed (status %lld)", (long long)st);
    }
    m->pos += (int32_t)n;
    m->has_logits = 1;
    return INGOT_OK;
}

static int prefill(ingot_model *m, const int32_t *ids, size_t n) {
    int rc = check_ids(m, ids, n);
    for (size_t at = 0; !rc && at < n; at += (size_t)m->plan.prefill_chunk) {
        size_t k = n - at < (size_t)m->plan.prefill_chunk ? n - at : (size_t)m->plan.prefill_chunk;
        rc = step(m, m->prefill, ids + at, (int64_t)k);
    }
    return rc;
}

static int decode(ingot_model *m, int32_t id) {
    int rc = check_ids(m, &id, 1);
    return rc ? rc : step(m, m->decode, &id, 1);
}

int ingot_eval(ingot_model *m, const int32_t *ids, size_t n) {
    HANDLE(m);
    if (n == 1 && ids) return decode(m, ids[0]);
    return prefill(m, ids, n);
}

int ingot_logits(ingot_model *m, const float **out, int32_t *n_vocab) {
    HANDLE(m);
    if (!out) return set_err(m->err, INGOT_E_ARG, "ingot_logits: out is NULL");
    *out = NULL;
    if (n_vocab) *n_vocab = (int32_t)m->plan.vocab_size;
    if (!m->has_logits) return set_err(m->err, INGOT_E_STATE, "no logits yet: run ingot_eval");
    *out = m->logits;
    return INGOT_OK;
}

int ingot_reset(ingot_model *m) {
    HANDLE(m);
    m->pos = 0;
    m->has_logits = 0;
    m->sampler.seeded = 0;
    return INGOT_OK;
}

/* ---------------------------------------------------------------- sampling and generation */

static int sampling_params(ingot_model *m, const ingot_sampling *s, ingot_sampling *p) {
    ingot_sampling_default(p);
    if (s) {
        if (s->size < sizeof *p)
            return set_err(m->err, INGOT_E_ARG, "ingot_sampling.size is %u, expected %zu (call "
                           "ingot_sampling_default first)", s->size, sizeof *p);
        memcpy(p, s, sizeof *p);
    }
    const char *bad = sampler_check(p);
    return bad ? set_err(m->err, INGOT_E_ARG, "%s", bad) : INGOT_OK;
}

int ingot_sample(ingot_model *m, const ingot_sampling *s, int32_t *out_id) {
    HANDLE(m);
    ingot_sampling p;
    int rc = sampling_params(m, s, &p);
    if (rc) return rc;
    if (!out_id) return set_err(m->err, INGOT_E_ARG, "ingot_sample: out_id is NULL");
    if (!m->has_logits) return set_err(m->err, INGOT_E_STATE, "no logits yet: run ingot_eval");
    if (!m->sampler.seeded || m->sampler.seed != p.seed) sampler_seed(&m->sampler, p.seed);
    *out_id = sampler_pick(&m->sampler, m->logits, &p, p.history, p.n_history);
    return INGOT_OK;
}

int ingot_generate(ingot_model *m, const int32_t *prompt, size_t n, const ingot_sampling *s,
                   int32_t max_tokens, ingot_token_cb cb, void *user, int32_t *n_out) {
    HANDLE(m);
    if (n_out) *n_out = 0;
    ingot_sampling p;
    int rc = sampling_params(m, s, &p);
    if (rc) return rc;
    if (max_tokens < 0) return set_err(m->err, INGOT_E_ARG, "max_tokens must not be negative");
    if ((rc = prefill(m, prompt, n))) return rc;
    /* The penalty sees this prompt and what follows (transformers' rule). */
    memcpy(m->history, prompt, n * sizeof *prompt);
    size_t h = n;
    sampler_seed(&m->sampler, p.seed);
    for (int32_t made = 0; made < max_tokens;) {
        int32_t t = sampler_pick(&m->sampler, m->logits, &p, m->history, h);
        made++;
        if (is_eos(m, t)) break;
        m->history[h++] = t;
        if (n_out) (*n_out)++;
        size_t len = 0;
        if (m->tok && ingot_tok_decode(m->tok, &t, 1, INGOT_TOK_SKIP_SPECIAL | INGOT_TOK_CONTINUE,
                                       m->piece, m->piece_cap, &len) != INGOT_TOK_OK)
            len = 0;
        if (cb && cb(t, m->tok ? m->piece : NULL, len, user)) break;
        if (made >= max_tokens || m->pos >= m->ctx) break; /* the last token is not fed */
        if ((rc = decode(m, t))) return rc;
    }
    return INGOT_OK;
}
