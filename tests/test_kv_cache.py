"""The compact KV cache (`--kv-cache f16|q8_0`): its kernels against the gguf package's Q8_0
quantizer and a float64 attention, and tiny models against transformers and the f32 cache.

Error measure for logits: max |got - want| / max |want| at a position (relative to the logit
scale, as in test_equivalence). The stored types' worst rounding of one cached value, relative
to the largest value it shares a scale with:
- f16: half an ulp, 2^-11 = 4.9e-4 (of the value itself).
- q8_0: half a quant step of d = max|x| / 127 (GGUF's Q8_0 quantizes with d and stores d in f16,
  whose own rounding moves a reconstructed quant by up to 127 * 2^-11 d), so
  |x - q d16| <= d / 2 + 0.062 d = 0.562 / 127 = 4.4e-3 of the block's max.
Keys move attention scores and values move attention outputs by that fraction; the tiny models'
std-0.2 random weights pass it on to the logits. Measured on llama, mistral and the 3-layer
Gemma 3 below with each type (19-token prefill + 16 decode steps, against their f32-cache
artefacts): f16 at most 1.0e-3 = 2.1 x its 4.9e-4, q8_0 at most 1.8e-2 = 4.1 x its 4.4e-3.
Bound: 10 x the type's rounding (2.4x margin over the worst measured amplification): f16
4.9e-3, q8_0 4.4e-2. A wrong scale, block or row address gives O(1) errors. Against
transformers the f32 cache's own error adds (test_equivalence: < 1e-3).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import ingot
from ingot.compiler.ir import kv_row_layout
from ingot.errors import IngotError
from ingot.runtime.artefact import Artefact
from ingot.targets.cpu.attention import ATTENTION
from ingot.targets.cpu.kernels import ATTN_MAX_GROUP, KV_STORE
from test_attention_kernel import reference
from tiny_models import build_model, save_model

ROUNDING = {"f16": 2.0 ** -11, "q8_0": 0.562 / 127}
BOUND = {k: 10 * v for k, v in ROUNDING.items()}
F32_ERR = 1e-3  # the f32 cache against transformers (test_equivalence)
# Gemma 3 with fewer layers (one global among sliding ones) keeps the compile short.
MODELS = {"llama": {}, "mistral": {},
          "gemma3": dict(num_hidden_layers=3, layer_types=["sliding_attention", "full_attention",
                                                           "sliding_attention"])}
WINDOWS = {"llama": [0, 0], "mistral": [7, 7], "gemma3": [6, 0, 6]}  # per layer, 0: full
CHUNK = 4  # prefill chunk: sliding layers keep rings of window + 3 rows that wrap in the run
MAX_SEQ = 64
# Compiles are this file's cost: f16 on llama, q8_0 on the windowed models (both types share
# the widening path in attention; the kernel tests above cover each type on rings, windows and
# short blocks); q8_0 with batching on a fourth model below.
CASES = [("llama", "f16"), ("mistral", "q8_0"), ("gemma3", "q8_0")]

pytestmark = pytest.mark.xdist_group("kv_cache")


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


# -- kernels ---------------------------------------------------------------------------------
def store_rows(kind, X, KV, D, ring, pos0=0):
    """kv_store of rows X[t] at positions pos0 + t into fresh key and value caches."""
    rb, soff = kv_row_layout(kind, KV, D)
    kc, vc = np.zeros(ring * rb + 64, np.uint8), np.zeros(ring * rb + 64, np.uint8)
    X = np.ascontiguousarray(X, np.float32)
    n = X.shape[0]
    for tid in range(2):
        KV_STORE[kind](X.ctypes.data, KV * D, X.ctypes.data, KV * D, n, KV, D, kc.ctypes.data,
                       vc.ctypes.data, pos0, 0, 0, 0, ring, rb, soff, tid, 2)
    assert not kc[ring * rb:].any()  # nothing past the last row
    return kc[:ring * rb].reshape(ring, rb), vc[:ring * rb].reshape(ring, rb)


def dequant(kind, cache, KV, D):
    """A cache's rows as f32 [ring, KV * D], read by the layout compiler/ir.py states."""
    ring = cache.shape[0]
    if kind == "f16":
        return cache.view(np.float16).astype(np.float32)
    _, soff = kv_row_layout(kind, KV, D)
    nblk = -(-D // 32)
    q = cache[:, :KV * D].view(np.int8).astype(np.float32).reshape(ring, KV, D)
    d = cache[:, soff:soff + 2 * KV * nblk].copy().view(np.float16).astype(np.float32)
    d = np.repeat(d.reshape(ring, KV, nblk), 32, axis=2)[:, :, :D]
    return (q * d).reshape(ring, KV * D)


def test_q8_0_rows_are_ggufs_q8_0_blocks():
    """head_dim 64: each head's row is two whole GGUF Q8_0 blocks; the stored quants and
    scales equal the gguf package's quantizer's, byte for byte."""
    from gguf import GGMLQuantizationType, quantize
    KV, D, ring = 3, 64, 5
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ring, KV * D)).astype(np.float32) * rng.uniform(0.01, 30, (ring, 1))
    X[1, 32:64] = 0.0  # an all-zero block: scale 0, quants 0
    kc, _ = store_rows("q8_0", X, KV, D, ring)
    blocks = quantize(X.reshape(-1, 32), GGMLQuantizationType.Q8_0).reshape(ring, KV * 2, 34)
    _, soff = kv_row_layout("q8_0", KV, D)
    assert (kc[:, soff:].view(np.uint16) == blocks[:, :, :2].copy().view(np.uint16)[..., 0]).all()
    assert (kc[:, :KV * D].reshape(ring, KV * 2, 32) == blocks[:, :, 2:]).all()


@pytest.mark.parametrize("D", [10, 12, 16, 40])
def test_q8_0_rounding_bound_on_short_blocks(D):
    """head_dim not a multiple of 32: a head's last block is shorter; every value is within
    d / 2 + 127 |d - f16(d)| of the original (d = its block's max / 127). f16 stores the
    nearest half."""
    KV, ring = 2, 7
    rng = np.random.default_rng(D)
    X = rng.standard_normal((ring, KV * D)).astype(np.float32) * 5
    kc, vc = store_rows("q8_0", X, KV, D, ring)
    got = dequant("q8_0", kc, KV, D)
    assert (got == dequant("q8_0", vc, KV, D)).all()
    blocks = [(h * D + b, h * D + min(b + 32, D)) for h in range(KV) for b in range(0, D, 32)]
    for lo, hi in blocks:
        d = np.abs(X[:, lo:hi]).max(axis=1, keepdims=True) / 127
        d16 = d.astype(np.float16).astype(np.float32)
        assert (np.abs(got[:, lo:hi] - X[:, lo:hi]) <= d / 2 + 127 * np.abs(d - d16) + 1e-7).all()
    kh, _ = store_rows("f16", X, KV, D, ring)
    assert (kh.view(np.float16) == X.astype(np.float16)).all()


@pytest.mark.parametrize("kind", ["f16", "q8_0"])
@pytest.mark.parametrize("n,H,KV,D,pos,ring,window,nth", [
    (1, 4, 1, 256, 140, 1024, 0, 2),     # Gemma 3 270M's decode shape
    (5, 12, 2, 12, 30, 40, 20, 3),       # short blocks, a wrapped ring, a window
    (2, 20, 2, 48, 100, 300, 0, 2),      # a block and a half per head; groups of 10
])
def test_attention_reads_the_stored_type(kind, n, H, KV, D, pos, ring, window, nth):
    """Attention over a compact cache equals a float64 attention over the values it holds:
    widening (f16 -> f32, int8 quant times f16 scale) is exact, so only summation order
    differs, as for the f32 cache (1e-5 absolute on O(1) values)."""
    rng = np.random.default_rng(n * 100 + D)
    qs = H * D + 3
    Q = rng.standard_normal((n, qs)).astype(np.float32)
    X = rng.standard_normal((ring, KV * D)).astype(np.float32)
    kc, vc = store_rows(kind, X, KV, D, ring)
    rb, soff = kv_row_layout(kind, KV, D)
    out = np.full(n * H * D + 16, np.nan, np.float32)
    scratch = np.zeros(ATTN_MAX_GROUP * (pos + n), np.float32)
    for tid in range(nth):
        ATTENTION[kind](Q.ctypes.data, qs, n, H, KV, D, kc.ctypes.data, vc.ctypes.data, pos, 0,
                        0, 0, ring, rb, soff, 0.125, window, 0.0, out.ctypes.data,
                        scratch.ctypes.data, tid, nth)
    assert np.isnan(out[n * H * D:]).all()
    want = reference(Q, dequant(kind, kc, KV, D).reshape(-1), dequant(kind, vc, KV, D).reshape(-1),
                     n, H, KV, D, pos, ring, 0.125, window)
    assert np.abs(out[:n * H * D].reshape(n, H * D) - want).max() < 1e-5


# -- tiny models -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """name -> (folder, transformers model); kv artefacts compiled lazily, once."""
    out = tmp_path_factory.mktemp("kv")
    models, arts = {}, {}

    def model(name):
        if name not in models:
            hf = build_model(name, **MODELS[name])
            models[name] = (save_model(hf, out / name), hf)
        return models[name]

    def art(name, kind):
        if (name, kind) not in arts:
            arts[name, kind] = ingot.compile(model(name)[0], out / f"{name}-{kind}.ingot",
                                             max_seq_len=MAX_SEQ, prefill_chunk=CHUNK,
                                             kv_cache=kind)
        return arts[name, kind]
    return model, art


def run(path, ids, steps) -> np.ndarray:
    with ingot.load(path, threads=2) as m:
        return np.array([m.prefill(ids)] + [m.decode(t) for t in steps])


def prompt(n, seed):
    return np.random.default_rng(seed).integers(4, 300, n).tolist()


@pytest.mark.parametrize("name,kind", CASES)
def test_compact_cache_logits(tiny, name, kind):
    """19-token prefill (longer than the windows; rings wrap) + 16 decode steps against
    transformers. The f32 cache's artefacts match it to 1e-6 (llama, mistral) and 3e-4 (Gemma
    3's soft-capping) here, so transformers stands in for them (test_equivalence checks them;
    the real Gemma below is compared with its f32 cache's artefact)."""
    model, art = tiny
    folder, hf = model(name)
    ids, steps = prompt(19, 1), prompt(16, 2)
    path = art(name, kind)
    plan = Artefact(path).json("plan")
    assert plan["kv_cache"] == kind
    # The caches are laid out in the type's bytes: K and V of each layer, 64-aligned.
    row = kv_row_layout(kind, hf.config.num_key_value_heads, hf.config.head_dim)[0]
    rings = [min(MAX_SEQ, w + CHUNK - 1) if w else MAX_SEQ for w in WINDOWS[name]]
    assert plan["state_bytes"] == sum(2 * -(-r * row // 64) * 64 for r in rings)
    got = run(path, ids, steps)
    with torch.no_grad():
        ref = hf(torch.tensor([ids + steps])).logits[0, len(ids) - 1:].double().numpy()
    worst = max(rel_err(g, r) for g, r in zip(got, ref))
    assert worst < BOUND[kind] + F32_ERR, worst


def test_f16_cache_greedy_tokens_match_transformers(tiny):
    """40 greedy tokens after a 9-token prompt: f16's 1e-3 of the logit scale moves no argmax
    on this model (its top two logits never come that close)."""
    model, art = tiny
    _, hf = model("llama")
    ids = prompt(9, 3)
    ref = list(ids)
    with torch.no_grad():
        for _ in range(40):
            ref.append(int(hf(torch.tensor([ref])).logits[0, -1].argmax()))
    got = list(ids)
    with ingot.load(art("llama", "f16"), threads=1) as m:
        logits = m.prefill(ids)
        for _ in range(40):
            got.append(int(np.argmax(logits)))
            logits = m.decode(got[-1])
    assert got == ref


def test_q8_0_batched_rows_equal_single_runs(tmp_path):
    """The batched step with a q8_0 cache addresses each slot's caches in bytes: rows of two
    sequences (slots in another order than the rows, different lengths) equal each sequence
    run alone through the single-sequence steps. Q8_0 weights compute a row the same way in a
    tile as alone (test_batch), and quantizing a cached row depends on that row only, so the
    rows are bit-identical. head_dim 32: q8_0 stores 34 bytes per 32 values (0.266 of f32)."""
    hf = build_model("llama", hidden_size=64, intermediate_size=128, head_dim=32)
    path = ingot.compile(save_model(hf, tmp_path / "m"), tmp_path / "m.ingot", isq="Q8_0",
                         max_seq_len=64, prefill_chunk=8, max_batch=2, kv_cache="q8_0")
    plan = Artefact(path).json("plan")
    cfg = hf.config
    f32_state = 2 * cfg.num_hidden_layers * 64 * cfg.num_key_value_heads * 32 * 4  # no rings
    assert plan["state_bytes"] <= 0.27 * f32_state
    prompts, slots, steps = [prompt(5, 4), prompt(13, 5)], [1, 0], 12
    alone = []
    with ingot.load(path, threads=2) as m:
        for p in prompts:
            m.reset()
            rows, tok = [m.prefill(p)], []
            for _ in range(steps):
                tok.append(int(np.argmax(rows[-1])))
                rows.append(m.decode(tok[-1]))
            alone.append(rows)
        last = [int(np.argmax(m.prefill_at(s, 0, p))) for p, s in zip(prompts, slots)]
        pos = [len(p) for p in prompts]
        for i in range(steps):
            out = m.decode_batch(last, pos, slots)
            for r in range(2):
                assert (out[r] == alone[r][i + 1]).all(), (r, i)
            last = [int(np.argmax(o)) for o in out]
            pos = [p + 1 for p in pos]


def test_bad_kv_cache_type_is_one_line(tiny, capsys):
    from ingot.cli import main
    folder, _ = tiny[0]("llama")
    with pytest.raises(IngotError, match=r"--kv-cache 'q4' \(use f32, f16, q8_0\)"):
        ingot.compile(folder, None, kv_cache="q4")
    assert main(["compile", "-m", str(folder), "--kv-cache", "q4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ingot: error: unsupported --kv-cache 'q4' (use f32, f16, q8_0)"]


def test_inspect_shows_the_cache_type(tiny, capsys):
    from ingot.cli import main
    path = tiny[1]("gemma3", "q8_0")
    assert main(["inspect", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if "KV cache" in x)
    # One full-context layer: K and V x 1 kv head x (16 quants + one f16 scale) = 36 B a token.
    assert "q8_0, 36 B/token" in line, line


@pytest.mark.xdist_group("gemma")  # shares the f32-cache artefact the Gemma tests compile
def test_gemma3_270m_with_a_q8_0_cache(gemma_gguf, gemma_artefact, tmp_path):
    """The real Gemma 3 270M Q4_K_M with a q8_0 cache (0.27 of the f32 cache's bytes) against
    its f32 cache and llama.cpp's output (whose own cache is f16). This model quantizes every
    matrix's input to 8 bits, and any last-bit change moves those codes: changing only their
    rounding's tie rule moves the logits by 1.6e-2 .. 4e-2 of the logit scale
    (test_gemma3_gguf), and an f16 cache moves them as much as q8_0 does (both at most 6.5e-2
    over 245 positions of five prompts). Bound 0.1 of the logit scale on each prompt's logits;
    llama.cpp's checks as in test_gemma3_gguf: its top 5 within TOL and its 64 greedy tokens."""
    from test_gemma3_gguf import PROMPTS, REF, TOL
    path = ingot.compile(gemma_gguf, tmp_path / "q8.ingot", max_seq_len=512, kv_cache="q8_0")
    plan, f32_plan = Artefact(path).json("plan"), Artefact(gemma_artefact).json("plan")
    # head_dim 256: 8 blocks of 34 bytes per 1024 f32 bytes. (At 512 tokens the window-512
    # layers' rings are the whole context, so compare rows, and the state with f32 rows.)
    assert plan["kv_row_bytes"] <= 0.27 * f32_plan["kv_row_bytes"]
    assert plan["state_bytes"] <= 0.27 * plan["n_layers"] * 512 * f32_plan["kv_row_bytes"]
    with ingot.load(path, threads=2) as m, ingot.load(gemma_artefact, threads=2) as f32:
        for prompt in PROMPTS:
            ref = REF["prompts"][prompt]
            m.reset()
            f32.reset()
            got, want = m.prefill(ref["ids"]), f32.prefill(ref["ids"])
            assert rel_err(got, want) < 0.1, prompt
            assert np.abs(got[ref["top5"]] - np.array(ref["top5_logits"])).max() < TOL, prompt
        ref = REF["prompts"]["def fibonacci(n):"]
        m.reset()
        logits, got = m.prefill(ref["ids"]), []
        for _ in range(len(ref["greedy"])):
            got.append(int(np.argmax(logits)))
            logits = m.decode(got[-1])
        assert got == ref["greedy"]
