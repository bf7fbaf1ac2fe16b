"""`ingot`: compile, run, inspect and bench from the command line.

Imports stay inside the commands: `ingot run model.ingot` must not pay for torch or numba.
Every user error ends in one line `ingot: error: …` and exit status 1 (usage errors: 2).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading

from . import __version__
from .errors import IngotError


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def counts_list(what: str, example: str = "1,2"):
    """An argparse type: comma-separated positive integers (thread counts, prompt lengths)."""
    def parse(text: str) -> list:
        try:
            vals = [int(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what} like {example} (got '{text}')")
        if not vals or min(vals) < 1:
            raise argparse.ArgumentTypeError(f"{what} must be at least 1 (got '{text}')")
        return vals
    return parse


threads_list = counts_list("thread counts")


# -- model selection (compile, run, quantize) ------------------------------------------------
def add_model_flags(p, *, default_note: str, default_batch: int = 1) -> None:
    """mistral.rs' model flags: -m, --format gguf|ggml -f FILE, -t, --isq, --from-uqff."""
    p.add_argument("-m", "--model", help="Hugging Face folder, cached model id, or a .gguf "
                   f"file{default_note}")
    p.add_argument("--format", choices=("plain", "gguf", "ggml"),
                   help="model file format (default: from the file name)")
    p.add_argument("-f", "--file", help="with --format gguf/ggml: the file (path, or a name "
                   "inside the -m folder)")
    p.add_argument("-t", "--tokenizer", help="take the tokenizer from this folder or model id")
    p.add_argument("--isq", help="quantize in situ: Q4_0 Q4_1 Q5_0 Q5_1 Q8_0 Q8_1 Q2K Q3K Q4K "
                   "Q5K Q6K Q8K, or 2 3 4 5 6 8")
    p.add_argument("--quant-policy", help="JSON {tensor glob: type} kept at other precisions")
    p.add_argument("--from-uqff", help="a pre-quantized Ingot artefact whose weights are reused")
    p.add_argument("--chat-template", help="a jinja chat template file that overrides the "
                   "model's")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"),
                   help="float weight type (default: the model's)")
    p.add_argument("--max-seq-len", type=int, default=4096)
    p.add_argument("--kv-cache", default="f32", metavar="TYPE",
                   help="KV cache storage: f32 (default), f16 (half the memory) or q8_0 (8-bit "
                   "blocks of 32 with an f16 scale: 0.27x of f32)")
    p.add_argument("--prefill-chunk", type=int, default=128)
    p.add_argument("--max-batch", type=int, default=default_batch,
                   help="sequences decoded together (each gets its own KV cache; the server's "
                   f"concurrent requests; default {default_batch})")
    p.add_argument("--max-memory", help="memory budget (e.g. 96MiB, 2GiB): weights that do not "
                   "fit are streamed from the artefact each step; at compile time a default "
                   "recorded in the artefact")
    p.add_argument("--target", default="host")
    p.add_argument("--cpu-target", metavar="NAME",
                   help="with a CUDA --target: the CPU the artefact's host-side code is built "
                   "for, which runs the layers a device map (-n) puts on the CPU (default: this "
                   "host for cuda-sm80/sm90, aarch64+dotprod for cuda-sm87; none: GPU only)")


def add_device_flags(p) -> None:
    """mistral.rs' device mapping; a CUDA artefact runs each layer where the map puts it."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-n", "--num-device-layers", metavar="MAP",
                   help='layers per device, in order from layer 0: "0:16;1:8" (16 on CUDA '
                   'device 0, the next 8 on device 1, the rest on the CPU), "16" (= 0:16), '
                   '"cpu:*", "0:16;cpu:*"')
    g.add_argument("--topology", metavar="FILE",
                   help="YAML/JSON layer ranges (half-open) and their devices, e.g. "
                   "'0-16: {device: cuda[0]}'; unnamed layers run on the CPU")


def device_map_from_args(args, path):
    """The -n / --topology map for the artefact at `path`, or None; a map that names a device
    this host lacks is an error here, before the model loads."""
    if args.num_device_layers is None and args.topology is None:
        return None
    from .runtime.artefact import Artefact
    from .runtime.device_map import load_topology, parse_layer_counts, usable_devices
    art = Artefact(path)
    try:
        n_layers = int(art.json("plan")["n_layers"])
    finally:
        art.close()
    dm = (parse_layer_counts(args.num_device_layers, n_layers)
          if args.num_device_layers is not None else load_topology(args.topology, n_layers))
    dm.check_available(usable_devices())
    return dm


def compile_from_args(args, output=None):
    """Compile what the model flags name (the default model when none) into `output` or the
    user cache; returns the artefact path."""
    import ingot
    model, fmt, file = args.model, args.format, args.file
    if args.from_uqff:
        model, fmt, file = args.from_uqff, "uqff", args.from_uqff
    elif model is None and file is None:
        from .default_model import default_model_path
        model = default_model_path()
    # tqdm's carriage-return redraws are noise in a captured log; show them on a terminal only.
    return ingot.compile(model, output, dtype=args.dtype, isq=args.isq, target=args.target,
                         max_seq_len=args.max_seq_len, prefill_chunk=args.prefill_chunk,
                         max_batch=args.max_batch, max_memory=args.max_memory,
                         kv_cache=args.kv_cache, cpu_target=args.cpu_target,
                         format=fmt, file=file, tokenizer=args.tokenizer,
                         quant_policy=args.quant_policy, chat_template=args.chat_template,
                         progress=sys.stderr.isatty())


# -- compile ---------------------------------------------------------------------------------
def cmd_compile(args) -> int:
    path = compile_from_args(args, args.output)
    print(f"{path}  ({_size(path.stat().st_size)})")
    return 0


def cmd_quantize(args) -> int:
    """Write a pre-quantized artefact (Ingot's UQFF): compile with --isq."""
    if not args.isq:
        raise IngotError("quantize needs --isq LEVEL")
    return cmd_compile(args)


def cmd_convert(args) -> int:
    """A Hugging Face folder as a GGUF file, or a GGUF re-quantized (Ingot's quantizers)."""
    from .compiler.gguf_convert import convert
    path = convert(args.model, args.output, isq=args.isq, dtype=args.dtype,
                   quant_policy=args.quant_policy)
    print(f"{path}  ({_size(path.stat().st_size)})")
    return 0


# -- context shift (run, serve) ---------------------------------------------------------------
def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a token count (got '{text}')") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0 (got {n})")
    return n


def add_shift_flags(p) -> None:
    p.add_argument("--context-shift", action="store_true",
                   help="when the context is full (or a prompt is longer), keep the first "
                   "--keep tokens and the most recent ones, and go on (default: a prompt "
                   "that does not fit is an error; a full context ends the answer)")
    p.add_argument("--keep", type=_count, metavar="N", help="with --context-shift: tokens "
                   "kept from the start of the prompt (default: the BOS token, if any)")


def apply_shift_flags(args, parser, model) -> None:
    """Checked before anything is compiled or loaded; applied to the model's engine."""
    if args.keep is not None and not args.context_shift:
        parser.error("--keep needs --context-shift")
    if args.context_shift and model is not None:
        from .runtime.context_shift import check_keep
        if args.keep is not None:
            check_keep(args.keep, model.max_seq_len, "--keep")
        model.engine.set_context_shift(True, args.keep)


# -- run -------------------------------------------------------------------------------------
class _StopOnCtrlC:
    """While an answer streams, Ctrl-C sets a flag the loop checks between tokens, so a native
    step is never cut in half; a second Ctrl-C interrupts for real."""

    def __enter__(self):
        self.stop = False
        # Only the main thread may set handlers; elsewhere Ctrl-C keeps its usual meaning.
        self._main = threading.current_thread() is threading.main_thread()
        if self._main:
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.stop:
            raise KeyboardInterrupt
        self.stop = True

    def __exit__(self, *exc):
        if self._main:
            signal.signal(signal.SIGINT, self._old)
        return False


def _sampling(args) -> dict:
    return dict(max_tokens=args.max_tokens, temperature=args.temperature, top_k=args.top_k,
                top_p=args.top_p, min_p=args.min_p, repetition_penalty=args.repetition_penalty,
                seed=args.seed)


def _stream(model, prompt, args) -> tuple:
    """Print the answer as it comes; (text, whether Ctrl-C stopped it)."""
    out = []
    with _StopOnCtrlC() as ctrl_c:
        for piece in model.generate(prompt, stream=True, **_sampling(args)):
            sys.stdout.write(piece)
            sys.stdout.flush()
            out.append(piece)
            if ctrl_c.stop:
                break
    sys.stdout.write(" [stopped]\n" if ctrl_c.stop else "\n")
    sys.stdout.flush()
    return "".join(out), ctrl_c.stop


def _uses_template(model, args) -> bool:
    if args.raw or not model.artefact.has("chat_template"):
        if args.system:
            raise IngotError("--system needs the model's chat template (drop --raw)"
                             if args.raw else "--system needs a chat template; the model has none")
        return False
    return True


def _chat(model, args) -> int:
    """A small multi-turn loop over stdin lines."""
    templated = _uses_template(model, args)
    state = {"system": args.system, "history": [], "streaming": False}
    tty = sys.stdin.isatty()
    print(f"ingot: chatting with {model.path.name}; /reset, /system TEXT, /exit; Ctrl-C stops "
          f"an answer, Ctrl-D quits" + ("" if templated else " (no chat template: each line is "
                                         "a fresh plain prompt)"), file=sys.stderr)
    while True:
        try:
            if tty:
                sys.stdout.write("> ")
                sys.stdout.flush()
            line = sys.stdin.readline()
        except KeyboardInterrupt:  # at the prompt: drop the line, keep the chat
            sys.stdout.write("\n")
            continue
        if not line:
            if tty:  # Ctrl-D: leave the shell's prompt on a line of its own
                sys.stdout.write("\n")
                sys.stdout.flush()
            return 0
        try:
            if _chat_line(model, args, line.strip(), state, templated):
                return 0
        except KeyboardInterrupt:
            if state["streaming"]:  # a second Ctrl-C during an answer ends the program
                raise
            sys.stdout.write("\n")  # between answers: drop what was going on, keep the chat
            sys.stdout.flush()


def _chat_line(model, args, line, state, templated) -> bool:
    """One line of the chat: a command, or a turn and its streamed answer. True: exit."""
    if not line:
        return False
    if line in ("/exit", "/quit"):
        return True
    if line == "/reset":
        state["history"].clear()
        print("(context cleared)", file=sys.stderr)
        return False
    if line == "/system" or line.startswith("/system "):
        state["system"] = line[len("/system"):].strip() or None
        print(f"(system prompt {'set' if state['system'] else 'cleared'})", file=sys.stderr)
        return False
    if line.startswith("/"):
        print(f"unknown command {line.split()[0]} (try /reset, /system TEXT, /exit)",
              file=sys.stderr)
        return False
    turn = {"role": "user", "content": line}
    system = state["system"]
    messages = ([{"role": "system", "content": system}] if system else []) + \
        state["history"] + [turn]
    state["streaming"] = True
    try:
        answer, _ = _stream(model, messages if templated else line, args)
    except IngotError as e:  # e.g. the conversation outgrew the context: keep the chat alive
        print(f"ingot: error: {e} (try /reset)", file=sys.stderr)
        return False
    finally:
        state["streaming"] = False
    state["history"] += [turn, {"role": "assistant", "content": answer}]
    return False


def cmd_run(args, parser) -> int:
    if args.artefact is not None and (args.model or args.file or args.from_uqff):
        parser.error("run takes an ARTEFACT or model flags (-m, -f, --from-uqff), not both")
    apply_shift_flags(args, parser, None)
    import ingot
    path = args.artefact
    if path is None:
        # The user cache is keyed by a hash of the model files and flags: compiled once.
        path = compile_from_args(args)
    model = ingot.load(path, threads=args.threads, max_memory=args.max_memory,
                       device_map=device_map_from_args(args, path), mmap=args.mmap)
    try:
        apply_shift_flags(args, parser, model)
        if args.prompt is None:
            return _chat(model, args)
        prompt = args.prompt
        if _uses_template(model, args):
            prompt = ([{"role": "system", "content": args.system}] if args.system else []) + \
                [{"role": "user", "content": prompt}]
        if _stream(model, prompt, args)[1]:
            raise KeyboardInterrupt  # one-shot: Ctrl-C ends the program, after a clean step
        return 0
    finally:
        model.close()


# -- serve -----------------------------------------------------------------------------------
def cmd_serve(args, parser) -> int:
    if args.artefact is not None and (args.model or args.file or args.from_uqff):
        parser.error("serve takes an ARTEFACT or model flags (-m, -f, --from-uqff), not both")
    apply_shift_flags(args, parser, None)
    import ingot
    path = args.artefact if args.artefact is not None else compile_from_args(args)
    model = ingot.load(path, threads=args.threads, max_memory=args.max_memory,
                       device_map=device_map_from_args(args, path), mmap=args.mmap)
    engine = model.engine
    engine.max_queue = args.max_queue
    try:
        apply_shift_flags(args, parser, model)
        engine.start()
        if args.serial:
            from .runtime.serial_line import serve_serial
            print(f"ingot: serving {model.path.name} on {args.serial} at {args.baud} baud",
                  file=sys.stderr, flush=True)
            serve_serial(model, args.serial, args.baud, engine=engine, log=args.log)
            return 0
        try:
            import uvicorn

            from .runtime.server import create_app
        except ImportError as e:
            raise IngotError(f"serving needs the serve extra: pip install 'ingot-lm[serve]' "
                             f"({e.name} is missing)") from None
        model_id = args.model_id or (args.model if args.model and not
                                     os.path.exists(args.model) else model.path.stem)
        app = create_app(model, engine, model_id, log_path=args.log)
        print(f"ingot: serving {model_id} ({model.max_batch} sequence slots) on "
              f"http://{args.host}:{args.port}/v1", file=sys.stderr, flush=True)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
        return 0
    finally:
        model.close()


# -- inspect ---------------------------------------------------------------------------------
def cmd_inspect(args) -> int:
    from .runtime.artefact import Artefact
    art = Artefact(args.artefact)
    try:
        h, plan = art.header, art.json("plan")
    finally:
        art.close()
    if args.json:
        print(json.dumps({"header": h, "plan": plan}, indent=2, sort_keys=True))
        return 0
    t = h.get("target", {})
    size = art.path.stat().st_size
    out = [f"artefact   {art.path}  ({_size(size)})",
           f"format     version {h.get('format_version')}, written by ingot "
           f"{h.get('ingot_version')}, model {h.get('model')}",
           (f"target     {t.get('name')}: CUDA {t.get('arch')} cubin, PTX for newer GPUs"
            if t.get("kind") == "cuda" else
            f"target     {t.get('name')}: {t.get('machine')} {t.get('triple')}, cpu {t.get('cpu')}"
            f"; needs {' '.join(t.get('required_flags') or []) or 'no special flags'}"),
           "", "sections   name                   offset          size"]
    out += [f"           {s['name']:<20} {s['offset']:>8}  {_size(s['size']):>12}"
            for s in art.section_info()]
    arena, naive = plan["arena_bytes"], plan["arena_naive_bytes"]
    saved = f"{100 * (1 - arena / naive):.0f}% less" if naive else "n/a"
    out += ["", f"model      {plan['arch']} ({plan['family']}), {plan['dtype']}, "
                f"{plan['n_layers']} layers, hidden {plan['hidden']}, heads {plan['n_heads']}"
                f"/{plan['n_kv_heads']} kv, vocab {plan['vocab_size']}",
            f"context    max_seq_len {plan['max_seq_len']}, prefill chunk "
            f"{plan['prefill_chunk']}",
            "memory plan",
            f"  arena            {_size(arena)}  (naive sum of buffers {_size(naive)}: {saved})",
            (f"  scratch (GPU)    {_size(plan.get('cuda_scratch_bytes', 0))}"
             if t.get("kind") == "cuda" else
             f"  scratch/thread   {_size(plan['scratch_bytes_per_thread'])}"),
            f"  KV cache         {plan.get('kv_cache', 'f32')}, "
            f"{_size(plan['kv_bytes_per_token'])}/token on full layers, "
            f"{_size(plan['state_bytes'])} per sequence ({plan.get('kv_ring_layers', 0)} "
            f"sliding layers keep a window-sized ring), {plan.get('max_batch', 1)} sequence "
            f"slot(s): {_size(plan['state_bytes'] * plan.get('max_batch', 1))}",
            f"  weights          {_size(plan['weights_bytes'])}"]
    out += _budget_lines(plan, cuda=t.get("kind") == "cuda")
    out += ["per-layer weights"]
    out += [f"  layer {i:<4} {_size(b)}" for i, b in enumerate(plan.get("layer_weight_bytes", []))]
    ops = ", ".join(f"{k} {v}" for k, v in sorted(plan.get("ops", {}).items()))
    out += [f"ops        {plan.get('nodes')} nodes: {ops}",
            f"passes     {', '.join(plan.get('passes') or []) or 'none'}"]
    print("\n".join(out))
    return 0


def _budget_lines(plan, cuda: bool = False) -> list:
    """What a load holds (host memory at 1 thread; for a CUDA artefact, GPU memory): all
    resident, and the least that runs (--max-memory)."""
    units = plan.get("units", [])
    largest = max((u["bytes"] for u in units), default=0)
    if cuda:
        from .runtime.cuda.stream import SLOTS, fixed_device_bytes
        fixed, what = fixed_device_bytes(plan), "budget (GPU)      "
        least = fixed + SLOTS * largest
    else:
        from .runtime.offload import fixed_bytes
        fixed, what = fixed_bytes(plan, 1), "budget (1 thread) "
        least = fixed + largest
    total = fixed + sum(u["bytes"] for u in units)
    hint = plan.get("max_memory_hint")
    return [f"  {what}{_size(total)} all resident; {_size(fixed)} fixed (arena, "
            f"scratch, KV, shared weights); smallest --max-memory {_size(least)} streams all "
            f"{len(units)} units" + (f"; compiled default {_size(hint)}" if hint else ""),
            "  offload units    " + ", ".join(f"{u['name']} {_size(u['bytes'])}"
                                             for u in units[:4])
            + (f", … ({len(units)} in all)" if len(units) > 4 else "")]


def add_load_flags(p) -> None:
    p.add_argument("--threads", type=int)
    p.add_argument("--mmap", action="store_true", help="step through the artefact's file map "
                   "instead of reading the weights into huge pages at load (faster load, slower "
                   "decode; huge pages are the default where every weight is resident and the "
                   "host has transparent huge pages)")


# -- bench -----------------------------------------------------------------------------------
def add_bench_flags(p) -> None:
    """`ingot bench` and tools/bench.py take the same flags."""
    p.add_argument("model", help="an artefact, or a .gguf file or Hugging Face folder that is "
                   "compiled first (into the user cache)")
    p.add_argument("--gguf", help="the GGUF the artefact was compiled from: llama-cpp-python "
                   "runs it in the same session (a .gguf input is its own reference)")
    p.add_argument("--no-reference", action="store_true", help="Ingot alone, no llama.cpp")
    p.add_argument("--threads", type=threads_list, default=[1, 2],
                   help="thread counts (default 1,2)")
    p.add_argument("--prompt-tokens", type=counts_list("prompt lengths", "128,512"),
                   default=[128, 512],
                   help="prefill lengths; decode and TTFT follow the first (default 128,512)")
    p.add_argument("--gen-tokens", type=int, default=64, help="decode steps (default 64)")
    p.add_argument("--repeats", type=int, default=3, help="passes per engine; medians "
                   "(default 3)")
    p.add_argument("--max-seq-len", type=int, default=1024, help="when compiling a .gguf or "
                   "folder (default 1024)")
    p.add_argument("--dtype", choices=("f32", "f16", "bf16"), help="when compiling a folder")
    p.add_argument("--bandwidth-mib", type=int, default=512, help="buffer the memory bandwidth "
                   "is measured on (default 512 MiB, far larger than the cache)")
    p.add_argument("--json", action="store_true", help="print everything as JSON")


def cmd_bench(args) -> int:
    from .runtime.bench import bench_from_args
    return bench_from_args(args)


# -- the parser ------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ingot", description="Ahead-of-time compiler and lean "
                                "runtime for language models.")
    p.add_argument("--version", action="version", version=f"ingot {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    default_note = " (default: the bundled Gemma 3 270M)"
    c = sub.add_parser("compile", help="compile a model into an artefact")
    add_model_flags(c, default_note=default_note)
    c.add_argument("-o", "--output", help="artefact path (default: the user cache)")
    c.set_defaults(func=cmd_compile)

    q = sub.add_parser("quantize", help="write a pre-quantized artefact (compile with --isq)")
    add_model_flags(q, default_note=default_note)
    q.add_argument("-o", "--output", required=True, help="artefact path")
    q.set_defaults(func=cmd_quantize)

    v = sub.add_parser("convert", help="write a Hugging Face folder as a GGUF file, or "
                       "re-quantize a GGUF")
    v.add_argument("-m", "--model", required=True,
                   help="Hugging Face folder, cached model id, or a .gguf to re-quantize")
    v.add_argument("-o", "--output", required=True, help="the .gguf file to write")
    v.add_argument("--isq", help="quantize matrices: Q4_0 … Q8_0, Q2K … Q6K, or 2-8")
    v.add_argument("--dtype", choices=("f32", "f16", "bf16"), help="float storage type")
    v.add_argument("--quant-policy", help="JSON {tensor glob: type} kept at other precisions")
    v.set_defaults(func=cmd_convert)

    r = sub.add_parser("run", help="generate text: one prompt, or an interactive chat")
    r.add_argument("artefact", nargs="?", help="compiled artefact")
    add_model_flags(r, default_note=default_note)
    add_device_flags(r)
    r.add_argument("-p", "--prompt", help="one-shot prompt (without it: interactive chat)")
    r.add_argument("--system", help="system prompt")
    r.add_argument("--raw", action="store_true", help="send the prompt as plain text, "
                   "without the chat template")
    r.add_argument("--max-tokens", type=int, default=256)
    r.add_argument("--temperature", type=float)
    r.add_argument("--top-k", type=int)
    r.add_argument("--top-p", type=float)
    r.add_argument("--min-p", type=float)
    r.add_argument("--repetition-penalty", type=float)
    r.add_argument("--seed", type=int)
    add_load_flags(r)
    add_shift_flags(r)
    r.set_defaults(func=lambda a: cmd_run(a, r))

    s = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (or a serial line)")
    s.add_argument("artefact", nargs="?", help="compiled artefact")
    add_model_flags(s, default_note=default_note, default_batch=4)
    add_device_flags(s)
    s.add_argument("-p", "--port", type=int, default=1234)
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--log", help="append every request and response to this file (JSON lines)")
    s.add_argument("--model-id", help="the name clients use (default: -m, or the artefact's)")
    s.add_argument("--max-queue", type=int, default=64,
                   help="requests that may wait for a sequence slot before 503s")
    add_load_flags(s)
    s.add_argument("--serial", metavar="DEVICE", help="speak the JSON-lines protocol on this "
                   "serial device instead of HTTP")
    s.add_argument("--baud", type=int, default=115200)
    add_shift_flags(s)
    s.set_defaults(func=lambda a: cmd_serve(a, s))

    i = sub.add_parser("inspect", help="header, sections, memory plan, ops and passes")
    i.add_argument("artefact")
    i.add_argument("--json", action="store_true", help="print the raw header and plan")
    i.set_defaults(func=cmd_inspect)

    k = sub.add_parser("build-capi", help="build libingot.so and ingot.h (the C library) with "
                       "the system C compiler")
    k.add_argument("--out", default=".", help="folder for libingot.so and ingot.h")
    k.add_argument("--target", default="host", help="build for this target's machine (e.g. "
                   "aarch64 with the aarch64-linux-gnu cross compiler; see list-targets)")
    k.set_defaults(func=cmd_build_capi)

    t = sub.add_parser("list-targets", help="the --target names: triple, CPU, features, and "
                       "whether this host can run their code")
    t.set_defaults(func=cmd_list_targets)

    b = sub.add_parser("bench", help="Ingot against llama.cpp on the same model: prefill and "
                       "decode tokens/s, load time, TTFT, peak RSS, bandwidth ceiling")
    add_bench_flags(b)
    b.set_defaults(func=cmd_bench)
    return p


def cmd_build_capi(args) -> int:
    from .runtime.capi_build import build_capi
    machine = None
    if args.target not in ("host", "native"):
        from .targets.registry import resolve_target
        machine = getattr(resolve_target(args.target), "machine", None)  # GPUs: this host
    lib = build_capi(args.out, machine=machine)
    print(f"{lib}\n{lib.parent / 'ingot.h'}")
    return 0


def cmd_list_targets(args) -> int:
    from .targets.registry import list_targets
    rows = list_targets()
    w = max(len(r["name"]) for r in rows)
    for r in rows:
        feats = ",".join(r["features"]) if r["name"] != "host" else "(this CPU's)"
        runs = "yes" if r["runs_here"] else f"no: {r['why_not']}"
        print(f"{r['name']:<{w}}  {r['triple']:<26} {r['cpu']:<13} {feats}\n"
              f"{'':<{w}}  runs here: {runs}")
    return 0


def guarded(fn, *args) -> int:
    """Run fn; user errors become one line on stderr and status 1, never a traceback."""
    try:
        return fn(*args) or 0
    except IngotError as e:
        msg = str(e)
    except (FileNotFoundError, PermissionError) as e:
        msg = f"{e.filename}: {e.strerror}" if e.filename else str(e)
    except KeyboardInterrupt:
        msg = "interrupted"
    except BrokenPipeError:  # `ingot run … | head`: the reader left; nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except Exception as e:  # noqa: BLE001 - the last line of defence
        if os.environ.get("INGOT_DEBUG") == "1":
            raise
        msg = f"unexpected {type(e).__name__}: {e} (set INGOT_DEBUG=1 for a traceback)"
    # Printed outside the handler: the failed call's frames (and any progress bar) are gone.
    print(f"ingot: error: {' '.join(msg.split())}", file=sys.stderr, flush=True)
    return 1


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
