"""Kernel helpers inlined by LLVM instead of by numba.

numba's `inline="always"` copies a helper's numba IR into every caller with deep copies, which
took about half of a compile's time (Gemma 3 270M: 146 s -> 77 s on a 2-core VM without it). A
helper declared here is compiled once per signature as an ordinary function, and the step module
marks it `alwaysinline`, so LLVM inlines it into every caller before it optimises: the kernels
keep their shape (constants propagate, loops unroll and vectorise as before) for less compile
time. Helpers must not return their own stack memory (none calls stack_f32/stack_addr).

AArch64 builds keep numba's inlining: there, with the k-quant half-block helpers inlined by
LLVM, Q6_K matrices computed wrong values under qemu (x86-64 builds give the same logits either
way; the cause was not found), so code for AArch64 is generated exactly as before.
"""
from __future__ import annotations

from numba import njit

from .host import codegen_arch

HELPERS: list = []


def helper(**options):
    """`njit(**options)`, recorded as a helper to inline."""
    def wrap(fn):
        if codegen_arch() == "aarch64":
            return njit(inline="always", **options)(fn)
        dispatcher = njit(**options)(fn)
        HELPERS.append(dispatcher)
        return dispatcher
    return wrap


def helper_symbols() -> set:
    """The LLVM names of every helper specialisation compiled so far in this process."""
    return {cres.fndesc.mangled_name for d in HELPERS for cres in d.overloads.values()}


def mark_inline(module) -> int:
    """Mark the helpers defined in `module` alwaysinline; returns how many."""
    names = helper_symbols()
    count = 0
    for f in module.functions:
        if not f.is_declaration and f.name in names:
            f.add_function_attribute("alwaysinline")
            count += 1
    return count
