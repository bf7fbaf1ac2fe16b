"""tools/bench.py: Ingot's rows, and llama-cpp-python's on the same GGUF with ratios where it
is installed (where it is not, or where it cannot load the file, the tool says so and reports
Ingot alone)."""
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
QUICK = ["--threads", "1", "--prompt-tokens", "8", "--gen-tokens", "4", "--repeats", "1", "--json"]


def _bench(art, gguf):
    r = subprocess.run([sys.executable, str(TOOL), str(art), "--gguf", str(gguf), *QUICK],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["results"][0]["engine"] == "ingot" and out["results"][0]["decode_tok_s"] > 0
    return out, r.stderr


@pytest.mark.xdist_group("gemma")
def test_bench_tool_against_llama_cpp(gemma_artefact, gemma_gguf):
    """The real model: both engines on the same file, one ratio line per thread count."""
    out, err = _bench(gemma_artefact, gemma_gguf)
    engines = [row["engine"] for row in out["results"]]
    if importlib.util.find_spec("llama_cpp") is None:
        assert "llama-cpp-python is not installed" in err and engines == ["ingot"]
    else:
        assert engines == ["ingot", "llama.cpp"], err
        assert len(out["ratios"]) == 1 and out["results"][1]["decode_tok_s"] > 0


@pytest.mark.xdist_group("llama")
def test_bench_tool_reference_failure_is_reported(model_dirs, tmp_path):
    """A GGUF without tokenizer metadata (as the test writer makes them) is one llama.cpp cannot
    load: the tool names the failure and still reports Ingot's figures."""
    _, hf = model_dirs("llama")
    gguf = tmp_path / "llama.gguf"
    write_gguf(hf, gguf)
    art = ingot.compile(gguf, tmp_path / "llama.ingot", max_seq_len=64)
    out, err = _bench(art, gguf)
    assert [row["engine"] for row in out["results"]] == ["ingot"] and out["ratios"] == []
    if importlib.util.find_spec("llama_cpp") is None:
        assert "llama-cpp-python is not installed" in err
    else:
        assert "llama.cpp run at 1 threads failed" in err
