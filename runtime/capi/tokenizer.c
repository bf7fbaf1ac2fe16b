/* libingot's native tokenizer; the API and its rules are in tokenizer.h, the section layout in
 * compiler/native_vocab.py. Encoding follows `tokenizers`: added tokens are cut out of the text
 * first (leftmost-longest), each stretch between them is normalized and pre-tokenized, and each
 * piece goes through BPE (lowest merge rank first, leftmost on ties). */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"
#include "util.h"

#define VOCAB_VERSION 1u
#define NONE 0xFFFFFFFFu
#define HEAD_FIXED 68u
#define MAX_PP_IDS 64u

enum { MODEL_SP_BPE = 1, MODEL_BYTE_BPE = 2 };
enum { PRE_NONE = 0, PRE_GPT2 = 1, PRE_LLAMA3 = 2, PRE_QWEN2 = 3 };
enum {
    F_BYTE_FALLBACK = 1, F_FUSE_UNK = 2, F_IGNORE_MERGES = 4, F_PREPEND_SPACE = 8,
    F_SPACE_TO_META = 16, F_ADD_PREFIX_SPACE = 32, F_STRIP_SPACE = 64
};
enum { T_SPECIAL = 1, T_BYTE = 2, T_MISSING = 4 };
enum { A_LSTRIP = 1, A_RSTRIP = 2, A_NORMALIZED = 4, A_SPECIAL = 8 };
enum {
    T_DEC_OFF, T_DEC_BYTES, T_TOK_FLAGS, T_LK_OFF, T_LK_BYTES, T_LK_IDS, T_MERGE_ROW, T_MERGES,
    T_BYTE_IDS, T_ADD_OFF, T_ADD_BYTES, T_ADD_INFO, T_ADD_LENS, T_PP_IDS, NTABLES
};
static const uint32_t ELEM[NTABLES] = {4, 1, 1, 4, 1, 4, 4, 12, 4, 4, 1, 8, 4, 4};
#define HEADER_SIZE (HEAD_FIXED + 8u * NTABLES)

static const uint8_t META[3] = {0xE2, 0x96, 0x81}; /* U+2581 "▁" */

typedef struct { uint32_t id; int32_t prev, next; } sym;
typedef struct { uint32_t rank, pos, result; } merge_cand;

struct ingot_tok {
    uint32_t model, pretok, flags, n, unk, bos, eos, n_prefix, n_suffix;
    int32_t bos_fix, eos_fix;
    const uint32_t *dec_off, *lk_off, *lk_ids, *merge_row, *merges, *byte_ids;
    const uint32_t *add_off, *add_info, *add_lens, *pp_ids;
    const uint8_t *dec_bytes, *tok_flags, *lk_bytes, *add_bytes;
    uint32_t n_lk, n_add, n_add_lens;
    int has_normalized_added;
    uint8_t add_first[256]; /* bytes an added token can start with */
    /* scratch, sized at create */
    size_t max_text;
    uint8_t *text_buf;
    sym *syms;
    merge_cand *heap;
    char err[200];
};

typedef struct {
    int32_t *ids;
    size_t cap, count;
    uint32_t first, last;
} emitter;

/* ---------------------------------------------------------------- small helpers */

static void set_err(char *buf, size_t size, const char *fmt, ...) {
    if (!buf || !size) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, size, fmt, ap);
    va_end(ap);
}

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}


static int bytes_cmp(const uint8_t *a, size_t na, const uint8_t *b, size_t nb) {
    int c = memcmp(a, b, na < nb ? na : nb);
    if (c) return c;
    return na < nb ? -1 : na > nb;
}

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static int utf8_valid(const uint8_t *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) { i++; continue; }
        size_t len;
        uint32_t min;
        uint32_t cp;
        if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; cp = c & 0x1F; }
        else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; cp = c & 0x0F; }
        else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; cp = c & 0x07; }
        else return 0;
        if (n - i < len) return 0;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = cp << 6 | (s[i + k] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
        i += len;
    }
    return 1;
}

/* The code point at s[i] (the text is valid UTF-8) and its length in bytes. */
static uint32_t cp_at(const uint8_t *s, size_t i, size_t *len) {
    uint8_t c = s[i];
    if (c < 0x80) { *len = 1; return c; }
    if ((c & 0xE0) == 0xC0) { *len = 2; return (uint32_t)(c & 0x1F) << 6 | (s[i + 1] & 0x3F); }
    if ((c & 0xF0) == 0xE0) {
        *len = 3;
        return (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
    }
    *len = 4;
    return (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12
           | (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
}

static size_t char_start_before(const uint8_t *s, size_t i) {
    do i--; while (i > 0 && (s[i] & 0xC0) == 0x80);
    return i;
}

static int uclass(uint32_t c) {
    if (c < 128) return uc_ascii[c];
    size_t lo = 0, hi = UC_NRANGES;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (c < uc_ranges[mid].lo) hi = mid;
        else if (c > uc_ranges[mid].hi) lo = mid + 1;
        else return uc_ranges[mid].cls;
    }
    return UC_OTHER;
}

static int class_at(const uint8_t *s, size_t i, size_t *len) { return uclass(cp_at(s, i, len)); }

/* End of the run of characters of class cls starting at i. */
static size_t run_end(const uint8_t *s, size_t n, size_t i, int cls) {
    size_t len;
    while (i < n && class_at(s, i, &len) == cls) i += len;
    return i;
}

/* ---------------------------------------------------------------- lookups */

static uint32_t lookup_token(const ingot_tok *t, const uint8_t *p, size_t n) {
    size_t lo = 0, hi = t->n_lk;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint8_t *k = t->lk_bytes + t->lk_off[mid];
        int c = bytes_cmp(p, n, k, t->lk_off[mid + 1] - t->lk_off[mid]);
        if (c == 0) return t->lk_ids[mid];
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return NONE;
}

/* The merge of (left, right): its rank and result; 0 when there is none. */
static int lookup_merge(const ingot_tok *t, uint32_t left, uint32_t right, uint32_t *rank,
                        uint32_t *result) {
    size_t lo = t->merge_row[left], hi = t->merge_row[left + 1];
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint32_t *m = t->merges + 3 * mid;
        if (m[0] == right) { *rank = m[1]; *result = m[2]; return 1; }
        if (m[0] < right) lo = mid + 1; else hi = mid;
    }
    return 0;
}

static long lookup_added(const ingot_tok *t, const uint8_t *p, size_t n) {
    size_t lo = 0, hi = t->n_add;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        const uint8_t *k = t->add_bytes + t->add_off[mid];
        int c = bytes_cmp(p, n, k, t->add_off[mid + 1] - t->add_off[mid]);
        if (c == 0) return (long)mid;
        if (c < 0) hi = mid; else lo = mid + 1;
    }
    return -1;
}

static void emit(emitter *e, uint32_t id) {
    if (e->count < e->cap) e->ids[e->count] = (int32_t)id;
    if (e->count == 0) e->first = id;
    e->last = id;
    e->count++;
}

/* ---------------------------------------------------------------- BPE */

static int cand_less(const merge_cand *a, const merge_cand *b) {
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(merge_cand *h, size_t *n, merge_cand c) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!cand_less(&c, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = c;
}

static merge_cand heap_pop(merge_cand *h, size_t *n) {
    merge_cand top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t k = 2 * i + 1;
        if (k >= *n) break;
        if (k + 1 < *n && cand_less(&h[k + 1], &h[k])) k++;
        if (!cand_less(&h[k], &last)) break;
        h[i] = h[k];
        i = k;
    }
    h[i] = last;
    return top;
}

typedef struct {
    sym *syms;
    size_t n;
    int unk_pending;
} word_builder;

static void push_sym(word_builder *w, uint32_t id) {
    w->syms[w->n].id = id;
    w->syms[w->n].prev = (int32_t)w->n - 1;
    w->syms[w->n].next = (int32_t)w->n + 1;
    w->n++;
}

/* One character (SentencePiece) or byte (byte-level) as tokenizers' BPE spells it: its token,
 * else its <0xNN> byte tokens, else the unknown token (consecutive ones fused when asked). */
static void add_unit(const ingot_tok *t, word_builder *w, const uint8_t *u, size_t len) {
    uint32_t id = lookup_token(t, u, len);
    if (id != NONE) {
        if (w->unk_pending) { push_sym(w, t->unk); w->unk_pending = 0; }
        push_sym(w, id);
        return;
    }
    if (t->flags & F_BYTE_FALLBACK) {
        size_t k = 0;
        while (k < len && t->byte_ids[u[k]] != NONE) k++;
        if (k == len) { /* like tokenizers, a pending unknown stays pending here */
            for (k = 0; k < len; k++) push_sym(w, t->byte_ids[u[k]]);
            return;
        }
    }
    if (t->unk == NONE) return; /* tokenizers drops the character */
    if (w->unk_pending && !(t->flags & F_FUSE_UNK)) push_sym(w, t->unk);
    w->unk_pending = 1;
}

static void bpe_word(ingot_tok *t, emitter *e, const uint8_t *s, size_t n, int prefix) {
    if (n == 0 && !prefix) return;
    if (t->flags & F_IGNORE_MERGES) { /* byte-level only: a word that is a token stays whole */
        uint32_t id = lookup_token(t, s, n);
        if (id != NONE) { emit(e, id); return; }
    }
    word_builder w = {t->syms, 0, 0};
    if (prefix) add_unit(t, &w, META, 3);
    for (size_t i = 0; i < n;) {
        size_t len = 1;
        if (t->model == MODEL_SP_BPE) cp_at(s, i, &len);
        if (len == 1 && s[i] == ' ' && (t->flags & F_SPACE_TO_META)) add_unit(t, &w, META, 3);
        else add_unit(t, &w, s + i, len);
        i += len;
    }
    if (w.unk_pending) push_sym(&w, t->unk);
    if (w.n == 0) return;
    sym *y = w.syms;
    y[w.n - 1].next = -1;

    size_t nh = 0;
    uint32_t rank, result;
    for (size_t i = 0; i + 1 < w.n; i++)
        if (lookup_merge(t, y[i].id, y[i + 1].id, &rank, &result))
            heap_push(t->heap, &nh, (merge_cand){rank, (uint32_t)i, result});
    while (nh) {
        merge_cand c = heap_pop(t->heap, &nh);
        sym *a = &y[c.pos];
        if (a->id == NONE || a->next < 0) continue; /* merged away, or last */
        sym *b = &y[a->next];
        if (!lookup_merge(t, a->id, b->id, &rank, &result) || result != c.result) continue;
        a->id = result;
        b->id = NONE;
        a->next = b->next;
        if (a->next >= 0) y[a->next].prev = (int32_t)c.pos;
        if (a->prev >= 0 && lookup_merge(t, y[a->prev].id, a->id, &rank, &result))
            heap_push(t->heap, &nh, (merge_cand){rank, (uint32_t)a->prev, result});
        if (a->next >= 0 && lookup_merge(t, a->id, y[a->next].id, &rank, &result))
            heap_push(t->heap, &nh, (merge_cand){rank, c.pos, result});
    }
    for (int32_t i = 0; i >= 0; i = y[i].next) emit(e, y[i].id);
}

/* ---------------------------------------------------------------- pre-tokenizers */

/* Length after the apostrophe of a contraction 's 't 're 've 'm 'll 'd at s[j], else 0;
 * icase also folds case (U+017F long s folds to s, as in the regex engine). */
static size_t contraction(const uint8_t *s, size_t n, size_t j, int icase) {
    if (j >= n) return 0;
    uint8_t c = s[j], c2 = j + 1 < n ? s[j + 1] : 0;
    if (icase) {
        if (c == 0xC5 && c2 == 0xBF) return 2; /* ſ */
        if (c >= 'A' && c <= 'Z') c += 32;
        if (c2 >= 'A' && c2 <= 'Z') c2 += 32;
    }
    if (c == 's' || c == 't' || c == 'm' || c == 'd') return 1;
    if ((c == 'r' || c == 'v') && c2 == 'e') return 2;
    if (c == 'l' && c2 == 'l') return 2;
    return 0;
}

/* Whitespace at i, shared tail of all three regexes: \s+(?!\S) then \s+. */
static size_t space_piece(const uint8_t *s, size_t n, size_t i) {
    size_t e = run_end(s, n, i, UC_SPACE);
    if (e == n) return e;
    size_t last = char_start_before(s, e);
    return last > i ? last : e;
}

/* 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+ */
static size_t gpt2_piece(const uint8_t *s, size_t n, size_t i) {
    size_t len, len2;
    uint32_t c = cp_at(s, i, &len);
    if (c == '\'') {
        size_t k = contraction(s, n, i + 1, 0);
        if (k) return i + 1 + k;
    }
    if (c == ' ' && i + 1 < n) {
        int k2 = class_at(s, i + 1, &len2);
        if (k2 != UC_SPACE) return run_end(s, n, i + 1, k2);
    }
    int cls = uclass(c);
    if (cls != UC_SPACE) return run_end(s, n, i, cls);
    return space_piece(s, n, i);
}

/* (?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,max_digits}
 * | ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+ */
static size_t llama3_piece(const uint8_t *s, size_t n, size_t i, int max_digits) {
    size_t len, len2;
    uint32_t c = cp_at(s, i, &len);
    int cls = uclass(c);
    if (c == '\'') {
        size_t k = contraction(s, n, i + 1, 1);
        if (k) return i + 1 + k;
    }
    if (cls == UC_LETTER) return run_end(s, n, i, UC_LETTER);
    if (c != '\r' && c != '\n' && cls != UC_NUMBER && i + len < n
        && class_at(s, i + len, &len2) == UC_LETTER)
        return run_end(s, n, i + len, UC_LETTER);
    if (cls == UC_NUMBER) {
        size_t j = i;
        for (int k = 0; k < max_digits && j < n && class_at(s, j, &len2) == UC_NUMBER; k++)
            j += len2;
        return j;
    }
    size_t j = 0;
    if (c == ' ' && i + 1 < n && class_at(s, i + 1, &len2) == UC_OTHER)
        j = run_end(s, n, i + 1, UC_OTHER);
    else if (cls == UC_OTHER)
        j = run_end(s, n, i, UC_OTHER);
    if (j) {
        while (j < n && (s[j] == '\r' || s[j] == '\n')) j++;
        return j;
    }
    /* whitespace: \s*[\r\n]+ ends after the run's last line break */
    size_t e = run_end(s, n, i, UC_SPACE), brk = 0;
    for (size_t k = i; k < e; k++)
        if (s[k] == '\r' || s[k] == '\n') brk = k + 1;
    if (brk) return brk;
    return space_piece(s, n, i);
}

static size_t next_piece(const ingot_tok *t, const uint8_t *s, size_t n, size_t i) {
    switch (t->pretok) {
    case PRE_GPT2: return gpt2_piece(s, n, i);
    case PRE_LLAMA3: return llama3_piece(s, n, i, 3);
    case PRE_QWEN2: return llama3_piece(s, n, i, 1);
    default: return n;
    }
}

/* ---------------------------------------------------------------- encode */

/* A stretch of text between added tokens: normalize, pre-tokenize, BPE. */
static void model_segment(ingot_tok *t, emitter *e, const uint8_t *s, size_t n) {
    if (n == 0) return;
    if (t->model == MODEL_SP_BPE) {
        bpe_word(t, e, s, n, (t->flags & F_PREPEND_SPACE) != 0);
        return;
    }
    if ((t->flags & F_ADD_PREFIX_SPACE) && s[0] != ' ') {
        t->text_buf[0] = ' ';
        memcpy(t->text_buf + 1, s, n); /* n <= max_text; the buffer has one byte more */
        s = t->text_buf;
        n++;
    }
    for (size_t i = 0; i < n;) {
        size_t j = next_piece(t, s, n, i);
        bpe_word(t, e, s + i, j - i, 0);
        i = j;
    }
}

/* Cuts added tokens out of s[0, n) (leftmost-longest, like tokenizers' Aho-Corasick), those with
 * normalized == pass; the stretches between go to the next pass or to the model. */
static void split_added(ingot_tok *t, emitter *e, const uint8_t *s, size_t n, int pass) {
    size_t pos = 0, done = 0, len;
    while (pos < n) {
        long hit = -1;
        size_t at = pos, hit_len = 0;
        for (; at < n && hit < 0; at++) {
            if (!t->add_first[s[at]]) continue;
            for (uint32_t k = 0; k < t->n_add_lens && hit < 0; k++) {
                size_t l = t->add_lens[k];
                if (l > n - at) continue;
                long idx = lookup_added(t, s + at, l);
                if (idx >= 0 && ((t->add_info[2 * idx + 1] & A_NORMALIZED) != 0) == pass) {
                    hit = idx;
                    hit_len = l;
                }
            }
        }
        if (hit < 0) break;
        at--;
        uint32_t id = t->add_info[2 * hit], fl = t->add_info[2 * hit + 1];
        size_t start = at, stop = at + hit_len;
        if (fl & A_LSTRIP) {
            while (start > 0) {
                size_t b = char_start_before(s, start);
                if (class_at(s, b, &len) != UC_SPACE) break;
                start = b;
            }
            if (start < done) start = done;
        }
        if (fl & A_RSTRIP)
            while (stop < n && class_at(s, stop, &len) == UC_SPACE) stop += len;
        if (done < start) {
            if (pass == 0 && t->has_normalized_added) split_added(t, e, s + done, start - done, 1);
            else model_segment(t, e, s + done, start - done);
        }
        emit(e, id);
        done = stop;
        pos = at + hit_len;
    }
    if (done < n) {
        if (pass == 0 && t->has_normalized_added) split_added(t, e, s + done, n - done, 1);
        else model_segment(t, e, s + done, n - done);
    }
}

int ingot_tok_encode(ingot_tok *t, const char *text, size_t len, unsigned flags, int32_t *ids,
                     size_t cap, size_t *needed) {
    if (!t || !needed || (!text && len) || (!ids && cap) || (flags & ~INGOT_TOK_ADD_SPECIAL)) {
        if (t) set_err(t->err, sizeof t->err, "encode: bad argument");
        return INGOT_TOK_E_ARG;
    }
    *needed = 0;
    t->err[0] = 0;
    const uint8_t *s = (const uint8_t *)text;
    if (len > t->max_text) {
        set_err(t->err, sizeof t->err, "encode: %zu bytes of text, over the %zu this handle "
                "was created for", len, t->max_text);
        return INGOT_TOK_E_TOO_LONG;
    }
    if (!utf8_valid(s, len)) {
        set_err(t->err, sizeof t->err, "encode: the text is not valid UTF-8");
        return INGOT_TOK_E_UTF8;
    }
    emitter e = {ids, cap, 0, NONE, NONE};
    if (len) split_added(t, &e, s, len, 0);
    size_t raw = e.count;
    if (!(flags & INGOT_TOK_ADD_SPECIAL)) {
        *needed = raw;
        if (raw > cap) {
            set_err(t->err, sizeof t->err, "encode: %zu ids do not fit in %zu", raw, cap);
            return INGOT_TOK_E_SMALL;
        }
        return INGOT_TOK_OK;
    }
    /* The post-processor's ids around the text, then runtime/tokenizer.py's add_bos/add_eos
     * fix-ups; neither ever removes a text id. */
    uint32_t front[MAX_PP_IDS + 1], back[MAX_PP_IDS + 1];
    size_t nf = t->n_prefix, nb = t->n_suffix;
    memcpy(front, t->pp_ids, nf * 4);
    memcpy(back, t->pp_ids + nf, nb * 4);
    if (t->bos_fix >= 0 && t->bos != NONE) {
        uint32_t first = nf ? front[0] : raw ? e.first : nb ? back[0] : NONE;
        int has = first == t->bos;
        if (t->bos_fix && !has) {
            memmove(front + 1, front, nf * 4);
            front[0] = t->bos;
            nf++;
        } else if (!t->bos_fix && has && !(raw && e.first == t->bos)) {
            if (nf) memmove(front, front + 1, --nf * 4);
            else memmove(back, back + 1, --nb * 4);
        }
    }
    if (t->eos_fix >= 0 && t->eos != NONE) {
        uint32_t last = nb ? back[nb - 1] : raw ? e.last : nf ? front[nf - 1] : NONE;
        int has = last == t->eos;
        if (t->eos_fix && !has) back[nb++] = t->eos;
        else if (!t->eos_fix && has && !(raw && e.last == t->eos)) {
            if (nb) nb--;
            else nf--;
        }
    }
    *needed = nf + raw + nb;
    if (*needed > cap) {
        set_err(t->err, sizeof t->err, "encode: %zu ids do not fit in %zu", *needed, cap);
        return INGOT_TOK_E_SMALL;
    }
    memmove(ids + nf, ids, raw * sizeof *ids);
    for (size_t k = 0; k < nf; k++) ids[k] = (int32_t)front[k];
    for (size_t k = 0; k < nb; k++) ids[nf + raw + k] = (int32_t)back[k];
    return INGOT_TOK_OK;
}

/* ---------------------------------------------------------------- decode */

int ingot_tok_decode(ingot_tok *t, const int32_t *ids, size_t n, unsigned flags, char *out,
                     size_t cap, size_t *needed) {
    if (!t || !needed || (!ids && n) || (!out && cap)
        || (flags & ~(INGOT_TOK_SKIP_SPECIAL | INGOT_TOK_CONTINUE))) {
        if (t) set_err(t->err, sizeof t->err, "decode: bad argument");
        return INGOT_TOK_E_ARG;
    }
    *needed = 0;
    t->err[0] = 0;
    int strip = (t->flags & F_STRIP_SPACE) && !(flags & INGOT_TOK_CONTINUE);
    size_t total = 0;
    for (size_t k = 0; k < n; k++) {
        if (ids[k] < 0 || (uint32_t)ids[k] >= t->n) {
            set_err(t->err, sizeof t->err, "decode: token id %ld is outside the vocabulary "
                    "(%u)", (long)ids[k], t->n);
            return INGOT_TOK_E_ID;
        }
        uint32_t id = (uint32_t)ids[k];
        uint8_t tf = t->tok_flags[id];
        if ((tf & T_MISSING) || ((flags & INGOT_TOK_SKIP_SPECIAL) && (tf & T_SPECIAL))) continue;
        const uint8_t *p = t->dec_bytes + t->dec_off[id];
        size_t len = t->dec_off[id + 1] - t->dec_off[id];
        if (strip && len) { /* the decoder's Strip: one space off the start of the text */
            if (p[0] == ' ') { p++; len--; }
            strip = 0;
        }
        if (total < cap) memcpy(out + total, p, len < cap - total ? len : cap - total);
        total += len;
    }
    *needed = total;
    if (total > cap) {
        set_err(t->err, sizeof t->err, "decode: %zu bytes do not fit in %zu", total, cap);
        return INGOT_TOK_E_SMALL;
    }
    return INGOT_TOK_OK;
}

const char *ingot_tok_token_bytes(const ingot_tok *t, int32_t id, size_t *len) {
    if (!t || id < 0 || (uint32_t)id >= t->n || (t->tok_flags[id] & T_MISSING)) return NULL;
    if (len) *len = t->dec_off[id + 1] - t->dec_off[id];
    return (const char *)(t->dec_bytes + t->dec_off[id]);
}

int32_t ingot_tok_vocab_size(const ingot_tok *t) { return t ? (int32_t)t->n : 0; }
int32_t ingot_tok_bos(const ingot_tok *t) { return t && t->bos != NONE ? (int32_t)t->bos : -1; }
int32_t ingot_tok_eos(const ingot_tok *t) { return t && t->eos != NONE ? (int32_t)t->eos : -1; }

int ingot_tok_is_special(const ingot_tok *t, int32_t id) {
    return t && id >= 0 && (uint32_t)id < t->n && (t->tok_flags[id] & T_SPECIAL);
}

const char *ingot_tok_last_error(const ingot_tok *t) { return t ? t->err : "no handle"; }

const char *ingot_tok_strerror(int code) {
    switch (code) {
    case INGOT_TOK_OK: return "ok";
    case INGOT_TOK_E_ARG: return "bad argument";
    case INGOT_TOK_E_NOMEM: return "out of memory";
    case INGOT_TOK_E_FORMAT: return "corrupt vocabulary section";
    case INGOT_TOK_E_VERSION: return "unsupported vocabulary section version";
    case INGOT_TOK_E_CHECKSUM: return "vocabulary section checksum mismatch";
    case INGOT_TOK_E_UTF8: return "text is not valid UTF-8";
    case INGOT_TOK_E_TOO_LONG: return "text too long for this handle";
    case INGOT_TOK_E_SMALL: return "output buffer too small";
    case INGOT_TOK_E_ID: return "token id outside the vocabulary";
    default: return "unknown error";
    }
}

/* ---------------------------------------------------------------- create: validate everything */

#define FAIL(code, ...) do { set_err(err, err_size, __VA_ARGS__); return code; } while (0)

/* Offsets table off[0..count) must start at 0, never decrease and end within limit. */
static int offsets_ok(const uint32_t *off, size_t count, size_t limit) {
    if (count == 0 || off[0] != 0) return 0;
    for (size_t i = 1; i < count; i++)
        if (off[i] < off[i - 1]) return 0;
    return off[count - 1] <= limit;
}

static int parse(ingot_tok *t, const uint8_t *b, size_t size, char *err, size_t err_size) {
    if (size < HEADER_SIZE || memcmp(b, "INGOTVOC", 8) != 0)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: not a vocabulary section (bad magic or size)");
    if (rd32(b + 8) != VOCAB_VERSION)
        FAIL(INGOT_TOK_E_VERSION, "vocab_native: version %u, this library reads %u",
             rd32(b + 8), VOCAB_VERSION);
    if (rd32(b + 12) != HEADER_SIZE || rd32(b + 16) != size)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: header size %u / total %u, section is %zu bytes",
             rd32(b + 12), rd32(b + 16), size);
    if (ingot_crc32(b + 24, size - 24) != rd32(b + 20))
        FAIL(INGOT_TOK_E_CHECKSUM, "vocab_native: checksum mismatch");
    t->model = rd32(b + 24);
    t->pretok = rd32(b + 28);
    t->flags = rd32(b + 32);
    t->n = rd32(b + 36);
    t->unk = rd32(b + 40);
    t->bos = rd32(b + 44);
    t->eos = rd32(b + 48);
    t->bos_fix = (int32_t)rd32(b + 52);
    t->eos_fix = (int32_t)rd32(b + 56);
    t->n_prefix = rd32(b + 60);
    t->n_suffix = rd32(b + 64);
    if (t->model != MODEL_SP_BPE && t->model != MODEL_BYTE_BPE)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: unknown model kind %u", t->model);
    if (t->pretok > PRE_QWEN2 || (t->model == MODEL_SP_BPE) != (t->pretok == PRE_NONE))
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: unknown pre-tokenizer %u", t->pretok);
    if (t->flags >> 7) FAIL(INGOT_TOK_E_FORMAT, "vocab_native: unknown flags 0x%x", t->flags);
    if (t->model == MODEL_SP_BPE && (t->flags & F_IGNORE_MERGES))
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: ignore_merges with a SentencePiece vocabulary");
    if (t->n == 0 || t->n == NONE) FAIL(INGOT_TOK_E_FORMAT, "vocab_native: empty vocabulary");
    if ((t->unk != NONE && t->unk >= t->n) || (t->bos != NONE && t->bos >= t->n)
        || (t->eos != NONE && t->eos >= t->n))
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: unk/bos/eos id outside the vocabulary");
    if (t->bos_fix < -1 || t->bos_fix > 1 || t->eos_fix < -1 || t->eos_fix > 1)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: bad add_bos/add_eos values");
    if (t->n_prefix > MAX_PP_IDS || t->n_suffix > MAX_PP_IDS)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: too many post-processor ids");

    const uint8_t *tab[NTABLES];
    uint32_t cnt[NTABLES];
    for (int k = 0; k < NTABLES; k++) {
        uint32_t off = rd32(b + HEAD_FIXED + 8 * k), count = rd32(b + HEAD_FIXED + 8 * k + 4);
        if (off < HEADER_SIZE || off % 4 || off > size || (uint64_t)count * ELEM[k] > size - off)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: table %d lies outside the section", k);
        tab[k] = b + off;
        cnt[k] = count;
    }
    const uint64_t n1 = (uint64_t)t->n + 1;
    if (cnt[T_DEC_OFF] != n1 || cnt[T_TOK_FLAGS] != t->n || cnt[T_MERGE_ROW] != n1
        || cnt[T_BYTE_IDS] != 256 || cnt[T_LK_OFF] != (uint64_t)cnt[T_LK_IDS] + 1
        || cnt[T_ADD_OFF] != (uint64_t)cnt[T_ADD_INFO] + 1
        || cnt[T_PP_IDS] != t->n_prefix + t->n_suffix)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: table sizes disagree with the vocabulary size");
    t->dec_off = (const uint32_t *)tab[T_DEC_OFF];
    t->dec_bytes = tab[T_DEC_BYTES];
    t->tok_flags = tab[T_TOK_FLAGS];
    t->lk_off = (const uint32_t *)tab[T_LK_OFF];
    t->lk_bytes = tab[T_LK_BYTES];
    t->lk_ids = (const uint32_t *)tab[T_LK_IDS];
    t->n_lk = cnt[T_LK_IDS];
    t->merge_row = (const uint32_t *)tab[T_MERGE_ROW];
    t->merges = (const uint32_t *)tab[T_MERGES];
    t->byte_ids = (const uint32_t *)tab[T_BYTE_IDS];
    t->add_off = (const uint32_t *)tab[T_ADD_OFF];
    t->add_bytes = tab[T_ADD_BYTES];
    t->add_info = (const uint32_t *)tab[T_ADD_INFO];
    t->n_add = cnt[T_ADD_INFO];
    t->add_lens = (const uint32_t *)tab[T_ADD_LENS];
    t->n_add_lens = cnt[T_ADD_LENS];
    t->pp_ids = (const uint32_t *)tab[T_PP_IDS];

    if (!offsets_ok(t->dec_off, n1, cnt[T_DEC_BYTES]) || !offsets_ok(t->lk_off, cnt[T_LK_OFF],
        cnt[T_LK_BYTES]) || !offsets_ok(t->add_off, cnt[T_ADD_OFF], cnt[T_ADD_BYTES])
        || !offsets_ok(t->merge_row, n1, cnt[T_MERGES]) || t->merge_row[t->n] != cnt[T_MERGES])
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: an offsets table is out of order or bounds");
    for (uint32_t i = 0; i < t->n; i++) {
        if (t->tok_flags[i] >> 3) FAIL(INGOT_TOK_E_FORMAT, "vocab_native: bad token flags");
        if ((t->tok_flags[i] & T_BYTE) && t->dec_off[i + 1] - t->dec_off[i] != 1)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: a byte token is not one byte");
        for (uint32_t m = t->merge_row[i]; m < t->merge_row[i + 1]; m++) {
            const uint32_t *e = t->merges + 3 * (size_t)m;
            if (e[0] >= t->n || e[2] >= t->n || (m > t->merge_row[i] && e[0] <= e[-3]))
                FAIL(INGOT_TOK_E_FORMAT, "vocab_native: a merge is out of range or order");
        }
    }
    for (uint32_t i = 0; i < t->n_lk; i++) {
        if (t->lk_ids[i] >= t->n) FAIL(INGOT_TOK_E_FORMAT, "vocab_native: lookup id out of range");
        if (i && bytes_cmp(t->lk_bytes + t->lk_off[i - 1], t->lk_off[i] - t->lk_off[i - 1],
                           t->lk_bytes + t->lk_off[i], t->lk_off[i + 1] - t->lk_off[i]) >= 0)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: token lookup table is not sorted");
    }
    for (int k = 0; k < 256; k++)
        if (t->byte_ids[k] != NONE && t->byte_ids[k] >= t->n)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: byte token id out of range");
    memset(t->add_first, 0, sizeof t->add_first);
    t->has_normalized_added = 0;
    for (uint32_t i = 0; i < t->n_add; i++) {
        uint32_t off = t->add_off[i], len = t->add_off[i + 1] - off;
        if (t->add_info[2 * i] >= t->n || t->add_info[2 * i + 1] >> 4 || len == 0
            || !utf8_valid(t->add_bytes + off, len))
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: bad added token %u", i);
        if (i && bytes_cmp(t->add_bytes + t->add_off[i - 1], off - t->add_off[i - 1],
                           t->add_bytes + off, len) >= 0)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: added tokens are not sorted");
        t->add_first[t->add_bytes[off]] = 1;
        if (t->add_info[2 * i + 1] & A_NORMALIZED) t->has_normalized_added = 1;
    }
    if (t->has_normalized_added && t->model == MODEL_SP_BPE)
        FAIL(INGOT_TOK_E_FORMAT, "vocab_native: normalized added tokens with SentencePiece");
    for (uint32_t k = 0; k < t->n_add_lens; k++)
        if (t->add_lens[k] == 0 || (k && t->add_lens[k] >= t->add_lens[k - 1]))
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: added-token lengths out of order");
    for (uint32_t k = 0; k < cnt[T_PP_IDS]; k++)
        if (t->pp_ids[k] >= t->n)
            FAIL(INGOT_TOK_E_FORMAT, "vocab_native: post-processor id out of range");
    return INGOT_TOK_OK;
}

int ingot_tok_create(const void *section, size_t size, size_t max_text_bytes, ingot_tok **out,
                     char *err, size_t err_size) {
    if (err && err_size) err[0] = 0;
    if (!out) FAIL(INGOT_TOK_E_ARG, "create: out is NULL");
    *out = NULL;
    if (!section) FAIL(INGOT_TOK_E_ARG, "create: section is NULL");
    if ((uintptr_t)section % 4) FAIL(INGOT_TOK_E_ARG, "create: section is not 4-byte aligned");
    const uint16_t probe = 1;
    if (*(const uint8_t *)&probe != 1)
        FAIL(INGOT_TOK_E_FORMAT, "create: big-endian hosts are not supported");
    if (size > 0xFFFFFFFFu) FAIL(INGOT_TOK_E_FORMAT, "vocab_native: section over 4 GiB");
    size_t max_text = max_text_bytes ? max_text_bytes : (size_t)1 << 18;
    if (max_text > ((size_t)1 << 30)) FAIL(INGOT_TOK_E_ARG, "create: max_text_bytes over 1 GiB");
    ingot_tok *t = calloc(1, sizeof *t);
    if (!t) FAIL(INGOT_TOK_E_NOMEM, "create: out of memory");
    int rc = parse(t, section, size, err, err_size);
    if (rc != INGOT_TOK_OK) {
        free(t);
        return rc;
    }
    /* A word has at most one symbol per byte plus a "▁" prefix, or three per byte when "▁"
     * itself falls back to bytes; the heap holds the first pairs plus two per merge. */
    size_t per_byte = t->model == MODEL_SP_BPE && lookup_token(t, META, 3) == NONE ? 3 : 1;
    size_t nsym = per_byte * (max_text + 2);
    t->max_text = max_text;
    t->text_buf = malloc(max_text + 1);
    t->syms = malloc(nsym * sizeof *t->syms);
    t->heap = malloc(3 * nsym * sizeof *t->heap);
    if (!t->text_buf || !t->syms || !t->heap) {
        ingot_tok_free(t);
        FAIL(INGOT_TOK_E_NOMEM, "create: out of memory for %zu bytes of text", max_text);
    }
    *out = t;
    return INGOT_TOK_OK;
}

void ingot_tok_free(ingot_tok *t) {
    if (!t) return;
    free(t->text_buf);
    free(t->syms);
    free(t->heap);
    free(t);
}
