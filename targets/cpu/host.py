"""CPU targets: the build host as LLVM sees it, and the named x86-64 and AArch64 targets an
artefact can be compiled for (`--target`), each with the CPU flags its code requires."""
from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import llvmlite.binding as llvm

from ..registry import register

# LLVM feature name -> /proc/cpuinfo flag, for the x86 features our code may rely on.
_X86_FLAGS = {"sse4.2": "sse4_2", "avx": "avx", "avx2": "avx2", "fma": "fma", "f16c": "f16c",
              "avx512f": "avx512f", "avx512bw": "avx512bw", "avx512vl": "avx512vl",
              "avx512dq": "avx512dq", "avx512vnni": "avx512_vnni", "avx512bf16": "avx512_bf16",
              "avxvnni": "avx_vnni"}

# The environment variable naming the target a build process generates code for (kernels pick
# their instructions from its features): unset means the host. build.py sets it for the
# subprocess that builds a named target.
CODEGEN_ENV = "INGOT_CODEGEN_TARGET"


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

    def feature_list(self) -> list:
        return sorted(f[1:] for f in self.features.split(",") if f.startswith("+"))

    @property
    def arch(self) -> str:
        return self.triple.split("-", 1)[0]

    def runnable_here(self):
        from ...runtime.hostcheck import why_not_runnable
        return why_not_runnable(self.describe())


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


# Named targets. The psABI levels x86-64-v3/v4 name exactly what they may use; required_flags
# are those features' /proc/cpuinfo names (lzcnt shows as "abm"). AArch64: plain ARMv8-A with
# NEON; Cortex-A78AE (Jetson Orin: ARMv8.2-A, dotprod, fp16, LSE atomics, RCpc); and a generic
# ARMv8.6-style core with dotprod and i8mm. Flag names are the Linux kernel's hwcap names.
_X86 = "x86_64-unknown-linux-gnu"
_A64 = "aarch64-unknown-linux-gnu"
_V3_FLAGS = ("avx", "avx2", "bmi1", "bmi2", "fma", "f16c", "movbe", "abm", "popcnt", "sse4_2")
_NAMED = {
    "x86_64-avx2": (_X86, "x86-64-v3", "+avx,+avx2,+fma,+f16c,+bmi,+bmi2", "x86_64", _V3_FLAGS),
    "x86_64-avx512": (_X86, "x86-64-v4", "+avx2,+fma,+f16c,+avx512f,+avx512bw,+avx512vl,"
                      "+avx512dq,+avx512cd,+avx512vnni", "x86_64",
                      _V3_FLAGS + ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd",
                                   "avx512_vnni")),
    "aarch64": (_A64, "generic", "+neon,+fp-armv8", "aarch64", ("fp", "asimd")),
    "aarch64+dotprod": (_A64, "cortex-a78ae", "+neon,+fp-armv8,+dotprod,+fullfp16,+lse,+rcpc",
                        "aarch64", ("fp", "asimd", "atomics", "fphp", "asimdhp", "lrcpc",
                                    "asimddp")),
    "aarch64+i8mm": (_A64, "generic", "+neon,+fp-armv8,+dotprod,+i8mm", "aarch64",
                     ("fp", "asimd", "asimddp", "i8mm")),
}


def named_target(name: str) -> CpuTarget:
    return CpuTarget(name, *_NAMED[name])


register("host", host_target)
for _name in _NAMED:
    register(_name, functools.partial(named_target, _name))


def resolve_target(name) -> CpuTarget:
    from ..registry import resolve_target as resolve
    return resolve(name)


@functools.lru_cache(maxsize=None)
def codegen_target() -> CpuTarget:
    """The target this process generates code for: $INGOT_CODEGEN_TARGET, else the host."""
    name = os.environ.get(CODEGEN_ENV) or "host"
    return host_target() if name == "host" else named_target(name)


def codegen_features() -> frozenset:
    """The LLVM feature names of the code being generated (the kernels' instruction choice)."""
    t = codegen_target()
    return host_features() if t.name == "host" else frozenset(t.feature_list())


def codegen_arch() -> str:
    return codegen_target().arch
