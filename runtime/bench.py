"""Measures an artefact on this host: load time, prefill and decode tokens/s, time to first token
and peak RSS. Runtime-only (numpy and the standard library), so it runs on the device itself;
`ingot bench` and tools/bench.py share it and print the same rows.
"""
from __future__ import annotations

import resource
import statistics
import sys
import time

import numpy as np

from ..errors import IngotError
from .model import Model

# The row every engine reports; a reference runner (llama-cpp-python, later) fills the same keys.
FIELDS = ("engine", "threads", "load_s", "prefill_tok_s", "decode_tok_s", "ttft_s",
          "peak_rss_mib")


def peak_rss_mib() -> float:
    """The process's peak resident set so far (it only grows across runs in one process)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def _one_pass(model: Model, prompt: np.ndarray, gen_tokens: int) -> tuple:
    """(prefill seconds, time to first token, decode seconds) for one prompt + greedy decode."""
    model.reset()
    t0 = time.perf_counter()
    logits = model.prefill_view(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(logits))
    t2 = time.perf_counter()
    decode_s = 0.0
    for _ in range(gen_tokens):
        t = time.perf_counter()
        logits = model.decode_view(tok)
        decode_s += time.perf_counter() - t
        tok = int(np.argmax(logits))
    return t1 - t0, t2 - t0, decode_s


def bench_threads(path, threads: int, prompt_tokens: int = 128, gen_tokens: int = 64,
                  repeats: int = 3, seed: int = 0) -> dict:
    """One row for one thread count; medians over `repeats` passes, context reset between."""
    if prompt_tokens < 1 or gen_tokens < 1 or repeats < 1:
        raise IngotError("bench needs at least 1 prompt token, 1 generated token and 1 repeat")
    t = time.perf_counter()
    model = Model.load(path, threads=threads)
    load_s = time.perf_counter() - t
    try:
        if prompt_tokens + gen_tokens > model.max_seq_len:
            raise IngotError(f"--prompt-tokens {prompt_tokens} + --gen-tokens {gen_tokens} exceed "
                             f"the artefact's max_seq_len {model.max_seq_len}")
        prompt = np.random.default_rng(seed).integers(0, model.vocab_size, prompt_tokens)
        # The first pass pages the mapped weights in; that is load cost, not throughput.
        _one_pass(model, prompt[:min(prompt_tokens, model.chunk)], 1)
        runs = [_one_pass(model, prompt, gen_tokens) for _ in range(repeats)]
    finally:
        model.close()
    prefill, ttft, decode = (statistics.median(r[i] for r in runs) for i in range(3))
    return {"engine": "ingot", "threads": model.threads, "load_s": load_s,
            "prefill_tok_s": prompt_tokens / prefill, "decode_tok_s": gen_tokens / decode,
            "ttft_s": ttft, "peak_rss_mib": peak_rss_mib(),
            "prompt_tokens": prompt_tokens, "gen_tokens": gen_tokens, "repeats": repeats}


def bench(path, threads=(1,), **opts) -> list:
    return [bench_threads(path, t, **opts) for t in threads]


def format_table(rows: list) -> str:
    head = ("engine", "threads", "load s", "prefill tok/s", "decode tok/s", "TTFT ms",
            "peak RSS MiB")
    cells = [head] + [(r["engine"], str(r["threads"]), f"{r['load_s']:.3f}",
                       f"{r['prefill_tok_s']:.1f}", f"{r['decode_tok_s']:.1f}",
                       f"{r['ttft_s'] * 1e3:.2f}", f"{r['peak_rss_mib']:.1f}") for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i])
                       for i in range(len(head))) for c in cells]
    return "\n".join(lines) + "\n(peak RSS is the whole process's peak so far)"
