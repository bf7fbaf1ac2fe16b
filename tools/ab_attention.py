"""In-process A/B of the CPU attention kernel: the committed one (git HEAD's kernels.py, loaded
as a module beside the package's; or --old FILE) against the working tree's, on Gemma 3 270M's
shapes (4 heads, 1 kv head, head_dim 256), calls alternating and best of N, so a shared
machine's noise hits both alike. One thread is timed by its CPU time; several by wall time,
Python threads starting each call (about 0.25 ms: decode figures there are mostly that).

    python tools/ab_attention.py [--reps 7] [--threads 1,2] [--kv f32,f16,q8_0]
"""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from numba import njit

from ingot.compiler.ir import kv_row_layout
from ingot.targets.cpu import kernels as new

ROOT = Path(__file__).resolve().parents[1]


def old_kernels(path=None):
    """kernels.py as committed, or another copy of it (an experiment), as its own module."""
    if path is None:
        src = subprocess.run(["git", "show", "HEAD:targets/cpu/kernels.py"], cwd=ROOT,
                             check=True, capture_output=True, text=True).stdout
        path = Path(tempfile.mkdtemp()) / "kernels_head.py"
        path.write_text(src)
    spec = importlib.util.spec_from_file_location("ingot.targets.cpu._kernels_head", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def case(kv, n, pos, H=4, KV=1, D=256, window=512, ring=1024, seed=0):
    """Arrays for one call; the cache filled by the kernel's own store (rows 0..pos+n-1)."""
    rng = np.random.default_rng(seed)
    row_bytes, soff = kv_row_layout(kv, KV, D)
    kc = np.zeros(ring * row_bytes + 64, np.uint8)
    vc = np.zeros_like(kc)
    total = pos + n
    K = rng.standard_normal((total, KV * D)).astype(np.float32)
    V = rng.standard_normal((total, KV * D)).astype(np.float32)
    new.KV_STORE[kv](K.ctypes.data, KV * D, V.ctypes.data, KV * D, total, KV, D, kc.ctypes.data,
                     vc.ctypes.data, 0, 0, 0, 0, ring, row_bytes, soff, 0, 1)
    q = rng.standard_normal((n, H * D)).astype(np.float32)
    out = np.zeros(n * H * D, np.float32)
    scratch = np.zeros(8 * (ring + n) + 4096, np.float32)
    args = (q.ctypes.data, H * D, n, H, KV, D, kc.ctypes.data, vc.ctypes.data, pos, 0, 0, 0,
            ring, row_bytes, soff, 0.0625, window, 0.0, out.ctypes.data)
    return args, out, scratch, (q, kc, vc)


_WRAPPED = {}


def nogil(fn):
    """The kernel behind a nogil entry, so that Python threads run it in parallel."""
    if fn not in _WRAPPED:
        @njit(nogil=True)
        def w(q, qs, n, H, KV, D, kc, vc, pos, rows, nb, sb_, ring, rb, soff, sc, win, cap,
              out, scratch, tid, nth):
            fn(q, qs, n, H, KV, D, kc, vc, pos, rows, nb, sb_, ring, rb, soff, sc, win, cap,
               out, scratch, tid, nth)
        _WRAPPED[fn] = w
    return _WRAPPED[fn]


def run(fn, args, scratches, nth):
    fn = nogil(fn)
    if nth == 1:
        fn(*args, scratches[0].ctypes.data, 0, 1)
        return
    ts = [threading.Thread(target=fn, args=(*args, scratches[i].ctypes.data, i, nth))
          for i in range(nth)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--old", help="a kernels.py to compare with instead of git HEAD's")
    ap.add_argument("--kv", default="f32,f16")
    ap.add_argument("--shapes", default="0,1,2,3", help="indices into the shape list")
    a = ap.parse_args(argv)
    old = old_kernels(a.old)
    shapes = [("prefill 128", 128, 0), ("prefill 512", 512, 0),
              ("decode @128", 1, 127), ("decode @512", 1, 511)]
    shapes = [shapes[int(i)] for i in a.shapes.split(",")]
    for kv in a.kv.split(","):
        for nth in (int(x) for x in a.threads.split(",")):
            for name, n, pos in shapes:
                args, out, scratch, keep = case(kv, n, pos)
                scr = [scratch] + [scratch.copy() for _ in range(nth - 1)]
                inner = 1 if n > 1 else 200
                # One thread: its CPU time, which time slices lost to other processes on a
                # shared machine do not inflate; several: wall time.
                clock = time.thread_time if nth == 1 else time.perf_counter
                best = {}
                outs = {}
                for rep in range(a.reps):
                    for label, mod in (("old", old), ("new", new)):
                        fn = mod.ATTENTION[kv]
                        t0 = clock()
                        for _ in range(inner):
                            run(fn, args, scr, nth)
                        dt = (clock() - t0) / inner
                        best[label] = min(best.get(label, 1e9), dt)
                        outs[label] = out.copy()
                diff = np.abs(outs["old"] - outs["new"]).max()
                print(f"{kv:4s} {nth}t {name:12s} old {best['old'] * 1e3:8.3f} ms  "
                      f"new {best['new'] * 1e3:8.3f} ms  x{best['old'] / best['new']:5.2f}  "
                      f"max|diff| {diff:.1e}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
