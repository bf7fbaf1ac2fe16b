"""The batched decode step and the engine that schedules it.

Reference: the same artefact driving one sequence at a time through the single-sequence
prefill/decode steps (themselves checked against transformers in test_equivalence). A batch
row must give that sequence's logits. Block-quantized matrices (8-bit activations) compute a
row in a 4-row tile with the same operations in the same order as alone, so those rows are
bit-identical — they must be: a last-bit difference can move an activation across a rounding
step of the next layer's 8-bit quantization and grow from there. f32 matrices sum a tile's
rows in another order: 1e-5 of the logit scale (f32 rounding over a few hundred products).
"""
from __future__ import annotations

import numpy as np
import pytest

import ingot
from ingot.runtime.engine import Engine, QueueFull, Request
from ingot.runtime.sampling import SamplingParams

TOL = 1e-5
pytestmark = pytest.mark.xdist_group("batch")  # one worker compiles the two models once


@pytest.fixture(scope="module")
def compiled(model_dirs, tmp_path_factory):
    """llama f32, and a wider Gemma 3 (sliding window 6) at Q8_0 whose window layers keep a
    13-row ring (window + prefill chunk 8 - 1), so long sequences wrap it."""
    from test_isq import WIDE
    from tiny_models import build_model, save_model
    out = tmp_path_factory.mktemp("batch")
    llama = ingot.compile(model_dirs("llama")[0], out / "llama.ingot", max_seq_len=64,
                          max_batch=4, prefill_chunk=8)
    g3 = save_model(build_model("gemma3", **WIDE["gemma3"]), out / "gemma3-src")
    gemma3 = ingot.compile(g3, out / "gemma3.ingot", isq="Q8_0", max_seq_len=64, max_batch=4,
                           prefill_chunk=8)
    return {"llama": llama, "gemma3": gemma3}


def alone(art, prompt, steps):
    """Greedy tokens and logits of one sequence through the single-sequence steps."""
    with ingot.load(art, threads=1) as m:
        logits = m.prefill(prompt)
        toks, rows = [], [logits]
        for _ in range(steps):
            toks.append(int(np.argmax(logits)))
            logits = m.decode(toks[-1])
            rows.append(logits)
    return toks, rows


@pytest.mark.parametrize("name", ["llama", "gemma3"])
@pytest.mark.parametrize("threads", [1, 2])
def test_batch_rows_equal_sequences_run_alone(compiled, name, threads):
    art = compiled[name]
    rng = np.random.default_rng(1)
    steps = 20
    with ingot.load(art, threads=threads) as m:
        prompts = [rng.integers(0, m.vocab_size, size=n).tolist() for n in (3, 17, 9, 30)]
        refs = [alone(art, p, steps) for p in prompts]
        slots = [2, 0, 3, 1]  # slots in another order than the rows
        last, pos = [], []
        for p, s in zip(prompts, slots):
            logits = m.prefill_at(s, 0, p)
            last.append(int(np.argmax(logits)))
            pos.append(len(p))
        for i in range(steps):
            # Shrinking batches: the last rows leave early, as finished requests do.
            n = 4 if i < 12 else 3 if i < 16 else 2
            out = m.decode_batch(last[:n], pos[:n], slots[:n])
            for r in range(n):
                want = refs[r][1][i + 1]
                assert last[r] == refs[r][0][i], (name, r, i)
                err = np.abs(out[r] - want).max() / np.abs(want).max()
                assert err < TOL, (name, r, i, err)
            last = [int(np.argmax(out[r])) for r in range(n)] + last[n:]
            pos = [p + 1 for p in pos[:n]] + pos[n:]


def test_batch_rejects_bad_rows(compiled):
    with ingot.load(compiled["llama"], threads=1) as m:
        with pytest.raises(ingot.IngotError, match="same sequence slot"):
            m.decode_batch([1, 2], [0, 0], [1, 1])
        with pytest.raises(ingot.IngotError, match="slot 4"):
            m.decode_batch([1, 2], [0, 0], [0, 4])
        with pytest.raises(ingot.IngotError, match="1..4"):
            m.decode_batch([1] * 5, [0] * 5, [0, 1, 2, 3, 0])
        with pytest.raises(ingot.IngotError, match="context overflow"):
            m.decode_batch([1, 2], [3, 64], [0, 1])


def greedy_request(prompt, n=12):
    return Request(list(prompt), n, SamplingParams(temperature=0.0))


def test_engine_runs_requests_together_with_the_alone_answers(compiled):
    art = compiled["gemma3"]
    rng = np.random.default_rng(2)
    with ingot.load(art, threads=1) as m:
        prompts = [rng.integers(2, m.vocab_size, size=n).tolist() for n in (5, 21, 11, 2, 14)]
        eng = Engine(m)
        handles = [eng.submit(greedy_request(p)) for p in prompts]  # 5 requests, 4 slots
        got = [h.tokens() for h in handles]
        assert eng.free_slots == 4 and eng.running == 0 and eng.queued == 0
        assert eng.stats["decode_rows"] > eng.stats["decode_steps"]  # steps were shared
    for p, g in zip(prompts, got):
        assert g == alone(art, p, 12)[0][:len(g)] and len(g) == 12


@pytest.mark.parametrize("name, extra, reused", [
    ("llama", 20, True),    # full caches: any shared prefix is reusable
    ("gemma3", 2, True),    # the ring still holds the window before the cut
    ("gemma3", 20, False),  # the cached tokens after the cut overwrote it: start afresh
])
def test_prefix_reuse_keeps_answers_identical(compiled, name, extra, reused):
    art = compiled[name]
    rng = np.random.default_rng(3)
    with ingot.load(art, threads=1) as m:
        shared = rng.integers(2, m.vocab_size, size=16).tolist()
        first = shared + rng.integers(2, m.vocab_size, size=extra).tolist()
        second = shared + rng.integers(2, m.vocab_size, size=5).tolist()
        eng = Engine(m)
        eng.submit(greedy_request(first, 4)).tokens()
        h = eng.submit(greedy_request(second))
        got = h.tokens()
    assert (h.cached_tokens == 16) if reused else (h.cached_tokens == 0)
    assert got == alone(art, second, 12)[0]


def test_engine_bounds_its_queue_and_frees_cancelled_slots(compiled):
    with ingot.load(compiled["llama"], threads=1) as m:
        eng = Engine(m, max_queue=2)
        a = eng.submit(greedy_request([5, 6, 7], 40))
        eng.submit(greedy_request([5, 6], 40))
        with pytest.raises(QueueFull, match="busy"):
            eng.submit(greedy_request([5], 40))
        eng.step()  # both admitted
        assert eng.running == 2 and eng.free_slots == 2
        a.cancel()
        eng.step()
        assert a.finish_reason == "cancelled" and eng.running == 1 and eng.free_slots == 3
        with pytest.raises(ingot.IngotError, match="compiled context"):
            eng.submit(greedy_request(list(range(64))))
        with pytest.raises(ingot.IngotError, match="empty"):
            eng.submit(greedy_request([]))
