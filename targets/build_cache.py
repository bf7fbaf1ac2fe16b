"""A content-addressed cache of native builds (shared libraries, PTX/cubin), like ccache.

numba spends most of a compile typing and lowering kernels specialised to a model's shapes, so
compiling the same model again (another --isq policy that leaves the code alone, `ingot convert`
then `ingot compile`, a second machine sharing a cache folder) repeats the same work. An entry is
keyed by everything a build's bytes depend on: the rendered step sources, the target, the source
of ingot.targets, the numba/llvmlite/compiler versions and the build host's CPU; builds are
deterministic, so a hit gives the bytes a fresh build would.

Folder: $INGOT_NATIVE_CACHE_DIR, else <ingot cache>/native. INGOT_NATIVE_CACHE=0 turns it off.
Entries carry their own SHA-256 and are written to a temporary name and renamed, so a torn or
corrupted entry is rebuilt, never used; the folder is trimmed to its newest entries.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import pathlib
import platform
import tempfile

MAX_BYTES = 512 << 20  # trimmed (oldest first) past this


def enabled() -> bool:
    return os.environ.get("INGOT_NATIVE_CACHE", "1").strip().lower() not in ("0", "off", "no",
                                                                             "false")


def folder() -> pathlib.Path:
    env = os.environ.get("INGOT_NATIVE_CACHE_DIR")
    if env:
        return pathlib.Path(env)
    from ..compiler.pipeline import default_cache_dir
    return default_cache_dir() / "native"


@functools.lru_cache(maxsize=None)
def _code_fingerprint() -> str:
    """SHA-256 over the source of ingot.targets (every .py, .c, .h, .cu, .cuh): the kernels, the
    step renderer, the build steps and the target definitions. What else a build depends on is
    in its inputs (the rendered sources, the target, the toolchain)."""
    import importlib
    h = hashlib.sha256()
    root = pathlib.Path(importlib.import_module("ingot.targets").__file__).resolve().parent
    for p in sorted(root.rglob("*")):
        if p.suffix in (".py", ".c", ".h", ".cu", ".cuh") and p.is_file():
            h.update(str(p.relative_to(root)).encode() + b"\0")
            h.update(p.read_bytes())
    return h.hexdigest()


@functools.lru_cache(maxsize=None)
def _toolchain() -> dict:
    import llvmlite
    import numba
    import llvmlite.binding as llvm
    return {"numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "host_cpu": llvm.get_host_cpu_name(),
            "numba_cpu": [os.environ.get("NUMBA_CPU_NAME"), os.environ.get("NUMBA_CPU_FEATURES")]}


def key(kind: str, **inputs) -> str:
    """The cache key of a build of `kind` from `inputs` (JSON-serialisable)."""
    doc = {"kind": kind, "code": _code_fingerprint(), "toolchain": _toolchain(), **inputs}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def load(k: str) -> bytes | None:
    """The cached bytes for key `k`, or None (missing, disabled, unreadable or corrupted)."""
    if not enabled():
        return None
    path = folder() / k[:2] / k
    try:
        blob = path.read_bytes()
    except OSError:
        return None
    digest, data = blob[:32], blob[32:]
    if hashlib.sha256(data).digest() != digest:
        return None
    try:
        os.utime(path)  # recently used: kept longest by trim()
    except OSError:
        pass
    return data


def store(k: str, data: bytes) -> None:
    """Record `data` under `k`. A cache that cannot be written is skipped, not an error."""
    if not enabled():
        return
    d = folder() / k[:2]
    try:
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(hashlib.sha256(data).digest() + data)
        os.replace(tmp, d / k)
        trim()
    except OSError:
        return


def trim(limit: int = MAX_BYTES) -> None:
    entries = []
    for p in folder().glob("??/*"):
        if p.name.startswith(".tmp-"):
            continue
        try:
            st = p.stat()
        except OSError:
            continue
        entries.append((st.st_mtime, st.st_size, p))
    total = sum(e[1] for e in entries)
    for _, size, p in sorted(entries):
        if total <= limit:
            break
        try:
            p.unlink()
            total -= size
        except OSError:
            pass


def cached(kind: str, build, **inputs) -> bytes:
    """`build()`'s bytes, from the cache when an equal build was done before."""
    k = key(kind, **inputs)
    data = load(k)
    if data is None:
        data = build()
        store(k, data)
    return data
