"""GGUF files: architecture and hyperparameters from metadata, tensors by their GGUF names
(which are Ingot's canonical roles), tokenizer and chat template from metadata."""
from __future__ import annotations

import json
import pathlib
import re

from ..arch.gguf_meta import Meta
from ..arch.registry import family_for_gguf
from ..errors import IngotError
from .gguf_file import read_gguf
from .source import ModelSource


def open_gguf(path, *, tokenizer=None) -> ModelSource:
    path = pathlib.Path(path)
    meta, tensors = read_gguf(path)
    arch = meta.get("general.architecture")
    if not isinstance(arch, str):
        raise IngotError(f"{path}: metadata 'general.architecture' is missing")
    family = family_for_gguf(arch, path)
    spec = family.gguf_spec(Meta(meta, arch, path), tensors)
    kind = meta.get("tokenizer.ggml.model")
    if tokenizer is None and "tokenizer.ggml.tokens" in meta and kind not in ("llama", "gpt2"):
        raise IngotError(f"{path}: GGUF tokenizer model {kind!r} is not supported (only 'llama' "
                         "and 'gpt2'; -t <tokenizer-model-id> takes one from elsewhere)")
    name = meta.get("general.name") if isinstance(meta.get("general.name"), str) else path.stem
    return ModelSource(str(name).replace("/", "_").replace(" ", "-"), family, spec,
                       gguf_lookup(tensors, family.gguf_names), {},
                       _template(meta, tokenizer), [path, *_tokenizer_files(tokenizer)],
                       make_sections=lambda: _tokenizer_sections(meta, tokenizer, path)[0])


def _tokenizer_files(tokenizer_model) -> list:
    """With -t, the tokenizer folder's files are inputs too (the cache key hashes them)."""
    if tokenizer_model is None:
        return []
    from .model_source import resolve_model_dir
    from .source_hf import TOKENIZER_FILES
    folder = resolve_model_dir(tokenizer_model)
    return [folder / n for n in (*TOKENIZER_FILES, "chat_template.jinja") if (folder / n).exists()]


def _template(meta: dict, tokenizer_model):
    """The chat template without converting the vocabulary (what the cache key needs)."""
    if tokenizer_model is not None:
        from .source_hf import tokenizer_sections
        return tokenizer_sections(tokenizer_model)[1]
    t = meta.get("tokenizer.chat_template")
    return t if t and "tokenizer.ggml.tokens" in meta else None


def gguf_lookup(tensors: dict, renames):
    """Roles are GGUF names, except where a family's file names a role differently."""
    if not renames:
        return tensors.get

    def lookup(role: str):
        m = re.match(r"blk\.(\d+)\.(.*)", role)
        pat = renames.get("blk.{i}." + m.group(2) if m else role)
        if pat is None:
            return tensors.get(role)
        return tensors.get(pat.format(i=m.group(1)) if m else pat)
    return lookup


def _tokenizer_sections(meta: dict, tokenizer_model, path) -> tuple[dict, object]:
    """tokenizer.json and tokenizer_config from GGUF metadata, or from `-t <model-id|folder>`."""
    if tokenizer_model is not None:
        from .source_hf import tokenizer_sections
        return tokenizer_sections(tokenizer_model)
    if "tokenizer.ggml.tokens" not in meta:
        return {}, None
    from .gguf_tokenizer import tokenizer_from_gguf
    tok_json, cfg = tokenizer_from_gguf(meta)
    sections = {"tokenizer": tok_json.encode("utf-8"),
                "tokenizer_config": json.dumps(cfg, sort_keys=True).encode("utf-8")}
    return sections, cfg.get("chat_template")
