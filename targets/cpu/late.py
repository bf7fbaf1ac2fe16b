"""Target instructions that numba's own JIT cannot compile, bound when the library is built.

numba turns every kernel into machine code for the build host as it compiles it, so a kernel
for another architecture cannot contain that architecture's intrinsics or assembly. It calls a
declared function instead (`call`); numba's JIT resolves the name to a stand-in address that is
never called, and build.py links in the real definitions (`link_into`) before optimising for
the target, where they inline away (alwaysinline).
"""
from __future__ import annotations

import ctypes
import functools

import llvmlite.binding as llvm
from numba.core import cgutils

# name -> (IR declarations the body needs, the function's definition)
_DEFS = {
    # AArch64 dotprod: acc + per i32 lane, four signed byte products (lane m: bytes 4m..4m+3)
    "ingot_a64_sdot": (
        "declare <4 x i32> @llvm.aarch64.neon.sdot.v4i32.v16i8(<4 x i32>, <16 x i8>, <16 x i8>)",
        "define <4 x i32> @ingot_a64_sdot(<4 x i32> %a, <16 x i8> %b, <16 x i8> %c) "
        "alwaysinline {\n  %r = call <4 x i32> @llvm.aarch64.neon.sdot.v4i32.v16i8("
        "<4 x i32> %a, <16 x i8> %b, <16 x i8> %c)\n  ret <4 x i32> %r\n}"),
    # AArch64's generic timer count (user-readable, unlike the PMU cycle counter)
    "ingot_a64_cntvct": (
        "",
        "define i64 @ingot_a64_cntvct() alwaysinline {\n"
        '  %r = call i64 asm sideeffect "mrs $0, cntvct_el0", "=r"()\n  ret i64 %r\n}'),
}


@functools.lru_cache(maxsize=None)
def _stand_in(name: str) -> None:
    # Any valid code address: numba's JIT needs the symbol resolved, nothing ever calls it.
    llvm.add_symbol(name, ctypes.cast(ctypes.CDLL(None).abort, ctypes.c_void_p).value)


def call(builder, name: str, fnty, args):
    _stand_in(name)
    return builder.call(cgutils.get_or_insert_function(builder.module, fnty, name), args)


def link_into(module) -> None:
    """Define, in `module`, each late function it declares."""
    used = [n for n in _DEFS if any(f.name == n and f.is_declaration for f in module.functions)]
    if used:
        text = "\n".join([f'target triple = "{module.triple}"',
                          f'target datalayout = "{module.data_layout}"',
                          *(_DEFS[n][0] for n in used), *(_DEFS[n][1] for n in used)])
        module.link_in(llvm.parse_assembly(text + "\n"))
