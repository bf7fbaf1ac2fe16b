"""Next-token choice from one row of logits: penalties, temperature, top-k/top-p/min-p, draw.

Buffers the size of the vocabulary are made once per Sampler and reused, so a decode step does
not allocate vocabulary-sized arrays except where numpy offers no ``out=`` (argpartition,
argsort for top-p without top-k).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import IngotError


@dataclass
class SamplingParams:
    temperature: float = 0.0         # 0 means greedy
    top_k: int = 0                   # 0 means off
    top_p: float = 1.0               # 1 means off
    min_p: float = 0.0               # 0 means off; relative to the most likely token
    repetition_penalty: float = 1.0  # transformers' semantics
    presence_penalty: float = 0.0    # OpenAI's semantics
    frequency_penalty: float = 0.0
    seed: int | None = None
    logit_bias: dict | None = None   # token id -> added to its logit (OpenAI's logit_bias)

    def check(self) -> None:
        if self.temperature < 0 or self.top_k < 0 or not 0 < self.top_p <= 1 \
                or not 0 <= self.min_p <= 1 or self.repetition_penalty <= 0:
            raise IngotError(f"bad sampling parameters: {self}")
        if self.seed is not None and (not isinstance(self.seed, int) or self.seed < 0):
            raise IngotError(f"seed must be a non-negative integer, not {self.seed!r}")


class Sampler:
    def __init__(self, params: SamplingParams, vocab_size: int):
        params.check()
        self.params = params
        self.vocab_size = int(vocab_size)
        self.rng = np.random.Generator(np.random.PCG64(params.seed))
        self._logits = np.empty(self.vocab_size, np.float32)
        self._probs = np.empty(self.vocab_size, np.float32)
        self._cum = np.empty(self.vocab_size, np.float64)  # float64: 262k float32 sums drift
        bias = {int(k): float(v) for k, v in (params.logit_bias or {}).items()}
        if any(not 0 <= k < self.vocab_size for k in bias):
            raise IngotError(f"logit_bias names a token outside the vocabulary "
                             f"(0..{self.vocab_size - 1})")
        self._bias_ids = np.fromiter(bias.keys(), np.intp, len(bias))
        self._bias = np.fromiter(bias.values(), np.float32, len(bias))
        self.logprobs = None  # (chosen logprob, [(id, logprob), ...]) when asked for

    def sample(self, logits: np.ndarray, history: Sequence[int] = (), mask=None,
               top_logprobs: int | None = None) -> int:
        """``history``: the ids the penalties look at (transformers penalizes the prompt too;
        OpenAI only the generated text: the caller picks). ``mask``: a boolean array of the
        tokens allowed (constrained decoding). With ``top_logprobs`` (0 or more) the chosen
        token's log-probability and the best alternatives are left in ``self.logprobs``; they
        are the model's, after penalties, bias and mask, before temperature."""
        p = self.params
        x = self._logits
        np.copyto(x, logits[: self.vocab_size])  # never change the caller's logits
        if len(history) and (p.repetition_penalty != 1 or p.presence_penalty or p.frequency_penalty):
            self._penalize(x, history)
        if self._bias.size:
            x[self._bias_ids] += self._bias
        if mask is not None:
            x[~mask[: self.vocab_size]] = -np.inf
        if top_logprobs is not None:
            lse = _logsumexp(x)
            t = self._choose(x.copy() if p.temperature else x)
            top = np.argpartition(x, -top_logprobs)[-top_logprobs:] if top_logprobs else []
            top = sorted(top, key=lambda i: -x[i])
            self.logprobs = (float(x[t] - lse), [(int(i), float(x[i] - lse)) for i in top])
            return t
        return self._choose(x)

    def _choose(self, x: np.ndarray) -> int:
        p = self.params
        if p.temperature == 0:
            return int(np.argmax(x))
        if p.temperature != 1:
            np.multiply(x, np.float32(1.0 / p.temperature), out=x)

        ids = None  # candidate token ids; None means the whole vocabulary, in order
        z = x
        if 0 < p.top_k < self.vocab_size:
            ids = np.argpartition(x, -p.top_k)[-p.top_k:]
            z = x[ids]
        probs = self._probs[: len(z)]
        np.subtract(z, z.max(), out=probs)
        np.exp(probs, out=probs)

        if p.top_p < 1:
            cand, mass = self._nucleus_candidates(probs, p.top_p)
            if cand is None:
                order = np.argsort(probs)[::-1]
            else:
                order = cand[np.argsort(probs[cand])[::-1]]
            ranked = probs[order]
            cum = np.cumsum(ranked, dtype=np.float64, out=self._cum[: len(order)])
            # The smallest prefix whose mass reaches top_p; always at least one token.
            keep = min(int(np.searchsorted(cum, p.top_p * mass)) + 1, len(order))
            order = order[:keep]
            ids = order if ids is None else ids[order]
            probs = ranked[:keep]
        if p.min_p > 0:
            keep = np.flatnonzero(probs >= p.min_p * probs.max())
            ids = keep if ids is None else ids[keep]
            probs = probs[keep]
        return self._draw(probs, ids)

    @staticmethod
    def _nucleus_candidates(probs: np.ndarray, top_p: float) -> tuple[np.ndarray | None, float]:
        # Sorting a 262k vocabulary costs ms; the nucleus almost always lies in the top few
        # hundred tokens, so grow a partitioned top-m until it holds top_p of the mass.
        total = float(probs.sum(dtype=np.float64))
        m = 256
        while m <= len(probs) // 8:  # past that, a full sort is cheaper than more tries
            top = np.argpartition(probs, -m)[-m:]
            if probs[top].sum(dtype=np.float64) >= top_p * total:
                return top, total
            m *= 16
        return None, total

    def _penalize(self, x: np.ndarray, history: Sequence[int]) -> None:
        p = self.params
        h = np.asarray(history, dtype=np.intp)
        h = h[(h >= 0) & (h < self.vocab_size)]  # ids past the output head cannot be produced
        if p.repetition_penalty != 1:
            # Duplicate ids write the same value twice, so each distinct token is penalized once.
            v = x[h]
            x[h] = np.where(v < 0, v * np.float32(p.repetition_penalty),
                            v / np.float32(p.repetition_penalty))
        if p.frequency_penalty:
            np.subtract.at(x, h, np.float32(p.frequency_penalty))  # once per occurrence
        if p.presence_penalty:
            x[h] -= np.float32(p.presence_penalty)  # buffered: once per distinct token

    def _draw(self, probs: np.ndarray, ids: np.ndarray | None) -> int:
        cum = np.cumsum(probs, dtype=np.float64, out=self._cum[: len(probs)])
        i = int(np.searchsorted(cum, self.rng.random() * cum[-1], side="right"))
        if i >= len(probs):  # rounding put the draw at the very top: take the last live token
            i = int(np.flatnonzero(probs)[-1])
        return int(i if ids is None else ids[i])


def _logsumexp(x: np.ndarray) -> float:
    m = float(x.max())
    return m + float(np.log(np.exp(x - m, dtype=np.float64).sum()))
