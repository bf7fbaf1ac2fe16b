"""GPU figures for the closing note of a session that is lent a GPU (tools/gpu_check.sh runs
it there): a model compiled for the GPU's architecture, `ingot bench` at batch 1 (prefill
tokens/s at 128 and 512 tokens, decode tokens/s, load time, TTFT), decode at batch 8 (eight
sequences in their own KV cache slots, one `decode_batch` a step), and the greedy tokens of
the GPU artefact against the CPU artefact of the same model.

The model: a GGUF given with --gguf (the bundled Gemma 3 270M Q4_K_M where it is installed),
else Gemma 3 270M's architecture (18 layers, hidden 640, head_dim 256, vocabulary 262144,
sliding windows of 512) with random weights, quantized with --isq: the same shapes and bytes
a step moves, so the same speed, where the real file cannot travel (the device machine takes
64 MiB of files a call and reaches no registry). Random weights make near-ties in the logits
likelier than trained ones do, so the token comparison is reported, not asserted (the
asserted GPU checks are tests/test_cuda_gpu.py).

    python tools/gpu_bench.py --out DIR [--gguf FILE] [--isq Q4K] [--steps 64]
"""
from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import tempfile
import time

import numpy as np

# Gemma 3 270M's config.json (the architecture only), for the random-weight stand-in.
GEMMA3_270M = dict(
    vocab_size=262144, hidden_size=640, intermediate_size=2048, num_hidden_layers=18,
    num_attention_heads=4, num_key_value_heads=1, head_dim=256, sliding_window=512,
    query_pre_attn_scalar=256, max_position_embeddings=32768, final_logit_softcapping=None,
    attn_logit_softcapping=None,
    rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                     "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})


def random_gemma3(folder: pathlib.Path) -> pathlib.Path:
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    import torch
    from tiny_models import build_model, save_model
    torch.manual_seed(0)
    model = build_model("gemma3", **GEMMA3_270M)
    model.to(torch.bfloat16)
    return save_model(model, folder)


def target_for_gpu() -> str:
    from ingot.runtime.cuda.driver import device_capability
    from ingot.targets.cuda.target import target_for_capability
    cc = device_capability()
    if cc is None:
        raise SystemExit("gpu_bench: no usable CUDA device (libcuda and a GPU) on this host")
    return target_for_capability(cc)


def batch_decode(model, rows: int, prompt: list, steps: int) -> dict:
    """Aggregate tokens/s of `steps` decode_batch steps over `rows` sequences (each prefilled
    with `prompt` in its own slot); the first two steps are warm-up (graph capture)."""
    slots = list(range(rows))
    toks = [int(model.prefill_at(s, 0, prompt).argmax()) for s in slots]
    pos = [len(prompt)] * rows
    times = []
    for _ in range(steps + 2):
        t0 = time.perf_counter()
        out = model.decode_batch(toks, pos, slots)
        times.append(time.perf_counter() - t0)
        toks = [int(r.argmax()) for r in out]
        pos = [p + 1 for p in pos]
    dt = sum(times[2:])
    return {"rows": rows, "steps": steps, "tok_s": rows * steps / dt,
            "step_ms_median": 1e3 * float(np.median(times[2:]))}


def greedy(model, prompt: list, n: int) -> list:
    logits, out = model.prefill(prompt), []
    for _ in range(n):
        out.append(int(logits.argmax()))
        logits = model.decode(out[-1])
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for gpu_bench.json and the logs")
    ap.add_argument("--gguf", help="a GGUF file (default: Gemma 3 270M's shapes, random)")
    ap.add_argument("--isq", default="Q4K", help="for the random model (default Q4K)")
    ap.add_argument("--steps", type=int, default=64, help="decode steps timed")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)

    import ingot
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = pathlib.Path(tempfile.mkdtemp(prefix="gpu_bench-"))
    target = target_for_gpu()
    kw = dict(max_seq_len=1024, prefill_chunk=512, max_batch=8)
    t0 = time.perf_counter()
    if args.gguf:
        model, isq, label = args.gguf, None, pathlib.Path(args.gguf).name
    else:
        model, isq = random_gemma3(work / "gemma3-270m-random"), args.isq
        label = f"Gemma 3 270M shapes, random weights, --isq {args.isq}"
    built = time.perf_counter()
    gpu = ingot.compile(model, work / "gpu.ingot", target=target, isq=isq, **kw)
    gpu_s = time.perf_counter() - built
    host = ingot.compile(model, work / "cpu.ingot", isq=isq, **dict(kw, max_batch=1))
    report = {"model": label, "target": target, "build_s": round(built - t0, 1),
              "compile_gpu_s": round(gpu_s, 1),
              "gpu": subprocess.run(["nvidia-smi", "-L"], capture_output=True,
                                    text=True).stdout.strip()}
    print(json.dumps(report), flush=True)

    # Batch 1: the same benchmark as on the CPU; llama.cpp (all layers on the GPU) in the
    # same run where a GGUF is given and llama-cpp-python with CUDA is importable there.
    import importlib.util
    peer = ["--gguf", args.gguf] if args.gguf and importlib.util.find_spec("llama_cpp") \
        else ["--no-reference"]
    report["peer"] = "llama-cpp-python" if peer[0] == "--gguf" else None
    bench = subprocess.run([sys.executable, "-m", "ingot.cli", "bench", str(gpu), *peer,
                            "--threads", "1", "--prompt-tokens", "128,512",
                            "--gen-tokens", str(args.steps), "--repeats", str(args.repeats),
                            "--json"], capture_output=True, text=True)
    (out / "bench_b1.txt").write_text(bench.stdout + bench.stderr)
    try:
        report["batch1"] = json.loads(bench.stdout)
    except json.JSONDecodeError:
        report["batch1"] = {"error": (bench.stderr or bench.stdout).strip()[-2000:]}
    print(json.dumps({"batch1": report["batch1"]}), flush=True)

    prompt = [int(t) for t in np.random.default_rng(1).integers(10, 20000, 128)]
    with ingot.load(gpu) as m:
        report["device_mib"] = round(getattr(m._team, "device_bytes", 0) / 2 ** 20, 1)
        report["decode"] = [batch_decode(m, r, prompt, args.steps) for r in (1, 8)]
        m.reset()
        gpu_tokens = greedy(m, prompt, 32)
    with ingot.load(host) as m:
        cpu_tokens = greedy(m, prompt, 32)
    same = next((i for i, (a, b) in enumerate(zip(gpu_tokens, cpu_tokens)) if a != b), 32)
    report["greedy"] = {"steps": 32, "equal_prefix": same, "gpu": gpu_tokens, "cpu": cpu_tokens}
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report[k] for k in ("device_mib", "decode", "greedy")}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
