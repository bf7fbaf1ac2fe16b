/* Small helpers the C library's files share: CRC-32 (the artefact's and the vocabulary
 * section's checksums, zlib's polynomial) and formatting an error message with its code. */
#ifndef INGOT_CAPI_UTIL_H
#define INGOT_CAPI_UTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

static inline uint32_t ingot_crc32(const uint8_t *p, size_t n) {
    uint32_t table[256];
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        table[i] = c;
    }
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

/* Writes the message into err (n bytes, may be NULL) and returns code. */
static inline int ingot_fail(char *err, size_t n, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && n) vsnprintf(err, n, fmt, ap);
    va_end(ap);
    return code;
}

#endif
