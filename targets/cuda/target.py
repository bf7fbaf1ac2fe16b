"""The CUDA targets: one per GPU architecture the artefact carries a cubin for.

The PTX stored beside the cubin is for the same virtual architecture, so a newer GPU can
still JIT it; an older one cannot run it at all (the runtime says so).
"""
from __future__ import annotations

import ctypes.util
import os
from dataclasses import dataclass

from ..registry import register

# name -> (real architecture, what it is for)
CUDA_ARCHS = {
    "cuda-sm80": ("sm_80", "NVIDIA Ampere data-centre GPUs (A100)"),
    "cuda-sm87": ("sm_87", "NVIDIA Jetson Orin (integrated memory)"),
    "cuda-sm90": ("sm_90", "NVIDIA Hopper GPUs (H100, H200)"),
}


@dataclass(frozen=True)
class CudaTarget:
    name: str
    arch: str  # "sm_87": the cubin's architecture

    kind = "cuda"
    triple = "nvptx64-nvidia-cuda"

    @property
    def cpu(self) -> str:  # the registry's column for the processor
        return self.arch

    @property
    def compute(self) -> str:
        return "compute_" + self.arch[3:]

    @property
    def capability(self) -> tuple:
        return int(self.arch[3:-1]), int(self.arch[-1])

    def describe(self) -> dict:
        return {"name": self.name, "kind": "cuda", "arch": self.arch,
                "capability": list(self.capability)}

    def feature_list(self) -> list:
        return [self.compute]  # the PTX's virtual architecture

    def runnable_here(self):
        """None when a CUDA driver (or the simulator) is present; the GPU itself is checked
        when the artefact loads."""
        if os.environ.get("INGOT_CUDA_SIM") or ctypes.util.find_library("cuda"):
            return None
        return "no CUDA driver (libcuda) on this host"


def target_for_capability(cc: tuple) -> str:
    """The target whose cubin a GPU of compute capability `cc` runs: sm_87 on Jetson Orin,
    sm_90 on Hopper (a newer GPU JITs its PTX), sm_80 on other Ampere and Ada parts."""
    cc = tuple(cc)
    if cc == (8, 7):
        return "cuda-sm87"
    return "cuda-sm90" if cc >= (9, 0) else "cuda-sm80"


def cuda_targets() -> dict:
    """name -> one-line description: the hook the target registry (list-targets) consults."""
    return {name: f"{arch}: {what}" for name, (arch, what) in CUDA_ARCHS.items()}


def resolve_cuda(name) -> CudaTarget | None:
    """The CUDA target called `name`, or None when the name is not a CUDA target."""
    if name not in CUDA_ARCHS:
        return None
    return CudaTarget(name, CUDA_ARCHS[name][0])


for _name in CUDA_ARCHS:
    register(_name, lambda _n=_name: resolve_cuda(_n))
