"""The batched decode step (--max-batch) on CUDA, run off-GPU through the simulator.

Reference: the CPU artefact of the same model with the same --max-batch, whose batch rows
tests/test_batch.py checks against single-sequence runs. A CUDA batch row must give the CPU
batch row's logits: 1e-4 of the logit scale in f32, as test_cuda_e2e.py allows (the CPU and
CUDA kernels sum in different orders, SIMD lanes against warp shuffles; about 2e-6 measured).
Within the CUDA artefact a batch row computes what the single-sequence decode step computes,
in the same order, so there the rows must be bit-identical; that is how the Gemma 3 variants
(sliding-window ring, split attention, 8-bit KV cache, q8_0 weights) are checked, whose CPU
artefact alone would take over a minute to compile here.
"""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import ingot
from ingot.errors import IngotError
from ingot.runtime.artefact import Artefact
from ingot.runtime.engine import Engine, Request
from ingot.runtime.sampling import SamplingParams

# test_batch.py's llama settings: with one native build cache per run, the CPU artefact is a
# cache hit when that file compiled it first on this worker.
pytestmark = pytest.mark.xdist_group("batch")
KW = dict(max_seq_len=64, prefill_chunk=8, max_batch=4)
TOL = 1e-4
STEPS = 18  # shrinking batches: 4 rows, then 3, then 2
PROMPTS = (3, 17, 9, 30)
SLOTS = [2, 0, 3, 1]  # slots in another order than the rows


@pytest.fixture(scope="module")
def built(model_dirs, tmp_path_factory):
    """CPU and cuda-sm87 llama (max_batch 4), a cuda-sm87 two-layer Gemma 3 whose window layer
    keeps a 13-row ring (window 6 + chunk 8 - 1), with keys split across blocks as long caches
    are (ATT_SPLIT_MIN_KEYS 0) and an 8-bit cache, and the simulator libraries."""
    from ingot.targets.cuda import kernel_table
    from ingot.targets.cuda.sim.build import build_sim
    from tiny_models import build_model, save_model
    out = tmp_path_factory.mktemp("cuda_batch")
    llama = model_dirs("llama")[0]
    arts = {"cpu": ingot.compile(llama, out / "llama-cpu.ingot", **KW),
            "llama": ingot.compile(llama, out / "llama-sm87.ingot", target="cuda-sm87", **KW)}
    g3 = save_model(build_model("gemma3", num_hidden_layers=2,  # one window layer, one full
                                layer_types=["sliding_attention", "full_attention"]),
                    out / "gemma3-src")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(kernel_table, "ATT_SPLIT_MIN_KEYS", 0)
        arts["gemma3"] = ingot.compile(g3, out / "gemma3-sm87.ingot", target="cuda-sm87",
                                       isq="Q8_0", kv_cache="q8_0", **KW)
    sims = {}
    for name in ("llama", "gemma3"):
        art = Artefact(arts[name])
        try:
            sims[name] = build_sim(bytes(art.section("cuda_source")).decode(), out / "sim")
        finally:
            art.close()
    return arts, sims


def _prompts(vocab):
    rng = np.random.default_rng(1)
    return [rng.integers(2, vocab, size=n).tolist() for n in PROMPTS]


def drive(models, steps=STEPS):
    """Prefill each prompt into its slot, then greedy batch steps on every model with the
    first model's tokens; yields (step, rows, [logits per model])."""
    prompts = _prompts(models[0].vocab_size)
    last, pos = [], []
    for p, s in zip(prompts, SLOTS):
        first = [m.prefill_at(s, 0, p).copy() for m in models][0]
        last.append(int(first.argmax()))
        pos.append(len(p))
    for i in range(steps):
        n = 4 if i < 12 else 3 if i < 16 else 2
        outs = [m.decode_batch(last[:n], pos[:n], SLOTS[:n]).copy() for m in models]
        yield i, n, outs
        last = [int(outs[0][r].argmax()) for r in range(n)] + last[n:]
        pos = [p + 1 for p in pos[:n]] + pos[n:]


def test_batch_rows_equal_the_cpu_artefacts(built, monkeypatch):
    arts, sims = built
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sims["llama"]))
    with ingot.load(arts["cpu"], threads=1) as cpu, ingot.load(arts["llama"]) as gpu:
        assert gpu._team.name == "sim" and gpu.max_batch == 4
        worst = 0.0
        for i, n, (want, got) in drive([cpu, gpu]):
            assert got.shape == want.shape == (n, cpu.vocab_size)
            assert (got.argmax(1) == want.argmax(1)).all(), i
            err = float(np.abs(got - want).max() / np.abs(want).max())
            worst = max(worst, err)
            assert err < TOL, (i, err)
    print(f"max |logit difference| / max |logit|: {worst:.3g}")


def test_gemma3_batch_rows_equal_single_sequence_steps(built, monkeypatch):
    """Ring wrap (positions past 13), split attention and the q8_0 cache, per row."""
    arts, sims = built
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sims["gemma3"]))
    art = Artefact(arts["gemma3"])
    try:
        plan, kernels = art.json("plan"), art.json("cuda_launches")["kernels"]
    finally:
        art.close()
    assert plan["kv_rings"] == [[13, 6]]
    assert {"ingot_attention_split_rows_q8_0", "ingot_kv_store_rows_q8_0",
            "ingot_rope_rows"} <= set(kernels)
    with ingot.load(arts["gemma3"]) as alone, ingot.load(arts["gemma3"]) as batch:
        for p, s in zip(_prompts(batch.vocab_size), SLOTS):
            alone.prefill_at(s, 0, p), batch.prefill_at(s, 0, p)
        last, pos = [5, 6, 7, 8], list(PROMPTS)
        for i in range(STEPS):
            n = 4 if i < 12 else 3 if i < 16 else 2
            got = batch.decode_batch(last[:n], pos[:n], SLOTS[:n]).copy()
            for r in range(n):  # one row at a time: the decode step over the row's slot
                want = alone.decode_batch([last[r]], [pos[r]], [SLOTS[r]])[0]
                assert np.array_equal(got[r], want), (i, r)
            last = [int(got[r].argmax()) for r in range(n)] + last[n:]
            pos = [p + 1 for p in pos[:n]] + pos[n:]


def greedy_request(prompt, n=10):
    return Request(list(prompt), n, SamplingParams(temperature=0.0))


def test_engine_serves_requests_together_as_on_the_cpu(built, monkeypatch):
    """Five greedy requests over four slots: the CUDA artefact's tokens are the CPU's."""
    arts, sims = built
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sims["llama"]))
    got = {}
    for name in ("cpu", "llama"):
        with ingot.load(arts[name], threads=1) as m:
            rng = np.random.default_rng(2)
            prompts = [rng.integers(2, m.vocab_size, size=n).tolist() for n in (5, 21, 11, 2, 14)]
            eng = Engine(m)
            handles = [eng.submit(greedy_request(p)) for p in prompts]
            got[name] = [h.tokens() for h in handles]
            assert eng.stats["decode_rows"] > eng.stats["decode_steps"]  # steps were shared
            assert eng.free_slots == 4 and eng.running == 0
    assert got["llama"] == got["cpu"] and all(len(t) == 10 for t in got["cpu"])


def _script(m) -> list:
    """Five 4-row steps (one batch size), then 3 rows, then one row (the decode step) in
    slot 3: every output."""
    out = [o[0] for _, _, o in drive([m], 5)]
    out.append(m.decode_batch([1, 2, 3], [40, 41, 42], [3, 2, 1]).copy())
    out.append(m.decode_batch([4], [43], [3]).copy())
    return out


@pytest.mark.parametrize("integrated", [False, True])
def test_gpu_backend_captures_a_graph_per_batch_size(built, monkeypatch, integrated):
    """The driver backend on a stand-in libcuda whose launches the simulator executes: the
    same logits as the simulator backend, bit for bit (the same kernels on the same words),
    prefill and decode in other slots through their words, a CUDA graph captured once per
    batch size. Integrated (Jetson): arena and cache registered, nothing copied."""
    from test_cuda_driver import FakeCuda

    import ingot.runtime.cuda.driver as drv
    arts, sims = built
    lib = ctypes.CDLL(str(sims["llama"]))
    u3 = ctypes.c_uint * 3

    def execute(kernel, grid, block, shared, a, d):
        rc = lib.ingot_sim_launch(kernel.encode(), u3(*grid), u3(*block), ctypes.c_uint(shared),
                                  ctypes.c_void_p(a), ctypes.c_void_p(d))
        assert rc == 0, kernel

    fake = FakeCuda(execute=execute, integrated=integrated)
    monkeypatch.setattr(drv, "load_libcuda", lambda: fake)
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sims["llama"]))
    with ingot.load(arts["llama"]) as sim:
        want = _script(sim)
    monkeypatch.delenv("INGOT_CUDA_SIM")
    with ingot.load(arts["llama"]) as gpu:
        assert gpu._team.name == "gpu" and gpu._team.backend.shared_arena == integrated
        got = _script(gpu)
    assert all(np.array_equal(g, w) for g, w in zip(got, want))
    names = fake.names()  # batch 4, batch 3, decode
    assert names.count("cuStreamBeginCapture_v2") == 3 and names.count("cuGraphLaunch") == 7
    assert ("cuMemcpyDtoHAsync_v2" in names) != integrated


def test_refusals_are_one_line_errors(built, model_dirs, monkeypatch, tmp_path):
    arts, sims = built
    folder = model_dirs("llama")[0]
    with pytest.raises(IngotError, match=r"--max-batch must be between 1 and the prefill "
                                         r"chunk \(4\)"):
        ingot.compile(folder, tmp_path / "x.ingot", target="cuda-sm87", prefill_chunk=4,
                      max_batch=5)
    with pytest.raises(IngotError, match="--cpu-target .* and --max-batch > 1 cannot be "
                                         "combined"):
        ingot.compile(folder, tmp_path / "x.ingot", target="cuda-sm87", cpu_target="host",
                      max_batch=2)
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sims["llama"]))
    with pytest.raises(IngotError, match="layers on the CPU .* --max-batch 4 on CUDA"):
        ingot.load(arts["llama"], device_map="0:1;cpu:*")
    art = Artefact(arts["llama"])
    try:
        plan = art.json("plan")
    finally:
        art.close()
    from ingot.runtime.cuda.stream import fixed_device_bytes
    units = [u["bytes"] for u in plan["units"]]
    budget = fixed_device_bytes(plan) + sum(units) - 1  # the KV cache of 4 slots included
    with pytest.raises(IngotError, match="budget streams weights, which --max-batch 4"):
        ingot.load(arts["llama"], max_memory=budget)
    with ingot.load(arts["llama"]) as m:  # the CPU artefact's row checks (runtime/model.py)
        with pytest.raises(IngotError, match="same sequence slot"):
            m.decode_batch([1, 2], [0, 0], [1, 1])
        with pytest.raises(IngotError, match="slot 4"):
            m.decode_batch([1, 2], [0, 0], [0, 4])
        with pytest.raises(IngotError, match="1..4"):
            m.decode_batch([1] * 5, [0] * 5, [0, 1, 2, 3, 0])
        with pytest.raises(IngotError, match="context overflow"):
            m.decode_batch([1, 2], [3, 64], [0, 1])


def test_row_kernels_are_built_with_ptxas(built):
    """The batched step's kernels are in the artefact's sm_87 PTX and cubin (nvcc ran at
    compile); test_cuda_build.py builds every kernel of the library, these included, for
    sm_87 and sm_90."""
    from ingot.targets.cuda.kernel_table import KERNELS
    arts, _ = built
    art = Artefact(arts["llama"])
    try:
        ptx, cubin = bytes(art.section("cuda_ptx")).decode(), bytes(art.section("cuda_cubin"))
        counts = art.json("plan")["cuda_launch_counts"]
    finally:
        art.close()
    rows = {"ingot_rope_rows", "ingot_kv_store_rows_f32", "ingot_attention_rows_f32"}
    assert rows <= set(KERNELS) and {"ingot_attention_split_rows_f16"} <= set(KERNELS)
    for k in rows:
        assert f".entry {k}(" in ptx and k.encode() + b"\0" in cubin
    assert counts["batch"] == counts["decode"]  # node for node, the same kernels' shapes
