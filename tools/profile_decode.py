"""Where a decode step's (and a prefill's) time goes, per op class: a profile build of the model
(its steps stamp the cycle counter after every kernel call and barrier, on thread 0), a prompt,
then decode steps; cycles are summed per label (op, and type and shape for matrices) and scaled
to the measured wall time.

    python tools/profile_decode.py model.gguf --threads 1,2
    python tools/profile_decode.py path/to/hf-model --isq Q4K --json

The compile goes to the user cache like any other (the profile flag is part of its key).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict

import numpy as np

import ingot
from ingot.cli import guarded, threads_list


def _rows(labels, cyc, wall_ms) -> list:
    by = defaultdict(float)
    for label, c in zip(labels, cyc.astype(np.float64)):
        by[label] += c
    total = max(sum(by.values()), 1.0)
    return sorted(({"op": k, "ms": v / total * wall_ms, "share": v / total}
                   for k, v in by.items()), key=lambda r: -r["share"])


def profile(path, threads: int, prompt_tokens: int, steps: int) -> dict:
    m = ingot.load(path, threads=threads)
    try:
        rng = np.random.default_rng(0)
        prompt = rng.integers(0, m.vocab_size, prompt_tokens)
        m.prefill(prompt[:8])  # warm-up
        m.reset()
        m.profile_prefill_cycles[:] = 0
        t = time.perf_counter()
        m.prefill(prompt)
        prefill_wall = time.perf_counter() - t
        tok = 1
        for _ in range(4):  # warm-up: page the weights in
            tok = int(np.argmax(m.decode_view(tok)))
        m.profile_cycles[:] = 0
        t = time.perf_counter()
        for _ in range(steps):
            tok = int(np.argmax(m.decode_view(tok)))
        wall = time.perf_counter() - t
        labels = m.plan["profile_calls"]
        decode = _rows(labels, m.profile_cycles, wall * 1e3 / steps)
        prefill = _rows(labels, m.profile_prefill_cycles, prefill_wall * 1e3)
    finally:
        m.close()
    return {"threads": threads, "decode_tok_s": steps / wall, "steps": steps,
            "prefill_tok_s": prompt_tokens / prefill_wall, "prompt_tokens": prompt_tokens,
            "decode_ms_per_token": decode, "prefill_ms": prefill}


def run(args) -> int:
    path = ingot.compile(args.model, None, profile=True, isq=args.isq,
                         max_seq_len=args.max_seq_len, progress=True)
    results = [profile(path, t, args.prompt_tokens, args.steps) for t in args.threads]
    if args.json:
        print(json.dumps({"artefact": str(path), "results": results}, indent=2))
        return 0
    for r in results:
        print(f"threads {r['threads']}: decode {r['decode_tok_s']:.1f} tok/s "
              f"({1e3 / r['decode_tok_s']:.2f} ms per token; thread 0's view, barriers included)")
        for row in r["decode_ms_per_token"]:
            print(f"  {row['op']:<32} {row['ms']:8.3f} ms  {100 * row['share']:5.1f} %")
        print(f"threads {r['threads']}: prefill of {r['prompt_tokens']} tokens "
              f"{r['prefill_tok_s']:.1f} tok/s")
        for row in r["prefill_ms"]:
            print(f"  {row['op']:<32} {row['ms']:8.3f} ms  {100 * row['share']:5.1f} %")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="a GGUF file or a Hugging Face model folder")
    p.add_argument("--threads", type=threads_list, default=[1, 2])
    p.add_argument("--isq", help="in-situ quantization level, as for ingot compile")
    p.add_argument("--max-seq-len", type=int, default=1024)
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--json", action="store_true")
    return guarded(run, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
