"""Builds the CUDA kernel source into a host shared library with the thread shim (shim.h).

The library exports `int ingot_sim_launch(const char *kernel, const unsigned grid[3],
const unsigned block[3], unsigned shared, const long long *a, const long long *d)`: 0 when it
ran, -1 for an unknown kernel, -2 a block of no or over 1024 threads, -3 out of memory, -4 a
kernel whose threads reached different numbers of barriers or shuffles, -5 a misused WMMA call
(shim.h). Builds are cached in `out_dir` by a hash of the source and the shim.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from ....errors import IngotError

SHIM = Path(__file__).with_name("shim.h")
KERNEL = re.compile(r'extern\s+"C"\s+__global__\s+void\s+(ingot_\w+)\s*\(')
FLAGS = ["-std=c++17", "-O1", "-fPIC", "-shared", "-w"]


def _registry(names) -> str:
    rows = "".join(f'    {{"{n}", {n}}},\n' for n in names)
    return f"""
struct IngotSimKernel {{ const char *name; void (*fn)(const long long *, const long long *); }};
static const IngotSimKernel ingot_sim_kernels[] = {{
{rows}    {{0, 0}}}};
extern "C" __attribute__((visibility("default"))) int ingot_sim_launch(
        const char *kernel, const unsigned grid[3], const unsigned block[3], unsigned shared,
        const long long *a, const long long *d) {{
    for (const IngotSimKernel *k = ingot_sim_kernels; k->name; k++)
        if (!strcmp(k->name, kernel)) return ingot_sim::launch(k->fn, grid, block, a, d);
    return -1;
}}
"""


def build_sim(cu_source: str, out_dir) -> Path:
    """Path of the harness library for `cu_source`, built into out_dir unless already there."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise IngotError("the CUDA simulator needs a C++ compiler (g++): none found on PATH")
    names = KERNEL.findall(cu_source)
    shim = SHIM.read_text()
    key = hashlib.sha256((shim + "\0" + cu_source + "\0" + " ".join(FLAGS)).encode()).hexdigest()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / f"ingot_sim_{key[:16]}.so"
    if lib.exists():
        return lib
    src = out_dir / f"ingot_sim_{key[:16]}.cpp"
    src.write_text(f'#include "{SHIM}"\n{cu_source}\n{_registry(names)}')
    tmp = lib.with_suffix(f".{os.getpid()}.tmp")
    r = subprocess.run([cxx, *FLAGS, "-o", str(tmp), str(src)], capture_output=True, text=True)
    if r.returncode != 0:
        first = next((ln for ln in r.stderr.splitlines() if "error" in ln), r.stderr.strip())
        raise IngotError(f"CUDA simulator build failed: {first[:300]}")
    os.replace(tmp, lib)  # atomic: parallel builders of one source agree
    return lib
