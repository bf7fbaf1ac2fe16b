"""Hugging Face folders: config.json, safetensors shards and tokenizer files."""
from __future__ import annotations

import re

from ..arch.registry import family_for
from ..arch.spec import ConfigError
from ..errors import IngotError
from .model_source import read_json, resolve_model_dir
from .safetensors_index import index_folder
from .source import ModelSource

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "generation_config.json",
                   "special_tokens_map.json")
_FLOATS = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def tokenizer_sections(model) -> tuple[dict, object]:
    """Tokenizer files of a folder or cached model id, and its chat template (newer
    transformers write chat_template.jinja; older ones keep it in tokenizer_config.json)."""
    folder = resolve_model_dir(model)
    sections = {n.removesuffix(".json"): (folder / n).read_bytes()
                for n in TOKENIZER_FILES if (folder / n).exists()}
    jinja = folder / "chat_template.jinja"
    template = jinja.read_text(encoding="utf-8") if jinja.exists() else \
        read_json(folder / "tokenizer_config.json", required=False).get("chat_template")
    return sections, template


def open_hf(model) -> ModelSource:
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
    tensors = index_folder(folder)

    def lookup(role: str):
        m = re.match(r"blk\.(\d+)\.(.*)", role)
        pat = family.tensors.get("blk.{i}." + m.group(2) if m else role)
        if pat is None:
            return None
        return tensors.get(pat.format(i=m.group(1)) if m else pat)

    sections, template = tokenizer_sections(folder)
    hashed = [folder / n for n in ("config.json", *TOKENIZER_FILES, "chat_template.jinja",
                                   "model.safetensors.index.json") if (folder / n).exists()]
    hashed += sorted(folder.glob("*.safetensors"))
    return ModelSource(folder.name, family, spec, lookup, sections, template, hashed,
                       _FLOATS.get(str(spec.torch_dtype)))
