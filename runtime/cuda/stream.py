"""--max-memory on a CUDA artefact: which weight units live on the GPU, and the copies that
bring the others into two device staging slots while the step runs.

The weights stay in host memory (the mapped artefact). Device memory holds the arena, the KV
cache, the scratch, the shared weights (outside any unit), the resident units and two slots
the size of the largest streamed unit. Units are kept resident largest first (as on the CPU:
a streamed byte costs the same wherever it sits, so this streams the fewest bytes per step).

Streaming, per step: the launches that read a streamed unit form an "episode"; episode e is
copied into slot e % 2 on a copy stream, and the compute stream waits for that copy before
the episode's first launch. Episode e + 2 reuses the slot, so its copy waits for an event
recorded after episode e's last launch: the next unit's copy overlaps the current unit's
launches. A launch's words for a streamed weight point into its episode's slot.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import IngotError
from .launches import BASES

SLOTS = 2


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


@dataclass
class DeviceResidency:
    resident: list          # per unit (plan["units"] order)
    units: list             # [(artefact offset, bytes)]
    shared_bytes: int       # weights before the first unit: resident always
    slot_bytes: int         # each staging slot; 0 when nothing is streamed

    @property
    def streaming(self) -> bool:  # (or some units stay on the host: a device map)
        return not all(self.resident)


def fixed_device_bytes(plan: dict, kv_bytes=None) -> int:
    """Device bytes besides the streamable units: arena, KV cache (`kv_bytes`: a device map's
    share; None: all of it, every sequence slot's), scratch and the weights outside any unit."""
    units = sum(u["bytes"] for u in plan.get("units", []))
    kv = int(plan["state_bytes"]) * int(plan.get("max_batch", 1)) if kv_bytes is None \
        else int(kv_bytes)
    return (int(plan["arena_bytes"]) + kv
            + int(plan.get("cuda_scratch_bytes", 0)) + int(plan["weights_bytes"]) - units)


def kv_span(launches, active, state_bytes: int):
    """(lo, hi): the bytes of the KV cache that the launches in `active` ({step: [indices]})
    read or write, as one range (a device map's GPU layers are consecutive). Each cache
    state starts at an offset some launch names; it ends where the next one starts. None when
    a launch addresses the cache in a way this cannot bound (an offset that grows with n)."""
    k = BASES.index("k")
    starts, used = set(), set()
    for name, step in launches.steps.items():
        launch = np.searchsorted(step.start, np.arange(step.kind.size), side="right") - 1
        words = step.kind == k
        if np.any(step.c1[words] != 0):
            return None
        offs = step.c0[words]
        starts.update(int(o) for o in offs)
        keep = np.isin(launch[words], np.asarray(sorted(active.get(name, ())), np.int64))
        used.update(int(o) for o in offs[keep])
    if not used:
        return (0, 0)
    bounds = sorted(starts | {int(state_bytes)})
    lo, last = min(used), max(used)
    hi = next(b for b in bounds if b > last)
    return (lo, hi)


def units_read(step, units: list, active=None) -> set:
    """Indices of the units whose weights the step's launches (those in `active`) read."""
    starts = np.array([o for o, _ in units], np.int64)
    ends = starts + np.array([b for _, b in units], np.int64)
    launch = np.searchsorted(step.start, np.arange(step.kind.size), side="right") - 1
    w = step.kind == 1
    off, li = step.c0[w], launch[w]
    if active is not None:
        keep = np.isin(li, np.asarray(sorted(active), np.int64))
        off = off[keep]
    u = np.searchsorted(starts, off, side="right") - 1
    ok = (u >= 0) & (off < ends[np.maximum(u, 0)])
    return {int(x) for x in u[ok]}


def plan_device_residency(plan: dict, budget, path="artefact", needed=None,
                          kv_bytes=None) -> DeviceResidency:
    """Resident flags under `budget` (None: no limit) for the units the GPU reads (`needed`,
    a set of unit indices; all when None; `kv_bytes`: the GPU's share of the KV cache). A unit the GPU never reads (its layers run on the
    CPU) is neither resident nor streamed: it costs no device memory."""
    units = [(int(u["offset"]), int(u["bytes"])) for u in plan.get("units", [])]
    needed = set(range(len(units))) if needed is None else set(needed)
    sizes = [b if i in needed else 0 for i, (_, b) in enumerate(units)]
    fixed = fixed_device_bytes(plan, kv_bytes)
    shared = min((o for o, _ in units), default=int(plan["weights_bytes"]))
    if budget is None or fixed + sum(sizes) <= budget:
        return DeviceResidency([i in needed for i in range(len(units))], units, shared, 0)
    smallest = fixed + SLOTS * max(sizes, default=0)
    if not units or budget < smallest:
        raise IngotError(f"{path}: --max-memory {_mib(budget)} cannot hold the arena, KV cache, "
                         f"scratch and shared weights on the GPU ({_mib(fixed)}) plus {SLOTS} "
                         f"staging slots for streamed weights; the smallest budget that works "
                         f"is {_mib(smallest)} (all resident: {_mib(fixed + sum(sizes))})")
    resident = [False] * len(units)
    used = fixed
    for i in sorted(needed, key=lambda i: -sizes[i]):
        rest = [sizes[j] for j in needed if not resident[j] and j != i]
        if rest and used + sizes[i] + SLOTS * max(rest) <= budget:
            resident[i] = True
            used += sizes[i]
    slot = max(s for i, (s, r) in enumerate(zip(sizes, resident)) if not r and i in needed)
    return DeviceResidency(resident, units, shared, slot)


@dataclass
class Episode:
    unit: int
    first: int   # launch index
    last: int


class StepStream:
    """One step's episodes and its weight words rewritten for the device layout."""

    def __init__(self, res: DeviceResidency, step, active=None):
        """`active`: the launch indices this device runs (all when None)."""
        self.res = res
        self._starts = np.array([o for o, _ in res.units], np.int64)
        self._ends = self._starts + np.array([b for _, b in res.units], np.int64)
        self._packed = np.zeros(len(res.units), np.int64)  # resident unit -> device offset
        off = res.shared_bytes
        for i, (o, b) in enumerate(res.units):
            if res.resident[i]:
                off = (off + 255) // 256 * 256
                self._packed[i] = off
                off += b
        self.weights_bytes = off
        self._wmask = step.kind == 1  # "w" words
        self._launch_of_word = np.searchsorted(step.start, np.arange(step.kind.size),
                                               side="right") - 1
        w_launch = self._launch_of_word[self._wmask]
        w_unit = self._unit_of(step.c0[self._wmask])
        reads: dict = {}
        for li, u in zip(w_launch, w_unit):
            if u >= 0 and not res.resident[u]:
                reads.setdefault(int(li), set()).add(int(u))
        self.episodes: list = []
        word_slot = {}  # (launch, unit) -> episode index
        act = None if active is None else set(active)
        for li in sorted(reads):
            if act is not None and li not in act:
                continue
            for u in sorted(reads[li]):
                if self.episodes and self.episodes[-1].unit == u:
                    self.episodes[-1].last = li
                else:
                    self.episodes.append(Episode(u, li, li))
                word_slot[(li, u)] = len(self.episodes) - 1
        self._word_slot = word_slot
        self.first_of = {}
        self.last_of = {}
        for e, ep in enumerate(self.episodes):
            self.first_of.setdefault(ep.first, []).append(e)
            self.last_of.setdefault(ep.last, []).append(e)

    def _unit_of(self, off: np.ndarray) -> np.ndarray:
        u = np.searchsorted(self._starts, off, side="right") - 1
        ok = (u >= 0) & (off < self._ends[np.maximum(u, 0)])
        return np.where(ok, u, -1)

    def remap(self, words: np.ndarray, weights_dev: int, slots: list) -> np.ndarray:
        """Resolved words (weights base 0) with each weight word's device address."""
        out = words.copy()
        idx = np.nonzero(self._wmask)[0]
        off = words[idx]
        unit = self._unit_of(off)
        for j, o, u in zip(idx, off, unit):
            if u < 0:
                out[j] = weights_dev + o
            elif self.res.resident[u]:
                out[j] = weights_dev + self._packed[u] + (o - self._starts[u])
            else:
                e = self._word_slot.get((int(self._launch_of_word[j]), int(u)))
                out[j] = 0 if e is None else slots[e % SLOTS] + (o - self._starts[u])
        return out

    def uploads(self):
        """(device offset, artefact offset, bytes) of what the device weights buffer holds."""
        out = [(0, 0, self.res.shared_bytes)] if self.res.shared_bytes else []
        out += [(int(self._packed[i]), o, b) for i, (o, b) in enumerate(self.res.units)
                if self.res.resident[i]]
        return out
