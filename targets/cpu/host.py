"""The CPU target: LLVM's view of the build host, and the CPU flags an artefact requires."""
from __future__ import annotations

import functools
import platform
from dataclasses import dataclass

import llvmlite.binding as llvm

# LLVM feature name -> /proc/cpuinfo flag, for the x86 features our code may rely on.
_X86_FLAGS = {"sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
              "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
              "avx512dq": "avx512dq", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
              "avxvnni": "avx_vnni"}


@dataclass(frozen=True)
class CpuTarget:
    name: str
    triple: str
    cpu: str
    features: str  # LLVM feature string (+a,-b,...)
    machine: str   # platform.machine() the artefact runs on
    required_flags: tuple  # /proc/cpuinfo flags the code needs

    def describe(self) -> dict:
        return {"name": self.name, "triple": self.triple, "cpu": self.cpu,
                "machine": self.machine, "required_flags": list(self.required_flags)}


@functools.lru_cache(maxsize=None)
def host_features() -> frozenset:
    """The LLVM feature names the build host enables (what numba's code generation targets)."""
    llvm.initialize_native_target()
    return frozenset(k for k, v in llvm.get_host_cpu_features().items() if v)


def host_target() -> CpuTarget:
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    feats = llvm.get_host_cpu_features()
    enabled = sorted(k for k, v in feats.items() if v)
    flags = tuple(sorted(_X86_FLAGS[f] for f in enabled if f in _X86_FLAGS))
    return CpuTarget("host", llvm.get_process_triple(), llvm.get_host_cpu_name(),
                     feats.flatten(), platform.machine(), flags)


def resolve_target(name: str) -> CpuTarget:
    if name in ("host", "native", None):
        return host_target()
    from ...errors import IngotError
    raise IngotError(f"unknown target '{name}' (available: host)")
