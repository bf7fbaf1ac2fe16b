"""`ingot compile`: model files -> graph -> passes -> memory plan -> native code -> artefact.

Phases, in order:
  1. read:   open the source (HF folder, GGUF, GGML): family, spec, tensors, tokenizer
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
from ..errors import IngotError
from ..quant.policy import Policy, load_policy, parse_isq
from ..runtime.artefact import PAGE, ArtefactWriter
from .check import outputs_match
from .cpu_layouts import regroup_for_cpu
from .ir import KV_TYPES, Op, kv_row_layout
from .batch import batch_graph
from .memplan import plan_memory
from .native_chat import chat_native
from .native_vocab import native_vocab_sections
from .units import assign_units, layout_weights, node_units
from .passes import run_passes
from .source import ModelSource, open_source
from .trace import trace
from .weights import weight_nbytes, weight_raw_chunks

_DTYPE_NAMES = {"f32": "f32", "float32": "f32", "fp32": "f32", "f16": "f16", "float16": "f16",
                "fp16": "f16", "half": "f16", "bf16": "bf16", "bfloat16": "bf16"}
WEIGHT_ALIGN = 64


def _dtype(requested):
    if requested is None:
        return None
    if str(requested).lower() not in _DTYPE_NAMES:
        raise IngotError(f"unsupported --dtype '{requested}' (use f32, f16 or bf16)")
    return _DTYPE_NAMES[str(requested).lower()]


def _kv_cache(requested) -> str:
    name = str(requested or "f32").lower()
    if name not in KV_TYPES:
        raise IngotError(f"unsupported --kv-cache '{requested}' (use {', '.join(KV_TYPES)})")
    return name


def _state_row_bytes(graph) -> dict:
    """Bytes of one row (one position's keys or values) of each state, from its storage type
    and the heads of the attention that reads it."""
    rows = {id(s): 4 * s.cols for s in graph.states}
    for n in graph.nodes:
        if n.op is Op.ATTENTION:
            for s in n.states.values():
                rows[id(s)] = kv_row_layout(s.dtype, n.attrs["n_kv_heads"],
                                            n.attrs["head_dim"])[0]
    return rows


_CODE_DIGEST: list = []


def code_digest() -> bytes:
    """A hash of the compiler's own source (compiler, targets, arch, quant): an artefact cached
    by another build of Ingot with the same version number is not reused."""
    if not _CODE_DIGEST:
        h = hashlib.blake2b(digest_size=16)
        root = pathlib.Path(__file__).resolve().parent.parent
        for pkg in ("compiler", "targets", "arch", "quant"):
            for f in sorted((root / pkg).rglob("*.py")):
                h.update(f.relative_to(root).as_posix().encode())
                h.update(f.read_bytes())
        _CODE_DIGEST.append(h.digest())
    return _CODE_DIGEST[0]


def content_key(src: ModelSource, **opts) -> str:
    """A hash of everything that determines the artefact: file contents, options and the
    compiler's code."""
    h = hashlib.blake2b(digest_size=16)
    h.update(repr(sorted(opts.items())).encode())
    h.update(__version__.encode())
    h.update(code_digest())
    for p in src.hashed_files:
        h.update(p.name.encode())
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


def tensor_entry(w, offset: int) -> dict:
    """A stored weight and the model tensors it holds, as row ranges (fused weights hold
    several)."""
    def parts(x):
        return [[x.name, x.shape[0] if len(x.shape) > 1 else 1]] if x.source[0] == "file" \
            else [p for q in x.source[1] for p in parts(q)]
    return {"name": w.name, "dtype": w.dtype, "shape": list(w.shape), "offset": offset,
            "parts": parts(w)}


def spec_to_json(spec) -> dict:
    import dataclasses
    return dataclasses.asdict(spec)


def _type_counts(weights) -> dict:
    out: dict = {}
    for w in weights:
        out[w.dtype] = out.get(w.dtype, 0) + 1
    return out


def _per_layer_bytes(weights) -> list:
    layers: dict = {}
    for w in weights:
        if w.name.startswith("blk."):
            i = int(w.name.split(".")[1])
            layers[i] = layers.get(i, 0) + weight_nbytes(w)
    return [layers[i] for i in sorted(layers)]


def _decode_read_bytes(graph, weights) -> int:
    """Weight bytes one decode step reads: all of them, except that a table only looked up by
    EMBED gives one row (a table the output head also multiplies by, tied, counts fully)."""
    from ..quant.registry import get_format
    looked_up = {id(n.weights["w"]) for n in graph.nodes if n.op is Op.EMBED}
    multiplied = {id(w) for n in graph.nodes if n.op is not Op.EMBED for w in n.weights.values()}
    return sum(get_format(w.dtype).row_bytes(w.shape[-1])
               if id(w) in looked_up and id(w) not in multiplied else weight_nbytes(w)
               for w in weights)


# Weight types the kernels multiply as floats; every block type gets 8-bit activations.
FLOAT_TYPES = ("f32", "f16", "bf16", "iq4_nl", "mxfp4")


def compile_model(model, output=None, *, dtype=None, isq=None, target="host", max_seq_len=4096,
                  prefill_chunk=128, verify_passes=False, progress=False, format=None,
                  file=None, tokenizer=None, quant_policy=None, chat_template=None,
                  profile=False, max_batch=1, max_memory=None, kv_cache="f32",
                  cpu_target=None, **opts):
    if opts:
        raise IngotError(f"unknown compile option(s): {', '.join(sorted(opts))}")
    from ..targets.cpu.host import resolve_target

    src = open_source(model, fmt=format, file=file, tokenizer=tokenizer)
    spec = src.spec
    dt = _dtype(dtype) or src.default_float
    isq_type = parse_isq(isq)
    table = load_policy(quant_policy)
    template = src.chat_template
    if template is None and src.family.chat_template:
        from ..runtime.chat import BUILTIN_TEMPLATES
        template = BUILTIN_TEMPLATES[src.family.chat_template]
    if chat_template is not None:
        try:
            template = pathlib.Path(chat_template).read_text(encoding="utf-8")
        except OSError as e:
            raise IngotError(f"{chat_template}: cannot read chat template ({e.strerror})") from None
    max_seq = int(max_seq_len)
    if max_seq < 1:
        raise IngotError("--max-seq-len must be at least 1")
    chunk = max(1, min(int(prefill_chunk), max_seq))
    max_batch = int(max_batch)
    kv = _kv_cache(kv_cache)
    if max_memory is not None:
        from ..runtime.model import parse_bytes
        max_memory = parse_bytes(max_memory)
    if not 1 <= max_batch <= chunk:
        raise IngotError(f"--max-batch must be between 1 and the prefill chunk ({chunk})")
    from ..targets.cuda import target as _cuda_targets  # noqa: F401 (registers cuda-sm*)
    tgt = resolve_target(target)
    cuda = getattr(tgt, "kind", "cpu") == "cuda"
    if cuda and profile:
        raise IngotError(f"target {tgt.name}: --profile is CPU-only for now")
    cpu_tgt = None
    if cuda and max_batch > 1:  # device maps with CPU layers run one sequence: no host code
        if cpu_target is not None and str(cpu_target).lower() != "none":
            raise IngotError(f"target {tgt.name}: --cpu-target (CPU layers in a device map) "
                             f"and --max-batch > 1 cannot be combined yet")
    elif cuda:  # the host-side code that device maps run layers on (None: GPU only)
        from ..targets.cuda.host_code import cpu_target_for
        cpu_tgt = cpu_target_for(tgt.name, cpu_target)
    elif cpu_target is not None:
        raise IngotError("--cpu-target is for CUDA targets (use --target for the CPU)")
    if output is None:
        key = content_key(src, dtype=dt, isq=isq_type, policy=sorted(table.items()),
                          max_seq=max_seq, chunk=chunk, target=tgt.describe(),
                          template=template, **({"profile": True} if profile else {}),
                          **({"max_batch": max_batch} if max_batch > 1 else {}),
                          **({"max_memory": max_memory} if max_memory else {}),
                          **({"kv_cache": kv} if kv != "f32" else {}),
                          **({"cpu_target": cpu_tgt.describe() if cpu_tgt else None}
                             if cuda else {}))
        output = default_cache_dir() / f"{src.name}-{key}.ingot"
        if output.exists():
            return output
    output = pathlib.Path(output)
    # numba and LLVM load only when there is something to compile (not for a cache hit).
    from ..targets.cpu.build import build_library
    from ..targets.cpu.step_source import call_labels, render_step

    from tqdm import tqdm
    bar = tqdm(total=5, desc=f"compile {src.name}", unit="phase", disable=not progress,
               leave=False)

    def phase(name):
        bar.set_postfix_str(name)
        bar.update(1)

    graph = trace(src, Policy(dt, isq_type, table), max_seq=max_seq, chunk=chunk, kv_cache=kv)
    phase("passes")
    verify = (lambda a, b, name: outputs_match(a, b, name, vocab=spec.vocab_size)) \
        if verify_passes else None
    graph = run_passes(graph, verify)
    if not cuda:
        regroup_for_cpu(graph)
    phase("memory plan")
    plan = plan_memory(graph, chunk)

    weights = graph.weights()
    # Each layer and the head are page-aligned runs, so that they can be streamed (--max-memory).
    unit_order, owner = assign_units(graph)
    w_off, w_size, runs = layout_weights(weights, owner, unit_order, weight_nbytes,
                                         WEIGHT_ALIGN)
    state_row = _state_row_bytes(graph)
    s_off, s_size = _layout(graph.states, lambda s: s.rows * state_row[id(s)], 64)
    s_size = (s_size + 63) // 64 * 64  # sequence slots stay aligned
    linears = [n.weights["w"] for n in graph.nodes if n.op is Op.LINEAR]
    max_k = max((w.shape[1] for w in linears), default=0)
    # Per thread: attention scores (max_seq floats), a widened weight row (max_k floats), or a
    # chunk of activations quantized to 8 bits for the integer-dot kernels (block types).
    q8_k = max((w.shape[1] for w in linears if w.dtype not in FLOAT_TYPES), default=0)
    q8_rows = chunk * ((q8_k + 127) // 128 * 176)  # q8_kernels.q8_row_bytes
    # Attention keeps the scores of up to ATTN_MAX_GROUP heads that share a kv head.
    from ..targets.cpu.kernels import ATTN_MAX_GROUP, ATTN_MAX_HEAD_DIM
    attn = [n.attrs for n in graph.nodes if n.op is Op.ATTENTION]
    if any(a["head_dim"] > ATTN_MAX_HEAD_DIM for a in attn):
        raise IngotError(f"head_dim {max(a['head_dim'] for a in attn)} is over the CPU "
                         f"attention kernel's {ATTN_MAX_HEAD_DIM}")
    heads = max((min(a["n_heads"] // a["n_kv_heads"], ATTN_MAX_GROUP) for a in attn), default=1)
    scratch = (max(heads * max_seq * 4, max_k * 4, q8_rows) + 63) // 64 * 64
    phase("native code")

    entries = {"prefill": "ingot_prefill", "decode": "ingot_decode"}
    arena = plan.arena_size
    bgraph = bplan = None
    if max_batch > 1:
        # Several sequences, one token each: every row gets logits; the arena holds both plans
        # (they never run at the same time).
        bgraph = batch_graph(graph)
        bplan = plan_memory(bgraph, max_batch)
        arena = max(arena, bplan.arena_size)
    # The offload control words (one per unit: 1 resident, 0 streamed) and the read-ahead
    # signal words (eventfd, wanted unit, 1) follow the activations.
    ctl = (arena + 63) // 64 * 64
    arena = ctl + (8 * (len(runs) + 3) + 63) // 64 * 64
    unit_runs = {u: (k, off, nb) for k, (u, off, nb) in enumerate(runs)}

    def units_for(g):
        return {"runs": unit_runs, "order": [u for u, _, _ in runs], "ctl": ctl,
                "node_units": node_units(g)}
    sources = {"prefill": render_step(graph, plan, w_off, s_off, "prefill", profile=profile,
                                      units=units_for(graph)),
               "decode": render_step(graph, plan, w_off, s_off, "decode", fixed_n=1,
                                     profile=profile, units=units_for(graph))}
    batch = {}
    if bgraph is not None:
        sources["batch"] = render_step(bgraph, bplan, w_off, s_off, "batch", profile=profile,
                                       batch=(max_batch, s_size), units=units_for(bgraph))
        entries["batch"] = "ingot_batch"
        bl = bgraph.outputs["logits"]
        batch = {"batch_tokens_offset": bplan.offset(bgraph.inputs["tokens"]),
                 "batch_logits_offset": bplan.offset(bl) + 4 * bl.col_offset,
                 "batch_arena_bytes": bplan.arena_size}
    device_sections, device_plan = {}, {}
    if cuda:  # launch lists, kernel source, PTX and cubin instead of CPU code
        from ..targets.cuda.compile import cuda_sections
        device_sections, device_plan = cuda_sections(
            graph, plan, w_off, s_off, chunk, tgt, cpu_target=cpu_tgt,
            workdir=output.parent if output.parent.exists() else None,
            batch=None if bgraph is None else (bgraph, bplan, max_batch))
        code = device_sections.pop("code", None)
    else:
        code = build_library(sources, tgt,
                             workdir=output.parent if output.parent.exists() else None)
    phase("write")

    logits = graph.outputs["logits"]
    plan_json = {
        "arch": spec.arch, "family": src.family.name,
        "dtype": dt or "mixed", "weight_types": _type_counts(weights), "isq": isq_type,
        "vocab_size": spec.vocab_size, "hidden": spec.hidden, "n_layers": spec.n_layers,
        "n_heads": spec.n_heads, "n_kv_heads": spec.n_kv_heads, "head_dim": spec.head_dim,
        "max_seq_len": max_seq, "prefill_chunk": chunk, "max_batch": max_batch, **batch,
        "arena_bytes": arena, "arena_naive_bytes": plan.naive_size,
        "scratch_bytes_per_thread": scratch, "state_bytes": s_size, "weights_bytes": w_size,
        "tokens_offset": plan.offset(graph.inputs["tokens"]),
        "logits_offset": plan.offset(logits) + 4 * logits.col_offset,
        "layer_weight_bytes": _per_layer_bytes(weights),
        # Offload units (page-aligned runs of the weights section) and their control words.
        "units": [{"name": u, "offset": off, "bytes": nb} for u, off, nb in runs],
        "units_ctl_offset": ctl,
        "units_signal": True,  # [eventfd, wanted unit, 1] after the control words
        "max_memory_hint": max_memory,  # the load-time budget when none is given
        "decode_read_bytes": _decode_read_bytes(graph, weights),
        # Full-context layers grow by this per token; sliding-window layers hold a fixed ring.
        "kv_bytes_per_token": sum(state_row[id(s)] for s in graph.states if s.rows == max_seq),
        # The cache's storage type, and one layer's K and V row bytes in it (device_map).
        "kv_cache": kv,
        "kv_row_bytes": 2 * max(state_row.values(), default=0),
        "kv_ring_layers": sum(1 for n in graph.nodes
                              if n.op is Op.ATTENTION and n.attrs["ring"] < max_seq),
        "kv_rings": sorted({(n.attrs["ring"], n.attrs["window"]) for n in graph.nodes
                            if n.op is Op.ATTENTION and n.attrs["ring"] < max_seq}),
        "nodes": len(graph.nodes), "passes": graph.meta.get("passes", []),
        "ops": {op.value: sum(1 for n in graph.nodes if n.op is op) for op in Op
                if any(n.op is op for n in graph.nodes)},
        "bos_token_id": spec.bos_token_id, "eos_token_ids": spec.eos_token_ids,
        "entry_points": entries,
        # Profile builds: each step stamps the cycle counter after each of these calls.
        **({"profile_calls": call_labels(graph)} if profile else {}),
        # What a later compile needs to reuse these weights as they are (--from-uqff).
        "spec": spec_to_json(spec),
        "tensors": [tensor_entry(w, w_off[id(w)]) for w in weights if w.source[0] != "array"],
    }
    plan_json.update(device_plan)
    header = {"ingot_version": __version__, "target": tgt.describe(), "model": src.name}

    def weight_chunks():
        it = sorted(weights, key=lambda w: w_off[id(w)])  # the file order: by unit
        if progress:
            from tqdm import tqdm
            it = tqdm(it, desc="writing weights", unit="tensor", leave=False)
        pos = 0
        for w in it:
            pad = w_off[id(w)] - pos
            if pad:
                yield b"\0" * pad
            pos = w_off[id(w)]
            for data in weight_raw_chunks(w):  # runs of rows: memory bounded by the run size
                yield data.tobytes()
                pos += data.nbytes
        if w_size > pos:  # the last unit ends on a page too
            yield b"\0" * (w_size - pos)

    with ArtefactWriter(output) as aw:
        aw.header = header
        native = native_vocab_sections(src.artefact_sections(), plan_json)  # skips noted in plan
        # The native chat format that renders the template as Jinja does (libingot), or why not.
        plan_json["chat_native"] = chat_native(template, src.artefact_sections())
        aw.add("plan", json.dumps(plan_json, sort_keys=True).encode())
        if code is not None:
            aw.add("code", code)
        for name, data in device_sections.items():
            aw.add(name, data)
        for name, data in {**src.artefact_sections(), **native}.items():
            aw.add(name, data)
        if template is not None:
            aw.add("chat_template", json.dumps(template, sort_keys=True).encode())
        aw.add("weights", weight_chunks(), align=PAGE)
    phase("done")
    bar.close()
    return output
