/* A minimal JSON reader; see minjson.h. Skips any value (depth-limited) so unknown fields of the
 * plan are passed over; reads only integers, booleans and plain strings. */
#include "minjson.h"

#include <string.h>

#define MAX_DEPTH 64

static const char *ws(const char *p, const char *e) {
    while (p < e && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    return p;
}

static const char *skip_string(const char *p, const char *e) {
    if (p >= e || *p != '"') return NULL;
    for (p++; p < e; p++) {
        if (*p == '\\') {
            if (++p >= e) return NULL;
        } else if (*p == '"') {
            return p + 1;
        } else if ((unsigned char)*p < 0x20) {
            return NULL;
        }
    }
    return NULL;
}

static const char *skip_value(const char *p, const char *e, int depth) {
    p = ws(p, e);
    if (p >= e || depth > MAX_DEPTH) return NULL;
    if (*p == '"') return skip_string(p, e);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        p = ws(p + 1, e);
        if (p < e && *p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                p = skip_string(ws(p, e), e);
                if (!p) return NULL;
                p = ws(p, e);
                if (p >= e || *p != ':') return NULL;
                p++;
            }
            p = skip_value(p, e, depth + 1);
            if (!p) return NULL;
            p = ws(p, e);
            if (p < e && *p == ',') { p++; continue; }
            if (p < e && *p == close) return p + 1;
            return NULL;
        }
    }
    const char *s = p;
    while (p < e && (strchr("+-.0123456789eE", *p) || (*p >= 'a' && *p <= 'z'))) p++;
    size_t n = (size_t)(p - s);
    if (n == 0) return NULL;
    if ((*s >= 'a' && *s <= 'z') && !(n == 4 && !memcmp(s, "true", 4)) &&
        !(n == 5 && !memcmp(s, "false", 5)) && !(n == 4 && !memcmp(s, "null", 4)))
        return NULL;
    return p;
}

mj_val mj_root(const char *text, size_t len) {
    mj_val v = {NULL, NULL};
    if (!text) return v;
    const char *e = text + len, *p = ws(text, e);
    const char *q = skip_value(p, e, 0);
    if (!q || ws(q, e) != e) return v;
    v.p = p;
    v.end = q;
    return v;
}

mj_val mj_get(mj_val v, const char *key) {
    mj_val r = {NULL, NULL};
    if (!v.p || *v.p != '{') return r;
    size_t klen = strlen(key);
    const char *p = ws(v.p + 1, v.end), *e = v.end;
    while (p < e && *p == '"') {
        const char *ks = p + 1, *ke = skip_string(p, e);
        if (!ke) return r;
        p = ws(ke, e);
        if (p >= e || *p != ':') return r;
        const char *vs = ws(p + 1, e), *ve = skip_value(vs, e, 1);
        if (!ve) return r;
        if ((size_t)(ke - 1 - ks) == klen && !memcmp(ks, key, klen)) {
            r.p = vs;
            r.end = ve;
            return r;
        }
        p = ws(ve, e);
        if (p < e && *p == ',') p = ws(p + 1, e);
    }
    return r;
}

int mj_next(mj_val arr, const char **it, mj_val *elem) {
    if (!arr.p || *arr.p != '[') return 0;
    const char *p = *it ? *it : arr.p + 1, *e = arr.end;
    p = ws(p, e);
    if (p < e && *p == ',') p = ws(p + 1, e);
    if (p >= e || *p == ']') return 0;
    const char *q = skip_value(p, e, 1);
    if (!q) return 0;
    elem->p = p;
    elem->end = q;
    *it = q;
    return 1;
}

int mj_int(mj_val v, int64_t *out) {
    if (!v.p) return -1;
    const char *p = v.p;
    int neg = 0;
    if (p < v.end && *p == '-') { neg = 1; p++; }
    if (p >= v.end) return -1;
    uint64_t x = 0;
    for (; p < v.end; p++) {
        if (*p < '0' || *p > '9') return -1;
        if (x > (UINT64_C(1) << 62) / 10) return -1; /* far beyond any size in a plan */
        x = x * 10 + (uint64_t)(*p - '0');
    }
    *out = neg ? -(int64_t)x : (int64_t)x;
    return 0;
}

int mj_bool(mj_val v, int *out) {
    if (!v.p) return -1;
    size_t n = (size_t)(v.end - v.p);
    if (n == 4 && !memcmp(v.p, "true", 4)) { *out = 1; return 0; }
    if (n == 5 && !memcmp(v.p, "false", 5)) { *out = 0; return 0; }
    return -1;
}

int mj_str(mj_val v, char *out, size_t cap) {
    if (!v.p || *v.p != '"' || cap == 0) return -1;
    size_t n = (size_t)(v.end - v.p) - 2;
    if (n >= cap || memchr(v.p + 1, '\\', n)) return -1;
    memcpy(out, v.p + 1, n);
    out[n] = 0;
    return 0;
}

int mj_is_null(mj_val v) { return v.p && v.end - v.p == 4 && !memcmp(v.p, "null", 4); }
