/* Mapping and checking an artefact; see artefact.h. */
#define _GNU_SOURCE
#include "artefact.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ingot.h"
#include "util.h"

#define FORMAT_VERSION 1u
#define PREAMBLE 64u



static uint64_t rd(const uint8_t *p, int bytes) {
    uint64_t x = 0;
    for (int i = bytes - 1; i >= 0; i--) x = x << 8 | p[i];
    return x;
}

static int read_sections(art_file *a, uint64_t hoff, const char *path, char *err, size_t n) {
    mj_val list = mj_get(a->header, "sections"), s;
    if (!list.p) return ingot_fail(err, n, INGOT_E_FORMAT, "%s: artefact header lists no sections", path);
    const char *it = NULL;
    while (mj_next(list, &it, &s)) {
        if (a->nsec == ART_MAX_SECTIONS)
            return ingot_fail(err, n, INGOT_E_FORMAT, "%s: too many artefact sections", path);
        art_section *x = &a->sec[a->nsec];
        int64_t off, size, crc;
        if (mj_str(mj_get(s, "name"), x->name, sizeof x->name) ||
            mj_int(mj_get(s, "offset"), &off) || mj_int(mj_get(s, "size"), &size) ||
            mj_int(mj_get(s, "crc32"), &crc) || off < 0 || size < 0 || crc < 0 ||
            crc > 0xFFFFFFFFll)
            return ingot_fail(err, n, INGOT_E_FORMAT, "%s: artefact section table is corrupt", path);
        if ((uint64_t)off < PREAMBLE || (uint64_t)off + (uint64_t)size > hoff)
            return ingot_fail(err, n, INGOT_E_FORMAT, "%s: artefact section '%s' is truncated", path,
                        x->name);
        x->offset = (uint64_t)off;
        x->size = (uint64_t)size;
        x->crc = (uint32_t)crc;
        a->nsec++;
    }
    return INGOT_OK;
}

int art_open(art_file *a, const char *path, char *err, size_t n) {
    memset(a, 0, sizeof *a);
    a->fd = -1;
    a->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (a->fd < 0)
        return ingot_fail(err, n, INGOT_E_IO, "%s: cannot open artefact (%s)", path, strerror(errno));
    struct stat st;
    if (fstat(a->fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        art_close(a);
        return ingot_fail(err, n, INGOT_E_IO, "%s: not a regular file", path);
    }
    if ((uint64_t)st.st_size < PREAMBLE) {
        art_close(a);
        return ingot_fail(err, n, INGOT_E_FORMAT, "%s: not an Ingot artefact (file too short)", path);
    }
    a->size = (size_t)st.st_size;
    void *m = mmap(NULL, a->size, PROT_READ, MAP_PRIVATE, a->fd, 0);
    if (m == MAP_FAILED) {
        a->size = 0;
        art_close(a);
        return ingot_fail(err, n, INGOT_E_IO, "%s: cannot map artefact (%s)", path, strerror(errno));
    }
    a->map = m;
    int rc = INGOT_E_FORMAT;
    uint32_t version = (uint32_t)rd(a->map + 8, 4);
    uint64_t hoff = rd(a->map + 16, 8), hlen = rd(a->map + 24, 8);
    if (memcmp(a->map, "INGOTAF\0", 8) != 0) {
        ingot_fail(err, n, rc, "%s: not an Ingot artefact (bad magic number)", path);
    } else if (version != FORMAT_VERSION) {
        ingot_fail(err, n, rc, "%s: artefact format version %u; this library reads version %u (%s)",
             path, version, FORMAT_VERSION, version > FORMAT_VERSION ? "upgrade libingot"
                                                                     : "recompile the model");
    } else if (hoff < PREAMBLE || hoff > a->size || hlen > a->size - hoff) {
        ingot_fail(err, n, rc, "%s: artefact is truncated (%zu bytes, header ends at %llu)", path,
             a->size, (unsigned long long)(hoff + hlen));
    } else if (ingot_crc32(a->map + hoff, hlen) != (uint32_t)rd(a->map + 32, 4)) {
        rc = ingot_fail(err, n, INGOT_E_CHECKSUM, "%s: artefact header is corrupt (checksum mismatch)",
                  path);
    } else if (!(a->header = mj_root((const char *)a->map + hoff, hlen)).p ||
               *a->header.p != '{') {
        ingot_fail(err, n, rc, "%s: artefact header is not valid JSON", path);
    } else {
        rc = read_sections(a, hoff, path, err, n);
    }
    if (rc != INGOT_OK) art_close(a);
    return rc;
}

static const art_section *find(const art_file *a, const char *name) {
    for (int i = 0; i < a->nsec; i++)
        if (!strcmp(a->sec[i].name, name)) return &a->sec[i];
    return NULL;
}

int art_has(const art_file *a, const char *name) { return find(a, name) != NULL; }

int art_section_get(const art_file *a, const char *name, int check, const uint8_t **data,
                    size_t *size, char *err, size_t n) {
    const art_section *s = find(a, name);
    if (!s) return ingot_fail(err, n, INGOT_E_FORMAT, "artefact has no '%s' section", name);
    *data = a->map + s->offset;
    *size = (size_t)s->size;
    if (check && ingot_crc32(*data, *size) != s->crc)
        return ingot_fail(err, n, INGOT_E_CHECKSUM, "artefact section '%s' is corrupt (checksum "
                    "mismatch)", name);
    return INGOT_OK;
}

void art_close(art_file *a) {
    if (a->map) munmap((void *)a->map, a->size);
    if (a->fd >= 0) close(a->fd);
    memset(a, 0, sizeof *a);
    a->fd = -1;
}
