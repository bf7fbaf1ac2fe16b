"""Kernel helpers inlined by LLVM instead of by numba.

numba's `inline="always"` copies a helper's numba IR into every caller with deep copies, which
took about half of a compile's time (Gemma 3 270M: 146 s -> 77 s on a 2-core VM without it). A
helper declared here is compiled once per signature as an ordinary function, and the step module
marks it `alwaysinline`, so LLVM inlines it into every caller before it optimises: the kernels
keep their shape (constants propagate, loops unroll and vectorise as before) for less compile
time. Helpers must not return their own stack memory (none calls stack_f32/stack_addr).

The IR linked into a step must be numba's optimised IR, not what numba's JIT leaves of it:
MCJIT generates machine code from a library's module in place, and its IR-level code generation
passes (CodeGenPrepare, loop strength reduction) rewrite addresses for the JIT's CPU. Our
addresses are integers, so CodeGenPrepare may pick any term of a sum as the base pointer:
`inttoptr(w + 210 * i)` became `gep(inttoptr(210 * i), w)` in half_q6_k. Machine code does not
care, but once LLVM inlines that with i = 0 the base is null, loads through it are undefined, and
the optimiser deleted a Q6_K matrix's tile path (wrong prefill on AArch64 builds; x86-64's JIT
happened to pick other bases). `keep_ir_before_codegen` makes every numba library keep its IR
from before machine code generation for linking.
"""
from __future__ import annotations

from numba import njit
from numba.core.codegen import CPUCodeLibrary

HELPERS: list = []


def keep_ir_before_codegen() -> None:
    """Patch numba's library finalisation (once per process) so that a finalised library's
    `_final_module`, which build.py and numba link into callers, is a copy taken before the JIT
    compiles the module to machine code (the JIT keeps the module it compiled)."""
    finalize = CPUCodeLibrary._finalize_final_module
    if getattr(finalize, "ingot_keeps_ir", False):
        return

    def _finalize_final_module(self):
        ir = self._final_module.clone()
        finalize(self)
        self._final_module = ir

    _finalize_final_module.ingot_keeps_ir = True
    CPUCodeLibrary._finalize_final_module = _finalize_final_module


keep_ir_before_codegen()  # before any kernel or helper is compiled


def helper(**options):
    """`njit(**options)`, recorded as a helper to inline."""
    def wrap(fn):
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
