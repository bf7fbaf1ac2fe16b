/* ingot.h — libingot, the C library that runs a compiled Ingot artefact (.ingot) with no Python
 * in the process: open the artefact, tokenize, run the model's native steps, sample, generate.
 *
 * C99, depends on libc, libdl and pthreads only. Build: `ingot build-capi --out DIR`.
 *
 * Versioning: INGOT_ABI_VERSION changes whenever a function, a struct layout or a constant below
 * changes incompatibly; compare ingot_abi_version() with it at start-up. The option structs carry
 * their own size (set by ingot_*_default), so fields can be appended in later versions.
 * Additions that break nothing keep the version: ABI 1 gained ingot_chat_apply, ingot_message,
 * INGOT_E_NO_TEMPLATE, ingot_memory_info, layer streaming under memory_budget, and then
 * ingot_options.mmap and ingot_memory.huge_page_bytes (a caller's shorter structs still work:
 * the library reads and writes only the fields their size covers); a program
 * that uses them needs a libingot that has them (ingot_status_name(INGOT_E_NO_TEMPLATE) is
 * "unknown status" in one that does not).
 *
 * Threads: a model handle is used by one thread at a time (calls on it are not synchronised);
 * different handles are independent and may be used from different threads at once. Each handle
 * runs its steps on its own team of worker threads (ingot_options.threads), started by
 * ingot_open and stopped by ingot_close.
 *
 * Memory: everything is allocated in ingot_open (arena, KV cache, tokenizer scratch, sampler
 * buffers, worker threads) and released in ingot_close. ingot_eval, ingot_sample and
 * ingot_generate allocate nothing. Under a memory_budget below "every layer resident" the
 * weight units (layers, head) that do not fit stream from the mapped artefact: the step drops a
 * streamed unit's pages once past it and a read-ahead thread faults the next one in meanwhile,
 * with the same choice of resident units as the Python runtime's --max-memory
 * (runtime/offload.py). The tokens are the same as with every unit resident.
 *
 * Errors: every function returning int returns INGOT_OK (0) or a negative ingot_status. The
 * message for the last failure on a handle is ingot_last_error(model); failures with no handle
 * (ingot_open, a NULL or closed handle) leave theirs in ingot_last_error(NULL), which is per
 * thread. A handle passed to ingot_close must not be used again: the library recognises handles
 * it no longer holds (INGOT_E_HANDLE) as long as their memory was not handed out again, but in
 * general a dangling pointer cannot be detected.
 */
#ifndef INGOT_H
#define INGOT_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define INGOT_ABI_VERSION 1

/* The library is built with hidden visibility; only these functions are exported. */
#if defined(INGOT_BUILD) && defined(__GNUC__)
#define INGOT_API __attribute__((visibility("default")))
#else
#define INGOT_API
#endif

typedef struct ingot_model ingot_model;

typedef enum ingot_status {
    INGOT_OK = 0,
    INGOT_E_ARG = -1,       /* a NULL pointer, a bad size or an out-of-range parameter */
    INGOT_E_HANDLE = -2,    /* NULL, closed or not a model handle */
    INGOT_E_IO = -3,        /* the artefact cannot be opened or mapped */
    INGOT_E_FORMAT = -4,    /* not an artefact, a newer/older format, or corrupt/truncated */
    INGOT_E_CHECKSUM = -5,  /* a section's or the header's CRC-32 does not match */
    INGOT_E_HOST = -6,      /* compiled for another machine or CPU features this host lacks */
    INGOT_E_NOMEM = -7,     /* allocation or thread creation failed in ingot_open */
    INGOT_E_CODE = -8,      /* the artefact's native code cannot be loaded or lacks an entry */
    INGOT_E_CONTEXT = -9,   /* more tokens than the context holds */
    INGOT_E_TOKEN = -10,    /* a token id outside the vocabulary */
    INGOT_E_SMALL = -11,    /* an output buffer is too small: *needed says how big */
    INGOT_E_NO_TOKENIZER = -12, /* the artefact carries no native vocabulary (vocab_native) */
    INGOT_E_TEXT = -13,     /* text the tokenizer refuses (invalid UTF-8, too long) */
    INGOT_E_STEP = -14,     /* a native step returned a failure status */
    INGOT_E_STATE = -15,    /* no logits yet: run ingot_eval first */
    INGOT_E_BUDGET = -16,   /* memory_budget is below the smallest that works (streaming all but
                               the shared weights): the message names that smallest budget */
    INGOT_E_NO_TEMPLATE = -17 /* the artefact has no native chat format: the message says why */
} ingot_status;

typedef struct ingot_options {
    uint32_t size;          /* sizeof(ingot_options); set by ingot_options_default */
    int32_t threads;        /* worker threads per step; 0: the CPUs this process may run on */
    uint64_t memory_budget; /* bytes; 0: the artefact's compile-time --max-memory if it has one,
                               else no limit. Below "every unit resident" the largest units stay
                               resident and the rest stream (see Memory above; the budget counts
                               arena, scratch, KV cache, shared weights, resident units and the
                               streamed units held at once: one, or two with read-ahead) */
    int32_t context;        /* tokens; 0: the compiled max_seq_len; never more than it */
    int32_t mmap;           /* 1: step through the artefact's file map (faster open). 0: with
                               every unit resident, read the weights into transparent huge pages
                               at open where the host has them (faster decode) */
} ingot_options;

typedef struct ingot_sampling {
    uint32_t size;            /* sizeof(ingot_sampling); set by ingot_sampling_default */
    float temperature;        /* 0: greedy (argmax, the lowest id on ties) */
    int32_t top_k;            /* 0: off */
    float top_p;              /* 1: off; (0, 1] */
    float min_p;              /* 0: off; [0, 1], relative to the most likely token */
    float repetition_penalty; /* 1: off; > 0. Each distinct id in the history once:
                                 logit < 0 ? logit * p : logit / p (transformers' rule) */
    uint64_t seed;            /* the draws of one seed repeat exactly (libingot's own
                                 generator: not the same draws as the Python runtime) */
    const int32_t *history;   /* ids the penalty looks at (ingot_sample only; ingot_generate
                                 uses the prompt and what it generated) */
    size_t n_history;
} ingot_sampling;

/* Called by ingot_generate for each new token, with its text (bytes as the tokenizer decodes the
 * token: a multi-byte character may arrive split over two calls; NULL, 0 when the artefact has no
 * native vocabulary). Return nonzero to stop. */
typedef int (*ingot_token_cb)(int32_t token, const char *text, size_t len, void *user);

INGOT_API int ingot_abi_version(void);
/* A constant description of a status code. */
INGOT_API const char *ingot_status_name(int status);
INGOT_API void ingot_options_default(ingot_options *opt);
/* Greedy, filters off, seed 0, no history. */
INGOT_API void ingot_sampling_default(ingot_sampling *s);

/* Maps the artefact at `path`, checks it (format, checksums, host CPU), loads its native code
 * and sets up the arena, KV cache and worker threads. opt may be NULL (defaults). On failure
 * *out is NULL and ingot_last_error(NULL) says why. */
INGOT_API int ingot_open(const char *path, const ingot_options *opt, ingot_model **out);
/* Stops the workers and releases everything; NULL is a no-op; a closed handle: E_HANDLE. */
INGOT_API int ingot_close(ingot_model *model);

/* What memory_budget chose. Set size = sizeof(ingot_memory) first. resident (may be NULL):
 * cap bytes receive 1 (resident) or 0 (streamed) per unit in the plan's order ("units"):
 * INGOT_E_SMALL when cap < n_units (the struct is still filled in). */
typedef struct ingot_memory {
    uint32_t size;
    int32_t n_units;      /* weight units: each layer, the head */
    int32_t n_streamed;   /* units that stream from the artefact each step */
    int32_t read_ahead;   /* 1: a thread faults the next streamed unit in during the step */
    uint64_t budget;      /* the budget in force (0: none) */
    uint64_t fixed_bytes; /* arena, scratch, KV cache and the weights outside units */
    uint64_t peak_bytes;  /* fixed + resident units + the streamed units held at once */
    uint64_t full_bytes;  /* with every unit resident */
    uint64_t floor_bytes; /* the smallest budget that works */
    uint64_t huge_page_bytes; /* weights read into huge pages at open (0: the file map) */
} ingot_memory;
INGOT_API int ingot_memory_info(ingot_model *model, ingot_memory *out, uint8_t *resident,
                                size_t cap);

/* Model facts (-1, or 0 for ingot_is_eos, on a bad handle). */
INGOT_API int32_t ingot_vocab_size(const ingot_model *model);
INGOT_API int32_t ingot_context(const ingot_model *model);  /* usable positions */
INGOT_API int32_t ingot_position(const ingot_model *model); /* tokens in the context */
INGOT_API int32_t ingot_bos(const ingot_model *model);      /* -1 when none */
INGOT_API int ingot_is_eos(const ingot_model *model, int32_t token);

/* Text <-> ids through the artefact's native vocabulary. add_special: BOS/EOS as the model's
 * tokenizer adds them. Writes up to cap ids / bytes; *needed (may be NULL) is the full count;
 * INGOT_E_SMALL when cap is too small (the output is then partial). Detokenize leaves out
 * special tokens. */
INGOT_API int ingot_tokenize(ingot_model *model, const char *text, size_t len, int add_special,
                             int32_t *ids, size_t cap, size_t *needed);
INGOT_API int ingot_detokenize(ingot_model *model, const int32_t *ids, size_t n, char *out,
                               size_t cap, size_t *needed);

/* Chat templates. The compiler matches the artefact's Jinja chat template against libingot's
 * native formats (chatml, llama3, phi3, gemma, mistral [INST]) on probe conversations and
 * records the one that renders every probe byte for byte as the template does (plan
 * "chat_native"); this renders a conversation with that format. Roles and contents are
 * NUL-terminated UTF-8 (else INGOT_E_TEXT). Writes up to cap bytes, then a NUL when there is
 * room; *needed (may be NULL) is the full length without the NUL; INGOT_E_SMALL when cap is
 * too small (the output is then partial). INGOT_E_NO_TEMPLATE when the artefact has no native
 * format (the message says why none matched); INGOT_E_ARG for roles the format refuses (gemma
 * and mistral: user and assistant turns must alternate, as their templates raise). The text
 * carries the template's own BOS where it prints one: tokenize it with add_special = 0. */
typedef struct ingot_message {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} ingot_message;
INGOT_API int ingot_chat_apply(ingot_model *model, const ingot_message *msgs, size_t n,
                               int add_generation_prompt, char *out, size_t cap, size_t *needed);

/* Feeds n tokens after the current position: n > 1 runs the prefill step in chunks, n == 1 the
 * decode step. The logits of the last token are then available from ingot_logits. */
INGOT_API int ingot_eval(ingot_model *model, const int32_t *ids, size_t n);
/* The last token's logits (n_vocab floats), valid until the next eval/generate/reset/close. */
INGOT_API int ingot_logits(ingot_model *model, const float **out, int32_t *n_vocab);
/* Chooses the next token from the current logits (which it does not change). The draws go on
 * from call to call; they restart when the seed differs from the last call's, and after
 * ingot_reset. */
INGOT_API int ingot_sample(ingot_model *model, const ingot_sampling *s, int32_t *out_id);
/* Prefills `prompt` (n >= 1) after the current position with the prefill step, then samples
 * and decodes up to max_tokens tokens, calling cb (may be NULL) for each. Stops early at an
 * end-of-sequence token (not passed to cb), when cb returns nonzero, or when the context is
 * full. *n_out (may be NULL) is the number of tokens passed to cb. The draws start from s->seed.
 * The context then holds the prompt and every generated token but the last (which was never
 * fed): continue with ingot_eval(last token), or ingot_reset to start over. */
INGOT_API int ingot_generate(ingot_model *model, const int32_t *prompt, size_t n,
                             const ingot_sampling *s, int32_t max_tokens, ingot_token_cb cb,
                             void *user, int32_t *n_out);
/* Forgets the context (position 0). */
INGOT_API int ingot_reset(ingot_model *model);

/* The message of the last failure on `model`, or with NULL of the last failure on this thread
 * that had no usable handle. Never NULL; "" when none. Valid until the next call. */
INGOT_API const char *ingot_last_error(const ingot_model *model);

#ifdef __cplusplus
}
#endif
#endif
