"""Prefix reuse: time to first token of a request that shares a long prefix with the previous
one, against the first request and against the same request with nothing cached.

    python tools/bench_prefix.py [model.ingot | file.gguf] --prefix 500 --threads 1,2
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="artefact or GGUF (default: the bundled Gemma)")
    ap.add_argument("--prefix", type=int, default=500)
    ap.add_argument("--tail", type=int, default=20, help="tokens after the shared prefix")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--max-seq-len", type=int, default=1024)
    args = ap.parse_args(argv)

    import ingot
    from ingot.runtime.engine import Engine, Request
    from ingot.runtime.sampling import SamplingParams
    from ingot.default_model import artefact_for
    path = artefact_for(args.model, max_seq_len=args.max_seq_len, max_batch=2)
    for th in (int(t) for t in args.threads.split(",")):
        with ingot.load(path, threads=th) as m:
            rng = np.random.default_rng(0)

            def ids(n):
                return rng.integers(10, m.vocab_size - 10, n).tolist()

            def ask(engine, prompt):
                h = engine.submit(Request(prompt, 8, SamplingParams()))
                toks = h.tokens()
                return h.first_token_at - h.submitted, toks, h.cached_tokens

            eng = Engine(m)
            ask(eng, ids(16))  # warm-up
            prefix = ids(args.prefix)
            first = ask(eng, prefix + ids(args.tail))
            second_prompt = prefix + ids(args.tail)
            second = ask(eng, second_prompt)
            fresh = ask(Engine(m), second_prompt)  # a new engine knows no cached prefix
            print(f"{th} thread(s): first request TTFT {first[0] * 1000:.0f} ms; second (reused "
                  f"{second[2]} cached tokens) {second[0] * 1000:.0f} ms = "
                  f"{second[0] / first[0]:.3f} of the first; uncached "
                  f"{fresh[0] * 1000:.0f} ms; tokens equal uncached: {second[1] == fresh[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
