"""Weights in transparent huge pages.

A decode step streams every weight once. Through the file map they sit in 4 KiB page-cache
pages: a 241 MB model is 60 000 pages, far more than the second-level TLB covers, and the
hardware prefetchers stop at every 4 KiB boundary, so each step pays a page walk and a cold
start per page. Read once at load into anonymous memory advised MADV_HUGEPAGE they sit in 2 MiB
pages instead (Gemma 3 270M Q4_K_M decode x1.29 at 1 thread, x1.20 at 2 in a same-process A/B;
see the README's benchmark). The read takes 40-70 ms for those 241 MiB from a warm page cache,
and the page cache it reads through is not mapped, so resident memory is the same.

Only where the kernel offers transparent huge pages (`enabled` is `always` or `madvise`): with
`never` the copy would buy nothing, and the weights stay mapped from the file.
"""
from __future__ import annotations

import mmap

import numpy as np

from ..errors import IngotError

HUGE_PAGE = 2 << 20
_THP = "/sys/kernel/mm/transparent_hugepage/enabled"
_READ_CHUNK = 256 << 20  # one read() moves at most 2 GiB on Linux: read in parts


def thp_mode() -> str:
    """The kernel's transparent huge page mode: always, madvise or never (never off Linux)."""
    try:
        with open(_THP) as f:
            text = f.read()
    except OSError:
        return "never"
    start, end = text.find("["), text.find("]")
    return text[start + 1:end] if 0 <= start < end else "never"


def huge_buffer(nbytes: int) -> np.ndarray | None:
    """`nbytes` of zeroed anonymous memory starting on a huge-page boundary and advised
    MADV_HUGEPAGE, or None where the host has no transparent huge pages."""
    if thp_mode() == "never" or not hasattr(mmap, "MADV_HUGEPAGE") or nbytes <= 0:
        return None
    span = -(-nbytes // HUGE_PAGE) * HUGE_PAGE
    # One huge page more than needed so the buffer can start on a boundary; the pages it does
    # not use are never touched and never resident.
    region = mmap.mmap(-1, span + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = np.frombuffer(region, np.uint8)  # keeps `region` alive
    start = (-raw.ctypes.data) % HUGE_PAGE
    try:
        region.madvise(mmap.MADV_HUGEPAGE, start, span)
    except OSError:
        return None
    return raw[start:start + nbytes]


def read_into_huge_pages(path, offset: int, nbytes: int) -> np.ndarray | None:
    """Bytes [offset, offset + nbytes) of the file at `path`, read into huge pages; None where
    the host has none (the caller maps the file instead)."""
    buf = huge_buffer(nbytes)
    if buf is None:
        return None
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        f.seek(offset)
        done = 0
        while done < nbytes:
            got = f.readinto(view[done:done + min(_READ_CHUNK, nbytes - done)])
            if not got:
                raise IngotError(f"{path}: artefact ends inside its weights (truncated)")
            done += got
    return buf
