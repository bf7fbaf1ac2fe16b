"""On a real NVIDIA GPU: tiny models compiled for the GPU's architecture give the CPU artefact's
greedy tokens and logits through the driver backend (cubin or PTX, device buffers, the decode
step as a CUDA graph). Skipped where no GPU is found, as in CI; `tools/gpu_check.sh` runs it
on a lent GPU machine.

The reference and the bounds are test_cuda_families.py's (the simulator runs the same source
there): f32 weights differ from the CPU by summation order (1e-4 of max |logit|); quantized
weights may flip an 8-bit activation code on at most two steps (1e-3, else 1e-2); f16 and bf16
prefill on tensor cores rounds activations to the weights' type (4 unit roundoffs). Beyond the
simulator's cases: prompts of 150 tokens (three chunks of 64: tensor-core tiles and attention
key tiles cross their edges, the sliding window's ring wraps) and the batched decode step.
Long prompts run the float cases only: with quantized weights every token is another chance
for an activation on a rounding boundary to flip (about one token in ten here), the flips
pile up in the KV cache, and the random models amplify them (Gemma 2 Q8_0 on the simulator:
1-2 % of max |logit| on every step after 40 or 150 tokens, 0 after 20; f32: 1e-6).

INGOT_TEST_GPU=sim runs the same tests without a GPU, each launch executed by the simulator
behind a stand-in libcuda (tests/test_cuda_driver.py), to check this file itself.
"""
from __future__ import annotations

import ctypes
import os

import numpy as np
import pytest

import ingot
from ingot.runtime.artefact import Artefact
from ingot.runtime.cuda import driver as drv

from test_cuda_e2e import ATOL, DECODE, PROMPT, _greedy
from test_cuda_families import CASES, LONG, check_against_cpu

SIM = os.environ.get("INGOT_TEST_GPU") == "sim"
pytestmark = [
    pytest.mark.xdist_group("cuda_gpu"),
    pytest.mark.skipif(not SIM and drv.device_count() == 0, reason="no CUDA GPU on this host"),
]
LONG_KW = dict(max_seq_len=256, prefill_chunk=64)
SHORT_KW = dict(max_seq_len=32, prefill_chunk=4)  # test_cuda_e2e's: two chunks, one partial


def gpu_target() -> str:
    """The target whose cubin this GPU runs (the simulator's stand-in reports sm_87)."""
    from ingot.targets.cuda.target import target_for_capability
    return target_for_capability((8, 7) if SIM else drv.device_capability())


@pytest.fixture
def on_gpu(monkeypatch, tmp_path):
    """Load a CUDA artefact on the GPU (or, with INGOT_TEST_GPU=sim, on a stand-in libcuda
    whose launches the simulator runs)."""
    monkeypatch.delenv("INGOT_CUDA_SIM", raising=False)

    def load(path, **kw):
        if SIM:
            from test_cuda_driver import FakeCuda

            from ingot.targets.cuda.sim.build import build_sim
            art = Artefact(path)
            try:
                src = bytes(art.section("cuda_source")).decode()
            finally:
                art.close()
            lib = ctypes.CDLL(str(build_sim(src, tmp_path / "sim")))
            u3 = ctypes.c_uint * 3

            def execute(kernel, grid, block, shared, a, d):
                rc = lib.ingot_sim_launch(kernel.encode(), u3(*grid), u3(*block),
                                          ctypes.c_uint(shared), ctypes.c_void_p(a),
                                          ctypes.c_void_p(d))
                assert rc == 0, kernel
            fake = FakeCuda(execute=execute)
            monkeypatch.setattr(drv, "load_libcuda", lambda: fake)
        m = ingot.load(path, **kw)
        assert m.device == "cuda" and m._team.name == "gpu"
        return m
    return load


def _pair(tmp_path, family, overrides, opts, kw):
    from tiny_models import build_model, save_model
    folder = save_model(build_model(family, **overrides), tmp_path / "src")
    kw = dict(kw, **opts)
    host = ingot.compile(folder, tmp_path / "host.ingot", **kw)
    gpu = ingot.compile(folder, tmp_path / "gpu.ingot", target=gpu_target(), cpu_target="none",
                        **kw)
    return host, gpu


GPU_CASES = dict(CASES, **{"llama-f32": ("llama", {}, {}),
                           "gemma2-f32": ("gemma2", CASES["gemma2-q4k"][1], {})})


# Long prompts for float weights only (the docstring says why); under INGOT_TEST_GPU=sim for
# two of them, which check this file's long path in a minute each.
RUNS = [(c, "short") for c in sorted(GPU_CASES)] + [
    (c, "long") for c in sorted(GPU_CASES) if not GPU_CASES[c][2].get("isq")
    and (not SIM or c in ("gemma2-f32", "llama-f16"))]


@pytest.mark.parametrize("case,prompt", RUNS)
def test_family_on_the_gpu_matches_cpu(case, prompt, tmp_path, on_gpu):
    family, overrides, opts = GPU_CASES[case]
    tokens = PROMPT if prompt == "short" else LONG
    host, gpu = _pair(tmp_path, family, overrides, opts, SHORT_KW if prompt == "short" else
                      LONG_KW)
    with ingot.load(host, threads=1) as m:
        cpu = _greedy(m, DECODE, tokens)
    with on_gpu(gpu) as m:
        got = _greedy(m, DECODE, tokens)
    check_against_cpu(opts, cpu, got)


def test_batched_decode_on_the_gpu_matches_cpu(tmp_path, on_gpu):
    """Four sequences of different lengths in shuffled slots, decoded together, shrinking to
    two rows: each GPU row within 1e-4 of the CPU artefact's batch row (both f32)."""
    from tiny_models import build_model, save_model
    folder = save_model(build_model("llama"), tmp_path / "src")
    kw = dict(max_seq_len=64, prefill_chunk=8, max_batch=4)
    host = ingot.compile(folder, tmp_path / "host.ingot", **kw)
    gpu = ingot.compile(folder, tmp_path / "gpu.ingot", target=gpu_target(), **kw)
    prompts = [LONG[:n] for n in (3, 17, 9, 30)]
    slots = [2, 0, 3, 1]

    def run(m):
        rows, toks, pos = [], [], []
        for p, s in zip(prompts, slots):
            toks.append(int(m.prefill_at(s, 0, p).argmax()))
            pos.append(len(p))
        for step in range(12):
            live = 4 - step // 5  # 4 rows, then 3, then 2
            out = m.decode_batch(toks[:live], pos[:live], slots[:live]).copy()
            rows.append(out)
            toks = [int(r.argmax()) for r in out] + toks[live:]
            pos = [q + 1 for q in pos[:live]] + pos[live:]
        return rows
    with ingot.load(host, threads=1) as m:
        want = run(m)
    with on_gpu(gpu) as m:
        got = run(m)
    for w, g in zip(want, got):
        scale = max(1.0, float(np.abs(w).max()))
        assert np.abs(g - w).max() <= ATOL[None] * scale
