"""Which weight units stay resident under a memory budget (`--max-memory`).

Memory the runtime holds: the arena and per-thread scratch, the KV caches of every sequence
slot, the weights outside units (shared tables), the resident units, and — when any unit is
streamed — the streamed units a step holds at once: the one it reads and, with read-ahead, the
next one, which a background thread faults in meanwhile (the step drops a streamed unit's
pages once every thread is past it). Units are kept resident largest first: a streamed byte
costs the same wherever it sits, so this streams the fewest bytes per token.

Why a thread that faults pages in (MADV_POPULATE_READ) rather than a read-ahead hint or pread
into slots: tools/bench_stream_read.py measured on a cold page cache 2.3 GB/s for faulted
pages, 1.3 for MADV_WILLNEED (it blocks the caller while it queues the reads) and 1.6 for pread
(plus a copy that a mapped page does not need: 2.5 against 12 GB/s from a warm cache).
"""
from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from ..errors import IngotError


def fixed_bytes(plan: dict, threads: int) -> int:
    units = sum(u["bytes"] for u in plan.get("units", []))
    return (plan["arena_bytes"] + threads * plan["scratch_bytes_per_thread"]
            + plan["state_bytes"] * int(plan.get("max_batch", 1))
            + plan["weights_bytes"] - units)


def plan_residency(plan: dict, threads: int, budget: int | None, path="artefact",
                   slots: int = 1) -> list:
    """A resident flag per unit (plan["units"] order); `slots` streamed units may be held at
    once (2 with read-ahead)."""
    units = plan.get("units", [])
    if budget is None:
        return [True] * len(units)
    fixed = fixed_bytes(plan, threads)
    everything = fixed + sum(u["bytes"] for u in units)
    if everything <= budget:
        return [True] * len(units)
    smallest = fixed + max((u["bytes"] for u in units), default=0)
    if not units or budget < smallest:
        raise IngotError(f"{path}: --max-memory {budget / 2**20:.1f} MiB cannot hold the "
                         f"arena, caches and shared weights ({fixed / 2**20:.1f} MiB) plus one "
                         f"streamed unit; the smallest budget that works is "
                         f"{smallest / 2**20:.1f} MiB (all resident: "
                         f"{everything / 2**20:.1f} MiB)")
    resident = [False] * len(units)
    order = sorted(range(len(units)), key=lambda i: -units[i]["bytes"])
    used = fixed
    for i in order:
        streamed = sorted((units[j]["bytes"] for j in range(len(units))
                           if not resident[j] and j != i), reverse=True)
        if streamed and used + units[i]["bytes"] + sum(streamed[:slots]) <= budget:
            resident[i] = True
            used += units[i]["bytes"]
    return resident


def plan_streaming(plan: dict, threads: int, budget: int | None, path="artefact",
                   read_ahead: bool = True) -> tuple[list, bool]:
    """Resident flags and whether the next streamed unit is read ahead: read-ahead holds two
    streamed units at once, so a budget with room for only one streams without it."""
    if read_ahead and plan.get("units_signal"):
        units = plan.get("units", [])
        two = sum(sorted((u["bytes"] for u in units), reverse=True)[:2])
        if budget is None or budget >= fixed_bytes(plan, threads) + two:
            resident = plan_residency(plan, threads, budget, path, slots=2)
            return resident, not all(resident)
    return plan_residency(plan, threads, budget, path, slots=1), False


MADV_POPULATE_READ = 22  # Linux 5.14: fault the range in, reading the file as needed
_libc = ctypes.CDLL(None, use_errno=True)
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


class ReadAhead:
    """The background thread that faults the next streamed unit in while the step computes.

    The step's thread 0 writes the unit it wants into the signal words [eventfd, wanted, 1]
    and wakes this thread through the eventfd; the thread populates the unit a chunk at a time
    and stops as soon as the step has moved on (`wanted` changed), so a late read-ahead never
    leaves a dropped unit mapped (at most one chunk, until the step drops it again).
    """

    CHUNK = 256 << 10

    def __init__(self, signal: np.ndarray, weights: np.ndarray, units: list):
        self._sig = signal
        self._weights = weights
        self._units = [(u["offset"], u["bytes"]) for u in units]
        self._efd = os.eventfd(0)
        self._closing = False
        self._populate_ok = True
        self.started = 0  # units it began to read (tests check that the step signals)
        signal[:] = [self._efd, -1, 1]
        self._thread = threading.Thread(target=self._run, name="ingot-read-ahead", daemon=True)
        self._thread.start()

    def _fault_in(self, off: int, nbytes: int) -> None:
        if self._populate_ok:
            addr = self._weights.ctypes.data + off
            if _libc.madvise(ctypes.c_void_p(addr), nbytes, MADV_POPULATE_READ) == 0:
                return
            self._populate_ok = False  # an older kernel: touch a byte per page instead
        int(self._weights[off:off + nbytes:4096].sum())

    def _run(self) -> None:
        while True:
            os.eventfd_read(self._efd)
            if self._closing:
                return
            k = int(self._sig[1])
            if k < 0:
                continue
            off, nbytes = self._units[k]
            self.started += 1
            for a in range(0, nbytes, self.CHUNK):
                if int(self._sig[1]) != k:
                    break
                self._fault_in(off + a, min(self.CHUNK, nbytes - a))

    def close(self) -> None:
        if self._closing:
            return
        self._closing = True
        self._sig[0] = 0  # the step stops signalling
        os.eventfd_write(self._efd, 1)
        self._thread.join()
        os.close(self._efd)
