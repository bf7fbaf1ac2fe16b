"""`ingot bench`: Ingot and llama.cpp on the same model, in the same run, measured the same way.

One worker process per (engine, thread count) loads its engine once (runtime/bench_worker.py);
this parent interleaves their passes (Ingot, llama.cpp, Ingot, ... for every repeat and prompt
length) so that a slow spell on the host hits both, and reports medians. Per engine and thread
count: load time, prefill tokens/s per prompt length, decode tokens/s after the first prompt,
time to first token, the worker's peak RSS, and decode as a fraction of the ceiling that the
measured memory bandwidth allows (bandwidth / bytes a decode step reads; the bandwidth is the
better of a reading before and one after the passes).

Runtime-only (numpy and the standard library) unless the input is a GGUF file or a model folder,
which `ingot.compile` turns into an artefact (cached) first. tools/bench.py and `ingot bench`
share this module.
"""
from __future__ import annotations

import importlib.util
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from ..errors import IngotError
from .artefact import Artefact
from .bandwidth import DEFAULT_MIB, read_bandwidth

INGOT, LLAMA = "ingot", "llama.cpp"
SETTLE_S = 0.25  # idle time before each timed pass (see bench_threads)


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class WorkerFailed(Exception):
    pass


class Worker:
    """A bench_worker subprocess; `ask(cmd=...)` sends one command and returns its answer."""

    def __init__(self, engine: str, path, threads: int, n_ctx: int, n_batch: int, seed: int,
                 gpu_layers: int = 0):
        self.engine, self.threads = engine, threads
        self._err = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ingot.runtime.bench_worker", engine, str(path),
             "--threads", str(threads), "--n-ctx", str(n_ctx), "--n-batch", str(n_batch),
             "--seed", str(seed), "--n-gpu-layers", str(gpu_layers)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err, text=True,
            bufsize=1)
        self.hello = self._read()

    def _why(self) -> str:
        try:
            rc = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            rc = None
        self._err.seek(0)
        lines = [ln.strip() for ln in self._err.read().splitlines() if ln.strip()]
        return lines[-1] if lines else f"the worker exited with status {rc}"

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerFailed(self._why())
        try:
            msg = json.loads(line)
        except ValueError:
            raise WorkerFailed(f"unexpected worker output: {line.strip()[:200]}") from None
        if not msg.get("ok"):
            raise WorkerFailed(msg.get("error") or "unknown error")
        return msg

    def ask(self, **cmd) -> dict:
        try:
            self.proc.stdin.write(json.dumps(cmd) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            raise WorkerFailed(self._why()) from None
        return self._read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write('{"cmd": "quit"}\n')
                self.proc.stdin.flush()
            self.proc.wait(timeout=30)
        except (OSError, ValueError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        finally:
            for f in (self.proc.stdin, self.proc.stdout, self._err):
                try:
                    f.close()
                except OSError:
                    pass


# -- what the model reads --------------------------------------------------------------------
def decode_bytes(plan: dict, context: float) -> dict:
    """Bytes one decode step reads at `context` tokens: the weights it touches (the plan's
    `decode_read_bytes`; older artefacts: all weights) and the KV cache rows attention reads.
    Full-context layers read `kv_bytes_per_token` per position; sliding-window layers (a ring
    of fixed rows, their size derived from `state_bytes`) read at most their ring."""
    weights = plan.get("decode_read_bytes") or plan["weights_bytes"]
    per_tok = plan.get("kv_bytes_per_token", 0)
    ring_layers = plan.get("kv_ring_layers", 0)
    full_layers = plan.get("n_layers", 0) - ring_layers
    kv = per_tok * context
    if ring_layers and full_layers > 0 and per_tok:
        per_layer = per_tok / full_layers
        ring_rows = (plan.get("state_bytes", 0) - per_tok * plan["max_seq_len"]) \
            / (ring_layers * per_layer)
        if ring_rows > 0:
            kv += ring_layers * per_layer * min(context, ring_rows)
    return {"weights": int(weights), "kv": int(kv), "total": int(weights + kv),
            "weights_field": "decode_read_bytes" if plan.get("decode_read_bytes")
            else "weights_bytes"}


# -- the input -------------------------------------------------------------------------------
def _is_gguf(path: pathlib.Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


def resolve_input(model, *, gguf=None, reference=True, max_seq_len=1024, dtype=None) -> tuple:
    """(artefact path, reference GGUF or None): a GGUF or a model folder is compiled first (into
    the user cache); a GGUF input is its own llama.cpp reference."""
    path = pathlib.Path(str(model)).expanduser()
    ref = pathlib.Path(gguf).expanduser() if gguf else None
    if ref is not None and not ref.is_file():
        raise IngotError(f"{gguf}: no such GGUF file")
    if path.is_file() and not _is_gguf(path):
        return path, (ref if reference else None)
    if not path.exists() and path.suffix.lower() in (".ingot", ".gguf"):
        raise IngotError(f"{model}: no such file")
    if path.is_file() and ref is None:
        ref = path
    import ingot  # the compiler loads only here, in this parent process
    _note(f"compiling {model} (max_seq_len {max_seq_len}; cached in the user cache) ...")
    art = ingot.compile(str(model) if not path.exists() else path, None, dtype=dtype,
                        max_seq_len=max_seq_len, progress=sys.stderr.isatty())
    return pathlib.Path(art), (ref if reference else None)


# -- measuring -------------------------------------------------------------------------------
def _median(xs) -> float:
    return statistics.median(xs)


def _row(engine: str, threads: int, hello: dict, samples: dict, rss: float, prompts: list,
         gen: int, bw: float, ceiling: float) -> dict:
    first = prompts[0]
    prefill = {str(n): n / _median(s["prefill_s"] for s in samples[n]) for n in prompts}
    decode = gen / _median(s["decode_s"] for s in samples[first])
    dev = hello.get("device_bytes")
    return {"engine": engine, "threads": threads, "load_s": hello["load_s"],
            "weights": hello.get("weights", "file map"),
            "prefill_tok_s": prefill, "decode_tok_s": decode,
            "ttft_s": _median(s["ttft_s"] for s in samples[first]), "peak_rss_mib": rss,
            "device_memory_mib": None if dev is None else dev / 2**20,
            "bandwidth_gb_s": bw, "ceiling_tok_s": ceiling,
            "decode_of_ceiling": None if ceiling is None else decode / ceiling,
            "samples": {str(n): samples[n] for n in prompts}}


def bench_threads(art, ref, threads: int, prompts: list, gen: int, repeats: int, plan: dict,
                  bandwidth_mib: int, seed: int = 0) -> tuple:
    """Rows for one thread count: (rows, notes)."""
    notes = []
    cuda = plan.get("device") == "cuda"
    # The host's memory bandwidth bounds a CPU run's decode; a GPU's is not measured here.
    bw = ceiling = None
    if not cuda:
        bw = read_bandwidth(threads, bandwidth_mib)
        ceiling = bw * 1e9 / decode_bytes(plan, prompts[0] + gen / 2)["total"]
    n_ctx, n_batch = plan["max_seq_len"], max(prompts)
    workers = {}
    try:
        try:
            workers[INGOT] = Worker(INGOT, art, threads, n_ctx, n_batch, seed)
        except WorkerFailed as e:
            raise IngotError(str(e)) from None
        if ref is not None:
            try:  # a CUDA artefact's peer: llama.cpp with every layer on the GPU
                workers[LLAMA] = Worker(LLAMA, ref, threads, n_ctx, n_batch, seed,
                                        gpu_layers=-1 if cuda else 0)
            except WorkerFailed as e:
                notes.append(f"llama.cpp run at {threads} threads failed: {e}")
                _note(notes[-1] + " (reporting Ingot alone)")

        def ask(name, **cmd):
            try:
                return workers[name].ask(**cmd)
            except WorkerFailed as e:
                if name == INGOT:
                    raise IngotError(f"Ingot worker at {threads} threads: {e}") from None
                notes.append(f"llama.cpp run at {threads} threads failed: {e}")
                _note(notes[-1] + " (reporting Ingot alone)")
                workers.pop(name).close()
                return None

        # Warm-up: pages the weights in and lets each engine allocate what it allocates lazily.
        for name in list(workers):
            ask(name, cmd="pass", prompt=prompts[0], gen=min(gen, 4))
        samples = {name: {n: [] for n in prompts} for name in workers}
        for _ in range(repeats):
            for n in prompts:
                for name in list(workers):  # alternating: ingot, llama.cpp, ingot, ...
                    # Let the other engine's threads go idle first: llama.cpp's spin for a
                    # while after a pass, and a short pass must not share the cores with them.
                    time.sleep(SETTLE_S)
                    got = ask(name, cmd="pass", prompt=n, gen=gen if n == prompts[0] else 0)
                    if got is not None:
                        samples[name][n].append(got)
        if not cuda:  # measured again after the passes: this VM's bandwidth drifts within a
            # run, and the ceiling is the best the memory delivered (a low first reading put
            # decode above 100 % of it)
            bw = max(bw, read_bandwidth(threads, bandwidth_mib))
            ceiling = bw * 1e9 / decode_bytes(plan, prompts[0] + gen / 2)["total"]
        rows = []
        for name in list(workers):
            rss = ask(name, cmd="rss")
            if rss is not None:
                rows.append(_row(name, workers[name].hello["threads"], workers[name].hello,
                                 samples[name], rss["peak_rss_mib"], prompts, gen, bw, ceiling))
        return rows, notes
    finally:
        for w in workers.values():
            w.close()


def ratios(rows: list, prompts: list) -> list:
    """Per thread count with both engines: speeds as Ingot / llama.cpp; TTFT, peak RSS and load
    time (lower is better) as llama.cpp / Ingot; above 1 favours Ingot either way."""
    out = []
    for ing in (r for r in rows if r["engine"] == INGOT):
        ref = next((r for r in rows if r["engine"] == LLAMA and r["threads"] == ing["threads"]),
                   None)
        if ref is None:
            continue
        out.append({"threads": ing["threads"],
                    **{f"prefill@{n}": ing["prefill_tok_s"][str(n)] / ref["prefill_tok_s"][str(n)]
                       for n in prompts},
                    "decode": ing["decode_tok_s"] / ref["decode_tok_s"],
                    "ttft": ref["ttft_s"] / ing["ttft_s"],
                    "peak_rss": ref["peak_rss_mib"] / ing["peak_rss_mib"],
                    "load": ref["load_s"] / max(ing["load_s"], 1e-9)})
    return out


def run_bench(model, *, gguf=None, reference=True, threads=(1, 2), prompt_tokens=(128, 512),
              gen_tokens=64, repeats=3, max_seq_len=1024, dtype=None,
              bandwidth_mib=DEFAULT_MIB, seed=0) -> dict:
    prompt_tokens, threads = list(prompt_tokens), list(threads)
    if not prompt_tokens or min(prompt_tokens) < 1 or gen_tokens < 1 or repeats < 1:
        raise IngotError("bench needs prompts of at least 1 token, --gen-tokens and --repeats "
                         "of at least 1")
    if not threads or min(threads) < 1:
        raise IngotError("thread counts must be at least 1")
    if bandwidth_mib < 1:
        raise IngotError("--bandwidth-mib must be at least 1")
    art, ref = resolve_input(model, gguf=gguf, reference=reference, max_seq_len=max_seq_len,
                             dtype=dtype)
    a = Artefact(art)
    try:
        plan = a.json("plan")
    finally:
        a.close()
    max_seq, notes = plan["max_seq_len"], []
    if plan.get("device") == "cuda":
        if list(threads) != [1]:
            notes.append("a CUDA artefact runs on the GPU: one run, not one per thread count")
            _note(notes[-1])
        threads = [1]
        notes.append("batch 1 only: `ingot bench` times one sequence; batched streams "
                     "(--max-batch 8) are measured by tools/bench_serve.py")
    fits = [n for n in prompt_tokens if n <= max_seq]
    if not fits or fits[0] + gen_tokens > max_seq:
        n = fits[0] if fits else prompt_tokens[0]
        raise IngotError(f"--prompt-tokens {n} + --gen-tokens {gen_tokens} exceed the "
                         f"artefact's max_seq_len {max_seq}")
    for n in prompt_tokens:
        if n > max_seq:
            notes.append(f"prompt of {n} tokens skipped: the artefact's max_seq_len is {max_seq}")
            _note(notes[-1])
    if ref is not None and importlib.util.find_spec("llama_cpp") is None:
        notes.append("llama-cpp-python is not installed: reporting Ingot alone")
        _note(notes[-1])
        ref = None
    elif ref is None and reference:
        notes.append("no llama.cpp reference: pass --gguf FILE (the GGUF the artefact was "
                     "compiled from)")
        _note(notes[-1])
    rows = []
    for t in threads:
        got, more = bench_threads(art, ref, t, fits, gen_tokens, repeats, plan, bandwidth_mib,
                                  seed)
        rows += got
        notes += more
    step = decode_bytes(plan, fits[0] + gen_tokens / 2)
    return {"artefact": str(art), "reference": str(ref) if ref else None,
            "settings": {"threads": threads, "prompt_tokens": fits, "gen_tokens": gen_tokens,
                         "repeats": repeats, "bandwidth_mib": bandwidth_mib, "seed": seed},
            "decode_step_bytes": step, "results": rows, "ratios": ratios(rows, fits),
            "notes": notes}


# -- printing --------------------------------------------------------------------------------
def _opt(v, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def format_table(report: dict) -> str:
    prompts = report["settings"]["prompt_tokens"]
    head = ("engine", "threads", "load s", *(f"prefill@{n} tok/s" for n in prompts),
            "decode tok/s", "TTFT ms", "peak RSS MiB", "device MiB", "bandwidth GB/s",
            "decode % ceiling")
    cells = [head]
    for r in report["results"]:
        cells.append((r["engine"], str(r["threads"]), f"{r['load_s']:.3f}",
                      *(f"{r['prefill_tok_s'][str(n)]:.1f}" for n in prompts),
                      f"{r['decode_tok_s']:.1f}", f"{r['ttft_s'] * 1e3:.1f}",
                      f"{r['peak_rss_mib']:.1f}", _opt(r.get("device_memory_mib"), "{:.1f}"),
                      _opt(r["bandwidth_gb_s"], "{:.1f}"),
                      _opt(None if r["decode_of_ceiling"] is None
                           else 100 * r["decode_of_ceiling"], "{:.0f}%")))
    widths = [max(len(c[i]) for c in cells) for i in range(len(head))]
    return "\n".join("  ".join(c[i].rjust(widths[i]) if i else c[i].ljust(widths[i])
                               for i in range(len(head))) for c in cells)


def format_report(report: dict) -> str:
    s, step = report["settings"], report["decode_step_bytes"]
    first = s["prompt_tokens"][0]
    old_plan = "" if step["weights_field"] == "decode_read_bytes" else \
        " (all of them: this artefact's plan predates decode_read_bytes)"
    held = {r["engine"]: r.get("weights", "file map") for r in report["results"]}
    lines = [f"artefact   {report['artefact']}",
             f"reference  {report['reference'] or 'none'}",
             f"prompts {', '.join(map(str, s['prompt_tokens']))} tokens; decode {s['gen_tokens']}"
             f" tokens after the {first}-token prompt (TTFT on that prompt); {s['repeats']} "
             f"repeat{'s' if s['repeats'] != 1 else ''} alternating engines, medians",
             "load = engine construction in a fresh worker (weights: "
             + ", ".join(f"{e} {w}" for e, w in held.items())
             + "; huge pages are read in at load, a file map is paged in by a warm-up pass "
             "before anything is timed)",
             f"ceiling = bandwidth / {step['total'] / 2**20:.1f} MiB read per decode step "
             f"({step['weights'] / 2**20:.1f} MiB weights{old_plan}, "
             f"{step['kv'] / 2**20:.2f} MiB KV at the mean decode position)",
             "", format_table(report)]
    if report["ratios"]:
        lines.append("")
    for q in report["ratios"]:
        speeds = ", ".join(f"{k} x{v:.2f}" for k, v in q.items()
                           if k.startswith("prefill@") or k == "decode")
        lines.append(f"threads {q['threads']}: Ingot / llama.cpp: {speeds} | llama.cpp / Ingot "
                     f"(lower is better for these): TTFT x{q['ttft']:.2f}, peak RSS "
                     f"x{q['peak_rss']:.2f}, load x{q['load']:.2f} | above 1 favours Ingot")
    return "\n".join(lines)


def bench_from_args(args) -> int:
    """`ingot bench` and tools/bench.py: the same flags, the same report."""
    report = run_bench(args.model, gguf=args.gguf, reference=not args.no_reference,
                       threads=args.threads, prompt_tokens=args.prompt_tokens,
                       gen_tokens=args.gen_tokens, repeats=args.repeats,
                       max_seq_len=args.max_seq_len, dtype=args.dtype,
                       bandwidth_mib=args.bandwidth_mib)
    print(json.dumps(report, indent=2) if args.json else format_report(report))
    return 0
