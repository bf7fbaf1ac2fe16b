"""Memory read bandwidth of this host, measured the way a decode step reads weights: streaming
reads over a buffer far larger than the last-level cache, split across T threads.

numpy releases the GIL inside a reduction, so T Python threads each reducing their slice read
memory in parallel. The figure is the best of a few runs (noise only ever slows a run down).
Runtime-only: numpy and the standard library.
"""
from __future__ import annotations

import threading
import time

import numpy as np

DEFAULT_MIB = 512


def read_bandwidth(threads: int = 1, size_mib: int = DEFAULT_MIB, runs: int = 5) -> float:
    """Best read bandwidth in GB/s (1e9 bytes/s) over `runs` passes of `size_mib` MiB."""
    threads = max(1, int(threads))
    n = max(threads, int(size_mib) * 2**20 // 8)
    buf = np.ones(n, np.float64)  # written once, so every page is resident before timing
    parts = np.array_split(buf, threads)
    best = 0.0
    try:
        for _ in range(max(1, runs)):
            team = [threading.Thread(target=np.max, args=(p,)) for p in parts]
            t = time.perf_counter()
            for th in team:
                th.start()
            for th in team:
                th.join()
            best = max(best, buf.nbytes / (time.perf_counter() - t) / 1e9)
    finally:
        del parts, buf
    return best
