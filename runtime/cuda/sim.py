"""The off-GPU backend: the artefact's own kernel source built for the host with the thread
shim (the compiler's CUDA target builds it; the runtime only loads it), run on host buffers.
It exists to check the CUDA path's numerics and launches where there is no GPU."""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ...errors import IngotError

ENV = "INGOT_CUDA_SIM"  # path of the harness library built from the artefact's cuda_source


class SimBackend:
    """Launches on host memory: the model's own arena, weights and KV buffers are the
    "device" buffers, so tokens and logits need no copies."""

    def __init__(self, plan, path=None, *, weights: int, arena: int, kv: int,
                 scratch_bytes: int, max_rows: int = 1):
        path = path or os.environ.get(ENV)
        if not path:
            raise IngotError(f"the CUDA simulator needs its harness library: set {ENV}")
        try:
            lib = ctypes.CDLL(os.fspath(path))
            self._launch = lib.ingot_sim_launch
        except (OSError, AttributeError) as e:
            raise IngotError(f"{path}: not a CUDA simulator harness ({e})") from None
        u3 = ctypes.c_uint * 3
        self._launch.argtypes = [ctypes.c_char_p, u3, u3, ctypes.c_uint, ctypes.c_void_p,
                                 ctypes.c_void_p]
        self._launch.restype = ctypes.c_int
        self._u3 = u3
        self.plan = plan
        self._names = [k.encode() for k in plan.kernels]
        self._scratch = np.zeros(max(int(scratch_bytes), 64) + 256, np.uint8)
        self._bases = {"w": weights, "a": arena, "k": kv,
                       "s": self._scratch.ctypes.data + (-self._scratch.ctypes.data) % 256}
        self._kv = kv
        self._resolved: dict = {}
        # d[0] = pos, d[1] = n, then the batched step's row table (position, KV offset) pairs
        self._d = np.zeros(2 + 2 * max(int(max_rows), 1), np.int64)

    def begin(self, name: str, n: int, pos: int, kv: int, rows=None) -> None:
        """A step's words resolved and d[] set; launch_range then runs parts of it. rows: the
        batched step's [n, 2] (position, KV byte offset from `kv`) per row."""
        key = (name, n, kv)
        r = self._resolved.get(key)
        if r is None:
            r = self.plan.step(name).resolve(n, dict(self._bases, k=kv))
            self._resolved = {key: r, **{k: v for k, v in self._resolved.items()
                                         if k[0] != name}}  # one n per step kept
        self._r = r
        self._d[:2] = (pos, n)
        if rows is not None:
            self._d[2:2 + 2 * n] = np.asarray(rows, np.int64).reshape(-1)

    def launch_range(self, name: str, lo: int, hi: int) -> None:
        r = self._r
        a0, d = r.words.ctypes.data, self._d.ctypes.data
        for i in range(lo, hi):
            rc = self._launch(self._names[r.kernel[i]], self._u3(*r.grid[i]),
                              self._u3(*r.block[i]), int(r.shared[i]),
                              a0 + 8 * int(r.start[i]), d)
            if rc != 0:
                raise IngotError(f"CUDA simulator: launch of "
                                 f"{self._names[r.kernel[i]].decode()} failed ({rc})")

    # Host memory is the "device" memory: nothing crosses a device boundary.
    def copy_in(self, copies, n: int) -> None:
        pass

    def copy_out(self, copies, n: int) -> None:
        pass

    def finish(self, logits: bool = True) -> None:
        pass

    def step(self, name: str, n: int, pos: int, kv: int, rows=None) -> None:
        self.begin(name, n, pos, kv, rows)
        self.launch_range(name, 0, len(self._r.kernel))

    def close(self) -> None:
        pass
