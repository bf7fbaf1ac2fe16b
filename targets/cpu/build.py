"""From step sources to a shared library: numba -> LLVM IR -> C-ABI wrappers -> object -> .so.

numba compiles each step function with its kernels into one LLVM module. We keep only its
native entry (numba's calling convention), wrap it as `int64 ingot_<name>(int64 x9)`, make
everything else internal (so numba's Python wrappers and symbol names drop out and the library
is deterministic), optimise, and link with the system C compiler.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

import llvmlite.binding as llvm
from numba import njit, types

from ...errors import IngotError
from .host import CpuTarget
from .step_source import STEP_ARGS, kernel_globals

_SIG = types.int64(*([types.int64] * len(STEP_ARGS)))


def _numba_entry(source: str, name: str):
    glb = kernel_globals()
    exec(compile(source, f"<ingot:{name}>", "exec"), glb)  # noqa: S102 - our own rendered code
    for part in [k for k in glb if k.startswith(f"{name}_part")]:
        glb[part] = njit(error_model="numpy", _nrt=False, no_cpython_wrapper=True)(glb[part])
    disp = njit(_SIG, error_model="numpy", _nrt=False, no_cpython_wrapper=True,
                no_cfunc_wrapper=True)(glb[name])
    cres = disp.overloads[disp.signatures[0]]
    return cres.library.get_llvm_str(), cres.fndesc.mangled_name


def _wrapper(export: str, inner: str, triple: str, layout: str) -> str:
    n = len(STEP_ARGS)
    params = ", ".join(f"i64 %a{i}" for i in range(n))
    args = ", ".join(f"i64 %a{i}" for i in range(n))
    return (f'target triple = "{triple}"\ntarget datalayout = "{layout}"\n'
            f'declare i32 @"{inner}"(ptr, ptr, {", ".join(["i64"] * n)})\n'
            f"define i64 @{export}({params}) {{\n"
            f"  %r = alloca i64\n  %e = alloca ptr\n"
            f'  %s = call i32 @"{inner}"(ptr %r, ptr %e, {args})\n'
            f"  %x = sext i32 %s to i64\n  ret i64 %x\n}}\n")


def build_library(sources: dict, target: CpuTarget, workdir=None) -> bytes:
    """`sources`: export name -> step source defining a function of that name. Returns the bytes
    of a shared library exporting `ingot_<name>` for each."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    tm = llvm.Target.from_triple(target.triple).create_target_machine(
        cpu=target.cpu, features=target.features, opt=3, reloc="pic", codemodel="default")
    module = None
    exports = []
    for name, src in sources.items():
        ir_text, inner = _numba_entry(src, name)
        mod = llvm.parse_assembly(ir_text)
        export = f"ingot_{name}"
        mod.link_in(llvm.parse_assembly(_wrapper(export, inner, mod.triple, mod.data_layout)))
        exports.append(export)
        if module is None:
            module = mod
        else:
            _internalize(mod, exports)  # keep duplicated kernel symbols from clashing
            module.link_in(mod)
    _internalize(module, exports)
    module.triple = target.triple
    pb = llvm.create_pass_builder(tm, llvm.create_pipeline_tuning_options(speed_level=3))
    pb.getModulePassManager().run(module, pb)
    module.verify()
    obj = tm.emit_object(module)
    return _link(obj, workdir)


def _internalize(mod, exports) -> None:
    for f in mod.functions:
        if not f.is_declaration and f.name not in exports:
            f.linkage = llvm.Linkage.internal
    for g in mod.global_variables:
        if not g.is_declaration:
            g.linkage = llvm.Linkage.internal


def find_cc() -> str:
    for cc in (os.environ.get("CC"), "cc", "gcc", "clang"):
        if cc and shutil.which(cc):
            return cc
    raise IngotError("no C compiler/linker found to link the native code (install gcc, or set CC)")


def _link(obj: bytes, workdir=None) -> bytes:
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        o, so = os.path.join(d, "step.o"), os.path.join(d, "step.so")
        with open(o, "wb") as f:
            f.write(obj)
        # No build id and stripped symbols: the same object links to the same bytes.
        cmd = [find_cc(), "-shared", "-o", so, o, "-lm", "-Wl,--build-id=none", "-s"]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise IngotError(f"linking native code failed: {r.stderr.strip().splitlines()[-1]}")
        with open(so, "rb") as f:
            return f.read()
