"""Where a decode step's time goes, per op class: a profile build of the model (its decode step
stamps the cycle counter after every kernel call and barrier, on thread 0), a prompt, then
decode steps; cycles are summed per label (op, and type and shape for matrices) and scaled to
the measured wall time of the steps.

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


def profile(path, threads: int, prompt_tokens: int, steps: int) -> dict:
    m = ingot.load(path, threads=threads)
    try:
        rng = np.random.default_rng(0)
        m.prefill(rng.integers(0, m.vocab_size, prompt_tokens))
        tok = 1
        for _ in range(4):  # warm-up: page the weights in
            tok = int(np.argmax(m.decode_view(tok)))
        m.profile_cycles[:] = 0
        t = time.perf_counter()
        for _ in range(steps):
            tok = int(np.argmax(m.decode_view(tok)))
        wall = time.perf_counter() - t
        cyc = m.profile_cycles.astype(np.float64)
        by = defaultdict(float)
        for label, c in zip(m.plan["profile_calls"], cyc):
            by[label] += c
    finally:
        m.close()
    ms_per_cycle = wall * 1e3 / steps / max(cyc.sum() / steps, 1.0)
    rows = sorted(({"op": k, "ms_per_token": v / steps * ms_per_cycle,
                    "share": v / cyc.sum()} for k, v in by.items()),
                  key=lambda r: -r["share"])
    return {"threads": threads, "decode_tok_s": steps / wall, "steps": steps, "ops": rows}


def run(args) -> int:
    path = ingot.compile(args.model, None, profile=True, isq=args.isq,
                         max_seq_len=args.max_seq_len, progress=True)
    results = [profile(path, t, args.prompt_tokens, args.steps) for t in args.threads]
    if args.json:
        print(json.dumps({"artefact": str(path), "results": results}, indent=2))
        return 0
    for r in results:
        print(f"threads {r['threads']}: {r['decode_tok_s']:.1f} tok/s "
              f"({1e3 / r['decode_tok_s']:.2f} ms per token; thread 0's view, barriers included)")
        for row in r["ops"]:
            print(f"  {row['op']:<32} {row['ms_per_token']:8.3f} ms  {100 * row['share']:5.1f} %")
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
