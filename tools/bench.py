"""Benchmark an artefact, or a model folder compiled first (into the user cache), and print a table.

    python tools/bench.py model.ingot --threads 1,2
    python tools/bench.py path/to/hf-model --dtype f16 --max-seq-len 512 --json

The measuring lives in ingot.runtime.bench, shared with `ingot bench`.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys

from ingot.cli import threads_list, guarded


def reference_rows(model, args) -> list:
    """Hook for the llama-cpp-python comparison (a later issue): return rows with the fields of
    ingot.runtime.bench.FIELDS, engine "llama.cpp", for the same model, threads and token counts.
    """
    return []


def run(args) -> int:
    from ingot.runtime.bench import bench, format_table
    path = pathlib.Path(args.model)
    if path.is_dir():
        import ingot
        path = ingot.compile(path, None, dtype=args.dtype, max_seq_len=args.max_seq_len)
    rows = bench(path, threads=args.threads, prompt_tokens=args.prompt_tokens,
                 gen_tokens=args.gen_tokens, repeats=args.repeats)
    rows += reference_rows(args.model, args)
    print(json.dumps({"artefact": str(path), "results": rows}, indent=2) if args.json
          else f"{path}\n{format_table(rows)}")
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
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    return guarded(run, args)


if __name__ == "__main__":
    sys.exit(main())
