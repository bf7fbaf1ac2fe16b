"""tools/bench.py: Ingot's rows, and llama-cpp-python's on the same GGUF with ratios where it
is installed (where it is not, the tool says so and reports Ingot alone)."""
from __future__ import annotations

import importlib.util
import json
import pathlib
import subprocess
import sys

import pytest

import ingot
from gguf_from_hf import write_gguf

TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "bench.py"


@pytest.mark.xdist_group("llama")
def test_bench_tool_with_reference(model_dirs, tmp_path):
    _, hf = model_dirs("llama")
    gguf = tmp_path / "llama.gguf"
    write_gguf(hf, gguf)
    art = ingot.compile(gguf, tmp_path / "llama.ingot", max_seq_len=64)
    r = subprocess.run([sys.executable, str(TOOL), str(art), "--gguf", str(gguf), "--threads",
                        "1", "--prompt-tokens", "8", "--gen-tokens", "4", "--repeats", "1",
                        "--json"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    engines = [row["engine"] for row in out["results"]]
    assert engines[0] == "ingot" and out["results"][0]["decode_tok_s"] > 0
    if importlib.util.find_spec("llama_cpp") is None:
        assert "llama-cpp-python is not installed" in r.stderr and engines == ["ingot"]
    else:
        assert engines == ["ingot", "llama.cpp"] and len(out["ratios"]) == 1
