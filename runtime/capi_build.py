"""Building libingot (runtime/capi/*.c) with the system C compiler, or a cross compiler for
another machine (`ingot build-capi --target`); the CPU target links its code with the same."""
from __future__ import annotations

import functools
import os
import pathlib
import platform
import shlex
import shutil
import subprocess
import tempfile

from ..errors import IngotError

CAPI = pathlib.Path(__file__).resolve().parent / "capi"
SOURCES = ("libingot.c", "artefact.c", "plan.c", "minjson.c", "team.c", "sample.c",
           "tokenizer.c", "chat.c", "offload.c", "hugepages.c")
FLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden",
         "-DINGOT_BUILD", "-Wl,-soname,libingot.so")


# Cross compilers by the machine they build for: the command and Debian's packages for it.
CROSS = {"aarch64": ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu libc6-dev-arm64-cross"),
         "x86_64": ("x86_64-linux-gnu-gcc", "gcc-x86-64-linux-gnu libc6-dev-amd64-cross")}


def find_cc(machine=None, purpose="to build libingot") -> str:
    """The C compiler for `machine` (None: this host's): $CC, else cc / gcc / clang on PATH;
    for another machine $INGOT_CC_<MACHINE>, else its Debian cross compiler, checked once."""
    if machine in (None, platform.machine()):
        cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") \
            or shutil.which("clang")
        if not cc:
            raise IngotError(f"no C compiler found {purpose} (set CC, or install cc/gcc/clang)")
        return cc
    cmd, packages = CROSS.get(machine, (f"{machine}-linux-gnu-gcc", f"a {machine} cross gcc"))
    var = f"INGOT_CC_{machine.upper()}"
    cc = os.environ.get(var) or cmd
    hint = f"install it (Debian/Ubuntu: apt-get install {packages}) or set {var}"
    if not shutil.which(shlex.split(cc)[0]):
        raise IngotError(f"no {machine} cross compiler ({cc}) found {purpose}: {hint}")
    why = _probe(cc)
    if why:
        raise IngotError(f"the {machine} cross compiler {cc} cannot link a program ({why}): "
                         f"{hint}")
    return cc


@functools.lru_cache(maxsize=None)
def _probe(cc: str):
    """None when `cc` compiles and links a C program against libm, else its last error line."""
    with tempfile.TemporaryDirectory() as d:
        src = pathlib.Path(d) / "probe.c"
        src.write_text("#include <math.h>\n#include <stdio.h>\n"
                       "int main(void) { printf(\"%f\", sqrt(2.0)); return 0; }\n")
        r = subprocess.run([*shlex.split(cc), str(src), "-o", str(src.with_suffix("")), "-lm"],
                           capture_output=True, text=True)
    return None if r.returncode == 0 else (r.stderr.strip().splitlines() or ["failed"])[-1]


def build_capi(out_dir, extra_flags=(), machine=None) -> pathlib.Path:
    """Compiles libingot.so for `machine` (None: this host) into out_dir and copies ingot.h
    beside it; returns the library."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "libingot.so"
    cmd = [*shlex.split(find_cc(machine)), *FLAGS, *extra_flags, f"-I{CAPI}",
           *(str(CAPI / s) for s in SOURCES), "-o", str(lib), "-ldl", "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise IngotError(f"building libingot failed ({shlex.join(cmd)}):\n{r.stderr.strip()}")
    shutil.copyfile(CAPI / "ingot.h", out / "ingot.h")
    return lib
