"""Checks that a graph rewrite preserved the model's outputs, on the numpy interpreter."""
from __future__ import annotations

import numpy as np

from ..errors import IngotError
from .reference import Interpreter
from .weights import weight_stored


def outputs_match(before, after, name: str, *, vocab: int, steps: int = 3, seed: int = 0,
                  rtol: float = 1e-4) -> None:
    """Prefill of 5 random tokens plus `steps` decode steps through both graphs: the logits must
    agree within `rtol` of their scale (both run in float64 numpy, so only summation order
    differs between them)."""
    cache: dict = {}

    def wd(w):
        if id(w) not in cache:
            cache[id(w)] = weight_stored(w)
        return cache[id(w)]

    rng = np.random.default_rng(seed)
    a, b = Interpreter(before, wd), Interpreter(after, wd)
    toks = rng.integers(0, vocab, 5)
    pos = 0
    for step in range(steps + 1):
        la, lb = a.run(toks, pos)["logits"], b.run(toks, pos)["logits"]
        err = np.abs(la - lb).max() / max(np.abs(la).max(), 1e-30)
        if not err <= rtol:
            raise IngotError(f"pass {name} changed the outputs (relative error {err:.2e})")
        pos += len(toks)
        toks = rng.integers(0, vocab, 1)
