"""The "cuda_launches" section: per step, kernels with argument words and grids that are
affine in n (tokens in the step). Resolving gives flat arrays a backend launches from."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import IngotError

BASES = ("i", "w", "a", "k", "s")  # word kind -> index into the base table
VERSION = 1


@dataclass
class Resolved:
    """One step at one n: `words` (all launches' argument words back to back) and per launch
    its kernel index, word offset, grid, block and dynamic shared bytes."""
    n: int
    words: np.ndarray   # int64
    kernel: np.ndarray  # int32 [L]
    start: np.ndarray   # int64 [L], index of the launch's first word
    grid: np.ndarray    # uint32 [L, 3]
    block: np.ndarray   # uint32 [L, 3]
    shared: np.ndarray  # uint32 [L]


class Step:
    def __init__(self, name: str, launches: list, n_kernels: int):
        self.name = name
        counts = [len(l[1]) for l in launches]
        self.start = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64) \
            if launches else np.zeros(0, np.int64)
        words = np.array([w for l in launches for w in l[1]], np.int64).reshape(-1, 3)
        self.kind, self.c0, self.c1 = words[:, 0], words[:, 1], words[:, 2]
        self.kernel = np.array([l[0] for l in launches], np.int32)
        if self.kernel.size and (self.kernel.max() >= n_kernels or self.kind.max() >= len(BASES)):
            raise IngotError(f"cuda_launches: step '{name}' refers to an unknown kernel or base")
        g = np.array([l[2] for l in launches], np.int64).reshape(-1, 3, 3)
        self.g0, self.g1, self.gdiv = g[:, :, 0], g[:, :, 1], g[:, :, 2]
        self.block = np.array([l[3] for l in launches], np.uint32).reshape(-1, 3)
        self.shared = np.array([l[4] for l in launches], np.uint32)

    def __len__(self) -> int:
        return self.kernel.size

    def resolve(self, n: int, bases: dict) -> Resolved:
        """Words = base[kind] + c0 + c1 * n; grid = ceil((c0 + c1 * n) / div)."""
        table = np.array([0 if k == "i" else int(bases[k]) for k in BASES], np.int64)
        words = table[self.kind] + self.c0 + self.c1 * n
        grid = -(-(self.g0 + self.g1 * n) // self.gdiv)
        return Resolved(n, words, self.kernel, self.start, grid.astype(np.uint32), self.block,
                        self.shared)


class LaunchPlan:
    def __init__(self, doc: dict):
        if doc.get("version") != VERSION:
            raise IngotError(f"cuda_launches version {doc.get('version')} is not {VERSION}; "
                             f"recompile the artefact")
        self.kernels = list(doc["kernels"])
        self.steps = {name: Step(name, ls, len(self.kernels))
                      for name, ls in doc["steps"].items()}

    def step(self, name: str) -> Step:
        if name not in self.steps:
            raise IngotError(f"cuda_launches has no '{name}' step")
        return self.steps[name]

    def max_shared(self) -> dict:
        """kernel name -> the most dynamic shared memory any launch of it asks for."""
        out: dict = {}
        for s in self.steps.values():
            for k, sh in zip(s.kernel, s.shared):
                out[self.kernels[k]] = max(out.get(self.kernels[k], 0), int(sh))
        return out
