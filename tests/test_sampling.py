"""Sampler: greedy, determinism, truncation filters, penalties (against transformers), and the
sampled distribution itself."""
import numpy as np
import pytest

from ingot.errors import IngotError
from ingot.runtime.genconfig import merge_generation_config
from ingot.runtime.sampling import Sampler, SamplingParams

V = 1000


def _logits(seed=0, n=V):
    return np.random.default_rng(seed).normal(0, 3, n).astype(np.float32)


def _draws(params, logits, n, history=()):
    s = Sampler(params, len(logits))
    return [s.sample(logits, history) for _ in range(n)]


def test_greedy_is_argmax():
    for seed in range(5):
        x = _logits(seed)
        assert Sampler(SamplingParams(), V).sample(x, []) == int(np.argmax(x))


def test_does_not_touch_input():
    x = _logits()
    before = x.copy()
    Sampler(SamplingParams(temperature=0.7, repetition_penalty=1.3, presence_penalty=0.5), V).sample(x, [1, 2, 3])
    np.testing.assert_array_equal(x, before)


def test_seed_determinism():
    x = _logits()
    p = SamplingParams(temperature=1.5, seed=1234)
    a, b = _draws(p, x, 50), _draws(p, x, 50)
    assert a == b
    assert a != _draws(SamplingParams(temperature=1.5, seed=4321), x, 50)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=2.0, top_k=1, seed=0),
    SamplingParams(temperature=2.0, top_p=1e-6, seed=0),
    SamplingParams(temperature=2.0, top_k=40, top_p=1e-6, seed=0),
    SamplingParams(temperature=2.0, min_p=0.999, seed=0),
], ids=["top_k=1", "tiny top_p", "top_k+tiny top_p", "min_p~1"])
def test_filters_down_to_greedy(params):
    for seed in range(3):
        x = _logits(seed)
        assert set(_draws(params, x, 20)) == {int(np.argmax(x))}


def test_top_k_stays_in_top_k():
    x = _logits()
    top = set(np.argsort(x)[-5:].tolist())
    got = set(_draws(SamplingParams(temperature=5.0, top_k=5, seed=1), x, 300))
    assert got <= top and len(got) == 5


def test_top_p_keeps_nucleus():
    x = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    # 0.5 + 0.3 = 0.8 reaches top_p = 0.75, so only tokens 0 and 1 may appear.
    got = _draws(SamplingParams(temperature=1.0, top_p=0.75, seed=2), x, 2000)
    assert set(got) == {0, 1}
    assert abs(got.count(0) / 2000 - 0.5 / 0.8) < 0.05


def test_min_p_filters():
    probs = np.array([0.4, 0.3, 0.2, 0.06, 0.04], np.float32)
    x = np.log(probs)
    # min_p=0.2 keeps tokens with p >= 0.2 * 0.4 = 0.08: the first three.
    assert set(_draws(SamplingParams(temperature=1.0, min_p=0.2, seed=3), x, 3000)) == {0, 1, 2}
    assert set(_draws(SamplingParams(temperature=1.0, min_p=0.0, seed=3), x, 3000)) == {0, 1, 2, 3, 4}


def test_repetition_penalty_matches_transformers():
    torch = pytest.importorskip("torch")
    from transformers import RepetitionPenaltyLogitsProcessor

    x = _logits(7)
    history = [3, 17, 17, 999, 0, 512, 3, 42]
    for penalty in (1.3, 0.8):
        ref = RepetitionPenaltyLogitsProcessor(penalty)(
            torch.tensor([history]), torch.tensor(x[None].copy()))[0].numpy()
        s = Sampler(SamplingParams(repetition_penalty=penalty), V)
        s.sample(x, history)
        np.testing.assert_allclose(s._logits, ref, rtol=1e-6)
        assert s.sample(x, history) == int(np.argmax(ref))


def test_presence_and_frequency_penalties():
    x = np.zeros(V, np.float32)
    s = Sampler(SamplingParams(presence_penalty=0.5, frequency_penalty=0.25), V)
    s.sample(x, [5, 5, 5, 9])
    expect = np.zeros(V, np.float32)
    expect[5] = -0.5 - 3 * 0.25  # OpenAI: mu - c * freq - (c > 0) * presence
    expect[9] = -0.5 - 1 * 0.25
    np.testing.assert_allclose(s._logits, expect)


def test_distribution_matches_softmax():
    x = np.array([1.0, 0.5, 0.0, -0.5, -2.0], np.float32)
    p = np.exp(x - x.max())
    p /= p.sum()
    n = 20000
    counts = np.bincount(_draws(SamplingParams(temperature=1.0, seed=11), x, n), minlength=5)
    # Each frequency has standard deviation sqrt(p(1-p)/n) <= 0.5/sqrt(20000) ~= 0.0035, so 0.02
    # is over 5 sigma for every token: a correct sampler essentially never fails, a biased one does.
    np.testing.assert_allclose(counts / n, p, atol=0.02)
    # Temperature reshapes the distribution as softmax(x / T).
    q = np.exp(x / 0.5 - (x / 0.5).max())
    q /= q.sum()
    counts = np.bincount(_draws(SamplingParams(temperature=0.5, seed=12), x, n), minlength=5)
    np.testing.assert_allclose(counts / n, q, atol=0.02)


def test_bad_params():
    with pytest.raises(IngotError):
        Sampler(SamplingParams(top_p=0.0), V)
    with pytest.raises(IngotError):
        Sampler(SamplingParams(temperature=-1.0), V)


def test_generation_config():
    cfg = merge_generation_config({"bos_token_id": 1, "eos_token_id": [2, 7, 2], "do_sample": True,
                                   "temperature": 0.6, "top_p": 0.9})
    assert cfg["eos_token_ids"] == [2, 7] and cfg["bos_token_id"] == 1
    # transformers samples with top_k=50 when the file names none
    assert cfg["defaults"] == {"temperature": 0.6, "top_k": 50, "top_p": 0.9, "repetition_penalty": 1.0}
    Sampler(SamplingParams(**cfg["defaults"]), V)
    greedy = merge_generation_config({"eos_token_id": 106, "temperature": 0.7, "repetition_penalty": 1.1})
    assert greedy["eos_token_ids"] == [106] and greedy["bos_token_id"] is None
    assert greedy["defaults"]["temperature"] == 0.0 and greedy["defaults"]["repetition_penalty"] == 1.1
    assert merge_generation_config({})["eos_token_ids"] == []
