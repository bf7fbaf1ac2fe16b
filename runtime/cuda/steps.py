"""The step runner of a CUDA artefact: the role runtime/native.py's ThreadTeam has for CPU
code (`run(step, wb, ab, kb, n, pos)`), over the GPU driver or the simulator, and with a
device map over both the GPU and the artefact's per-segment CPU code.

The batched decode step (--max-batch) takes its row table as the CPU's does: `pos` is the
address of int32 positions[max_batch] then slots[max_batch] (runtime/model.py); the backends
get it as (position, KV byte offset) per row."""
from __future__ import annotations

import ctypes
import os

import numpy as np

from ...errors import IngotError
from .launches import LaunchPlan
from .sim import ENV as SIM_ENV


def stream_units(plan: dict) -> list:
    return [(int(u["offset"]), int(u["bytes"])) for u in plan.get("units", [])]


class CudaSteps:
    def __init__(self, art, plan: dict, *, weights: np.ndarray, arena: np.ndarray,
                 kv: np.ndarray, backend=None, sim=None, lib=None, device_map=None,
                 cpu_team=None, max_memory=None):
        """backend: "sim" (the harness library at `sim` or $INGOT_CUDA_SIM) or "gpu"; by
        default the simulator when INGOT_CUDA_SIM is set, else the GPU. device_map: a
        DeviceMap (None: every layer on the GPU); cpu_team() makes the ThreadTeam that runs
        the CPU segments. max_memory: the device budget (weights beyond it are streamed)."""
        self._plan = plan
        self.max_batch = int(plan.get("max_batch", 1))
        doc = art.json("cuda_launches")
        self.launches = LaunchPlan(doc)
        self.mapping = None
        if device_map is not None:
            from .mapping import Mapping
            self.mapping = Mapping(plan, doc, device_map, art.path)
            if not self.mapping.uses_cpu:
                self.mapping = None if self.mapping.ordinal == 0 else self.mapping
            elif self.max_batch > 1:
                raise IngotError(f"{art.path}: layers on the CPU (-n) are not supported with "
                                 f"--max-batch {self.max_batch} on CUDA; map every layer to "
                                 f"the GPU or recompile with --max-batch 1")
        self.backend = self._cpu = None
        self.resident = [True] * len(plan.get("units", []))
        if self.mapping is not None and self.mapping.uses_cpu:
            self._load_cpu(art, plan, cpu_team)
        if self.mapping is None or self.mapping.uses_gpu:
            self._load_gpu(art, plan, weights, arena, kv, backend, sim, lib, max_memory)
        else:
            self.name = "cpu"
        self._entries_for = {}

    def _load_cpu(self, art, plan, cpu_team) -> None:
        from ..hostcheck import check_target
        from ..native import entry, load_library
        if not art.has("code") or "cpu_entry_points" not in plan:
            raise IngotError(f"{art.path}: this CUDA artefact has no CPU code for the layers "
                             f"mapped to the CPU (compiled with --cpu-target none)")
        check_target(plan.get("cpu_target", {}), art.path)
        self._lib = load_library(art.section("code"))
        self._cpu_entries = {step: [entry(self._lib, e) for e in names]
                             for step, names in plan["cpu_entry_points"].items()}
        self._cpu = cpu_team()

    def _load_gpu(self, art, plan, weights, arena, kv, backend, sim, lib, max_memory) -> None:
        backend = backend or ("sim" if sim or os.environ.get(SIM_ENV) else "gpu")
        wb = weights.ctypes.data if weights.size else 0
        scratch = int(plan["cuda_scratch_bytes"])
        stream = span = None
        if max_memory is not None or self.mapping is not None and self.mapping.uses_cpu:
            # The units the GPU's launches read: all of them, or a device map's share; with
            # a map, the GPU holds only its layers' part of the KV cache too.
            from .stream import kv_span, plan_device_residency, units_read
            ranges = self._gpu_ranges()
            needed, active = set(), {}
            for name, step in self.launches.steps.items():
                act = None if ranges is None else \
                    [i for lo, hi in ranges[name] for i in range(lo, hi)]
                active[name] = act
                needed |= units_read(step, stream_units(plan), act)
            if ranges is not None:
                span = kv_span(self.launches, active, int(plan["state_bytes"]))
            stream = plan_device_residency(plan, max_memory, art.path, needed,
                                           kv_bytes=None if span is None else span[1] - span[0])
            if stream.streaming and self.max_batch > 1:
                raise IngotError(f"{art.path}: this --max-memory budget streams weights, "
                                 f"which --max-batch {self.max_batch} does not support on CUDA "
                                 f"yet; give a budget that holds the whole model")
            # Streamed: read by the GPU but not kept there (a CPU layer's unit is neither).
            self.resident = [r or i not in needed for i, r in enumerate(stream.resident)]
        if backend == "sim":  # host memory: a budget only checks that it is large enough
            from .sim import SimBackend
            self.backend = SimBackend(self.launches, sim, weights=wb, arena=arena.ctypes.data,
                                      kv=kv.ctypes.data, scratch_bytes=scratch,
                                      max_rows=self.max_batch)
        elif backend == "gpu":
            from .driver import CudaDriver
            self.backend = CudaDriver(
                self.launches, cubin=bytes(art.section("cuda_cubin")),
                ptx=bytes(art.section("cuda_ptx")), arch=plan["cuda_arch"], weights=weights,
                arena_bytes=plan["arena_bytes"], kv_bytes=kv.nbytes, scratch_bytes=scratch,
                host_arena=arena.ctypes.data, host_kv=kv.ctypes.data, kv_span=span,
                tokens_offset=plan["tokens_offset"], logits_offset=plan["logits_offset"],
                vocab=plan["vocab_size"], lib=lib,
                device=self.mapping.ordinal if self.mapping else 0, stream=stream,
                active=self._gpu_ranges(), max_rows=self.max_batch,
                batch_io=(plan["batch_tokens_offset"], plan["batch_logits_offset"])
                if self.max_batch > 1 else None)
        else:
            raise IngotError(f"unknown CUDA backend '{backend}' (use gpu or sim)")
        self.name = backend

    @property
    def device_bytes(self) -> int:
        """GPU memory the model holds: the driver's allocations; on the simulator, what the
        driver would allocate for the plan (arena, KV, scratch, weights)."""
        if self.backend is None:
            return 0
        if hasattr(self.backend, "device_bytes"):
            return int(self.backend.device_bytes)
        p = self._plan
        return int(p["arena_bytes"] + p["state_bytes"] * self.max_batch
                   + p["cuda_scratch_bytes"] + p["weights_bytes"])

    def _gpu_ranges(self):
        """{step: [(first, last + 1)]}: the launches a device map leaves on the GPU."""
        if self.mapping is None:
            return None
        runs = [r for r in self.mapping.runs if r.device == "cuda"]
        return {step: [r.launches[step] for r in runs] for step in runs[0].launches}

    def _rows(self, table: int, n: int) -> np.ndarray:
        """The batched step's row table at address `table` as [n, 2] (position, KV byte
        offset of the row's sequence slot)."""
        t = np.frombuffer((ctypes.c_int32 * (2 * self.max_batch)).from_address(table),
                          np.int32)
        slots = t[self.max_batch:self.max_batch + n].astype(np.int64)
        return np.stack([t[:n].astype(np.int64), slots * int(self._plan["state_bytes"])], 1)

    def run(self, step: str, wb: int, ab: int, kb: int, n: int, pos: int) -> None:
        n, pos = int(n), int(pos)
        rows = None
        if step == "batch":  # `pos` is the row table's address; the kernels read d[] instead
            rows, pos = self._rows(pos, n), 0
        if self.mapping is None:
            self.backend.step(step, n, pos, int(kb), rows)
            return
        gpu = self.backend
        if gpu is not None:
            gpu.begin(step, n, pos, int(kb), rows)
        for run in self.mapping.runs:
            if run.device == "cpu":
                if gpu is not None:  # the GPU's outputs this run reads, on the host
                    gpu.copy_out(run.copies, n)
                for e in self._cpu_entries[step][run.segments.start:run.segments.stop]:
                    self._cpu.run(e, wb, ab, kb, n, pos)
            else:
                gpu.copy_in(run.copies, n)
                gpu.launch_range(step, *run.launches[step])
        if gpu is not None:
            gpu.finish(logits=self.mapping.head_on_gpu)

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
        if self._cpu is not None:
            self._cpu.close()
