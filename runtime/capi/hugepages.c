/* Huge-page weights; see hugepages.h. */
#define _GNU_SOURCE /* MADV_HUGEPAGE */
#include "hugepages.h"

#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define HUGE_PAGE ((size_t)2 << 20)

static int host_has_thp(void) {
    char buf[128] = {0};
    FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/enabled", "r");
    if (!f) return 0;
    size_t got = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[got] = 0;
    return strstr(buf, "[always]") || strstr(buf, "[madvise]");
}

void *huge_read(int fd, uint64_t offset, size_t n, size_t *len) {
#ifdef MADV_HUGEPAGE
    if (!n || !host_has_thp()) return NULL;
    size_t span = (n + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    uint8_t *raw = mmap(NULL, span + HUGE_PAGE, PROT_READ | PROT_WRITE,
                        MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (raw == MAP_FAILED) return NULL;
    /* Keep the 2 MiB-aligned span only: the head and tail go back at once. */
    size_t head = (HUGE_PAGE - (uintptr_t)raw % HUGE_PAGE) % HUGE_PAGE;
    uint8_t *p = raw + head;
    if (head) munmap(raw, head);
    if (HUGE_PAGE - head) munmap(p + span, HUGE_PAGE - head);
    if (madvise(p, span, MADV_HUGEPAGE) != 0) {
        munmap(p, span);
        return NULL;
    }
    for (size_t done = 0; done < n;) {
        ssize_t got = pread(fd, p + done, n - done > ((size_t)1 << 30) ? (size_t)1 << 30
                                                                       : n - done,
                            (off_t)(offset + done));
        if (got <= 0) {
            munmap(p, span);
            return NULL;
        }
        done += (size_t)got;
    }
    *len = span;
    return p;
#else
    (void)fd, (void)offset, (void)n, (void)len;
    return NULL;
#endif
}
