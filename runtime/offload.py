"""Which weight units stay resident under a memory budget (`--max-memory`).

Memory the runtime holds: the arena and per-thread scratch, the KV caches of every sequence
slot, the weights outside units (shared tables), the resident units, and — when any unit is
streamed — the largest streamed unit while a step reads it (the step drops a streamed unit's
pages once every thread is past it). Units are kept resident largest first: a streamed byte
costs the same wherever it sits, so this streams the fewest bytes per token.
"""
from __future__ import annotations

from ..errors import IngotError


def fixed_bytes(plan: dict, threads: int) -> int:
    units = sum(u["bytes"] for u in plan.get("units", []))
    return (plan["arena_bytes"] + threads * plan["scratch_bytes_per_thread"]
            + plan["state_bytes"] * int(plan.get("max_batch", 1))
            + plan["weights_bytes"] - units)


def plan_residency(plan: dict, threads: int, budget: int | None, path="artefact") -> list:
    """A resident flag per unit (plan["units"] order)."""
    units = plan.get("units", [])
    if budget is None:
        return [True] * len(units)
    fixed = fixed_bytes(plan, threads)
    everything = fixed + sum(u["bytes"] for u in units)
    if everything <= budget:
        return [True] * len(units)
    smallest = fixed + max((u["bytes"] for u in units), default=0)
    if not units or budget < smallest:
        raise IngotError(f"{path}: --max-memory {budget / 2**20:.1f} MiB cannot hold the "
                         f"arena, caches and shared weights ({fixed / 2**20:.1f} MiB) plus one "
                         f"streamed unit; the smallest budget that works is "
                         f"{smallest / 2**20:.1f} MiB (all resident: "
                         f"{everything / 2**20:.1f} MiB)")
    resident = [False] * len(units)
    order = sorted(range(len(units)), key=lambda i: -units[i]["bytes"])
    used = fixed
    for i in order:
        streamed = [units[j]["bytes"] for j in range(len(units)) if not resident[j] and j != i]
        if streamed and used + units[i]["bytes"] + max(streamed) <= budget:
            resident[i] = True
            used += units[i]["bytes"]
    return resident
