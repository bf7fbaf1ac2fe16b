"""The GPU backend's call sequence against a stand-in libcuda (no GPU here or in CI).

FakeCuda keeps "device" memory in host buffers, so copies are real and a launch's argument
words can be read back; a captured graph replays its launches. test_cuda_e2e.py also runs a
whole model through it with the simulator executing each launch.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from ingot.errors import IngotError
from ingot.runtime.cuda.driver import CudaDriver
from ingot.runtime.cuda.launches import LaunchPlan


class FakeCuda:
    """The driver functions CudaDriver calls. `execute(kernel, grid, block, shared, a, d)`,
    if given, runs a launch when it executes (at once, or when its graph is launched)."""

    def __init__(self, capability=(8, 7), integrated=False, execute=None, fail=None,
                 shared_optin=100 * 1024):
        self.attrs = {75: capability[0], 76: capability[1], 18: int(integrated),
                      97: shared_optin}
        self.calls: list = []       # (name, args) in order
        self.launched: list = []    # executed launches: (kernel, grid, block, shared, a, d)
        self.execute, self.fail = execute, fail
        self.memory: list = []      # keeps the fake device buffers alive
        self.functions: dict = {}   # handle -> kernel name
        self.capturing = None
        self.graphs: dict = {}
        self.image = None

    def __getattr__(self, name):
        if not name.startswith("cu"):
            raise AttributeError(name)
        impl = getattr(type(self), "_" + name, None)

        def call(*args):
            self.calls.append((name, args))
            if self.fail == name:
                return 700  # CUDA_ERROR_ILLEGAL_ADDRESS
            return impl(self, *args) if impl else 0
        return call

    def names(self) -> list:
        return [c[0] for c in self.calls]

    @staticmethod
    def _out(ref, value):
        ref._obj.value = value

    def _cuGetErrorName(self, rc, out):
        self._out(out, b"CUDA_ERROR_ILLEGAL_ADDRESS")
        return 0

    def _cuDeviceGetAttribute(self, out, attr, dev):
        self._out(out, self.attrs[attr.value])
        return 0

    def _cuDevicePrimaryCtxRetain(self, out, dev):
        self._out(out, 0xC0)
        return 0

    def _cuModuleLoadData(self, out, image):
        self.image = image
        self._out(out, 0x30)
        return 0

    def _cuModuleGetFunction(self, out, module, name):
        handle = 0x1000 + len(self.functions)
        self.functions[handle] = name.decode()
        self._out(out, handle)
        return 0

    def _cuStreamCreate(self, out, flags):
        self._out(out, 0x50)
        return 0

    def _cuMemAlloc_v2(self, out, size):
        buf = np.full(size.value, 0xAB, np.uint8)  # not zero: zeroing must be asked for
        self.memory.append(buf)
        self._out(out, buf.ctypes.data)
        return 0

    def _cuMemsetD8Async(self, ptr, value, size, stream):
        ctypes.memset(ptr.value, value.value, size.value)
        return 0

    def _cuMemHostGetDevicePointer_v2(self, out, host, flags):
        self._out(out, host.value)  # one memory: the same address
        return 0

    def _copy(self, dst, src, size, stream=None):
        ctypes.memmove(dst.value, src.value, size.value)
        return 0

    _cuMemcpyHtoDAsync_v2 = _cuMemcpyDtoHAsync_v2 = _copy

    def _cuLaunchKernel(self, f, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
        a = ctypes.c_uint64.from_address(params[0]).value
        d = ctypes.c_uint64.from_address(params[1]).value
        launch = (self.functions[f.value], (gx.value, gy.value, gz.value),
                  (bx.value, by.value, bz.value), shared.value, a, d)
        if self.capturing is not None:
            self.capturing.append(launch)
        else:
            self._run(launch)
        return 0

    def _run(self, launch):
        d = np.frombuffer((ctypes.c_int64 * 2).from_address(launch[5]), np.int64).copy()
        self.launched.append(launch + (tuple(d),))
        if self.execute is not None:
            self.execute(*launch)

    def _cuStreamBeginCapture_v2(self, stream, mode):
        self.capturing = []
        return 0

    def _cuStreamEndCapture(self, stream, out):
        handle = 0x60 + 2 * len(self.graphs)  # even: the exec is handle + 1
        self.graphs[handle] = self.capturing
        self.capturing = None
        self._out(out, handle)
        return 0

    def _cuGraphInstantiateWithFlags(self, out, graph, flags):
        self._out(out, graph.value + 1)
        return 0

    def _cuGraphLaunch(self, exec_, stream):
        for launch in self.graphs[exec_.value - 1]:
            self._run(launch)
        return 0


def _plan(shared=0):
    """Two kernels; words of every kind, a last-row style word (c1) and an n-dependent grid."""
    steps = [
        [0, [[2, 64, 0], [1, 128, 0], [0, 1065353216, 0], [2, -16, 16]],
         [[1, 1, 1], [0, 1, 1], [1, 0, 1]], [32, 1, 1], 0],
        [1, [[3, 256, 0], [4, 0, 0], [0, 7, 3]], [[4, 0, 1], [1, 0, 1], [1, 0, 1]],
         [64, 2, 1], shared],
    ]
    return LaunchPlan({"version": 1, "kernels": ["ingot_a", "ingot_b"],
                       "steps": {"prefill": steps, "decode": steps}})


def _driver(fake, plan=None, weights=None):
    host_arena = np.zeros(1024, np.uint8)
    host_kv = np.zeros(512, np.uint8)
    weights = np.arange(256, dtype=np.uint8) if weights is None else weights
    drv = CudaDriver(plan or _plan(), cubin=b"CUBIN", ptx=b"PTX", arch="sm_87",
                     weights=weights, arena_bytes=1024, kv_bytes=512, scratch_bytes=300,
                     host_arena=host_arena.ctypes.data, host_kv=host_kv.ctypes.data,
                     tokens_offset=0, logits_offset=512, vocab=8, lib=fake)
    return drv, host_arena, host_kv


def test_load_then_steps_resolve_words_and_replay_the_decode_graph():
    fake = FakeCuda()
    drv, arena, kv = _driver(fake)
    names = fake.names()
    assert names[:2] == ["cuInit", "cuDeviceGet"]
    assert fake.image == b"CUBIN"  # same architecture: the cubin, no JIT
    assert names.index("cuDevicePrimaryCtxRetain") < names.index("cuModuleLoadData")
    # Weights copied once into their own allocation; every copy is on the step's stream.
    w = [c for c in fake.calls if c[0] == "cuMemcpyHtoDAsync_v2"]
    assert [c[1][0].value for c in w] == [drv.weights]
    assert all(c[1][-1] is drv._stream for c in fake.calls if "Async" in c[0])
    assert np.frombuffer((ctypes.c_uint8 * 256).from_address(drv.weights), np.uint8) \
        .tolist() == list(range(256))
    assert np.frombuffer((ctypes.c_uint8 * 512).from_address(drv.kv), np.uint8).max() == 0

    arena[:12] = np.array([5, 6, 7], np.int32).view(np.uint8)
    fake.calls.clear()
    drv.step("prefill", 3, 10, kv.ctypes.data)
    assert [l[0] for l in fake.launched] == ["ingot_a", "ingot_b"]
    a, b = fake.launched
    words = np.frombuffer((ctypes.c_int64 * 4).from_address(a[4]), np.int64)
    assert words.tolist() == [drv.arena + 64, drv.weights + 128, 1065353216,
                              drv.arena - 16 + 16 * 3]
    assert a[1] == (4, 3, 1) and a[2] == (32, 1, 1) and a[6] == (10, 3)
    words = np.frombuffer((ctypes.c_int64 * 3).from_address(b[4]), np.int64)
    assert words.tolist() == [drv.kv + 256, drv.scratch, 7 + 3 * 3]
    assert b[1] == (4, 1, 1) and b[2] == (64, 2, 1)
    # The tokens went in before the launches; the logits came back after them.
    tok = np.frombuffer((ctypes.c_int32 * 3).from_address(drv.arena), np.int32)
    assert tok.tolist() == [5, 6, 7]
    names = fake.names()
    assert names.index("cuMemcpyDtoHAsync_v2") > names.index("cuLaunchKernel")
    assert names[-1] == "cuStreamSynchronize"

    fake.calls.clear(), fake.launched.clear()
    drv.step("decode", 1, 13, kv.ctypes.data)
    names = fake.names()
    assert names.index("cuStreamBeginCapture_v2") < names.index("cuLaunchKernel") \
        < names.index("cuStreamEndCapture") < names.index("cuGraphLaunch")
    assert [l[6] for l in fake.launched] == [(13, 1), (13, 1)]
    fake.calls.clear(), fake.launched.clear()
    drv.step("decode", 1, 14, kv.ctypes.data)
    names = fake.names()  # the same graph again: no launches, no new words, only d[] moves
    assert "cuLaunchKernel" not in names and names.count("cuMemcpyHtoDAsync_v2") == 2
    assert names.count("cuGraphLaunch") == 1
    assert [l[6] for l in fake.launched] == [(14, 1), (14, 1)]

    drv.close()
    names = fake.names()
    assert names.count("cuMemFree_v2") == 7  # arena, kv, scratch, d, weights, 2 word buffers
    assert names[-1] == "cuDevicePrimaryCtxRelease_v2"


def test_newer_gpu_jits_the_ptx_and_older_gpu_is_refused():
    fake = FakeCuda(capability=(9, 0))
    _driver(fake)
    assert fake.image == b"PTX\0"
    with pytest.raises(IngotError, match="sm_75.*compiled for sm_87"):
        _driver(FakeCuda(capability=(7, 5)))


def test_integrated_gpu_registers_the_mapped_weights():
    fake = FakeCuda(integrated=True)
    weights = np.arange(256, dtype=np.uint8)
    drv, arena, kv = _driver(fake, weights=weights)
    reg = [c[1][2].value for c in fake.calls if c[0] == "cuMemHostRegister_v2"]
    # The arena and KV cache (read and written: DEVICEMAP), then the weights (| READ_ONLY).
    assert reg == [0x02, 0x02, 0x0A]
    assert drv.shared_arena and drv.arena == arena.ctypes.data and drv.kv == kv.ctypes.data
    assert drv.weights == weights.ctypes.data
    fake.calls.clear()
    drv.step("decode", 1, 0, kv.ctypes.data)  # one memory: no tokens in, no logits out
    assert "cuMemcpyDtoHAsync_v2" not in fake.names()
    assert fake.names().count("cuMemcpyHtoDAsync_v2") == 2  # the words, and d[] = (pos, n)
    drv.close()
    assert fake.names().count("cuMemHostUnregister") == 3


def test_large_shared_memory_opts_in_and_errors_are_named():
    fake = FakeCuda()
    _driver(fake, plan=_plan(shared=64 * 1024))
    attr = [c for c in fake.calls if c[0] == "cuFuncSetAttribute"]
    assert len(attr) == 1 and attr[0][1][2].value == 64 * 1024
    with pytest.raises(IngotError, match="more than this GPU allows"):
        _driver(FakeCuda(shared_optin=48 * 1024 + 1), plan=_plan(shared=64 * 1024))
    with pytest.raises(IngotError, match=r"cuStreamCreate failed \(CUDA_ERROR_ILLEGAL_ADDRESS"):
        _driver(FakeCuda(fail="cuStreamCreate"))


def test_registration_refused_falls_back_to_a_copy_and_other_threads_bind_the_context():
    import threading
    fake = FakeCuda(integrated=True, fail="cuMemHostRegister_v2")
    drv, _, kv = _driver(fake)
    assert "cuMemcpyHtoDAsync_v2" in fake.names() and "cuMemHostGetDevicePointer_v2" not in \
        fake.names()
    fake.calls.clear()
    t = threading.Thread(target=drv.step, args=("prefill", 2, 0, kv.ctypes.data))
    t.start(), t.join()
    assert fake.names()[0] == "cuCtxSetCurrent" and len(fake.launched) == 2


def test_the_cuda_runtime_imports_no_compiler():
    """runtime/cuda/ follows the runtime's rule: no compiler, targets, torch or numba."""
    import pathlib
    import re

    import ingot.runtime.cuda
    root = pathlib.Path(ingot.runtime.cuda.__file__).parent
    pat = re.compile(r"^\s*(from|import)\s+(torch|numba|llvmlite)\b|"
                     r"^\s*from\s+(ingot\.|\.\.\.?)(compiler|arch|targets|quant)\b", re.M)
    assert not [p.name for p in root.glob("*.py") if pat.search(p.read_text())]


def test_device_capability_picks_the_target(monkeypatch):
    """device_capability reads the GPU's compute capability through the driver (None where
    there is no driver or the driver fails); target_for_capability names the target whose
    cubin that GPU runs."""
    from ingot.errors import IngotError
    from ingot.runtime.cuda import driver as drv
    from ingot.targets.cuda.target import target_for_capability
    for cc, target in (((8, 7), "cuda-sm87"), ((9, 0), "cuda-sm90"), ((10, 0), "cuda-sm90"),
                       ((8, 0), "cuda-sm80"), ((8, 9), "cuda-sm80")):
        monkeypatch.setattr(drv, "load_libcuda", lambda cc=cc: FakeCuda(capability=cc))
        assert drv.device_capability() == cc
        assert target_for_capability(cc) == target
    monkeypatch.setattr(drv, "load_libcuda", lambda: FakeCuda(fail="cuInit"))
    assert drv.device_capability() is None

    def no_driver():
        raise IngotError("no CUDA driver")
    monkeypatch.setattr(drv, "load_libcuda", no_driver)
    assert drv.device_capability() is None
