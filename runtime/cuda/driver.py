"""The GPU backend: ctypes over the CUDA driver API (libcuda), no toolkit needed at run time.

Load: the cubin when the GPU is the artefact's architecture, else its PTX (JIT for a newer
GPU); the arena, KV cache, scratch and launch words in device memory; the weights copied once,
or on an integrated GPU (Jetson) the mapped file registered and used in place. A step copies
its tokens and d[] = (pos, n) in, runs its launches (the decode step as a CUDA graph captured
on first use: its grids never change and it reads its words and d[] from device memory, so only
d[0], or the words when another sequence slot's cache is addressed, change) and copies the
logits back. The batched decode step (--max-batch) adds its row table to d[] (position and KV
cache offset per row) and is captured once per batch size, each with its own words buffer.

Untested on hardware (no GPU where it was written); its call sequence is checked against a
stand-in libcuda (tests/test_cuda_driver.py).
"""
from __future__ import annotations

import ctypes
import threading
from ctypes import byref, c_int, c_size_t, c_uint, c_uint64, c_void_p

import numpy as np

from ...errors import IngotError

ATTR_INTEGRATED = 18
ATTR_CC_MAJOR = 75
ATTR_CC_MINOR = 76
ATTR_SHARED_OPTIN = 97             # most dynamic shared memory a block may opt into
FUNC_MAX_DYNAMIC_SHARED = 8
DEFAULT_SHARED = 48 * 1024         # beyond this a kernel must opt in
STREAM_NON_BLOCKING = 1
CAPTURE_THREAD_LOCAL = 1
HOST_REGISTER_DEVICEMAP = 0x02
HOST_REGISTER_READ_ONLY = 0x08
EVENT_DISABLE_TIMING = 0x02
GRAPH_STEPS = ("decode", "batch")  # run as captured CUDA graphs (unless streaming)
GRAPH_PER_N = ("batch",)           # a graph (and words buffer) per batch size


def load_libcuda():
    for name in ("libcuda.so.1", "libcuda.so"):
        try:
            return ctypes.CDLL(name)
        except OSError:
            continue
    raise IngotError("no CUDA driver on this host (libcuda.so.1 not found); a CUDA artefact "
                     "runs on an NVIDIA GPU, or on the simulator with INGOT_CUDA_SIM set")


def device_count() -> int:
    """CUDA devices the driver finds; 0 without libcuda or a working driver (never raises)."""
    try:
        lib = load_libcuda()
        n = c_int()
        if lib.cuInit(c_uint(0)) != 0 or lib.cuDeviceGetCount(byref(n)) != 0:
            return 0
        return max(0, n.value)
    except (IngotError, OSError, AttributeError):
        return 0


def device_capability(device: int = 0):
    """(major, minor) compute capability of a CUDA device; None without libcuda, a working
    driver or that device (never raises)."""
    try:
        lib = load_libcuda()
        dev, major, minor = c_int(), c_int(), c_int()
        if lib.cuInit(c_uint(0)) != 0 or lib.cuDeviceGet(byref(dev), c_int(device)) != 0:
            return None
        if lib.cuDeviceGetAttribute(byref(major), c_int(ATTR_CC_MAJOR), dev) != 0 or \
                lib.cuDeviceGetAttribute(byref(minor), c_int(ATTR_CC_MINOR), dev) != 0:
            return None
        return major.value, minor.value
    except (IngotError, OSError, AttributeError):
        return None


class CudaDriver:
    def __init__(self, plan, *, cubin: bytes, ptx: bytes, arch: str, weights: np.ndarray,
                 arena_bytes: int, kv_bytes: int, scratch_bytes: int, host_arena: int,
                 host_kv: int, tokens_offset: int, logits_offset: int, vocab: int,
                 lib=None, device: int = 0, stream=None, active=None, kv_span=None,
                 max_rows: int = 1, batch_io=None):
        """stream: a DeviceResidency (--max-memory), streaming the units it does not keep;
        active: {step: [(first, last + 1)]} launch ranges this GPU runs (a device map);
        kv_span: (lo, hi), the bytes of the KV cache those launches use (None: all);
        max_rows, batch_io: the batched step's most rows and its (tokens, logits) offsets."""
        self.lib = lib if lib is not None else load_libcuda()
        self.plan = plan
        self._host_arena, self._host_kv = host_arena, host_kv
        self._tok_off, self._log_off, self._vocab = tokens_offset, logits_offset, vocab
        self._batch_io = batch_io
        self._max_rows = max(int(max_rows), 1)
        self._allocs: list = []
        self.device_bytes = 0  # what cuMemAlloc gave this model
        self._registered = None
        self._host_regs: list = []  # registered arena and KV (integrated GPUs)
        self._graphs: dict = {}  # (step, n, first, last + 1) -> (graph, exec)
        self._module = None
        self._ck("cuInit", c_uint(0))
        dev = c_int()
        self._ck("cuDeviceGet", byref(dev), c_int(device))
        self._dev = dev
        self.capability = (self._attr(ATTR_CC_MAJOR), self._attr(ATTR_CC_MINOR))
        self.integrated = bool(self._attr(ATTR_INTEGRATED))
        self._ctx = c_void_p()
        self._ck("cuDevicePrimaryCtxRetain", byref(self._ctx), dev)
        self._ck("cuCtxSetCurrent", self._ctx)
        self._thread = threading.get_ident()  # the context is current per thread
        self._load_module(cubin, ptx, arch)
        self._stream = c_void_p()
        self._ck("cuStreamCreate", byref(self._stream), c_uint(STREAM_NON_BLOCKING))
        # Integrated memory (Jetson): the host arena and KV cache, registered, are the
        # device's too, so nothing is copied at a device boundary, nor tokens and logits.
        self.shared_arena = False
        self.kv_device_bytes, self._kv_span = kv_bytes, kv_span
        if self.integrated:
            arena_dev = self._register(host_arena, arena_bytes, HOST_REGISTER_DEVICEMAP)
            kv_dev = self._register(host_kv, kv_bytes, HOST_REGISTER_DEVICEMAP) \
                if arena_dev else None
            self.shared_arena = bool(arena_dev and kv_dev)
        if self.shared_arena:
            self.arena, self.kv = arena_dev, kv_dev
        else:
            self.arena = self._alloc(arena_bytes, zero=True)
            # A device map's GPU layers: only their part [lo, hi) of the cache, addressed
            # through a base that puts offset lo at the allocation's start.
            lo, hi = kv_span if kv_span is not None else (0, kv_bytes)
            self.kv_device_bytes = hi - lo
            self.kv = self._alloc(hi - lo, zero=True) - lo
        self.scratch = self._alloc(max(scratch_bytes, 256))
        self.d = self._alloc(16 + 16 * self._max_rows)  # pos, n, then (position, KV) per row
        self._res = stream if stream is not None and stream.streaming else None
        if self.integrated and self._res is not None and not self._res.slot_bytes:
            self._res = None  # a map's share only: one memory, the file read in place
        self._active = active or {}
        if self._res is not None:
            self._setup_streaming(weights)
        else:
            self.weights = self._upload_weights(weights)
        # Words buffers: one per step, the batched step's one per batch size (allocated on
        # first use), so that each captured graph keeps reading its own words.
        self._words = {name: self._alloc(8 * max(len(s.c0), 1))
                       for name, s in plan.steps.items() if name not in GRAPH_PER_N}
        self._words_per_n: dict = {}  # (step, n) -> words buffer
        self._ready: dict = {}  # step -> ((n, KV offset), kernel-call tuples, resolved words)
        self._d_host = np.zeros(2 + 2 * self._max_rows, np.int64)
        self._ck("cuStreamSynchronize", self._stream)  # zeroed and uploaded before use

    # -- setup -------------------------------------------------------------------------------
    def _ck(self, name: str, *args) -> None:
        rc = getattr(self.lib, name)(*args)
        if rc != 0:
            text = ctypes.c_char_p()
            err = getattr(self.lib, "cuGetErrorName", None)
            label = text.value.decode() if err is not None and err(rc, byref(text)) == 0 \
                and text.value else f"error {rc}"
            raise IngotError(f"CUDA driver: {name} failed ({label})")

    def _attr(self, attr: int) -> int:
        v = c_int()
        self._ck("cuDeviceGetAttribute", byref(v), c_int(attr), self._dev)
        return v.value

    def _load_module(self, cubin: bytes, ptx: bytes, arch: str) -> None:
        want = (int(arch[3:-1]), int(arch[-1]))
        if self.capability < want:
            raise IngotError(f"this GPU is sm_{self.capability[0]}{self.capability[1]}; the "
                             f"artefact was compiled for {arch} (recompile for this GPU)")
        # The cubin runs only on its own architecture; a newer GPU JIT-compiles the PTX.
        self._image = bytes(cubin) if self.capability == want else bytes(ptx) + b"\0"
        self._module = c_void_p()
        self._ck("cuModuleLoadData", byref(self._module), self._image)
        self._fn = []
        shared = self.plan.max_shared()
        for name in self.plan.kernels:
            f = c_void_p()
            self._ck("cuModuleGetFunction", byref(f), self._module, name.encode())
            if shared.get(name, 0) > DEFAULT_SHARED:
                if shared[name] > self._attr(ATTR_SHARED_OPTIN):
                    raise IngotError(f"kernel {name} needs {shared[name]} bytes of shared "
                                     f"memory, more than this GPU allows")
                self._ck("cuFuncSetAttribute", f, c_int(FUNC_MAX_DYNAMIC_SHARED),
                         c_int(shared[name]))
            self._fn.append(f)

    def _alloc(self, nbytes: int, zero: bool = False) -> int:
        p = c_uint64()
        self._ck("cuMemAlloc_v2", byref(p), c_size_t(max(int(nbytes), 16)))
        self._allocs.append(p)
        self.device_bytes += max(int(nbytes), 16)
        if zero:
            self._ck("cuMemsetD8Async", p, ctypes.c_ubyte(0), c_size_t(max(int(nbytes), 16)),
                     self._stream)
        return p.value

    def _to_device(self, dst: int, src: int, nbytes: int) -> None:
        # Everything goes through the one (non-blocking) stream, so copies, memsets and
        # launches run in the order issued; a synchronous copy on the null stream would not
        # be ordered against it.
        self._ck("cuMemcpyHtoDAsync_v2", c_uint64(dst), c_void_p(src), c_size_t(nbytes),
                 self._stream)

    def _register(self, host: int, nbytes: int, flags: int):
        """The device address of host memory registered for the GPU, or None if refused."""
        rc = self.lib.cuMemHostRegister_v2(c_void_p(host), c_size_t(nbytes), c_uint(flags))
        if rc != 0:
            return None
        self._host_regs.append(c_void_p(host))
        p = c_uint64()
        self._ck("cuMemHostGetDevicePointer_v2", byref(p), c_void_p(host), c_uint(0))
        return p.value

    def _upload_weights(self, weights: np.ndarray) -> int:
        if weights.size == 0:
            return 0
        host = c_void_p(weights.ctypes.data)
        if self.integrated:  # one memory: let the GPU read the mapped file's pages in place
            rc = self.lib.cuMemHostRegister_v2(host, c_size_t(weights.nbytes), c_uint(
                HOST_REGISTER_DEVICEMAP | HOST_REGISTER_READ_ONLY))
            if rc == 0:  # else (a driver without read-only registration): copy them
                self._registered = host
                p = c_uint64()
                self._ck("cuMemHostGetDevicePointer_v2", byref(p), host, c_uint(0))
                return p.value
        p = self._alloc(weights.nbytes)
        self._to_device(p, host.value, weights.nbytes)
        return p

    # -- streamed weights (--max-memory) ------------------------------------------------------
    def _setup_streaming(self, weights: np.ndarray) -> None:
        """Shared weights and resident units packed into one buffer, two staging slots, a
        copy stream, and the host weights pinned when the driver allows (async copies)."""
        from .stream import SLOTS, StepStream
        plan0 = next(iter(self.plan.steps.values()))
        packing = StepStream(self._res, plan0)
        self.weights = self._alloc(packing.weights_bytes)
        self._host_w = weights.ctypes.data
        for dev_off, off, nbytes in packing.uploads():
            self._to_device(self.weights + dev_off, self._host_w + off, nbytes)
        self._slots = [self._alloc(self._res.slot_bytes) for _ in range(SLOTS)]
        if self.lib.cuMemHostRegister_v2(c_void_p(self._host_w), c_size_t(weights.nbytes),
                                         c_uint(HOST_REGISTER_READ_ONLY)) == 0:
            self._registered = c_void_p(self._host_w)
        self._copy_stream = c_void_p()
        self._ck("cuStreamCreate", byref(self._copy_stream), c_uint(STREAM_NON_BLOCKING))
        self._ss: dict = {}        # step -> StepStream
        self._events: list = []    # 2 per episode: copied, used
        self.stream_log: list = []  # (episode, unit) per copy issued, for tests and stats

    def _event(self, k: int):
        while len(self._events) <= k:
            ev = c_void_p()
            self._ck("cuEventCreate", byref(ev), c_uint(EVENT_DISABLE_TIMING))
            self._events.append(ev)
        return self._events[k]

    def _copy_episode(self, name: str, e: int, wait) -> None:
        """Episode e's unit into slot e % 2 on the copy stream, after `wait` (the event of
        the launches that last read that slot)."""
        ep = self._ss[name].episodes[e]
        off, nbytes = self._res.units[ep.unit]
        if wait is not None:
            self._ck("cuStreamWaitEvent", self._copy_stream, wait, c_uint(0))
        self._ck("cuMemcpyHtoDAsync_v2", c_uint64(self._slots[e % 2]),
                 c_void_p(self._host_w + off), c_size_t(nbytes), self._copy_stream)
        self._ck("cuEventRecord", self._event(2 * e), self._copy_stream)
        self.stream_log.append((e, ep.unit))

    def _launch_streaming(self, name: str, lo: int, hi: int) -> None:
        ss = self._ss[name]
        for i in range(lo, hi):
            for e in ss.first_of.get(i, ()):
                self._ck("cuStreamWaitEvent", self._stream, self._event(2 * e), c_uint(0))
            f, g, b, sh, params, _ = self._calls[i]
            self._ck("cuLaunchKernel", f, *g, *b, sh, self._stream, params, None)
            for e in ss.last_of.get(i, ()):
                self._ck("cuEventRecord", self._event(2 * e + 1), self._stream)
                if e + 2 < len(ss.episodes):
                    self._copy_episode(name, e + 2, self._event(2 * e + 1))

    # -- the step ----------------------------------------------------------------------------
    def _words_buffer(self, name: str, n: int) -> int:
        if name not in GRAPH_PER_N:
            return self._words[name]
        if (name, n) not in self._words_per_n:
            self._words_per_n[(name, n)] = self._alloc(8 * max(len(self.plan.step(name).c0), 1))
        return self._words_per_n[(name, n)]

    def _prepare(self, name: str, n: int, kv_off: int = 0) -> list:
        """The step's launches at n over the KV cache at byte `kv_off` (a sequence slot):
        words uploaded, kernel parameters packed."""
        have = self._ready.get(name)
        if have is not None and have[0] == (n, kv_off):
            return have[1]
        step = self.plan.step(name)
        r = step.resolve(n, {"w": 0 if self._res else self.weights, "a": self.arena,
                             "k": self.kv + kv_off, "s": self.scratch})
        if self._res is not None:  # weight words: packed resident units, or a slot
            if name not in self._ss:
                from .stream import StepStream
                act = self._active.get(name)
                self._ss[name] = StepStream(self._res, step, None if act is None else
                                            [i for lo, hi in act for i in range(lo, hi)])
            r.words = self._ss[name].remap(r.words, self.weights, self._slots)
        base = self._words_buffer(name, n)
        if r.words.size:  # staged before the call returns: r.words may change after
            self._to_device(base, r.words.ctypes.data, r.words.nbytes)
        calls = []
        for i in range(len(r.kernel)):
            args = (c_uint64(base + 8 * int(r.start[i])), c_uint64(self.d))
            params = (c_void_p * 2)(*(ctypes.addressof(a) for a in args))
            calls.append((self._fn[r.kernel[i]], [c_uint(int(v)) for v in r.grid[i]],
                          [c_uint(int(v)) for v in r.block[i]], c_uint(int(r.shared[i])),
                          params, args))
        # r.words kept while its copy may be in flight. A captured graph stays valid across
        # slots (same words buffer, same grids); the decode step's n never changes.
        self._ready[name] = ((n, kv_off), calls, r)
        return calls

    def _launch_all(self, calls: list) -> None:
        for f, g, b, sh, params, _ in calls:
            self._ck("cuLaunchKernel", f, *g, *b, sh, self._stream, params, None)

    def _drop_graph(self) -> None:
        for graph, exec_ in self._graphs.values():
            self._ck("cuGraphExecDestroy", exec_)
            self._ck("cuGraphDestroy", graph)
        self._graphs = {}

    def begin(self, name: str, n: int, pos: int, kv: int, rows=None) -> None:
        """Words ready, d[] = (pos, n) and the tokens on the device; launches follow. kv: the
        host address of the sequence slot's cache; rows: the batched step's [n, 2] (position,
        KV byte offset from `kv`) per row."""
        kv_off = int(kv) - self._host_kv
        if kv_off and (self._kv_span is not None or not 0 < kv_off < self.kv_device_bytes):
            raise IngotError("the CUDA backend was given a KV cache outside its own")
        if threading.get_ident() != self._thread:  # the engine's thread, say
            self._ck("cuCtxSetCurrent", self._ctx)
            self._thread = threading.get_ident()
        self._calls = self._prepare(name, n, kv_off)
        self._n = n
        if self._res is not None:  # the first two episodes' units, into both slots
            for e in range(min(2, len(self._ss[name].episodes))):
                self._copy_episode(name, e, None)
        self._d_host[:2] = (pos, n)
        nd = 2
        if rows is not None:
            nd += 2 * n
            self._d_host[2:nd] = np.asarray(rows, np.int64).reshape(-1)
        self._to_device(self.d, self._d_host.ctypes.data, 8 * nd)
        tok, self._logits = (self._batch_io if name == "batch" else
                             (self._tok_off, self._log_off))
        self._logit_rows = n if name == "batch" else 1
        if not self.shared_arena:
            self._to_device(self.arena + tok, self._host_arena + tok, 4 * n)

    def launch_range(self, name: str, lo: int, hi: int) -> None:
        """Launches lo..hi-1 of the step begun; the decode and batched steps' as captured CUDA
        graphs (their grids fixed by n, words read from device memory), one per range and n."""
        calls = self._calls[lo:hi]
        if self._res is not None and self._ss[name].episodes:
            self._launch_streaming(name, lo, hi)
            return
        if name not in GRAPH_STEPS or not calls:
            self._launch_all(calls)
            return
        key = (name, self._n, lo, hi)
        if key not in self._graphs:
            graph, exec_ = c_void_p(), c_void_p()
            self._ck("cuStreamBeginCapture_v2", self._stream, c_int(CAPTURE_THREAD_LOCAL))
            self._launch_all(calls)
            self._ck("cuStreamEndCapture", self._stream, byref(graph))
            self._ck("cuGraphInstantiateWithFlags", byref(exec_), graph, ctypes.c_ulonglong(0))
            self._graphs[key] = (graph, exec_)
        self._ck("cuGraphLaunch", self._graphs[key][1], self._stream)

    def copy_in(self, copies, n: int) -> None:
        """Arena ranges [(offset, c0, c1)] of c0 + c1 n bytes, host -> device."""
        if not self.shared_arena:
            for off, c0, c1 in copies:
                self._to_device(self.arena + off, self._host_arena + off, c0 + c1 * n)

    def copy_out(self, copies, n: int) -> None:
        """Arena ranges device -> host; returns once they are there (the CPU reads them)."""
        if not self.shared_arena:
            for off, c0, c1 in copies:
                self._ck("cuMemcpyDtoHAsync_v2", c_void_p(self._host_arena + off),
                         c_uint64(self.arena + off), c_size_t(c0 + c1 * n), self._stream)
        self._ck("cuStreamSynchronize", self._stream)

    def finish(self, logits: bool = True) -> None:
        """The logits back (when the head ran here) and the stream drained."""
        if logits and not self.shared_arena:
            self._ck("cuMemcpyDtoHAsync_v2", c_void_p(self._host_arena + self._logits),
                     c_uint64(self.arena + self._logits),
                     c_size_t(4 * self._vocab * self._logit_rows), self._stream)
        self._ck("cuStreamSynchronize", self._stream)

    def step(self, name: str, n: int, pos: int, kv: int, rows=None) -> None:
        self.begin(name, n, pos, kv, rows)
        self.launch_range(name, 0, len(self._calls))
        self.finish()

    def close(self) -> None:
        if getattr(self, "_ctx", None) is None:
            return
        try:
            self._drop_graph()
            for p in self._allocs:
                self._ck("cuMemFree_v2", p)
            self._allocs = []
            for host in ([self._registered] if self._registered is not None else []) \
                    + self._host_regs:
                self._ck("cuMemHostUnregister", host)
            if self._module is not None:
                self._ck("cuModuleUnload", self._module)
            for ev in getattr(self, "_events", []):
                self._ck("cuEventDestroy_v2", ev)
            for st in (getattr(self, "_copy_stream", None), getattr(self, "_stream", None)):
                if st:
                    self._ck("cuStreamDestroy_v2", st)
            self._ck("cuDevicePrimaryCtxRelease_v2", self._dev)
        finally:
            self._ctx = None
