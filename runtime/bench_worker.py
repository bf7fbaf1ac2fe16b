"""One bench worker: one engine at one thread count, loaded once, answering JSON lines.

    python -m ingot.runtime.bench_worker ingot|llama.cpp FILE --threads T [--n-ctx N]
                                         [--n-batch N] [--seed S]

`ingot bench` starts one per (engine, thread count) and interleaves their passes, so both engines
are measured the same way: same timer, same prompt token ids, same greedy loop, each in a fresh
process whose peak RSS is its own. The Ingot worker imports the runtime alone (no compiler, no
torch or numba); only the llama.cpp worker imports llama_cpp.

The first line out is {"ok": true, "load_s", "vocab_size", "threads", "weights"} or {"ok": false, "error"}.
Then, one answer per command line in:
    {"cmd": "pass", "prompt": N, "gen": M}  -> {"ok": true, "prefill_s", "ttft_s", "decode_s"}
    {"cmd": "rss"}                          -> {"ok": true, "peak_rss_mib"}
    {"cmd": "modules"}                      -> {"ok": true, "heavy": [modules it should not load]}
    {"cmd": "quit"}                         -> (exits)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import numpy as np

HEAVY = ("torch", "numba", "llvmlite", "ingot.compiler", "ingot.targets", "llama_cpp")


def peak_rss_mib() -> float:
    """This process's peak resident set. On Linux VmHWM, the high-water mark of this process's
    own address space: ru_maxrss is not usable in a worker, because Linux carries it over from
    the parent across fork and exec (the worker would report the parent's peak when larger)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except (OSError, ValueError, IndexError):
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes vs KiB


def prompt_ids(n: int, vocab: int, seed: int) -> np.ndarray:
    """The same pseudo-random prompt in every worker (the engines share the vocabulary)."""
    return np.random.default_rng(seed).integers(0, vocab, n)


class IngotEngine:
    def __init__(self, path, threads, **_):
        from .model import Model
        t = time.perf_counter()
        self.model = Model.load(path, threads=threads)
        self.load_s = time.perf_counter() - t
        self.weights = "huge pages" if self.model.huge_pages else "file map"
        self.vocab_size, self.threads = self.model.vocab_size, self.model.threads
        # A CUDA artefact: the bytes its backend holds on the GPU (None on the CPU).
        self.device_bytes = getattr(self.model._team, "device_bytes", None)

    def native(self, ids: np.ndarray):
        return ids.astype(np.int64)

    def reset(self):
        self.model.reset()

    def prefill(self, ids):
        return self.model.prefill_view(ids)

    def decode(self, tok: int):
        return self.model.decode_view(tok)


class LlamaCppEngine:
    def __init__(self, path, threads, n_ctx, n_batch, gpu_layers=0, **_):
        import llama_cpp
        if gpu_layers and not llama_cpp.llama_supports_gpu_offload():
            raise RuntimeError("this llama-cpp-python build has no GPU offload (CUDA): no "
                               "GPU peer")
        self._get = llama_cpp.llama_get_logits_ith
        t = time.perf_counter()
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_batch,
                                   n_threads=threads, n_threads_batch=threads,
                                   n_gpu_layers=gpu_layers, verbose=False)
        self.load_s = time.perf_counter() - t
        self.vocab_size, self.threads = self.llm.n_vocab(), threads

    def native(self, ids: np.ndarray):
        return [int(i) for i in ids]

    def reset(self):
        self.llm.reset()

    def _last_logits(self):
        # The last output row, straight from the context: Llama.eval_logits would copy the whole
        # score matrix into Python lists (and with logits_all off it is not even filled).
        return np.ctypeslib.as_array(self._get(self.llm._ctx.ctx, -1), shape=(self.vocab_size,))

    def prefill(self, ids):
        self.llm.eval(ids)
        return self._last_logits()

    def decode(self, tok: int):
        self.llm.eval([tok])
        return self._last_logits()


ENGINES = {"ingot": IngotEngine, "llama.cpp": LlamaCppEngine}


def one_pass(engine, prompt, gen: int) -> dict:
    """Prefill `prompt` from an empty context, then `gen` greedy decode steps. Decode time is the
    whole loop (step + argmax), as a user waits for it; TTFT is prefill + the first argmax.
    A 16-token prefill first, untimed, wakes the engine's threads (and the vCPUs, which a VM
    host parks while the other engine's worker ran or the parent waited)."""
    engine.reset()
    engine.prefill(prompt[:16])
    engine.reset()
    t0 = time.perf_counter()
    logits = engine.prefill(prompt)
    t1 = time.perf_counter()
    tok = int(np.argmax(logits))
    t2 = time.perf_counter()
    for _ in range(gen):
        tok = int(np.argmax(engine.decode(tok)))
    t3 = time.perf_counter()
    return {"prefill_s": t1 - t0, "ttft_s": t2 - t0, "decode_s": t3 - t2}


def _error(e: BaseException) -> str:
    from ..errors import IngotError
    msg = str(e) if isinstance(e, IngotError) else f"{type(e).__name__}: {e}"
    return " ".join(msg.split()) or type(e).__name__


def serve(engine_name: str, path: str, threads: int, n_ctx: int, n_batch: int, seed: int,
          gpu_layers: int = 0) -> int:
    # The protocol owns the real stdout; anything a native library prints goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(**msg):
        out.write(json.dumps(msg) + "\n")

    try:
        engine = ENGINES[engine_name](path, threads, n_ctx=n_ctx, n_batch=n_batch,
                                      gpu_layers=gpu_layers)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which decides
        say(ok=False, error=_error(e))
        return 1
    say(ok=True, load_s=engine.load_s, vocab_size=engine.vocab_size, threads=engine.threads,
        device_bytes=getattr(engine, "device_bytes", None),
        weights=getattr(engine, "weights", "file map"))
    prompts: dict = {}
    for line in sys.stdin:
        if not line.strip():
            continue
        try:
            cmd = json.loads(line)
            kind = cmd.get("cmd")
            if kind == "quit":
                break
            if kind == "pass":
                n = int(cmd["prompt"])
                if n not in prompts:
                    prompts[n] = engine.native(prompt_ids(n, engine.vocab_size, seed))
                say(ok=True, **one_pass(engine, prompts[n], int(cmd.get("gen", 0))))
            elif kind == "rss":
                say(ok=True, peak_rss_mib=peak_rss_mib())
            elif kind == "modules":
                say(ok=True, heavy=sorted(m for m in sys.modules
                                          if any(m == h or m.startswith(h + ".")
                                                 for h in HEAVY)))
            else:
                say(ok=False, error=f"unknown command {kind!r}")
        except Exception as e:  # noqa: BLE001
            say(ok=False, error=_error(e))
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("engine", choices=sorted(ENGINES))
    p.add_argument("file")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n-ctx", type=int, default=1024, help="llama.cpp context size")
    p.add_argument("--n-batch", type=int, default=512, help="llama.cpp batch size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-gpu-layers", type=int, default=0, help="llama.cpp layers on the GPU "
                   "(-1: all; the peer of a CUDA artefact)")
    a = p.parse_args(argv)
    return serve(a.engine, a.file, a.threads, a.n_ctx, a.n_batch, a.seed, a.n_gpu_layers)


if __name__ == "__main__":
    sys.exit(main())
