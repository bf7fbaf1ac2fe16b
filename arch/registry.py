"""The architecture registry: Hugging Face `model_type` (and later GGUF architecture) -> family."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import IngotError


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple          # Hugging Face config.json `model_type` values
    spec: Callable              # config dict -> ModelSpec
    tensors: dict               # canonical role pattern -> file tensor name pattern ({i} = layer)
    build: Callable             # (GraphBuilder, ModelSpec, max_seq) -> None


_FAMILIES: dict = {}


def register(family: Family) -> Family:
    for mt in family.model_types:
        _FAMILIES[mt] = family
    return family


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
    from . import llama, mistral, qwen2, qwen3  # noqa: F401
