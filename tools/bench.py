"""Ingot against llama.cpp on the same model, for a developer or a build pipeline.

    python tools/bench.py model.ingot --gguf model.gguf         # artefact + its GGUF reference
    python tools/bench.py model.gguf                            # compiled first; the same GGUF
                                                                # is the llama.cpp reference
    python tools/bench.py path/to/hf-model --no-reference --json

The same flags and the same report as `ingot bench` (the measuring lives in
ingot.runtime.bench, the per-engine worker processes in ingot.runtime.bench_worker).
"""
from __future__ import annotations

import argparse
import sys

from ingot.cli import add_bench_flags, cmd_bench, guarded


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_bench_flags(p)
    return guarded(cmd_bench, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
