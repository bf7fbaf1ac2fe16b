"""Memory planning: every activation gets an offset in one arena, by liveness.

Lifetimes run from the node that defines a tensor to the last node that reads it (or any view
of it); graph outputs live to the end. Placement is greedy, largest first, at the lowest offset
that overlaps no placed tensor whose lifetime intersects. `verify` re-checks the result.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import IngotError
from .ir import Graph, Tensor

ALIGN = 64


def _align(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    tensor: Tensor
    size: int
    start: int  # first node index that writes it (-1: written before the step)
    end: int    # last node index that reads it
    offset: int = -1


@dataclass
class MemoryPlan:
    buffers: list
    arena_size: int
    naive_size: int

    def offset(self, t: Tensor) -> int:
        return self._by_id[id(t.root)].offset

    def __post_init__(self):
        self._by_id = {id(b.tensor): b for b in self.buffers}


def lifetimes(graph: Graph, t_max: int) -> list:
    bufs: dict = {}

    def touch(t: Tensor, i: int, define: bool):
        r = t.root
        if id(r) not in bufs:
            bufs[id(r)] = Buffer(r, _align(r.nbytes(t_max)), i if define else -1, i)
        b = bufs[id(r)]
        b.end = max(b.end, i)

    for t in graph.inputs.values():
        touch(t, -1, True)
    for i, n in enumerate(graph.nodes):
        for t in n.inputs:
            touch(t, i, False)
        for t in n.outputs:
            touch(t, i, True)
    end = len(graph.nodes)
    for t in graph.outputs.values():
        bufs[id(t.root)].end = end
    return list(bufs.values())


def plan_memory(graph: Graph, t_max: int) -> MemoryPlan:
    bufs = lifetimes(graph, t_max)
    placed: list = []
    for b in sorted(bufs, key=lambda b: (-b.size, b.start, b.tensor.name)):
        conflicts = sorted((p.offset, p.offset + p.size) for p in placed
                           if p.start <= b.end and b.start <= p.end)
        off = 0
        for lo, hi in conflicts:
            if off + b.size <= lo:
                break
            off = max(off, hi)
        b.offset = off
        placed.append(b)
    size = max((b.offset + b.size for b in bufs), default=0)
    plan = MemoryPlan(bufs, size, sum(b.size for b in bufs))
    verify(plan)
    return plan


def verify(plan: MemoryPlan) -> None:
    """No two buffers that are live at the same time share a byte; everything is aligned and
    inside the arena."""
    bs = plan.buffers
    for i, a in enumerate(bs):
        if a.offset < 0 or a.offset % ALIGN or a.offset + a.size > plan.arena_size:
            raise IngotError(f"memory plan: buffer {a.tensor.name} is misplaced")
        for b in bs[i + 1:]:
            live_together = a.start <= b.end and b.start <= a.end
            overlap = a.offset < b.offset + b.size and b.offset < a.offset + a.size
            if live_together and overlap:
                raise IngotError(f"memory plan: {a.tensor.name} and {b.tensor.name} overlap "
                                 f"while both are live")
