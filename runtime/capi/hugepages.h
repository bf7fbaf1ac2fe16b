/* Weights in transparent huge pages, as the Python runtime does (runtime/hugepages.py says why:
 * a decode step streams every weight, and 4 KiB file pages cost a page walk and a prefetcher
 * restart each). */
#ifndef INGOT_HUGEPAGES_H
#define INGOT_HUGEPAGES_H

#include <stddef.h>
#include <stdint.h>

/* n bytes of the file fd from offset, read into anonymous memory on a 2 MiB boundary advised
 * MADV_HUGEPAGE; *len is what to munmap. NULL (nothing held) where the host has no transparent
 * huge pages or anything fails: the caller steps through its file map instead. */
void *huge_read(int fd, uint64_t offset, size_t n, size_t *len);

#endif
