/* Mapping an artefact file and checking its container (runtime/artefact.py is the format's
 * definition): the preamble, the JSON header's CRC-32, every section's range and, on request,
 * a section's CRC-32. Status codes are ingot.h's. */
#ifndef INGOT_ARTEFACT_H
#define INGOT_ARTEFACT_H

#include <stddef.h>
#include <stdint.h>

#include "minjson.h"

#define ART_MAX_SECTIONS 64

typedef struct {
    char name[48];
    uint64_t offset, size;
    uint32_t crc;
} art_section;

typedef struct {
    int fd;
    const uint8_t *map;
    size_t size;
    mj_val header; /* the JSON header, in the map */
    art_section sec[ART_MAX_SECTIONS];
    int nsec;
} art_file;

int art_open(art_file *a, const char *path, char *err, size_t err_size);
void art_close(art_file *a);
/* A section's bytes; check: verify its CRC-32. */
int art_section_get(const art_file *a, const char *name, int check, const uint8_t **data,
                    size_t *size, char *err, size_t err_size);
int art_has(const art_file *a, const char *name);

#endif
