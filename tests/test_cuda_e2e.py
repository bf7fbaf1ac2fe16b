"""A tiny Llama compiled for cuda-sm87 and run off-GPU: the artefact's own kernel source built
with the thread shim (the simulator), against the same model compiled for this CPU.

Covers the compile path (launch lists, nvcc PTX and cubin, sections), the runtime launcher
(words resolved per n, multi-chunk prefill, decode) and the GPU backend's logic (run on a
stand-in libcuda whose launches the simulator executes). No GPU is involved anywhere.
"""
from __future__ import annotations

import numpy as np
import pytest

import ingot
from ingot.errors import IngotError
from ingot.runtime.artefact import Artefact

pytestmark = pytest.mark.xdist_group("cuda")

PROMPT = [1, 17, 42, 99, 123, 7, 250]  # two prefill chunks of CHUNK, the second partial
CHUNK, MAX_SEQ = 4, 32
DECODE = 16  # greedy steps after the prompt
# Logits, relative to max |logit| (~4 here): the CPU and CUDA kernels sum in different orders
# (SIMD lanes vs warp shuffles and tiles), so they differ by rounding: 7e-6 absolute measured
# for f32 and for q8_0. f32 allows 1e-4. q8_0 allows 1e-3: both quantize activations to 8 bits
# alike, but an activation that sits on a rounding boundary may take the neighbouring code on
# one side, which moves a logit by about one quantization step of that row (~1e-3 relative).
ATOL = {None: 1e-4, "q8_0": 1e-3}


_BUILT: dict = {}  # one build per session, shared with test_cuda_map and test_cuda_stream


def build_pair(model_dirs, tmp_path_factory, isq=None):
    """(CPU artefact, cuda-sm87 artefact, simulator library) for `isq`, built once a session.
    The f32 CUDA artefact carries host CPU code (--cpu-target host) for the device-map tests;
    the q8_0 one none."""
    from ingot.targets.cuda.sim.build import build_sim
    if isq not in _BUILT:
        folder, _ = model_dirs("llama")
        out = tmp_path_factory.mktemp("cuda")
        tag = isq or "f32"
        kw = dict(max_seq_len=MAX_SEQ, prefill_chunk=CHUNK, isq=isq)
        host = ingot.compile(folder, out / f"host-{tag}.ingot", **kw)
        gpu = ingot.compile(folder, out / f"sm87-{tag}.ingot", target="cuda-sm87",
                            cpu_target="host" if isq is None else "none", **kw)
        art = Artefact(gpu)
        try:
            sim = build_sim(bytes(art.section("cuda_source")).decode(), out / "sim")
        finally:
            art.close()
        _BUILT[isq] = host, gpu, sim
    return _BUILT[isq]


@pytest.fixture(scope="session")
def cuda_pair(model_dirs, tmp_path_factory):
    """isq -> (CPU artefact, cuda-sm87 artefact, simulator library)."""
    return lambda isq=None: build_pair(model_dirs, tmp_path_factory, isq)


def _greedy(model, steps: int, prompt=PROMPT):
    """Prefill logits, then `steps` greedy tokens and the logits after each."""
    logits = [model.prefill(prompt)]
    tokens = []
    for _ in range(steps):
        tokens.append(int(logits[-1].argmax()))
        logits.append(model.decode(tokens[-1]))
    return tokens, np.stack(logits)


def _compare(cpu, gpu, atol):
    (t_cpu, l_cpu), (t_gpu, l_gpu) = cpu, gpu
    assert t_gpu == t_cpu
    scale = max(1.0, float(np.abs(l_cpu).max()))
    err = float(np.abs(l_gpu - l_cpu).max())
    print(f"max |logit difference| {err:.3g} of max |logit| {scale:.3g}")
    assert err <= atol * scale, f"logits differ by {err} (allowed {atol * scale})"


@pytest.mark.parametrize("isq", [None, "q8_0"])
def test_sim_matches_cpu(cuda_pair, monkeypatch, isq):
    host, gpu, sim = cuda_pair(isq)
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))
    with ingot.load(host, threads=1) as m:
        cpu = _greedy(m, DECODE)
    with ingot.load(gpu) as m:
        assert m.device == "cuda" and m._team.name == "sim"
        _compare(cpu, _greedy(m, DECODE), ATOL[isq])


def test_artefact_carries_ptx_cubin_source_and_launches(cuda_pair):
    _, gpu, _ = cuda_pair()
    art = Artefact(gpu)
    try:
        assert art.header["target"]["name"] == "cuda-sm87"
        assert art.header["target"]["arch"] == "sm_87"
        plan, launches = art.json("plan"), art.json("cuda_launches")
        assert art.has("code")  # the per-segment host code device maps use
        n_seg = plan["n_layers"] + 1  # layers, then the tail
        assert len(plan["cpu_entry_points"]["decode"]) == n_seg
        assert len(plan["segments"]["bounds"]) == n_seg + 1
        assert {len(v) for v in launches["launch_nodes"].values()} == \
            set(plan["cuda_launch_counts"].values())
        ptx = bytes(art.section("cuda_ptx")).decode()
        assert ".target sm_87" in ptx
        for k in launches["kernels"]:
            assert f".entry {k}(" in ptx
        assert bytes(art.section("cuda_cubin"))[:4] == b"\x7fELF"
        assert all(f"void {k}(" in bytes(art.section("cuda_source")).decode()
                   for k in launches["kernels"])
        assert plan["device"] == "cuda" and plan["cuda_arch"] == "sm_87"
        assert {len(v) for v in launches["steps"].values()} == \
            set(plan["cuda_launch_counts"].values())
    finally:
        art.close()


def test_generate_through_the_engine(cuda_pair, monkeypatch):
    host, gpu, sim = cuda_pair()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))
    with ingot.load(host, threads=1) as m:
        want = m.generate("hello world", max_tokens=8)
    with ingot.load(gpu) as m:
        assert m.generate("hello world", max_tokens=8) == want


def test_gpu_backend_on_a_simulated_libcuda(cuda_pair, monkeypatch):
    """The driver backend end to end: device buffers, words, tokens in, logits out and the
    replayed decode graph, with each launch run by the simulator."""
    import ctypes

    from test_cuda_driver import FakeCuda

    import ingot.runtime.cuda.driver as drv
    host, gpu, sim = cuda_pair()
    lib = ctypes.CDLL(str(sim))
    u3 = ctypes.c_uint * 3

    def execute(kernel, grid, block, shared, a, d):
        rc = lib.ingot_sim_launch(kernel.encode(), u3(*grid), u3(*block), ctypes.c_uint(shared),
                                  ctypes.c_void_p(a), ctypes.c_void_p(d))
        assert rc == 0, kernel

    fake = FakeCuda(execute=execute)
    monkeypatch.setattr(drv, "load_libcuda", lambda: fake)
    monkeypatch.delenv("INGOT_CUDA_SIM", raising=False)
    with ingot.load(host, threads=1) as m:
        cpu = _greedy(m, 2)
    with ingot.load(gpu) as m:
        assert m._team.name == "gpu"
        _compare(cpu, _greedy(m, 2), ATOL[None])
    names = fake.names()  # captured once, replayed for the second token
    assert names.count("cuStreamBeginCapture_v2") == 1 and names.count("cuGraphLaunch") == 2
    assert fake.image[:4] == b"\x7fELF"  # sm_87 on sm_87: the cubin


def test_bad_inputs_are_one_line_errors(cuda_pair, model_dirs, monkeypatch):
    folder, _ = model_dirs("llama")
    with pytest.raises(IngotError, match="CPU-only"):
        ingot.compile(folder, "unused.ingot", target="cuda-sm87", profile=True)
    _, gpu, _ = cuda_pair()
    monkeypatch.delenv("INGOT_CUDA_SIM", raising=False)
    import ingot.runtime.cuda.driver as drv

    def no_driver():
        raise IngotError("no CUDA driver on this host")
    monkeypatch.setattr(drv, "load_libcuda", no_driver)
    with pytest.raises(IngotError, match="no CUDA driver"):
        ingot.load(gpu)
    monkeypatch.setenv("INGOT_CUDA_SIM", str(folder / "config.json"))
    with pytest.raises(IngotError, match="not a CUDA simulator harness"):
        ingot.load(gpu)


def test_bench_reports_a_cuda_artefact(cuda_pair, monkeypatch):
    """`ingot bench` on a CUDA artefact (here the simulator: the figures are not speeds worth
    reading, only the report's shape is checked): one run at batch 1, device memory, no CPU
    bandwidth ceiling."""
    from ingot.runtime.bench import format_report, run_bench
    _, gpu, sim = cuda_pair()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))  # the workers inherit it
    report = run_bench(gpu, reference=False, threads=[1, 2], prompt_tokens=[CHUNK],
                       gen_tokens=2, repeats=1)
    (row,) = report["results"]
    assert row["engine"] == "ingot" and row["threads"] == 1
    assert row["prefill_tok_s"][str(CHUNK)] > 0 and row["decode_tok_s"] > 0
    assert row["ttft_s"] > 0 and row["load_s"] > 0 and row["device_memory_mib"] > 0
    assert row["bandwidth_gb_s"] is None and row["decode_of_ceiling"] is None
    assert any("batch 1 only" in n for n in report["notes"])
    assert any("one run, not one per thread count" in n for n in report["notes"])
    table = format_report(report)
    assert "device MiB" in table and "decode tok/s" in table
