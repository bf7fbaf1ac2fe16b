"""Aggregate decode throughput of `ingot serve` with 1, 2, 4 and 8 concurrent greedy streams.

Starts the server in this process on a free loopback port (the model compiled with enough
sequence slots), and for each concurrency level runs that many streaming chat clients (the
official `openai` client) at once, each asking for the same number of tokens with the end
tokens banned so every stream runs to length. Reports aggregate completion tokens/s over the
wall time of the round (prefill included, prompts are short), the median time to first token,
and the engine's own count of rows per decode step.

    python tools/bench_serve.py [model.ingot | file.gguf] --streams 1,2,4,8 --tokens 64 --threads 2
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time


def one_stream(client, i, tokens, ban):
    t0 = time.perf_counter()
    first, n = None, 0
    stream = client.chat.completions.create(
        model="bench", messages=[{"role": "user", "content": f"Tell story number {i}."}],
        max_tokens=tokens, temperature=0, logit_bias=ban, stream=True,
        stream_options={"include_usage": True})
    for ch in stream:
        if ch.choices and ch.choices[0].delta.content and first is None:
            first = time.perf_counter() - t0
        if ch.usage:
            n = ch.usage.completion_tokens
    return n, first or 0.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", help="artefact or GGUF (default: the bundled Gemma)")
    ap.add_argument("--streams", default="1,2,4,8")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--max-seq-len", type=int, default=1024)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    streams = [int(x) for x in args.streams.split(",")]

    import ingot
    from openai import OpenAI
    from ingot.default_model import artefact_for
    path = artefact_for(args.model, max_seq_len=args.max_seq_len, max_batch=max(streams))
    model = ingot.load(path, threads=args.threads)
    if model.max_batch < max(streams):
        sys.exit(f"{path} has {model.max_batch} sequence slots; compile with --max-batch "
                 f"{max(streams)}")
    from ingot.runtime.server import BackgroundServer, create_app
    engine = model.engine.start()
    srv = BackgroundServer(create_app(model, engine, "bench"))
    client = OpenAI(base_url=srv.url, api_key="none", max_retries=0)
    ban = {str(t): -100 for t in model.eos_ids()}
    one_stream(client, 0, 4, ban)  # warm-up: first-call costs out of the figures
    rows = []
    for c in streams:
        best = None
        for _ in range(args.rounds):
            s0 = dict(engine.stats)
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(c) as pool:
                res = list(pool.map(lambda i: one_stream(client, i, args.tokens, ban), range(c)))
            wall = time.perf_counter() - t0
            toks = sum(n for n, _ in res)
            steps = engine.stats["decode_steps"] - s0.get("decode_steps", 0)
            drows = engine.stats["decode_rows"] - s0.get("decode_rows", 0)
            r = {"streams": c, "tokens": toks, "wall_s": round(wall, 3),
                 "aggregate_tok_s": round(toks / wall, 1),
                 "ttft_ms_median": round(1000 * statistics.median(f for _, f in res), 1),
                 "rows_per_step": round(drows / steps, 2) if steps else 0.0}
            if best is None or r["aggregate_tok_s"] > best["aggregate_tok_s"]:
                best = r
        rows.append(best)
    srv.close()
    model.close()
    base = rows[0]["aggregate_tok_s"]
    for r in rows:
        r["gain_vs_1"] = round(r["aggregate_tok_s"] / base, 2)
    if args.json:
        print(json.dumps({"model": str(path), "threads": args.threads, "rows": rows}, indent=1))
    else:
        print(f"{path} · {args.threads} threads · {args.tokens} tokens per stream, greedy")
        print("| streams | aggregate tok/s | gain | rows/step | median TTFT ms |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['streams']} | {r['aggregate_tok_s']} | ×{r['gain_vs_1']} | "
                  f"{r['rows_per_step']} | {r['ttft_ms_median']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
