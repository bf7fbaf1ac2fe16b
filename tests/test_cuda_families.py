"""More model families through the CUDA path, off-GPU: each compiled for cuda-sm87 and run on
the simulator (the artefact's own kernel source built for the host with the thread shim)
against the same model compiled for this CPU: prefill in chunks, then 16 greedy decode steps.

test_cuda_e2e's Llama does not have these graphs: Gemma 2 (attention and final soft-capping,
sliding windows that wrap their ring, sandwich norms, GQA 4, gelu_tanh) with K-quant weights;
Phi 2 (LayerNorm with biases, attention and MLP in parallel from one norm, partial rotary,
GELU, an output head with a bias) with an f16 KV cache; Qwen 2 (q/k/v biases) with Q8_0
weights; a Llama with f16 and with bf16 weights (prefill on 16-bit tensor cores); the other
tiny families in f32 (below); a 150-token prompt through Gemma 2.

An f16 cache is not combined with quantized weights here: the two sides' f16 attention
differs by summation order (~3e-5 relative), which is enough to move an 8-bit activation
across a rounding boundary, and these random models (weights of std 0.2) amplify one such
flip to ~1 % of a logit (measured on Gemma 2 Q4K/Q8_0 with f16 KV: the same tokens).
"""
from __future__ import annotations

import numpy as np
import pytest

import ingot
from ingot.runtime.artefact import Artefact
from test_cuda_e2e import ATOL, CHUNK, DECODE, MAX_SEQ, PROMPT, _compare, _greedy

pytestmark = pytest.mark.xdist_group("cuda_families")  # not the long "cuda" group's worker

# name: (family, config overrides, compile options). The quantized cases are sized so that
# every matrix takes the ISQ type (a row width that fits no block stays f16, and those run a
# different kernel): Gemma 2 at hidden 256 and 8 heads of 32 so that q/k/v, o and the MLP rows
# are whole 256-value K-quant blocks; Qwen 2 at hidden 64 (Q8_0 blocks of 32).
CASES = {
    "gemma2-q4k": ("gemma2", dict(hidden_size=256, intermediate_size=512,
                                  num_attention_heads=8, head_dim=32), dict(isq="Q4K")),
    "phi2-f16kv": ("phi2", {}, dict(kv_cache="f16")),
    "qwen2-q8_0": ("qwen2", dict(hidden_size=64, intermediate_size=128), dict(isq="Q8_0")),
    "llama-f16": ("llama", {}, dict(dtype="f16")),
    "llama-bf16": ("llama", {}, dict(dtype="bf16")),
    # f32, each for a graph the cases above do not have: Gemma ((1 + w) norms, embedding scale,
    # MQA), GLM 4 (sandwich norms, interleaved partial rotary, fused gate_up), Granite
    # (embedding, residual, attention and logit multipliers), Phi 3 (fused qkv and gate_up,
    # long-RoPE factors, window 7), Qwen 3 (per-head q/k norms, head_dim over hidden / heads),
    # SmolLM 3 (every 2nd layer without RoPE), StarCoder 2 (LayerNorm, a plain GELU MLP with
    # biases). Measured on the simulator: 4e-7 to 1.3e-6 of max |logit|.
    **{f"{f}-f32": (f, {}, {}) for f in ("gemma", "glm4", "granite", "phi3", "qwen3", "smollm3",
                                         "starcoder2")},
}
# 16-bit weights: the prefill's tensor-core kernel rounds each activation to the weights' type
# (unit roundoff u = 2^-11 for f16, 2^-8 for bf16; the CPU keeps them float), so a matrix
# product is off by up to u of its terms' magnitudes (tests/test_cuda_kernels.py), and the KV
# cache that prefill writes carries it into decode. Measured on this tiny Llama: 1.5 u (f16)
# and 2.3 u (bf16) of max |logit|; allowed: 4 u.
HALF_ATOL = {"f16": 4 * 2.0 ** -11, "bf16": 4 * 2.0 ** -8}


def run_on_sim(tmp_path, monkeypatch, family, overrides, kw, prompt=PROMPT, steps=DECODE):
    """The model compiled for this CPU and for cuda-sm87, each run greedily (prefill, then
    `steps` decode steps; the simulator runs the CUDA artefact's own source): (CPU run, CUDA
    run, the CUDA artefact's kernel names)."""
    from ingot.targets.cuda.sim.build import build_sim
    from tiny_models import build_model, save_model
    folder = save_model(build_model(family, **overrides), tmp_path / "src")
    host = ingot.compile(folder, tmp_path / "host.ingot", **kw)
    gpu = ingot.compile(folder, tmp_path / "sm87.ingot", target="cuda-sm87", cpu_target="none",
                        **kw)
    art = Artefact(gpu)
    try:
        src = bytes(art.section("cuda_source")).decode()
        kernels = set(art.json("cuda_launches")["kernels"])
    finally:
        art.close()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(build_sim(src, tmp_path / "sim")))
    with ingot.load(host, threads=1) as m:
        cpu = _greedy(m, steps, prompt)
    with ingot.load(gpu) as m:
        assert m.device == "cuda" and m._team.name == "sim"
        gpu_run = _greedy(m, steps, prompt)
    return cpu, gpu_run, kernels


@pytest.mark.parametrize("case", sorted(CASES))
def test_family_on_the_simulator_matches_cpu(case, tmp_path, monkeypatch):
    family, overrides, opts = CASES[case]
    cpu, gpu_run, kernels = run_on_sim(tmp_path, monkeypatch, family, overrides,
                                       dict(max_seq_len=MAX_SEQ, prefill_chunk=CHUNK, **opts))
    if opts.get("isq"):  # the quantized kernels are the ones exercised, and only they
        assert any(opts["isq"].lower().replace("4k", "4_k") in k for k in kernels), kernels
        assert not any(k.startswith("ingot_linear_") and k.endswith(("f16", "bf16", "f32"))
                       for k in kernels), sorted(kernels)
    if "dtype" in opts:
        assert f"ingot_linear_h_{opts['dtype']}" in kernels  # prefill on 16-bit tensor cores
    check_against_cpu(opts, cpu, gpu_run)


LONG = [int(t) for t in np.random.default_rng(7).integers(1, 300, 150)]  # a 150-token prompt


def test_long_prompt_on_the_simulator_matches_cpu(tmp_path, monkeypatch):
    """Gemma 2 in f32 (sliding window 5, soft-capping, 4 heads a KV group) through 150 prompt
    tokens in chunks of 64: the tiled prefill attention walks up to 10 key tiles per block,
    rescaling its softmax across them, its blocks' windows wrap the ring, and matrix tiles
    cross their 64-token edges. Same bound as f32 above (1e-4)."""
    cpu, gpu_run, kernels = run_on_sim(tmp_path, monkeypatch, "gemma2", CASES["gemma2-q4k"][1],
                                       dict(max_seq_len=256, prefill_chunk=64), LONG, 4)
    assert "ingot_attention_t_f32" in kernels
    check_against_cpu({}, cpu, gpu_run)


def check_against_cpu(opts, cpu, gpu):
    """The bound for a case's compile options: 16-bit weights HALF_ATOL, quantized ones
    _compare_quantized, f32 weights 1e-4 (summation order only, as test_cuda_e2e)."""
    if "dtype" in opts:
        _compare(cpu, gpu, HALF_ATOL[opts["dtype"]])
    elif opts.get("isq"):
        _compare_quantized(cpu, gpu)
    else:
        _compare(cpu, gpu, ATOL[None])
    assert np.isfinite(gpu[1]).all()


def _compare_quantized(cpu, gpu):
    """Quantized weights: both sides quantize each activation row to 8 bits alike, so most
    steps agree to summation order. A value that lands on a rounding boundary can take the
    neighbouring code on one side; that moves a dot product by one quantization step (the row's
    max |x| / 127, ~0.8 % of its range) times a weight. Measured on Gemma 2 Q4K: one step of 17
    at 2.5e-3 of max |logit|, every other step exact (the flip was in the head's input, so it
    stays in that step). Allowed: every step within 1e-3 (test_cuda_e2e's q8_0 bound) but at
    most two, and those within 1e-2 (a flip's step times a weight of the random model's ~0.2
    spread, with margin); the greedy tokens equal."""
    (t_cpu, l_cpu), (t_gpu, l_gpu) = cpu, gpu
    assert t_gpu == t_cpu
    scale = max(1.0, float(np.abs(l_cpu).max()))
    err = np.abs(l_gpu - l_cpu).max(axis=1) / scale
    print("relative max |logit difference| per step:", np.round(err, 6))
    assert (err > ATOL["q8_0"]).sum() <= 2, err
    assert err.max() <= 1e-2, err

