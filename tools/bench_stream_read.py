"""How fast a streamed layer's weights reach the kernels: mapped pages with the read-ahead
hint (what Ingot does), mapped pages faulted in without it, or pread into a fixed slot, each
from a warm page cache and from a cold one (the file's pages evicted with
posix_fadvise(DONTNEED) first; `resident` reports what eviction left, read back with mincore).

Every way ends with one pass over each layer's bytes (what a decode step does with it), so
pread's extra copy is counted against the mapping's page faults, and the ways that work ahead
(read-ahead hint, a pread thread) overlap the next layer's reading with this pass.

    python tools/bench_stream_read.py [model.ingot | file.gguf] --repeats 5
"""
from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

PAGE = mmap.PAGESIZE
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
MADV_WILLNEED, MADV_DONTNEED = 3, 4


def consume(view: np.ndarray) -> int:
    """One read pass over the bytes (8 at a time), as a kernel streaming the layer would."""
    return int(np.bitwise_xor.reduce(view.view(np.uint64)))


def resident_fraction(addr: int, nbytes: int) -> float:
    pages = (nbytes + PAGE - 1) // PAGE
    vec = (ctypes.c_ubyte * pages)()
    if _libc.mincore(ctypes.c_void_p(addr), nbytes, vec) != 0:
        return float("nan")
    return sum(v & 1 for v in vec) / pages


class Layer:
    """A page-aligned run of the artefact file, mapped on its own."""

    def __init__(self, fd: int, offset: int, nbytes: int):
        self.fd, self.offset, self.nbytes = fd, offset, nbytes
        self.mm = mmap.mmap(fd, nbytes, mmap.MAP_SHARED, mmap.PROT_READ, offset=offset)
        self.view = np.frombuffer(self.mm, np.uint8)
        self.addr = self.view.ctypes.data

    def drop(self) -> None:
        """Out of this process, as unit_leave does (the pages stay in the page cache)."""
        _libc.madvise(ctypes.c_void_p(self.addr), self.nbytes, MADV_DONTNEED)


def mapped_ahead(layers, slots) -> None:
    """Ingot's way: while layer i is read, the kernel is asked to read layer i + 1 ahead."""
    for i, ly in enumerate(layers):
        if i + 1 < len(layers):
            nxt = layers[i + 1]
            _libc.madvise(ctypes.c_void_p(nxt.addr), nxt.nbytes, MADV_WILLNEED)
        consume(ly.view)


def mapped_faults(layers, slots) -> None:
    """Mapped pages faulted in as they are read (the kernel's own readahead only)."""
    for ly in layers:
        consume(ly.view)


def _pread(ly, slot) -> None:
    got = os.preadv(ly.fd, [memoryview(slot)[:ly.nbytes]], ly.offset)
    if got != ly.nbytes:
        raise OSError(f"short read: {got} of {ly.nbytes} bytes")


def pread_sync(layers, slots) -> None:
    """pread each layer into one fixed slot, then read it."""
    for ly in layers:
        _pread(ly, slots[0])
        consume(slots[0][:ly.nbytes])


def pread_double(layers, slots) -> None:
    """Two fixed slots: a background thread preads layer i + 1 while layer i is read."""
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(_pread, layers[0], slots[0])
        for i, ly in enumerate(layers):
            nxt.result()
            if i + 1 < len(layers):
                nxt = pool.submit(_pread, layers[i + 1], slots[(i + 1) % 2])
            consume(slots[i % 2][:ly.nbytes])


WAYS = {"mapped, next layer read ahead (Ingot)": mapped_ahead,
        "mapped, faults only": mapped_faults,
        "pread into one slot": pread_sync,
        "pread, double-buffered thread": pread_double}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="artefact or GGUF (default: the bundled Gemma)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--max-seq-len", type=int, default=1024)
    args = ap.parse_args(argv)

    from ingot.default_model import artefact_for
    from ingot.runtime.artefact import Artefact
    path = artefact_for(args.model, max_seq_len=args.max_seq_len)
    art = Artefact(path)
    plan = art.json("plan")
    base = next(s["offset"] for s in art.section_info() if s["name"] == "weights")
    units = [u for u in plan["units"] if u["name"].startswith("layer")]
    art.close()
    fd = os.open(path, os.O_RDONLY)
    layers = [Layer(fd, base + u["offset"], u["bytes"]) for u in units]
    # The slots are the runtime's, allocated and touched once at load.
    slots = [np.ones(max(u["bytes"] for u in units), np.uint8) for _ in range(2)]
    total = sum(u["bytes"] for u in units)
    print(f"{path.name}: {len(layers)} layer units, {total / 2**20:.1f} MiB, "
          f"{args.repeats} repeats, medians")
    print("| page cache | way | GB/s | ms per layer | resident before |")
    print("|---|---|---|---|---|")
    for cold in (False, True):
        for name, way in WAYS.items():
            rates, res = [], []
            for _ in range(args.repeats):
                for ly in layers:
                    ly.drop()
                if cold:  # the whole file: per-range advice left a fifth of the pages here
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                else:  # warm: the file's pages are in the page cache, not mapped
                    for ly in layers:
                        _pread(ly, slots[0])
                res.append(statistics.mean(resident_fraction(ly.addr, ly.nbytes)
                                           for ly in layers))
                t0 = time.perf_counter()
                way(layers, slots)
                rates.append(total / (time.perf_counter() - t0))
            r = statistics.median(rates)
            print(f"| {'cold' if cold else 'warm'} | {name} | {r / 1e9:.2f} | "
                  f"{1e3 * total / len(layers) / r:.2f} | {100 * statistics.mean(res):.0f} % |",
                  flush=True)
    os.close(fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
