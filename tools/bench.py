"""Benchmark an artefact, or a model folder compiled first (into the user cache), and print a table.

    python tools/bench.py model.ingot --threads 1,2
    python tools/bench.py path/to/hf-model --dtype f16 --max-seq-len 512 --json
    python tools/bench.py gemma.ingot --gguf gemma-3-270m-q4_k_m.gguf   # + llama.cpp, ratios

The measuring lives in ingot.runtime.bench, shared with `ingot bench`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ingot.cli import threads_list, guarded


_LLAMA_CPP = r"""
import json, resource, sys, time
import numpy as np
import llama_cpp
path, threads, n_prompt, n_gen, repeats = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
    int(sys.argv[4]), int(sys.argv[5])
t = time.perf_counter()
llm = llama_cpp.Llama(model_path=path, n_ctx=n_prompt + n_gen + 8, n_threads=threads,
                      n_threads_batch=threads, n_batch=max(n_prompt, 1), verbose=False)
load_s = time.perf_counter() - t
prompt = np.random.default_rng(0).integers(0, llm.n_vocab(), n_prompt).tolist()
def one(n):
    llm.reset()
    t0 = time.perf_counter()
    llm.eval(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(llm.eval_logits[-1]))
    t2 = time.perf_counter()
    dec = 0.0
    for _ in range(n):
        t = time.perf_counter()
        llm.eval([tok])
        dec += time.perf_counter() - t
        tok = int(np.argmax(llm.eval_logits[-1]))
    return t1 - t0, t2 - t0, dec
one(1)
runs = [one(n_gen) for _ in range(repeats)]
med = lambda xs: sorted(xs)[len(xs) // 2]
print(json.dumps({"engine": "llama.cpp", "threads": threads, "load_s": load_s,
                  "prefill_tok_s": n_prompt / med([r[0] for r in runs]),
                  "decode_tok_s": n_gen / med([r[2] for r in runs]),
                  "ttft_s": med([r[1] for r in runs]),
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def reference_rows(model, args) -> list:
    """llama-cpp-python on the same GGUF (`--gguf`), one fresh process per thread count so that
    its load time and peak RSS are its own; [] with a note where it is not installed."""
    import importlib.util
    import subprocess
    gguf = getattr(args, "gguf", None)
    if not gguf:
        return []
    if importlib.util.find_spec("llama_cpp") is None:
        print("llama-cpp-python is not installed: reporting Ingot alone", file=sys.stderr)
        return []
    rows = []
    for th in args.threads:
        r = subprocess.run([sys.executable, "-c", _LLAMA_CPP, str(gguf), str(th),
                            str(args.prompt_tokens), str(args.gen_tokens), str(args.repeats)],
                           capture_output=True, text=True)
        if r.returncode != 0:
            tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
            print(f"llama.cpp run at {th} threads failed: {tail}", file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def ratios(rows: list) -> list:
    """Ingot / llama.cpp per thread count, for the speed fields (higher is better) and TTFT /
    RSS (lower is better, so llama.cpp / Ingot)."""
    out = []
    for ing in (r for r in rows if r["engine"] == "ingot"):
        ref = next((r for r in rows if r["engine"] == "llama.cpp"
                    and r["threads"] == ing["threads"]), None)
        if ref:
            out.append(f"threads {ing['threads']}: prefill x{ing['prefill_tok_s'] / ref['prefill_tok_s']:.2f}, "
                       f"decode x{ing['decode_tok_s'] / ref['decode_tok_s']:.2f}, "
                       f"TTFT x{ref['ttft_s'] / ing['ttft_s']:.2f}, "
                       f"peak RSS x{ref['peak_rss_mib'] / ing['peak_rss_mib']:.2f} (Ingot / llama.cpp; "
                       "TTFT and RSS as llama.cpp / Ingot)")
    return out


def run(args) -> int:
    from ingot.runtime.bench import bench, format_table
    path = pathlib.Path(args.model)
    if path.is_dir():
        import ingot
        path = ingot.compile(path, None, dtype=args.dtype, max_seq_len=args.max_seq_len)
    rows = bench(path, threads=args.threads, prompt_tokens=args.prompt_tokens,
                 gen_tokens=args.gen_tokens, repeats=args.repeats)
    rows += reference_rows(args.model, args)
    print(json.dumps({"artefact": str(path), "results": rows, "ratios": ratios(rows)}, indent=2)
          if args.json else "\n".join([str(path), format_table(rows), *ratios(rows)]))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="an artefact, or a Hugging Face model folder to compile first")
    p.add_argument("--threads", type=threads_list, default=[1, 2], help="e.g. 1,2")
    p.add_argument("--prompt-tokens", type=int, default=128)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), help="when compiling a folder")
    p.add_argument("--max-seq-len", type=int, default=1024, help="when compiling a folder")
    p.add_argument("--gguf", help="the GGUF the artefact was compiled from: llama-cpp-python "
                   "runs it in the same session, and the table adds ratios")
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
