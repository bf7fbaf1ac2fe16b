"""Ingot against transformers on tiny random models of every family in the spine.

Error measure: max |ingot - reference| / max |reference| over the logits of a position, i.e.
relative to the logit scale (element-wise relative error is meaningless near zero logits).

- f32: both sides compute in f32 with different summation orders; 1e-3 leaves ~100x margin.
- f16/bf16: matrices are stored rounded (vectors stay f32). Against a reference whose
  matrices are rounded the same way the only difference is arithmetic, so 1e-3 holds too;
  against the unrounded f32 model the storage rounding itself is the error: f16 keeps 11
  significant bits (2^-11 ~ 5e-4 per weight, ~1e-2 after a few layers of accumulation) and
  bf16 keeps 8 (2^-8 ~ 4e-3 per weight), hence 2e-2 and 1e-1.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ingot
from tiny_models import CONFIGS

FAMILIES = list(CONFIGS)  # every tiny config (test_registry: every family has one)
# f16/bf16 storage goes through the same kernels whatever the family: checked on the spine's
# families (and Gemma 3's extra options); every family is checked in f32.
HALF_FAMILIES = ["llama", "llama_yarn_bias", "mistral", "qwen2", "qwen3", "gemma3"]
CASES = [(n, "f32") for n in FAMILIES] + [(n, d) for d in ("f16", "bf16") for n in HALF_FAMILIES]


def by_family(params):
    """Parametrize values grouped per tiny model, so one test worker builds and compiles it."""
    return [pytest.param(*p if isinstance(p, tuple) else (p,),
                         marks=pytest.mark.xdist_group(p[0] if isinstance(p, tuple) else p))
            for p in params]
STORAGE_BOUND = {"f16": 2e-2, "bf16": 1e-1}


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


def rounded_copy(model, dtype: str):
    """The reference with matrices rounded like Ingot stores them (vectors stay f32)."""
    import copy
    m = copy.deepcopy(model)
    tdt = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    with torch.no_grad():
        for p in m.parameters():
            if p.ndim >= 2:
                p.copy_(p.to(tdt).float())
    return m


@torch.no_grad()
def ref_logits(model, ids) -> np.ndarray:
    """Logits of every position of `ids` from a full forward pass."""
    return model(torch.tensor([ids])).logits[0].double().numpy()


def prompt(n: int, vocab: int, seed: int) -> list:
    return np.random.default_rng(seed).integers(4, vocab, n).tolist()


def check_against_transformers(m, hf) -> None:
    """A 19-token prefill and 16 decode steps of `m` match `hf` within 1e-3 of the logit scale
    (19 tokens: longer than every tiny config's sliding window)."""
    ids = prompt(19, hf.config.vocab_size, 1)
    steps = prompt(16, hf.config.vocab_size, 2)
    ref = ref_logits(hf, ids + steps)
    got = [m.prefill(ids)] + [m.decode(t) for t in steps]
    for i, g in enumerate(got):
        pos = len(ids) - 1 + i
        assert rel_err(g, ref[pos]) < 1e-3, f"position {pos}: {rel_err(g, ref[pos]):.2e}"


@pytest.mark.parametrize("name,dtype", by_family(CASES))
def test_prefill_and_decode_match_transformers(name, dtype, model_dirs, artefacts):
    _, hf = model_dirs(name)
    ref_model = hf if dtype == "f32" else rounded_copy(hf, dtype)
    m = ingot.load(artefacts(name, dtype), threads=2)
    ids = prompt(19, hf.config.vocab_size, 1)  # longer than mistral's window of 7
    steps = prompt(16, hf.config.vocab_size, 2)
    full = ids + steps
    ref = ref_logits(ref_model, full)
    got = [m.prefill(ids)] + [m.decode(t) for t in steps]
    for i, g in enumerate(got):
        pos = len(ids) - 1 + i
        assert rel_err(g, ref[pos]) < 1e-3, f"position {pos}: {rel_err(g, ref[pos]):.2e}"
    if dtype != "f32":
        orig = ref_logits(hf, full)
        worst = max(rel_err(g, orig[len(ids) - 1 + i]) for i, g in enumerate(got))
        assert worst < STORAGE_BOUND[dtype]


@torch.no_grad()
@pytest.mark.parametrize("name", by_family(FAMILIES))
def test_greedy_tokens_identical(name, model_dirs, artefacts):
    _, hf = model_dirs(name)
    m = ingot.load(artefacts(name), threads=1)
    ids = prompt(9, hf.config.vocab_size, 3)
    ref = list(ids)
    for _ in range(32):
        ref.append(int(hf(torch.tensor([ref])).logits[0, -1].argmax()))
    got = list(ids)
    logits = m.prefill(ids)
    for _ in range(32):
        got.append(int(np.argmax(logits)))
        logits = m.decode(got[-1])
    assert got == ref


def test_chunked_prefill_matches_single_steps(model_dirs, tmp_path):
    """A prompt longer than the prefill chunk runs in several native calls; the result must
    equal feeding the tokens one by one."""
    folder, hf = model_dirs("qwen3")
    p = ingot.compile(folder, tmp_path / "chunk.ingot", max_seq_len=64, prefill_chunk=5)
    m = ingot.load(p, threads=2)
    ids = prompt(23, hf.config.vocab_size, 4)
    a = m.prefill(ids)
    m.reset()
    m.prefill(ids[:1])
    for t in ids[1:]:
        b = m.decode(t)
    assert rel_err(a, b) < 1e-5
    ref = ref_logits(hf, ids)[-1]
    assert rel_err(a, ref) < 1e-3


@pytest.mark.parametrize("dtype", ["f16", "bf16"])
def test_half_precision_checkpoint(dtype, tmp_path):
    """A checkpoint saved in f16/bf16 compiles in its own dtype by default (config torch_dtype)
    and matches transformers running the same half-precision weights in f32."""
    from tiny_models import build_model, save_model
    from ingot.runtime.artefact import Artefact
    hf = build_model("qwen3", seed=5)
    tdt = {"f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    folder = save_model(hf.to(tdt), tmp_path / "m")
    ref_model = hf.float()
    p = ingot.compile(folder, tmp_path / "m.ingot", max_seq_len=64)
    assert Artefact(p).json("plan")["dtype"] == dtype
    m = ingot.load(p, threads=2)
    ids = prompt(11, hf.config.vocab_size, 6)
    assert rel_err(m.prefill(ids), ref_logits(ref_model, ids)[-1]) < 1e-3


@pytest.mark.parametrize("name", by_family(["mistral", "gemma3"]))
def test_sliding_window_ring_cache(name, model_dirs, tmp_path):
    """Sliding-window layers keep a ring of window + chunk - 1 rows instead of the whole
    context: with a 4-token prefill chunk the ring wraps several times over a 35-token run, and
    the logits still match transformers (mistral: window 7 on every layer; gemma3: window 6 on
    five of seven layers, full context on the global one)."""
    from ingot.runtime.artefact import Artefact
    folder, hf = model_dirs(name)
    p = ingot.compile(folder, tmp_path / "ring.ingot", max_seq_len=64, prefill_chunk=4)
    plan = Artefact(p).json("plan")
    assert plan["kv_ring_layers"] == (2 if name == "mistral" else 6)
    cfg = hf.config
    full = 2 * cfg.num_hidden_layers * 64 * cfg.num_key_value_heads * cfg.head_dim * 4
    assert plan["state_bytes"] < full * (0.25 if name == "mistral" else 0.5)
    check_against_transformers(ingot.load(p, threads=2), hf)
