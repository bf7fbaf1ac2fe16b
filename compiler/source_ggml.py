"""Legacy GGML (ggjt v3) Llama files: their hyperparameters and vocabulary become GGUF-style
metadata and their tensor names GGUF's, so the GGUF Llama spec and tokenizer paths take over.

What ggjt v3 does not record, and what Ingot assumes in its place:
- the number of KV heads: read from the K projection's rows (llama.cpp's converter needed a
  --gqa flag for Llama 2 70B; the tensor shape says the same);
- the RMS norm epsilon: 1e-6, LLaMA 1's value (Llama 2 used 1e-5; its ggjt files say nothing);
- the context length: 2048, LLaMA 1's (only RoPE scaling would read it; ggjt has none).
Q and K rows are stored permuted for interleaved RoPE, as in GGUF Llamas.
"""
from __future__ import annotations

import pathlib
import re

from ..arch.gguf_meta import Meta
from ..arch.registry import family_for_gguf
from ..errors import IngotError
from .ggml_file import read_ggml
from .source import ModelSource
from .source_gguf import _tokenizer_files, _tokenizer_sections

RMS_EPS = 1e-6
CONTEXT = 2048

# Legacy (original LLaMA checkpoint) names -> GGUF names; {i} is the layer.
_NAMES = {
    "tok_embeddings.weight": "token_embd.weight",
    "norm.weight": "output_norm.weight",
    "output.weight": "output.weight",
    "layers.{i}.attention.wq.weight": "blk.{i}.attn_q.weight",
    "layers.{i}.attention.wk.weight": "blk.{i}.attn_k.weight",
    "layers.{i}.attention.wv.weight": "blk.{i}.attn_v.weight",
    "layers.{i}.attention.wo.weight": "blk.{i}.attn_output.weight",
    "layers.{i}.attention_norm.weight": "blk.{i}.attn_norm.weight",
    "layers.{i}.feed_forward.w1.weight": "blk.{i}.ffn_gate.weight",
    "layers.{i}.feed_forward.w2.weight": "blk.{i}.ffn_down.weight",
    "layers.{i}.feed_forward.w3.weight": "blk.{i}.ffn_up.weight",
    "layers.{i}.ffn_norm.weight": "blk.{i}.ffn_norm.weight",
}
_LAYER = re.compile(r"layers\.(\d+)\.(.*)")

# GGUF token types (see gguf_tokenizer).
_NORMAL, _UNKNOWN, _CONTROL, _BYTE = 1, 2, 3, 6


def canonical_name(name: str) -> str:
    """The GGUF name of a legacy tensor name; names not in the table stay as they are."""
    m = _LAYER.fullmatch(name)
    if m:
        new = _NAMES.get("layers.{i}." + m.group(2))
        return new.format(i=m.group(1)) if new else name
    return _NAMES.get(name, name)


def open_ggml(path, *, tokenizer=None) -> ModelSource:
    path = pathlib.Path(path)
    f = read_ggml(path)
    tensors = {canonical_name(n): t for n, t in f.tensors.items()}
    meta = _metadata(f, tensors, path)
    family = family_for_gguf("llama", path)
    spec = family.gguf_spec(Meta(meta, "llama", path), tensors)
    sections, template = _tokenizer_sections(meta, tokenizer, path)
    return ModelSource(path.stem.replace(" ", "-"), family, spec, tensors.get, sections,
                       template, [path, *_tokenizer_files(tokenizer)])


def _metadata(f, tensors: dict, path) -> dict:
    """GGUF-style metadata for the file's hyperparameters and vocabulary."""
    hp = f.hparams
    if hp["n_embd"] % hp["n_head"]:
        raise IngotError(f"{path}: n_embd {hp['n_embd']} is not a multiple of n_head "
                         f"{hp['n_head']}")
    head_dim = hp["n_embd"] // hp["n_head"]

    def rows(name, legacy):
        t = tensors.get(name)
        if t is None or len(t.shape) != 2:
            raise IngotError(f"{path}: tensor '{legacy}' is missing or not a matrix")
        return t.shape[0]

    kv_rows = rows("blk.0.attn_k.weight", "layers.0.attention.wk.weight")
    if kv_rows % head_dim:
        raise IngotError(f"{path}: 'layers.0.attention.wk.weight' has {kv_rows} rows, not a "
                         f"whole number of heads of {head_dim}")
    tokens, scores, types = _vocab(f.vocab)
    return {
        "general.architecture": "llama", "general.name": path.stem,
        "llama.vocab_size": hp["n_vocab"], "llama.context_length": CONTEXT,
        "llama.embedding_length": hp["n_embd"], "llama.block_count": hp["n_layer"],
        "llama.feed_forward_length": rows("blk.0.ffn_gate.weight",
                                          "layers.0.feed_forward.w1.weight"),
        "llama.attention.head_count": hp["n_head"],
        "llama.attention.head_count_kv": kv_rows // head_dim,
        "llama.rope.dimension_count": hp["n_rot"],
        "llama.attention.layer_norm_rms_epsilon": RMS_EPS,
        "tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.scores": scores, "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 2,
    }


def _vocab(items: list) -> tuple[list, list, list]:
    """SentencePiece pieces as llama.cpp's GGML writer stored them -> GGUF tokens and types.

    That writer put '▁' back as spaces, bytes (ids 3..258 of the byte-fallback vocabulary) as the
    single raw byte, and the unknown and control pieces as placeholders; ids 0..2 are always
    <unk>, <s>, </s>.
    """
    tokens, scores, types = [], [], []
    for i, (text, score) in enumerate(items):
        kind = _NORMAL
        if i < 3:
            text, kind = ("<unk>", "<s>", "</s>")[i], (_UNKNOWN, _CONTROL, _CONTROL)[i]
        elif not text:
            text, kind = "", _CONTROL  # named as llama.cpp names empty tokens
        elif len(text) == 1 and i <= 258:
            text, kind = f"<0x{text[0]:02X}>", _BYTE
        else:
            text = text.decode("utf-8", "replace").replace(" ", "\u2581")
            if re.fullmatch(r"<0x[0-9A-F]{2}>", text):
                kind = _BYTE
        tokens.append(text)
        scores.append(float(score))
        types.append(kind)
    return tokens, scores, types
