"""The architecture registry: Hugging Face `model_type` (and later GGUF architecture) -> family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..errors import IngotError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple          # Hugging Face config.json `model_type` values
    spec: Callable              # config dict -> ModelSpec
    tensors: dict               # canonical role pattern -> file tensor name pattern ({i} = layer)
    build: Callable             # (GraphBuilder, ModelSpec, max_seq) -> None
    gguf_archs: tuple = ()      # GGUF `general.architecture` values
    gguf_spec: Optional[Callable] = None  # (Meta, {GGUF tensor name: ref}) -> ModelSpec
    gguf_names: Optional[dict] = None  # role pattern -> GGUF name where they differ (Phi 3)
    chat_template: Optional[str] = None  # built-in template name for files that carry none


_FAMILIES: dict = {}
_GGUF: dict = {}


def register(family: Family) -> Family:
    for mt in family.model_types:
        _FAMILIES[mt] = family
    for a in family.gguf_archs:
        _GGUF[a] = family
    return family


def family_named(name: str) -> Family:
    _load_all()
    for f in _FAMILIES.values():
        if f.name == name:
            return f
    raise IngotError(f"unknown architecture family '{name}'")


def family_for_gguf(arch: str, path="GGUF") -> Family:
    _load_all()
    if arch not in _GGUF:
        raise IngotError(f"{path}: unknown architecture '{arch}' (supported: "
                         f"{', '.join(sorted(_GGUF))})")
    return _GGUF[arch]


def families() -> list:
    _load_all()
    return sorted({f.name: f for f in _FAMILIES.values()}.values(), key=lambda f: f.name)


def family_for(model_type: str) -> Family:
    _load_all()
    if model_type not in _FAMILIES:
        known = ", ".join(sorted(_FAMILIES))
        raise IngotError(f"unknown model_type '{model_type}' in config.json (supported: {known})")
    return _FAMILIES[model_type]


def _load_all() -> None:
    # Importing a family module registers it; the list is the one place that names them.
    from . import (gemma, gemma2, gemma3, glm4, granite, llama, mistral, phi2,  # noqa: F401
                   phi3, qwen2, qwen3, smollm3, starcoder2)
