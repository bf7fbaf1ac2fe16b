"""A device map over a CUDA artefact's layer segments: runs of consecutive segments on one
device, each with its CPU entries or its launch range, and the arena bytes that must cross
into it from the other device first.

Segment k < L is layer k (segment 0 also holds the token lookup), segment L the tail (final
norm, output head), which goes where the map puts its head. What crosses a boundary is what
the compiler recorded as the segment's live-in tensors (plan["segments"]["live_in"]): in
practice the residual stream, n x hidden floats. Each tensor is copied once per device that
reads it, from the device of the segment that wrote it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ...errors import IngotError

CPU, GPU = "cpu", "cuda"


@dataclass
class Run:
    device: str                      # "cpu" or "cuda"
    segments: range
    launches: dict = field(default_factory=dict)  # step -> (first, last + 1) launch index
    copies: list = field(default_factory=list)    # [(arena offset, c0, c1)] bytes c0 + c1 n

    def copy_bytes(self, n: int) -> int:
        return sum(c0 + c1 * n for _, c0, c1 in self.copies)


class Mapping:
    def __init__(self, plan: dict, launches: dict, device_map, path="artefact"):
        seg = plan.get("segments")
        if not seg or "launch_nodes" not in launches:
            raise IngotError(f"{path}: this CUDA artefact has no layer segments (compiled "
                             f"before device maps); recompile it to use -n")
        bounds, live = seg["bounds"], seg["live_in"]
        n_layers = len(bounds) - 2
        if device_map.n_layers != n_layers:
            raise IngotError(f"{path}: the device map has {device_map.n_layers} layers, the "
                             f"model {n_layers}")
        gpus = sorted({d for d in (*device_map.layers, device_map.head) if d != CPU})
        if len(gpus) > 1:
            raise IngotError(f"device map: a model runs on one GPU and the CPU; this map "
                             f"names {', '.join(gpus)}")
        self.ordinal = int(gpus[0].split(":")[1]) if gpus else 0
        self.devices = [GPU if d != CPU else CPU for d in (*device_map.layers, device_map.head)]
        seg_of = np.searchsorted(np.asarray(bounds), np.arange(bounds[-1]), side="right") - 1
        self.runs: list = []
        done: set = set()
        for k, dev in enumerate(self.devices):
            if not self.runs or self.runs[-1].device != dev:
                self.runs.append(Run(dev, range(k, k + 1)))
            run = self.runs[-1]
            run.segments = range(run.segments.start, k + 1)
            for off, c0, c1, writer in live[k]:
                if self.devices[writer] != dev and (off, writer, dev) not in done:
                    done.add((off, writer, dev))
                    run.copies.append((off, c0, c1))
        for step, nodes in launches["launch_nodes"].items():
            segs = seg_of[np.asarray(nodes, np.int64)] if nodes else np.zeros(0, np.int64)
            for run in self.runs:
                lo = int(np.searchsorted(segs, run.segments.start, side="left"))
                hi = int(np.searchsorted(segs, run.segments.stop, side="left"))
                run.launches[step] = (lo, hi)

    @property
    def uses_cpu(self) -> bool:
        return CPU in self.devices

    @property
    def uses_gpu(self) -> bool:
        return GPU in self.devices

    @property
    def head_on_gpu(self) -> bool:
        return self.devices[-1] == GPU

    def boundary_bytes(self, n: int) -> int:
        """Arena bytes a step of n tokens copies between the devices (none on shared memory)."""
        return sum(r.copy_bytes(n) for r in self.runs)
