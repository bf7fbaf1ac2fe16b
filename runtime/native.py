"""Binding the artefact's native code and running a step on a fixed set of threads.

The shared library is loaded from an anonymous in-memory file (no temporary files on disk).
A step is one native call per thread: thread 0 is the caller, the others are persistent
workers released by a barrier; the kernels synchronise among themselves inside the call.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import threading

from ..errors import IngotError

N_ARGS = 9  # wb, ab, kb, sb, n, pos, tid, nth, sync


_LOADED: dict = {}  # code digest -> CDLL; identical code is shared, never unloaded


def load_library(code: bytes | memoryview) -> ctypes.CDLL:
    key = hashlib.sha256(code).hexdigest()
    if key not in _LOADED:
        _LOADED[key] = _dlopen(code)
    return _LOADED[key]


def _dlopen(code) -> ctypes.CDLL:
    if hasattr(os, "memfd_create"):
        # The fd stays open: the dynamic loader recognises libraries by path, and a reused
        # /proc/self/fd/N would hand back a different, earlier library.
        fd = os.memfd_create("ingot-code", 0)
        os.write(fd, code)
        return ctypes.CDLL(f"/proc/self/fd/{fd}")
    with tempfile.NamedTemporaryFile(suffix=".so", delete=False) as f:
        f.write(code)
    try:
        return ctypes.CDLL(f.name)
    finally:
        os.unlink(f.name)


def entry(lib: ctypes.CDLL, name: str):
    try:
        fn = getattr(lib, name)
    except AttributeError:
        raise IngotError(f"artefact code has no entry point '{name}'") from None
    fn.restype = ctypes.c_int64
    fn.argtypes = [ctypes.c_int64] * N_ARGS
    return fn


class ThreadTeam:
    """`run(fn, wb, ab, kb, n, pos)` calls fn on every thread with its scratch slice and tid."""

    def __init__(self, nthreads: int, scratch_base: int, scratch_stride: int, sync_addr: int):
        self.nth = max(1, int(nthreads))
        self.scratch_base, self.stride, self.sync = scratch_base, scratch_stride, sync_addr
        self._job = None
        self._stop = False
        self._errors: list = []
        if self.nth > 1:
            self._go = threading.Barrier(self.nth)
            self._done = threading.Barrier(self.nth)
            self._threads = [threading.Thread(target=self._worker, args=(t,), daemon=True,
                                              name=f"ingot-worker-{t}")
                             for t in range(1, self.nth)]
            for th in self._threads:
                th.start()

    def _call(self, tid: int) -> None:
        fn, wb, ab, kb, n, pos = self._job
        rc = fn(wb, ab, kb, self.scratch_base + tid * self.stride, n, pos, tid, self.nth,
                self.sync)
        if rc != 0:
            self._errors.append(rc)

    def _worker(self, tid: int) -> None:
        while True:
            self._go.wait()
            if self._stop:
                return
            self._call(tid)
            self._done.wait()

    def run(self, fn, wb: int, ab: int, kb: int, n: int, pos: int) -> None:
        self._job = (fn, wb, ab, kb, n, pos)
        if self.nth > 1:
            self._go.wait()
            self._call(0)
            self._done.wait()
        else:
            self._call(0)
        if self._errors:
            rc = self._errors[0]
            self._errors.clear()
            raise IngotError(f"native step failed (status {rc})")

    def close(self) -> None:
        if self.nth > 1 and not self._stop:
            self._stop = True
            try:
                self._go.wait(timeout=5)
            except threading.BrokenBarrierError:
                pass
