"""Building libingot (runtime/capi/*.c) with the system C compiler: `ingot build-capi`."""
from __future__ import annotations

import os
import pathlib
import shlex
import shutil
import subprocess

from ..errors import IngotError

CAPI = pathlib.Path(__file__).resolve().parent / "capi"
SOURCES = ("libingot.c", "artefact.c", "plan.c", "minjson.c", "team.c", "sample.c",
           "tokenizer.c")
FLAGS = ("-std=c11", "-O2", "-fPIC", "-shared", "-pthread", "-fvisibility=hidden",
         "-DINGOT_BUILD", "-Wl,-soname,libingot.so")


def find_cc() -> str:
    """$CC, else cc / gcc / clang on PATH."""
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") \
        or shutil.which("clang")
    if not cc:
        raise IngotError("no C compiler found (set CC, or install cc/gcc/clang) to build libingot")
    return cc


def build_capi(out_dir, extra_flags=()) -> pathlib.Path:
    """Compiles libingot.so into out_dir and copies ingot.h beside it; returns the library."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lib = out / "libingot.so"
    cmd = [*shlex.split(find_cc()), *FLAGS, *extra_flags, f"-I{CAPI}",
           *(str(CAPI / s) for s in SOURCES), "-o", str(lib), "-ldl", "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise IngotError(f"building libingot failed ({shlex.join(cmd)}):\n{r.stderr.strip()}")
    shutil.copyfile(CAPI / "ingot.h", out / "ingot.h")
    return lib
