"""`ingot bench` / tools/bench.py: Ingot and llama-cpp-python on the same file in one run, one
worker process per (engine, thread count), passes alternating; ratios where both ran. Where
llama-cpp-python is missing, or cannot load the file, the tool says so and reports Ingot alone.

Kept quick: 8-token prompts, 4 generated tokens, 1 repeat, 1 thread, a 64 MiB bandwidth buffer.
"""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

from gguf_from_hf import write_gguf
from ingot.cli import main
from ingot.quant.registry import get_format
from ingot.runtime.artefact import Artefact
from ingot.runtime.bandwidth import read_bandwidth
from ingot.runtime.bench import Worker, decode_bytes

TOOL = pathlib.Path(__file__).resolve().parent.parent / "tools" / "bench.py"
QUICK = ["--threads", "1", "--prompt-tokens", "8", "--gen-tokens", "4", "--repeats", "1",
         "--bandwidth-mib", "64"]
HAVE_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None


def _tool(*args, env=None):
    r = subprocess.run([sys.executable, str(TOOL), *map(str, args), *QUICK, "--json"],
                       capture_output=True, text=True, timeout=600,
                       env={**os.environ, **(env or {})})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout), r.stderr


def _plan(path) -> dict:
    a = Artefact(path)
    try:
        return a.json("plan")
    finally:
        a.close()


def _check_row(row):
    assert set(row["prefill_tok_s"]) == {"8"} and row["prefill_tok_s"]["8"] > 0
    for key in ("decode_tok_s", "ttft_s", "load_s", "peak_rss_mib", "bandwidth_gb_s",
                "ceiling_tok_s", "decode_of_ceiling"):
        assert row[key] > 0, key


@pytest.mark.xdist_group("gemma")
def test_bench_tool_against_llama_cpp(gemma_artefact, gemma_gguf):
    """The real model: both engines on the same file, one ratio line per thread count."""
    out, err = _tool(gemma_artefact, "--gguf", gemma_gguf)
    engines = [row["engine"] for row in out["results"]]
    for row in out["results"]:
        _check_row(row)
    # Gemma's embedding table is tied to the output head: a decode step reads all of it.
    step = out["decode_step_bytes"]
    assert step["weights_field"] == "decode_read_bytes" and step["kv"] > 0
    assert step["weights"] > 0.99 * _plan(gemma_artefact)["weights_bytes"]
    if not HAVE_LLAMA_CPP:
        assert "llama-cpp-python is not installed" in err and engines == ["ingot"]
        return
    assert engines == ["ingot", "llama.cpp"], err
    (q,) = out["ratios"]
    assert q["threads"] == 1 and set(q) >= {"prefill@8", "decode", "ttft", "peak_rss", "load"}
    ing, ref = out["results"]
    assert abs(q["decode"] - ing["decode_tok_s"] / ref["decode_tok_s"]) < 1e-9
    # Each worker reports its own peak, not the parent's (which held the bandwidth buffer).
    assert ing["peak_rss_mib"] != ref["peak_rss_mib"]


@pytest.mark.xdist_group("gemma")
def test_ingot_bench_cli_on_an_artefact(gemma_artefact, capsys):
    args = ["bench", str(gemma_artefact), "--no-reference", *QUICK]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "prefill@8 tok/s" in out and "decode % ceiling" in out
    rows = [ln.split() for ln in out.splitlines() if ln.startswith(("ingot ", "llama.cpp "))]
    assert [r[:2] for r in rows] == [["ingot", "1"]]


@pytest.mark.xdist_group("gemma")
def test_the_ingot_worker_loads_the_runtime_alone(gemma_artefact):
    w = Worker("ingot", gemma_artefact, 1, n_ctx=64, n_batch=8, seed=0)
    try:
        got = w.ask(cmd="pass", prompt=8, gen=2)
        assert got["prefill_s"] > 0 and got["ttft_s"] >= got["prefill_s"]
        assert w.ask(cmd="modules")["heavy"] == []
    finally:
        w.close()


@pytest.mark.xdist_group("llama")
def test_a_gguf_input_is_compiled_and_a_failing_reference_is_reported(model_dirs, tmp_path):
    """A GGUF without tokenizer metadata (as the test writer makes them) is one llama.cpp cannot
    load: compiled first (into INGOT_CACHE), it is its own reference; the tool names the
    failure and still reports Ingot's figures. With --no-reference it does not try."""
    _, hf = model_dirs("llama")
    gguf = tmp_path / "llama.gguf"
    write_gguf(hf, gguf)
    env = {"INGOT_CACHE": str(tmp_path / "cache")}
    out, err = _tool(gguf, "--max-seq-len", "64", env=env)
    assert [row["engine"] for row in out["results"]] == ["ingot"] and out["ratios"] == []
    _check_row(out["results"][0])
    assert pathlib.Path(out["artefact"]).parent == tmp_path / "cache"
    if HAVE_LLAMA_CPP:
        assert out["reference"] == str(gguf)
        assert "llama.cpp run at 1 threads failed" in err
        assert any("llama.cpp run at 1 threads failed" in n for n in out["notes"])
    else:
        assert "llama-cpp-python is not installed" in err
    # An untied embedding table: a decode step reads one row of it, not the table.
    plan = _plan(out["artefact"])
    (emb,) = [t for t in plan["tensors"] if t["name"] == "token_embd.weight"]
    table = get_format(emb["dtype"]).nbytes(tuple(emb["shape"]))
    row = get_format(emb["dtype"]).row_bytes(emb["shape"][1])
    rest = plan["weights_bytes"] - table + row
    # Alignment: 64 bytes per tensor, and each offload unit starts on a 4 KiB page.
    slack = 64 * len(plan["tensors"]) + 4096 * (len(plan["units"]) + 1)
    assert rest - slack < plan["decode_read_bytes"] <= rest

    out, err = _tool(gguf, "--max-seq-len", "64", "--no-reference", env=env)
    assert out["reference"] is None and "failed" not in err and "not installed" not in err


def test_bench_bad_input_is_one_line(tmp_path, capsys):
    assert main(["bench", str(tmp_path / "missing.ingot")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ingot: error:") and "no such file" in err[0]
    assert main(["bench", str(TOOL), "--gguf", str(tmp_path / "missing.gguf")]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "missing.gguf: no such GGUF file" in err[0]


def test_bandwidth_is_measured():
    assert read_bandwidth(1, size_mib=64, runs=2) > 0
    assert read_bandwidth(2, size_mib=64, runs=2) > 0


def test_decode_bytes_counts_weights_and_the_kv_read():
    plan = {"weights_bytes": 1000, "decode_read_bytes": 800, "n_layers": 6, "kv_ring_layers": 4,
            "kv_bytes_per_token": 2 * 16, "max_seq_len": 100, "state_bytes": 2 * 16 * 100
            + 4 * 16 * 10}
    # 2 full layers read every position; 4 ring layers (10 rows) read at most 10.
    assert decode_bytes(plan, 5) == {"weights": 800, "kv": 32 * 5 + 4 * 16 * 5, "total":
                                     800 + 32 * 5 + 64 * 5, "weights_field": "decode_read_bytes"}
    assert decode_bytes(plan, 50)["kv"] == 32 * 50 + 64 * 10
    del plan["decode_read_bytes"]
    assert decode_bytes(plan, 0) == {"weights": 1000, "kv": 0, "total": 1000,
                                     "weights_field": "weights_bytes"}
