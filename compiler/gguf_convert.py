"""`ingot convert`: a Hugging Face folder written as a GGUF file (a GGUF file in: re-quantized,
gguf_requant.py), as llama.cpp lays one out, for
the families with a GGUF architecture. Tensors are encoded by Ingot's own quantizers (any ISQ
type, K-quants included) under the same policy as a compile; the tokenizer goes in as a GPT-2
style BPE vocabulary; the hyperparameters as the GGUF keys Ingot's (and llama.cpp's) readers
take. The file is written beside its destination and renamed into place when complete.
"""
from __future__ import annotations

import contextlib
import json
import os
import pathlib
import re

import numpy as np

from ..errors import IngotError
from ..quant.policy import Policy, load_policy, parse_isq
from ..quant.registry import get_format
from .gguf_tokenizer import _PRE_REGEXES
from .source import open_source

_LAYER_NORM = ("phi2", "starcoder2")  # families whose GGUF names a LayerNorm epsilon


def convert(model, output, *, isq=None, dtype=None, quant_policy=None) -> pathlib.Path:
    import gguf
    src = open_source(model)
    fam, spec = src.family, src.spec
    if str(model).lower().endswith(".gguf"):  # a GGUF in: re-quantized, metadata kept
        from .gguf_requant import requantize_gguf
        policy = Policy(dtype or src.default_float, parse_isq(isq), load_policy(quant_policy))
        return requantize_gguf(src, policy, output)
    if not fam.gguf_archs:
        raise IngotError(f"{fam.name} has no GGUF architecture to convert to")
    arch = fam.gguf_archs[0]
    policy = Policy(dtype or src.default_float or "f32", parse_isq(isq), load_policy(quant_policy))
    output = pathlib.Path(output)
    with partial_file(output) as tmp:
        w = gguf.GGUFWriter(str(tmp), arch)
        _hyperparameters(w, spec, arch)
        _tokenizer(w, src)
        for name, data, qtype in _tensors(src, policy, arch):
            fmt = get_format(qtype)
            w.add_tensor(name, data, raw_dtype=gguf.GGMLQuantizationType(fmt.gguf_type))
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    return output


@contextlib.contextmanager
def partial_file(output: pathlib.Path):
    """A path beside `output` to write; renamed onto `output` when the block completes, removed
    when it fails (never a half-written file under the real name)."""
    tmp = output.with_name(output.name + ".partial")
    try:
        yield tmp
        os.replace(tmp, output)
    finally:
        if tmp.exists():
            tmp.unlink()


def _hyperparameters(w, spec, arch: str) -> None:
    rope = spec.ropes["global"]
    w.add_context_length(rope.max_position_embeddings)
    w.add_embedding_length(spec.hidden)
    w.add_block_count(spec.n_layers)
    w.add_feed_forward_length(spec.ff)
    w.add_head_count(spec.n_heads)
    w.add_head_count_kv(spec.n_kv_heads)
    w.add_key_length(spec.head_dim)
    w.add_value_length(spec.head_dim)
    w.add_rope_dimension_count(rope.rot_dim or spec.head_dim)
    w.add_rope_freq_base(rope.theta)
    w.add_vocab_size(spec.vocab_size)
    if arch in _LAYER_NORM:
        w.add_layer_norm_eps(spec.norm_eps)
    else:
        w.add_layer_norm_rms_eps(spec.norm_eps)
    windows = {layer.sliding_window for layer in spec.layers}
    if len(windows) > 1:
        raise IngotError("layers with different sliding windows cannot be written to this GGUF")
    if windows != {0}:
        w.add_sliding_window(windows.pop())
    sc = rope.scaling
    if sc and sc["rope_type"] == "longrope":
        orig = int(sc.get("original_max_position_embeddings") or rope.max_position_embeddings)
        w.add_rope_scaling_orig_ctx_len(orig)
        if sc.get("attention_factor") is not None:
            w.add_rope_scaling_attn_factors(float(sc["attention_factor"]))
        else:
            import math
            scale = rope.max_position_embeddings / orig
            w.add_rope_scaling_attn_factors(
                1.0 if scale <= 1 else math.sqrt(1 + math.log(scale) / math.log(orig)))
        for kind in ("long", "short"):
            w.add_tensor(f"rope_factors_{kind}.weight",
                         np.asarray(sc[f"{kind}_factor"], np.float32))
    elif sc and sc["rope_type"] in ("linear", "yarn"):
        w.add_rope_scaling_type(sc["rope_type"])
        w.add_rope_scaling_factor(float(sc["factor"]))
        if sc.get("original_max_position_embeddings"):
            w.add_rope_scaling_orig_ctx_len(int(sc["original_max_position_embeddings"]))
    elif sc:
        raise IngotError(f"RoPE scaling '{sc['rope_type']}' has no GGUF form here")


def _roles(src):
    """Canonical roles the family's table names, expanded per layer, in file order."""
    for pat in src.family.tensors:
        if "{i}" in pat:
            yield from (pat.format(i=i) for i in range(src.spec.n_layers))
        else:
            yield pat


def _permute(x: np.ndarray, heads: int) -> np.ndarray:
    """Llama's GGUF layout: q/k rows reordered so that RoPE pairs are adjacent (Ingot reads
    GGUF Llamas with interleaved pairs, as llama.cpp does)."""
    return (x.reshape(heads, 2, x.shape[0] // heads // 2, *x.shape[1:])
            .swapaxes(1, 2).reshape(x.shape))


def _tensors(src, policy, arch: str):
    spec = src.spec
    renames = src.family.gguf_names or {}
    seen = set()
    for role in _roles(src):
        ref = src.lookup(role)
        if ref is None or role in seen:
            continue
        seen.add(role)
        if role == "output.weight" and spec.tie_embeddings:
            continue
        x = np.asarray(ref.read_f32(), np.float32)
        m = re.match(r"blk\.(\d+)\.attn_([qk])\.(weight|bias)$", role)
        if arch == "llama" and m:
            x = _permute(x, spec.n_heads if m.group(2) == "q" else spec.n_kv_heads)
        pat = re.sub(r"^blk\.\d+\.", "blk.{i}.", role)
        name = renames[pat].format(i=role.split(".")[1]) if pat in renames else role
        qtype = policy.choose(role, x.shape, ref.qtype)
        rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x.reshape(1, -1)
        data = np.ascontiguousarray(get_format(qtype).quantize(rows)).view(np.uint8)
        yield name, data.reshape(rows.shape[0], -1) if x.ndim > 1 else data.reshape(-1), qtype


def _tokenizer(w, src) -> None:
    """The HF tokenizer as a GPT-2 style GGUF vocabulary (byte-level BPE only)."""
    raw = src.artefact_sections().get("tokenizer")
    if raw is None:
        return
    spec = json.loads(raw)
    model = spec.get("model") or {}
    if model.get("type") != "BPE" or not _is_byte_level(spec.get("pre_tokenizer")):
        raise IngotError("convert writes byte-level BPE tokenizers only; this model's "
                         f"is {model.get('type')}")
    vocab = dict(model["vocab"])
    added = {a["id"]: a for a in spec.get("added_tokens") or []}
    vocab.update({a["content"]: i for i, a in added.items()})
    tokens = sorted(vocab, key=vocab.get)
    if [vocab[t] for t in tokens] != list(range(len(tokens))):
        raise IngotError("the tokenizer's ids are not contiguous from 0")
    types = [(3 if added[i].get("special") else 4) if i in added else 1
             for i in range(len(tokens))]
    # Models whose embedding has more rows than the tokenizer has tokens (Qwen's 151936 rows for
    # 151665 tokens): llama.cpp wants one token per row, so the rest are unused "[PADi]".
    pad = range(len(tokens), src.spec.vocab_size)
    tokens += [f"[PAD{i}]" for i in pad]
    types += [5] * len(pad)  # gguf TokenType.UNUSED
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(_pre_name(spec.get("pre_tokenizer")))
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in model["merges"]])
    cfg = json.loads(src.artefact_sections().get("tokenizer_config") or b"{}")
    for key, add in (("bos_token", w.add_bos_token_id), ("eos_token", w.add_eos_token_id)):
        tok = cfg.get(key)
        tok = tok.get("content") if isinstance(tok, dict) else tok
        if tok in vocab:
            add(vocab[tok])
    w.add_add_bos_token(bool(cfg.get("add_bos_token", False)))
    if isinstance(src.chat_template, str):
        w.add_chat_template(src.chat_template)


def _is_byte_level(pre) -> bool:
    if not pre:
        return False
    if pre.get("type") == "ByteLevel":
        return True
    return any(p.get("type") == "ByteLevel" for p in pre.get("pretokenizers") or [])


def _pre_name(pre) -> str:
    """The llama.cpp pre-tokenizer name whose regexes this tokenizer splits by."""
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    regexes = [p["pattern"].get("Regex") for p in pre.get("pretokenizers") or []
               if p.get("type") == "Split"]
    for name, known in _PRE_REGEXES.items():
        if regexes == known:
            return name
    raise IngotError("this tokenizer's pre-tokenizer has no llama.cpp name to write")
