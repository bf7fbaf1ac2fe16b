/* A minimal JSON reader for libingot: the artefact's header and plan are JSON (runtime/artefact.py
 * writes them), and the C side needs a handful of their fields. Values are located in place
 * (pointers into the text), never copied or allocated; anything malformed gives NULL / -1. */
#ifndef INGOT_MINJSON_H
#define INGOT_MINJSON_H

#include <stddef.h>
#include <stdint.h>

typedef struct { const char *p, *end; } mj_val; /* p == NULL: absent */

/* The whole text as one value (checks that it parses and nothing follows). */
mj_val mj_root(const char *text, size_t len);
/* The value of `key` in object v (absent when v is not an object or has no such key). */
mj_val mj_get(mj_val v, const char *key);
/* Iterating an array: *it starts at {0}; returns 1 with *elem set while elements remain. */
int mj_next(mj_val arr, const char **it, mj_val *elem);
/* Scalars: return 0 on success, -1 when absent, null or of another type. */
int mj_int(mj_val v, int64_t *out);       /* an integer (no fraction or exponent) */
int mj_bool(mj_val v, int *out);
int mj_str(mj_val v, char *out, size_t cap); /* a string without escapes that fits in cap-1 */
int mj_is_null(mj_val v);

#endif
