"""Time each fused dequantize-and-multiply kernel's decode path (one token, one thread) on a
2048 x 2048 weight, and print GB/s of weight bytes read; f32/f16 float kernels for comparison.

Each kernel runs as artefacts run it: called from a step function with n = 1 and constant
shapes, built by the CPU target's numba -> LLVM -> shared-library path.

    python tools/bench_quant_kernels.py [--size 2048] [--seconds 0.5] [--types q4_0,q6_k]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from ingot.runtime.native import entry, load_library
from ingot.targets.cpu.build import build_library
from ingot.targets.cpu.host import host_target
from ingot.targets.cpu.quant_kernels import BLOCK_TYPES, QUANT_LINEAR

# Scale fields (byte offset, "f16" | "f32" | "e8m0") per block: random bytes elsewhere are valid
# quants, but random scales could be NaN, inf or subnormal and distort the timing.
SCALES = {"q4_0": [(0, "f16")], "q4_1": [(0, "f16"), (2, "f16")], "q5_0": [(0, "f16")],
          "q5_1": [(0, "f16"), (2, "f16")], "q8_0": [(0, "f16")],
          "q8_1": [(0, "f16"), (2, "f16")], "q2_k": [(80, "f16"), (82, "f16")],
          "q3_k": [(108, "f16")], "q4_k": [(0, "f16"), (2, "f16")],
          "q5_k": [(0, "f16"), (2, "f16")], "q6_k": [(208, "f16")], "q8_k": [(0, "f32")],
          "iq4_nl": [(0, "f16")], "mxfp4": [(0, "e8m0")]}


def random_weight(name, N, K, rng):
    _, bs, bb = BLOCK_TYPES[name]
    blocks = rng.integers(0, 256, (N * K // bs, bb), dtype=np.uint8)
    for off, kind in SCALES[name]:
        if kind == "e8m0":
            blocks[:, off] = rng.integers(120, 127, len(blocks))
            continue
        v = rng.uniform(0.01, 0.1, len(blocks)).astype(np.float16 if kind == "f16" else np.float32)
        blocks[:, off:off + v.itemsize] = v.view(np.uint8).reshape(len(blocks), -1)
    return blocks.reshape(N, -1)


def step_source(name, N, K):
    """A step that is one call of the kernel: x at ab, y after it, W at wb."""
    return (f"def {name}(wb, ab, kb, sb, n, pos, tid, nth, sync):\n    n = 1\n"
            f"    LINEAR_{name}(ab, {K}, n, {K}, wb, {N}, 0, ab + {4 * K}, sb, tid, nth)\n"
            f"    return 0\n")


def time_step(fn, w, N, K, seconds, rng):
    arena = np.zeros(K + N, np.float32)
    arena[:K] = rng.standard_normal(K)
    scratch = np.empty(max(K, 256), np.float32)
    args = (w.ctypes.data, arena.ctypes.data, 0, scratch.ctypes.data, 1, 0, 0, 1, 0)
    fn(*args)
    reps, best = 1, float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        for _ in range(reps):
            fn(*args)
        best = min(best, (time.perf_counter() - t0) / reps)
        reps = min(reps * 2, 64)
    return best


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="N = K (a multiple of 256)")
    p.add_argument("--seconds", type=float, default=0.5, help="timing budget per kernel")
    p.add_argument("--types", default="f32,f16," + ",".join(QUANT_LINEAR),
                   help="comma-separated storage types")
    args = p.parse_args(argv)
    N = K = args.size
    names = args.types.split(",")
    lib = load_library(build_library({nm: step_source(nm, N, K) for nm in names}, host_target()))
    rng = np.random.default_rng(0)
    rows = []
    for name in names:
        if name in QUANT_LINEAR:
            w = random_weight(name, N, K, rng)
        else:
            w = rng.standard_normal((N, K)).astype({"f32": np.float32, "f16": np.float16}[name])
        t = time_step(entry(lib, f"ingot_{name}"), w, N, K, args.seconds, rng)
        rows.append((name, w.nbytes, t))
    print(f"n == 1, one thread, W {N} x {K}, {host_target().cpu}")
    print(f"{'type':8} {'bits/w':>7} {'MiB':>7} {'us':>9} {'GB/s':>7} {'Gw/s':>7}")
    for name, nbytes, t in rows:
        print(f"{name:8} {8 * nbytes / (N * K):7.3f} {nbytes / 2**20:7.2f} {t * 1e6:9.1f} "
              f"{nbytes / t / 1e9:7.2f} {N * K / t / 1e9:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
