"""`ingot compile`: model files -> graph -> passes -> memory plan -> native code -> artefact.

Phases, in order:
  1. read:   resolve the model folder, config.json, the family, the safetensors index
  2. trace:  the family's block composition emits the graph IR
  3. passes: fusion (each pass optionally verified on the numpy interpreter)
  4. plan:   arena offsets by liveness (verified), weight and state layout
  5. code:   prefill and decode step functions -> one shared library
  6. write:  the artefact, weights streamed tensor by tensor, renamed into place at the end
"""
from __future__ import annotations

import hashlib
import json
import os
import pathlib

from .. import __version__
from ..arch.registry import family_for
from ..arch.spec import ConfigError
from ..errors import IngotError
from ..runtime.artefact import PAGE, ArtefactWriter
from .check import outputs_match
from .ir import Op
from .memplan import plan_memory
from .model_source import read_json, resolve_model_dir
from .passes import run_passes
from .safetensors_index import index_folder
from .trace import trace
from .weights import weight_bytes, weight_nbytes

_DTYPE_NAMES = {"f32": "f32", "float32": "f32", "fp32": "f32", "f16": "f16", "float16": "f16",
                "fp16": "f16", "half": "f16", "bf16": "bf16", "bfloat16": "bf16"}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json",
                   "special_tokens_map.json")
WEIGHT_ALIGN = 64


def _dtype(requested, spec) -> str:
    name = requested or spec.torch_dtype or "f32"
    if str(name) not in _DTYPE_NAMES:
        raise IngotError(f"unsupported --dtype '{name}' (use f32, f16 or bf16)")
    return _DTYPE_NAMES[str(name)]


def read_model(model):
    folder = resolve_model_dir(model)
    cfg = read_json(folder / "config.json", required=True)
    mt = cfg.get("model_type")
    if not mt:
        raise IngotError(f"{folder / 'config.json'}: no 'model_type' field")
    family = family_for(mt)
    try:
        spec = family.spec(cfg)
    except ConfigError as e:
        raise IngotError(f"{folder / 'config.json'}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise IngotError(f"{folder / 'config.json'}: malformed field ({e})") from None
    return folder, cfg, family, spec


def chat_template_of(folder: pathlib.Path):
    """The chat template: chat_template.jinja (newer transformers) or tokenizer_config.json's
    `chat_template` (a string or a list of named templates); None when the model has none."""
    jinja = folder / "chat_template.jinja"
    if jinja.exists():
        return jinja.read_text(encoding="utf-8")
    return read_json(folder / "tokenizer_config.json", required=False).get("chat_template")


def content_key(folder: pathlib.Path, **opts) -> str:
    """A hash of everything that determines the artefact: file contents and options."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(sorted(opts.items())).encode())
    h.update(__version__.encode())
    names = ["config.json", *TOKENIZER_FILES, "chat_template.jinja",
             "model.safetensors.index.json"]
    names += sorted(p.name for p in folder.glob("*.safetensors"))
    for name in names:
        p = folder / name
        if not p.exists():
            continue
        h.update(name.encode())
        with open(p, "rb") as f:
            while chunk := f.read(1 << 22):
                h.update(chunk)
    return h.hexdigest()


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("INGOT_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "ingot")
    return pathlib.Path(base)


def _layout(items, size_of, align):
    offsets, off = {}, 0
    for it in items:
        off = (off + align - 1) // align * align
        offsets[id(it)] = off
        off += size_of(it)
    return offsets, off


def _per_layer_bytes(weights) -> list:
    layers: dict = {}
    for w in weights:
        if w.name.startswith("blk."):
            i = int(w.name.split(".")[1])
            layers[i] = layers.get(i, 0) + weight_nbytes(w)
    return [layers[i] for i in sorted(layers)]


def compile_model(model, output=None, *, dtype=None, isq=None, target="host", max_seq_len=4096,
                  prefill_chunk=128, verify_passes=False, progress=False, **opts):
    if isq is not None:
        raise IngotError("--isq arrives with the quantization work; compile without it for now")
    if opts:
        raise IngotError(f"unknown compile option(s): {', '.join(sorted(opts))}")
    from ..targets.cpu.build import build_library
    from ..targets.cpu.host import resolve_target
    from ..targets.cpu.step_source import render_step

    folder, cfg, family, spec = read_model(model)
    dt = _dtype(dtype, spec)
    max_seq = int(max_seq_len)
    if max_seq < 1:
        raise IngotError("--max-seq-len must be at least 1")
    chunk = max(1, min(int(prefill_chunk), max_seq))
    tgt = resolve_target(target)
    if output is None:
        key = content_key(folder, dtype=dt, max_seq=max_seq, chunk=chunk, target=tgt.describe())
        output = default_cache_dir() / f"{folder.name}-{key}.ingot"
        if output.exists():
            return output
    output = pathlib.Path(output)

    from tqdm import tqdm
    bar = tqdm(total=5, desc=f"compile {folder.name}", unit="phase", disable=not progress,
               leave=False)

    def phase(name):
        bar.set_postfix_str(name)
        bar.update(1)

    tensors = index_folder(folder)
    graph = trace(family, spec, tensors, dtype=dt, max_seq=max_seq)
    phase("passes")
    verify = (lambda a, b, name: outputs_match(a, b, name, vocab=spec.vocab_size)) \
        if verify_passes else None
    graph = run_passes(graph, verify)
    phase("memory plan")
    plan = plan_memory(graph, chunk)
    phase("native code")

    weights = graph.weights()
    w_off, w_size = _layout(weights, weight_nbytes, WEIGHT_ALIGN)
    s_off, s_size = _layout(graph.states, lambda s: s.rows * s.cols * 4, 64)
    max_k = max((n.weights["w"].shape[1] for n in graph.nodes if n.op is Op.LINEAR), default=0)
    scratch = (max(max_seq, max_k) * 4 + 63) // 64 * 64

    sources = {"prefill": render_step(graph, plan, w_off, s_off, "prefill"),
               "decode": render_step(graph, plan, w_off, s_off, "decode", fixed_n=1)}
    code = build_library(sources, tgt, workdir=output.parent if output.parent.exists() else None)
    phase("write")

    tok_files = {n: (folder / n).read_bytes() for n in TOKENIZER_FILES if (folder / n).exists()}
    template = chat_template_of(folder)
    logits = graph.outputs["logits"]
    plan_json = {
        "arch": spec.arch, "family": family.name, "dtype": dt,
        "vocab_size": spec.vocab_size, "hidden": spec.hidden, "n_layers": spec.n_layers,
        "n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads, "head_dim": spec.head_dim,
        "max_seq_len": max_seq, "prefill_chunk": chunk,
        "arena_bytes": plan.arena_size, "arena_naive_bytes": plan.naive_size,
        "scratch_bytes_per_thread": scratch, "state_bytes": s_size, "weights_bytes": w_size,
        "tokens_offset": plan.offset(graph.inputs["tokens"]),
        "logits_offset": plan.offset(logits) + 4 * logits.col_offset,
        "layer_weight_bytes": _per_layer_bytes(weights),
        "kv_bytes_per_token": sum(s.cols * 4 for s in graph.states),
        "nodes": len(graph.nodes), "passes": graph.meta.get("passes", []),
        "ops": {op.value: sum(1 for n in graph.nodes if n.op is op) for op in Op
                if any(n.op is op for n in graph.nodes)},
        "bos_token_id": spec.bos_token_id, "eos_token_ids": spec.eos_token_ids,
        "entry_points": {"prefill": "ingot_prefill", "decode": "ingot_decode"},
    }
    header = {"ingot_version": __version__, "target": tgt.describe(), "model": folder.name}

    def weight_chunks():
        it = weights
        if progress:
            from tqdm import tqdm
            it = tqdm(weights, desc="writing weights", unit="tensor", leave=False)
        pos = 0
        for w in it:
            pad = w_off[id(w)] - pos
            if pad:
                yield b"\0" * pad
            data = weight_bytes(w)
            yield data
            pos = w_off[id(w)] + len(data)

    with ArtefactWriter(output) as aw:
        aw.header = header
        aw.add("plan", json.dumps(plan_json, sort_keys=True).encode())
        aw.add("code", code)
        for name, data in tok_files.items():
            aw.add(name.removesuffix(".json"), data)
        if template is not None:
            aw.add("chat_template", json.dumps(template, sort_keys=True).encode())
        aw.add("weights", weight_chunks(), align=PAGE)
    phase("done")
    bar.close()
    return output
