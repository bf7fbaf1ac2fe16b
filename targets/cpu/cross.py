"""Building a named target's library in a fresh process.

numba compiles each kernel once per process, with the instructions of the target that process
generates code for (host.codegen_target, from $INGOT_CODEGEN_TARGET), so a build for another
target's features runs here as `python -m ingot.targets.cpu.cross IN OUT`: IN holds the target
name and the step sources (JSON), OUT receives the library. numba's own optimiser runs for a
CPU of the same family with the target's features (x86-64), or x86-64-v3 when the target is another
architecture (numba's JIT needs F16C to compile half conversions without a runtime library).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

from ...errors import IngotError
from .host import CODEGEN_ENV, named_target


def build_in_subprocess(sources: dict, target, workdir=None) -> bytes:
    env = dict(os.environ, **{CODEGEN_ENV: target.name})
    if target.arch == "x86_64":
        env.update(NUMBA_CPU_NAME=target.cpu, NUMBA_CPU_FEATURES=target.features)
    else:  # numba's machine code is never run: F16C only keeps half conversions inline
        env.update(NUMBA_CPU_NAME="x86-64-v3")
        env.pop("NUMBA_CPU_FEATURES", None)
    with tempfile.TemporaryDirectory(dir=workdir) as d:
        src, out = os.path.join(d, "sources.json"), os.path.join(d, "step.so")
        with open(src, "w") as f:
            json.dump({"target": target.name, "sources": sources, "workdir": d}, f)
        r = subprocess.run([sys.executable, "-m", __name__, src, out], env=env,
                           capture_output=True, text=True)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise IngotError(last if r.returncode == 2 else
                             f"building native code for target '{target.name}' failed: {last}")
        with open(out, "rb") as f:
            return f.read()


def main(argv) -> int:
    from .build import build_uncached
    src, out = argv
    with open(src) as f:
        job = json.load(f)
    try:
        code = build_uncached(job["sources"], named_target(job["target"]), job["workdir"])
    except IngotError as e:
        print(" ".join(str(e).split()), file=sys.stderr)
        return 2
    with open(out, "wb") as f:
        f.write(code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
