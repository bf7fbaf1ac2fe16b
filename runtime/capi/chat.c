/* Native chat formats; see chat.h. The text of each format is compiler/native_chat.py's. */
#include "chat.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "util.h"

typedef struct {
    char *out;
    size_t cap, len;
} writer;

static void put(writer *w, const char *s, size_t n) {
    if (w->len < w->cap) memcpy(w->out + w->len, s, n < w->cap - w->len ? n : w->cap - w->len);
    w->len += n;
}
static void puts_(writer *w, const char *s) { put(w, s, strlen(s)); }

/* The code point at s (valid UTF-8 is checked first), its length in *k. */
static uint32_t decode(const uint8_t *s, size_t *k) {
    if (s[0] < 0x80) return *k = 1, s[0];
    if (s[0] < 0xE0) return *k = 2, (uint32_t)(s[0] & 0x1F) << 6 | (s[1] & 0x3F);
    if (s[0] < 0xF0)
        return *k = 3, (uint32_t)(s[0] & 0x0F) << 12 | (uint32_t)(s[1] & 0x3F) << 6 | (s[2] & 0x3F);
    return *k = 4, (uint32_t)(s[0] & 0x07) << 18 | (uint32_t)(s[1] & 0x3F) << 12 |
                   (uint32_t)(s[2] & 0x3F) << 6 | (s[3] & 0x3F);
}

/* Strict UTF-8 (no overlong forms, surrogates or code points past U+10FFFF): what a Python
 * string can hold, so the text compares with the Jinja rendering. */
static int valid_utf8(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n;) {
        uint8_t c = s[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c < 0xE0 ? 2 : c >= 0xE0 && c < 0xF0 ? 3
                 : c >= 0xF0 && c < 0xF5 ? 4 : 0;
        if (!k || i + k > n) return 0;
        for (size_t j = 1; j < k; j++)
            if ((s[i + j] & 0xC0) != 0x80) return 0;
        size_t len;
        uint32_t u = decode(s + i, &len);
        if ((k == 3 && (u < 0x800 || (u >= 0xD800 && u < 0xE000))) ||
            (k == 4 && (u < 0x10000 || u > 0x10FFFF)))
            return 0;
        i += k;
    }
    return 1;
}

/* Python's str.isspace(), which Jinja's trim (str.strip) uses. */
static int py_space(uint32_t u) {
    return (u >= 0x09 && u <= 0x0D) || (u >= 0x1C && u <= 0x20) || u == 0x85 || u == 0xA0 ||
           u == 0x1680 || (u >= 0x2000 && u <= 0x200A) || u == 0x2028 || u == 0x2029 ||
           u == 0x202F || u == 0x205F || u == 0x3000;
}

static void put_trimmed(writer *w, const char *text) {
    const uint8_t *s = (const uint8_t *)text, *e = s + strlen(text);
    size_t k;
    while (s < e && py_space(decode(s, &k))) s += k;
    while (e > s) {
        const uint8_t *p = e - 1;
        while (p > s && (*p & 0xC0) == 0x80) p--;
        if (!py_space(decode(p, &k))) break;
        e = p;
    }
    put(w, (const char *)s, (size_t)(e - s));
}

typedef int (*format_fn)(writer *w, const chat_cfg *c, const ingot_message *m, size_t n,
                         int gen, char *err, size_t err_size);

static int refuse(char *err, size_t n, const char *fmt, size_t at, const char *role,
                  const char *why) {
    return ingot_fail(err, n, INGOT_E_ARG, "chat format '%s': %s (message %zu has role '%.40s')",
                      fmt, why, at, role);
}

static int chatml(writer *w, const chat_cfg *c, const ingot_message *m, size_t n, int gen,
                  char *err, size_t en) {
    (void)c, (void)err, (void)en;
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|im_start|>"), puts_(w, m[i].role), puts_(w, "\n"), puts_(w, m[i].content);
        puts_(w, "<|im_end|>\n");
    }
    if (gen) puts_(w, "<|im_start|>assistant\n");
    return INGOT_OK;
}

static int llama3(writer *w, const chat_cfg *c, const ingot_message *m, size_t n, int gen,
                  char *err, size_t en) {
    (void)err, (void)en;
    puts_(w, c->bos);
    for (size_t i = 0; i < n; i++) {
        puts_(w, "<|start_header_id|>"), puts_(w, m[i].role), puts_(w, "<|end_header_id|>\n\n");
        put_trimmed(w, m[i].content), puts_(w, "<|eot_id|>");
    }
    if (gen) puts_(w, "<|start_header_id|>assistant<|end_header_id|>\n\n");
    return INGOT_OK;
}

static int phi3(writer *w, const chat_cfg *c, const ingot_message *m, size_t n, int gen,
                char *err, size_t en) {
    (void)c, (void)err, (void)en;
    for (size_t i = 0; i < n; i++)
        puts_(w, "<|"), puts_(w, m[i].role), puts_(w, "|>\n"), puts_(w, m[i].content),
            puts_(w, "<|end|>\n");
    if (gen) puts_(w, "<|assistant|>\n");
    return INGOT_OK;
}

/* Whether the roles of m[0..n) alternate user, other, user, ... (from message `base` on). */
static int alternate(const ingot_message *m, size_t n, size_t base, const char *fmt, char *err,
                     size_t en) {
    for (size_t i = 0; i < n; i++)
        if ((strcmp(m[i].role, "user") == 0) != (i % 2 == 0))
            return refuse(err, en, fmt, base + i, m[i].role,
                          "roles must alternate user/assistant/user/...");
    return INGOT_OK;
}

static int gemma(writer *w, const chat_cfg *c, const ingot_message *m, size_t n, int gen,
                 char *err, size_t en) {
    /* A leading system message becomes a prefix of the first turn. */
    const char *prefix = NULL;
    size_t base = 0;
    if (n && strcmp(m[0].role, "system") == 0) prefix = m[0].content, base = 1;
    int rc = alternate(m + base, n - base, base, "gemma", err, en);
    if (rc) return rc;
    puts_(w, c->bos);
    for (size_t i = base; i < n; i++) {
        puts_(w, "<start_of_turn>");
        puts_(w, strcmp(m[i].role, "assistant") == 0 ? "model" : m[i].role);
        puts_(w, "\n");
        if (i == base && prefix) puts_(w, prefix), puts_(w, "\n\n");
        put_trimmed(w, m[i].content);
        puts_(w, "<end_of_turn>\n");
    }
    if (gen) puts_(w, "<start_of_turn>model\n");
    return INGOT_OK;
}

static int mistral(writer *w, const chat_cfg *c, const ingot_message *m, size_t n, int gen,
                   char *err, size_t en) {
    (void)gen; /* the [INST] format has no generation prompt */
    int rc = alternate(m, n, 0, "mistral", err, en);
    if (rc) return rc;
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].role, "user") && strcmp(m[i].role, "assistant"))
            return refuse(err, en, "mistral", i, m[i].role,
                          "only user and assistant roles are supported");
    puts_(w, c->bos);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].role, "user") == 0)
            puts_(w, "[INST] "), puts_(w, m[i].content), puts_(w, " [/INST]");
        else
            puts_(w, m[i].content), puts_(w, c->eos);
    return INGOT_OK;
}

static const struct {
    const char *name;
    format_fn fn;
} formats[] = {{"chatml", chatml}, {"llama3", llama3}, {"phi3", phi3}, {"gemma", gemma},
               {"mistral", mistral}};
#define N_FORMATS (int)(sizeof formats / sizeof formats[0])

void chat_load(const art_file *a, chat_cfg *c) {
    memset(c, 0, sizeof *c);
    c->format = -1;
    const uint8_t *d;
    size_t n;
    snprintf(c->why, sizeof c->why, "the artefact records no native chat format (compiled by an "
             "Ingot without native chat templates)");
    if (art_section_get(a, "plan", 0, &d, &n, NULL, 0) != INGOT_OK) return;
    mj_val cn = mj_get(mj_root((const char *)d, n), "chat_native");
    if (!cn.p) return;
    char name[32];
    if (!mj_str(mj_get(cn, "skipped"), c->why, sizeof c->why)) return;
    if (mj_str(mj_get(cn, "format"), name, sizeof name) ||
        mj_str(mj_get(cn, "bos"), c->bos, sizeof c->bos) ||
        mj_str(mj_get(cn, "eos"), c->eos, sizeof c->eos)) {
        snprintf(c->why, sizeof c->why, "the artefact's chat_native entry is malformed");
        return;
    }
    for (int i = 0; i < N_FORMATS; i++)
        if (strcmp(name, formats[i].name) == 0) c->format = i;
    if (c->format < 0)
        snprintf(c->why, sizeof c->why, "the artefact's chat format '%s' is not in this libingot",
                 name);
}

int chat_render(const chat_cfg *c, const ingot_message *msgs, size_t n, int gen, char *out,
                size_t cap, size_t *needed, char *err, size_t en) {
    if (needed) *needed = 0;
    if ((!msgs && n) || (!out && cap))
        return ingot_fail(err, en, INGOT_E_ARG, "ingot_chat_apply: NULL messages or out");
    if (c->format < 0)
        return ingot_fail(err, en, INGOT_E_NO_TEMPLATE, "no native chat template: %s", c->why);
    for (size_t i = 0; i < n; i++) {
        if (!msgs[i].role || !msgs[i].content)
            return ingot_fail(err, en, INGOT_E_ARG, "message %zu has a NULL role or content", i);
        if (!valid_utf8((const uint8_t *)msgs[i].role, strlen(msgs[i].role)) ||
            !valid_utf8((const uint8_t *)msgs[i].content, strlen(msgs[i].content)))
            return ingot_fail(err, en, INGOT_E_TEXT, "message %zu is not valid UTF-8", i);
    }
    writer w = {out, cap, 0};
    int rc = formats[c->format].fn(&w, c, msgs, n, gen != 0, err, en);
    if (rc) return rc;
    if (needed) *needed = w.len;
    if (w.len > cap) return ingot_fail(err, en, INGOT_E_SMALL, "the chat text needs %zu bytes, the "
                                       "buffer holds %zu", w.len, cap);
    if (w.len < cap) out[w.len] = 0;
    return INGOT_OK;
}
