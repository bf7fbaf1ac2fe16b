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
    """`run(fn, wb, ab, kb, n, pos)` calls fn on every thread with its scratch slice and tid.

    Workers wait on a condition for the next job number; the caller runs tid 0 and then waits
    until every worker has reported. A Ctrl-C that lands while waiting is held until the step
    is complete (a step is milliseconds), so the team never falls out of step.
    """

    def __init__(self, nthreads: int, scratch_base: int, scratch_stride: int, sync_addr: int):
        self.nth = max(1, int(nthreads))
        self.scratch_base, self.stride, self.sync = scratch_base, scratch_stride, sync_addr
        self._job = None
        self._job_no = 0
        self._done = 0
        self._stop = False
        self._errors: list = []
        self._cond = threading.Condition()
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
        seen = 0
        while True:
            with self._cond:
                while self._job_no == seen and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                seen = self._job_no
            self._call(tid)
            with self._cond:
                self._done += 1
                self._cond.notify_all()

    def run(self, fn, wb: int, ab: int, kb: int, n: int, pos: int) -> None:
        self._job = (fn, wb, ab, kb, n, pos)
        interrupted = None
        if self.nth > 1:
            with self._cond:
                self._done = 0
                self._job_no += 1
                self._cond.notify_all()
        self._call(0)
        while True:
            try:
                with self._cond:
                    while self._done < self.nth - 1:
                        self._cond.wait()
                break
            except KeyboardInterrupt as e:  # finish the step first, then honour it
                interrupted = e
        if interrupted is not None:
            raise interrupted
        if self._errors:
            rc = self._errors[0]
            self._errors.clear()
            raise IngotError(f"native step failed (status {rc})")

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
