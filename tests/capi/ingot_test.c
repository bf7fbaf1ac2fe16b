/* libingot's test driver (tests/test_capi.py runs it; also a small example of the API).
 *
 *   ingot_test gen ARTEFACT THREADS N [--budget BYTES] (--text TEXT | --ids ID,ID,...)
 *       greedy generation: "P id" per prompt id, "G id" per generated id, "T hex" of the text;
 *       then "S streamed read_ahead" (the units memory_budget streams)
 *   ingot_test chat ARTEFACT ROLE CONTENT [ROLE CONTENT ...]
 *       "C rc hex" of the conversation with the generation prompt (ingot_chat_apply)
 *   ingot_test tok ARTEFACT TEXT...     "K id id ..." per text (with special tokens)
 *   ingot_test open PATH                "open rc message"
 *   ingot_test misuse ARTEFACT          "case rc message" per misuse, then "done"
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ingot.h"

static int fail(const char *what, int rc, const ingot_model *m) {
    fprintf(stderr, "%s: %s (%d): %s\n", what, ingot_status_name(rc), rc, ingot_last_error(m));
    return 1;
}

typedef struct { char *text; size_t len, cap; } text_buf;

static int on_token(int32_t token, const char *text, size_t len, void *user) {
    text_buf *t = user;
    printf("G %d\n", token);
    if (text && t->len + len <= t->cap) {
        memcpy(t->text + t->len, text, len);
        t->len += len;
    }
    return 0;
}

static int gen(const char *path, int threads, int n, int argc, char **argv) {
    ingot_options opt;
    ingot_options_default(&opt);
    opt.threads = threads;
    if (argc >= 2 && !strcmp(argv[0], "--budget")) {
        opt.memory_budget = strtoull(argv[1], NULL, 10);
        argc -= 2, argv += 2;
    }
    ingot_model *m;
    int rc = ingot_open(path, &opt, &m);
    if (rc) return fail("open", rc, NULL);
    int32_t prompt[4096];
    size_t np = 0;
    if (argc >= 2 && !strcmp(argv[0], "--text")) {
        rc = ingot_tokenize(m, argv[1], strlen(argv[1]), 1, prompt, 4096, &np);
        if (rc) return fail("tokenize", rc, m);
    } else if (argc >= 2 && !strcmp(argv[0], "--ids")) {
        for (char *s = argv[1]; *s && np < 4096; s += *s == ',') prompt[np++] = strtol(s, &s, 10);
    } else {
        return fail("usage", INGOT_E_ARG, NULL);
    }
    for (size_t i = 0; i < np; i++) printf("P %d\n", prompt[i]);
    ingot_sampling s;
    ingot_sampling_default(&s); /* greedy */
    text_buf t = {malloc(1 << 16), 0, 1 << 16};
    int32_t made;
    rc = ingot_generate(m, prompt, np, &s, n, on_token, &t, &made);
    if (rc) return fail("generate", rc, m);
    printf("T ");
    for (size_t i = 0; i < t.len; i++) printf("%02x", (unsigned char)t.text[i]);
    printf("\nN %d\n", made);
    ingot_memory mem;
    mem.size = sizeof mem;
    if (ingot_memory_info(m, &mem, NULL, 0) == INGOT_OK)
        printf("S %d %d\n", mem.n_streamed, mem.read_ahead);
    free(t.text);
    return ingot_close(m) ? 1 : 0;
}

static int tok(const char *path, int argc, char **argv) {
    ingot_model *m;
    int rc = ingot_open(path, NULL, &m);
    if (rc) return fail("open", rc, NULL);
    for (int a = 0; a < argc; a++) {
        int32_t ids[4096];
        size_t n;
        rc = ingot_tokenize(m, argv[a], strlen(argv[a]), 1, ids, 4096, &n);
        if (rc) return fail("tokenize", rc, m);
        printf("K");
        for (size_t i = 0; i < n; i++) printf(" %d", ids[i]);
        printf("\n");
    }
    return ingot_close(m) ? 1 : 0;
}

static int chat(const char *path, int argc, char **argv) {
    ingot_model *m;
    int rc = ingot_open(path, NULL, &m);
    if (rc) return fail("open", rc, NULL);
    ingot_message msgs[32];
    size_t n = 0;
    for (int a = 0; a + 1 < argc && n < 32; a += 2)
        msgs[n++] = (ingot_message){argv[a], argv[a + 1]};
    size_t need = 0;
    rc = ingot_chat_apply(m, msgs, n, 1, NULL, 0, &need); /* the size first */
    char *out = malloc(need + 1);
    if (rc == INGOT_E_SMALL) rc = ingot_chat_apply(m, msgs, n, 1, out, need + 1, &need);
    printf("C %d ", rc);
    for (size_t i = 0; rc == INGOT_OK && i < need; i++) printf("%02x", (unsigned char)out[i]);
    printf("\n");
    free(out);
    return ingot_close(m) ? 1 : 0;
}

static void report(const char *name, int rc, const ingot_model *m) {
    printf("%s %d %s\n", name, rc, ingot_last_error(m));
}

static int misuse(const char *path) {
    ingot_model *m = NULL;
    const float *lg;
    int32_t nv, id = 0;
    size_t need = 0;
    report("open_null_path", ingot_open(NULL, NULL, &m), NULL);
    report("open_null_out", ingot_open(path, NULL, NULL), NULL);
    ingot_options o;
    ingot_options_default(&o);
    o.size = 4;
    report("open_bad_size", ingot_open(path, &o, &m), NULL);
    ingot_options_default(&o);
    o.threads = -1;
    report("open_bad_threads", ingot_open(path, &o, &m), NULL);
    ingot_options_default(&o);
    o.context = 1 << 30;
    report("open_big_context", ingot_open(path, &o, &m), NULL);
    ingot_options_default(&o);
    o.memory_budget = 1024;
    report("open_small_budget", ingot_open(path, &o, &m), NULL);
    report("null_eval", ingot_eval(NULL, &id, 1), NULL);
    report("null_logits", ingot_logits(NULL, &lg, &nv), NULL);
    report("null_sample", ingot_sample(NULL, NULL, &id), NULL);
    report("null_tokenize", ingot_tokenize(NULL, "a", 1, 1, &id, 1, &need), NULL);
    report("null_reset", ingot_reset(NULL), NULL);
    report("null_close", ingot_close(NULL), NULL);
    printf("null_vocab %d -\n", ingot_vocab_size(NULL));

    ingot_options_default(&o);
    o.threads = 2;
    o.context = 16;
    int rc = ingot_open(path, &o, &m);
    if (rc) return fail("open", rc, NULL);
    report("logits_before_eval", ingot_logits(m, &lg, &nv), m);
    report("sample_before_eval", ingot_sample(m, NULL, &id), m);
    report("eval_empty", ingot_eval(m, &id, 0), m);
    int32_t bad = ingot_vocab_size(m);
    report("eval_bad_token", ingot_eval(m, &bad, 1), m);
    int32_t many[17] = {0};
    report("eval_overflow", ingot_eval(m, many, 17), m);
    report("eval_ok", ingot_eval(m, many, 3), m);
    report("logits_null_out", ingot_logits(m, NULL, &nv), m);
    report("logits_ok", ingot_logits(m, &lg, &nv), m);
    printf("vocab %d %d\n", nv, ingot_vocab_size(m));
    int32_t best = 0;
    for (int32_t i = 1; i < nv; i++) best = lg[i] > lg[best] ? i : best;
    ingot_sampling s;
    int ok = 1;
    for (int k = 0; k < 4; k++) { /* each filter narrowed to one token leaves the argmax */
        ingot_sampling_default(&s);
        s.temperature = 0.7f, s.seed = (uint64_t)k;
        if (k == 1) s.top_k = 1;
        if (k == 2) s.top_p = 1e-6f;
        if (k == 3) s.min_p = 1.0f;
        if (k == 0) s.temperature = 0;
        ok &= ingot_sample(m, &s, &id) == INGOT_OK && id == best;
    }
    printf("narrow_is_argmax %d -\n", ok);
    ingot_sampling_default(&s);
    s.top_p = 0;
    report("sample_bad_top_p", ingot_sample(m, &s, &id), m);
    ingot_sampling_default(&s);
    s.size = 3;
    report("sample_bad_size", ingot_sample(m, &s, &id), m);
    ingot_sampling_default(&s);
    s.temperature = 0.8f, s.top_k = 5, s.top_p = 0.9f, s.min_p = 0.05f;
    s.repetition_penalty = 1.3f, s.seed = 7, s.history = many, s.n_history = 3;
    int32_t a[4], b[4];
    for (int i = 0; i < 4; i++) ingot_sample(m, &s, &a[i]);
    ingot_reset(m);
    report("logits_after_reset", ingot_logits(m, &lg, &nv), m);
    ingot_eval(m, many, 3);
    for (int i = 0; i < 4; i++) ingot_sample(m, &s, &b[i]);
    printf("seeded_repeat %d -\n", !memcmp(a, b, sizeof a) && a[0] >= 0 && a[0] < nv);
    report("generate_null_prompt", ingot_generate(m, NULL, 0, NULL, 4, NULL, NULL, NULL), m);
    report("generate_neg_max", ingot_generate(m, many, 1, NULL, -1, NULL, NULL, NULL), m);
    int32_t made = -1;
    ingot_reset(m);
    report("generate_to_context", ingot_generate(m, many, 3, NULL, 100, NULL, NULL, &made), m);
    printf("made %d pos %d\n", made, ingot_position(m));
    report("generate_full", ingot_generate(m, many, 3, NULL, 4, NULL, NULL, NULL), m);
    ingot_reset(m);
    char small[1];
    int32_t hello[64];
    size_t nh = 0;
    rc = ingot_tokenize(m, "hello world", 11, 0, hello, 64, &nh);
    report("tokenize", rc, m);
    if (rc == INGOT_OK) {
        report("detokenize_small", ingot_detokenize(m, hello, nh, small, 1, &need), m);
        printf("detokenize_needed %zu -\n", need);
        report("tokenize_small", ingot_tokenize(m, "hello world", 11, 0, hello, 0, &need), m);
        printf("tokenize_needed %zu -\n", need);
        report("tokenize_bad_utf8", ingot_tokenize(m, "\xff\xfe", 2, 0, hello, 64, &need), m);
        report("detokenize_bad_id", ingot_detokenize(m, &bad, 1, small, 1, &need), m);
    }
    report("close", ingot_close(m), NULL);
    report("closed_eval", ingot_eval(m, many, 1), m);
    report("closed_sample", ingot_sample(m, NULL, &id), m);
    report("closed_close", ingot_close(m), NULL);
    printf("closed_vocab %d -\n", ingot_vocab_size(m));
    printf("abi %d -\n", ingot_abi_version());
    printf("done\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 6 && !strcmp(argv[1], "gen"))
        return gen(argv[2], atoi(argv[3]), atoi(argv[4]), argc - 5, argv + 5);
    if (argc >= 3 && !strcmp(argv[1], "tok")) return tok(argv[2], argc - 3, argv + 3);
    if (argc >= 3 && !strcmp(argv[1], "chat")) return chat(argv[2], argc - 3, argv + 3);
    if (argc == 3 && !strcmp(argv[1], "open")) {
        ingot_model *m = NULL;
        int rc = ingot_open(argv[2], NULL, &m);
        printf("open %d %s\n", rc, ingot_last_error(NULL));
        ingot_close(m);
        return 0;
    }
    if (argc == 3 && !strcmp(argv[1], "misuse")) return misuse(argv[2]);
    fprintf(stderr, "usage: see the comment at the top of ingot_test.c\n");
    return 2;
}
