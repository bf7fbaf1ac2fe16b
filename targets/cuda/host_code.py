"""The CPU side of a CUDA artefact: the same steps rendered per layer segment for a CPU target,
so that a device map (-n "0:16;cpu:*") can run any layer on the host.

Default CPU target per GPU: the build host for data-centre GPUs (cuda-sm80/sm90: the GPU sits
in the machine that compiles, typically), Jetson Orin's Cortex-A78AE (aarch64+dotprod) for
cuda-sm87. "none" builds no CPU code (the artefact then runs on the GPU only).
"""
from __future__ import annotations

from .segments import live_in, segment_bounds, segment_view

DEFAULT_CPU_TARGET = {"cuda-sm87": "aarch64+dotprod"}
STEPS = (("prefill", None), ("decode", 1))


def cpu_target_for(cuda_name: str, requested=None):
    """The CPU target object for `requested` (default per GPU), or None for "none"."""
    from ..registry import resolve_target
    name = requested or DEFAULT_CPU_TARGET.get(cuda_name, "host")
    if str(name).lower() == "none":
        return None
    t = resolve_target(name)
    if getattr(t, "kind", "cpu") != "cpu":
        from ...errors import IngotError
        raise IngotError(f"--cpu-target {name} is not a CPU target")
    return t


def segment_plan(graph, plan, n_layers: int) -> dict:
    """The plan entries a device map needs: segment node ranges and live-in tensors."""
    bounds = segment_bounds(graph, n_layers)
    return {"segments": {"bounds": bounds, "live_in": live_in(graph, plan, bounds)}}


def host_code(graph, plan, weight_offsets, state_offsets, bounds: list, cpu_target,
              workdir=None) -> tuple[bytes, dict]:
    """(shared library, plan entries): entries `ingot_{step}_s{k}` per step and segment."""
    from ..cpu.build import build_library
    from ..cpu.step_source import render_step
    sources, entries = {}, {}
    for step, fixed_n in STEPS:
        names = []
        for k in range(len(bounds) - 1):
            name = f"{step}_s{k}"
            sources[name] = render_step(segment_view(graph, bounds, k), plan, weight_offsets,
                                        state_offsets, name, fixed_n=fixed_n)
            names.append(f"ingot_{name}")
        entries[step] = names
    code = build_library(sources, cpu_target, workdir=workdir)
    return code, {"cpu_entry_points": entries, "cpu_target": cpu_target.describe()}
