"""Builds CUDA source into PTX and a cubin with nvcc.

One nvcc run per (source, arch) gives both: `-cubin` (which runs ptxas) with `-keep` leaves
the PTX it assembled, for the same virtual architecture. Results are remembered for the
process, so asking for the PTX and then the cubin of one source compiles once.
"""
from __future__ import annotations

import functools
import glob
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor

from ...errors import IngotError

FLAGS = ["-std=c++17", "-O3"]
_memo: dict = {}
_lock = threading.Lock()


def find_nvcc() -> str:
    """nvcc from $NVCC, PATH, or the newest /usr/local/cuda*/bin."""
    env = os.environ.get("NVCC")
    if env:
        return env
    found = shutil.which("nvcc")
    if found:
        return found
    for d in sorted(glob.glob("/usr/local/cuda*/bin"), reverse=True):
        if os.access(os.path.join(d, "nvcc"), os.X_OK):
            return os.path.join(d, "nvcc")
    raise IngotError("CUDA targets need nvcc (the CUDA toolkit): not on PATH nor in "
                     "/usr/local/cuda*/bin; install it or set NVCC")


def _arch(arch: str) -> str:
    m = re.fullmatch(r"(?:sm_|compute_)?(\d{2,3}[a-z]?)", str(arch))
    if not m:
        raise IngotError(f"not a CUDA architecture: {arch!r} (expected e.g. sm_87)")
    return m.group(1)


def build(source: str, arch: str) -> tuple[bytes, bytes]:
    """(PTX, cubin) of `source` for `arch` ("sm_87", "87" ...)."""
    num = _arch(arch)
    key = (hashlib.sha256(source.encode()).hexdigest(), num)
    with _lock:
        if key in _memo:
            return _memo[key]
    nvcc = find_nvcc()
    from .. import build_cache
    blob = build_cache.cached("nvcc", lambda: _pack(*_run_nvcc(nvcc, source, num)),
                              source=source, arch=num, flags=FLAGS, nvcc=_nvcc_version(nvcc))
    ptx, cubin = _unpack(blob)
    with _lock:
        _memo[key] = (ptx, cubin)
    return ptx, cubin


def _pack(ptx: bytes, cubin: bytes) -> bytes:
    return len(ptx).to_bytes(8, "little") + ptx + cubin


def _unpack(blob: bytes) -> tuple[bytes, bytes]:
    n = int.from_bytes(blob[:8], "little")
    return blob[8:8 + n], blob[8 + n:]


@functools.lru_cache(maxsize=None)
def _nvcc_version(nvcc: str) -> str:
    try:
        return subprocess.run([nvcc, "--version"], capture_output=True, text=True).stdout
    except OSError as e:
        raise IngotError(f"cannot run nvcc ({nvcc}): {e}") from None


def _run_nvcc(nvcc: str, source: str, num: str) -> tuple[bytes, bytes]:
    with tempfile.TemporaryDirectory(prefix="ingot_nvcc_") as tmp:
        src = os.path.join(tmp, "kernels.cu")
        with open(src, "w") as f:
            f.write(source)
        cmd = [nvcc, *FLAGS, f"-arch=sm_{num}", "-cubin", "-keep", "-keep-dir", tmp,
               "-o", os.path.join(tmp, "kernels.cubin"), src]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp)
        except OSError as e:
            raise IngotError(f"cannot run nvcc ({nvcc}): {e}") from None
        if r.returncode != 0:
            lines = (r.stderr + r.stdout).splitlines()
            first = next((ln for ln in lines if "error" in ln), lines[0] if lines else "")
            raise IngotError(f"nvcc failed for sm_{num}: {first.strip()[:300]}")
        with open(os.path.join(tmp, "kernels.ptx"), "rb") as f:
            ptx = f.read()
        with open(os.path.join(tmp, "kernels.cubin"), "rb") as f:
            cubin = f.read()
    return ptx, cubin


def compile_ptx(source: str, arch: str) -> bytes:
    return build(source, arch)[0]


def compile_cubin(source: str, arch: str) -> bytes:
    return build(source, arch)[1]


def build_all(source: str, archs) -> dict:
    """{arch: (PTX, cubin)}, the architectures built in parallel (nvcc is single-threaded)."""
    archs = list(archs)
    with ThreadPoolExecutor(max(1, min(len(archs), os.cpu_count() or 1))) as pool:
        return dict(zip(archs, pool.map(lambda a: build(source, a), archs)))
