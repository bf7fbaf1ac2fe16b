"""From step sources to a shared library: numba -> LLVM IR -> C-ABI wrappers -> object -> .so.

numba compiles each step function with its kernels into one LLVM module. We keep only its
native entry (numba's calling convention), wrap it as `int64 ingot_<name>(int64 x9)`, make
everything else internal (so numba's Python wrappers and symbol names drop out and the library
is deterministic), optimise for the target's triple, CPU and features, and link with the system
C compiler (a cross compiler when the target is another machine).
"""
from __future__ import annotations

import os
import shlex
import subprocess
import tempfile

import llvmlite.binding as llvm
from numba import types

from ...errors import IngotError
from . import late
from .host import CpuTarget, codegen_target
from .inlining import mark_inline
from .step_source import STEP_ARGS, kernel_globals

_ARGS = (types.int64,) * len(STEP_ARGS)


def _compile_part(pyfunc):
    """Type and lower one step part to LLVM IR without numba's own JIT finalisation (no machine
    code per part: the whole step is optimised and emitted once, below). Returns numba's code
    library, unfinalised, and the part's native symbol."""
    from numba.core import compiler
    from numba.core.compiler_lock import global_compiler_lock
    from numba.core.registry import cpu_target
    flags = compiler.Flags()
    flags.no_compile = True
    flags.no_cpython_wrapper = True
    flags.no_cfunc_wrapper = True
    flags.nrt = False
    flags.error_model = "numpy"
    with global_compiler_lock:
        tgctx = cpu_target.target_context
        tgctx.refresh()
        library = tgctx.codegen().create_library(pyfunc.__name__)
        cres = compiler.compile_extra(cpu_target.typing_context, tgctx, pyfunc, args=_ARGS,
                                      return_type=types.int64, flags=flags, locals={},
                                      library=library)
    return library, cres.fndesc.mangled_name


def _step_module(source: str, name: str, export: str):
    """One LLVM module for a step: its parts, the kernels they call (each linked once), and a
    C-ABI entry `int64 export(int64 x9)` that calls the parts in order."""
    glb = kernel_globals()
    exec(compile(source, f"<ingot:{name}>", "exec"), glb)  # noqa: S102 - our own rendered code
    parts = sorted((k for k in glb if k.startswith(f"{name}_part")),
                   key=lambda k: int(k.rsplit("part", 1)[1]))
    module, symbols, seen = None, [], set()
    for part in parts:
        library, symbol = _compile_part(glb[part])
        symbols.append(symbol)
        mods = [llvm.parse_assembly(str(library._final_module))]
        # each kernel's IR as numba optimised it, before its JIT (inlining.keep_ir_before_codegen)
        for lib in library._linking_libraries:
            if id(lib) not in seen:
                seen.add(id(lib))
                mods.append(lib._get_module_for_linking())
        for m in mods:
            if module is None:
                module = m
            else:
                module.link_in(m, preserve=True)
    module.link_in(llvm.parse_assembly(_entry(export, symbols, module.triple,
                                              module.data_layout)))
    mark_inline(module)
    return module


def _entry(export: str, parts: list, triple: str, layout: str) -> str:
    """`int64 export(args)`: numba's calling convention (status, return slot, exception slot)
    for each part, in order; kernels raise nothing (numpy error model), so statuses are unused."""
    n = len(STEP_ARGS)
    params = ", ".join(f"i64 %a{i}" for i in range(n))
    argtypes = ", ".join(["i64"] * n)
    lines = [f'target triple = "{triple}"', f'target datalayout = "{layout}"']
    lines += [f'declare i32 @"{p}"(ptr, ptr, {argtypes})' for p in parts]
    lines += [f"define i64 @{export}({params}) {{", "  %r = alloca i64", "  %e = alloca ptr"]
    lines += [f'  %s{k} = call i32 @"{p}"(ptr %r, ptr %e, {params})'
              for k, p in enumerate(parts)]
    lines += ["  ret i64 0", "}"]
    return "\n".join(lines) + "\n"


def build_library(sources: dict, target: CpuTarget, workdir=None) -> bytes:
    """`sources`: export name -> step source defining a function of that name. Returns the bytes
    of a shared library exporting `ingot_<name>` for each. A named target (not "host") builds in
    a fresh process (cross.py): numba compiles and caches kernels per process, with the
    instructions of the target that process generates code for."""
    from ...runtime.capi_build import find_cc
    from .. import build_cache
    cc = find_cc(target.machine, purpose="to link the native code")  # fail before a long compile
    return build_cache.cached("cpu-library", lambda: build_uncached(sources, target, workdir),
                              sources=sources, target=target.describe(),
                              features=target.features, cc=cc)


def build_uncached(sources: dict, target: CpuTarget, workdir=None) -> bytes:
    """build_library without the build cache (the cache and cross builds call this)."""
    if target.name != codegen_target().name:
        from .cross import build_in_subprocess
        return build_in_subprocess(sources, target, workdir)
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    tm = llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")
    module = None
    exports = []
    for name, src in sources.items():
        export = f"ingot_{name}"
        mod = _step_module(src, name, export)
        exports.append(export)
        if module is None:
            module = mod
        else:
            _internalize(mod, exports)  # keep duplicated kernel symbols from clashing
            module.link_in(mod)
    late.link_into(module)
    _internalize(module, exports)
    # numba lowers for the host triple; its IR carries no CPU attributes, so the target's
    # triple and data layout (the same sizes and alignments for our types) are all that change.
    module.triple = target.triple
    module.data_layout = str(tm.target_data)
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(module, pb)
    module.verify()
    obj = tm.emit_object(module)
    return _link(obj, target, workdir)


def _internalize(mod, exports) -> None:
    for f in mod.functions:
        if not f.is_declaration and f.name not in exports:
            f.linkage = llvm.Linkage.internal
    for g in mod.global_variables:
        if not g.is_declaration:
            g.linkage = llvm.Linkage.internal


def _link(obj: bytes, target: CpuTarget, workdir=None) -> bytes:
    from ...runtime.capi_build import find_cc
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        o, so = os.path.join(d, "step.o"), os.path.join(d, "step.so")
        with open(o, "wb") as f:
            f.write(obj)
        # No build id and stripped symbols: the same object links to the same bytes.
        cmd = [*shlex.split(find_cc(target.machine, purpose="to link the native code")),
               "-shared", "-o", so, o, "-lm", "-Wl,--build-id=none", "-s"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise IngotError(f"linking native code failed: {r.stderr.strip().splitlines()[-1]}")
        with open(so, "rb") as f:
            return f.read()
