"""What the compiler needs from any model file format, in one shape.

A source names its family and canonical spec, resolves canonical tensor roles to tensor
references, and carries the tokenizer files and chat template that go into the artefact.
A tensor reference reads itself as float32 (`read_f32`) or as its stored bytes (`raw`), and
says its storage type (`qtype`: "f32", "bf16", "q4_k" …) and shape ([rows, K], HF order).
"""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field
from typing import Callable, Optional

from ..arch.registry import Family
from ..arch.spec import ModelSpec


@dataclass
class ModelSource:
    name: str
    family: Family
    spec: ModelSpec
    lookup: Callable  # canonical role -> tensor reference or None
    sections: dict = field(default_factory=dict)  # artefact section name -> bytes
    chat_template: Optional[object] = None  # str or list of named templates
    hashed_files: list = field(default_factory=list)  # pathlib.Path: inputs of the cache key
    default_float: Optional[str] = None  # the float storage type a matrix defaults to
    make_sections: Optional[Callable] = None  # builds `sections` when first needed (GGUF's
    # tokenizer conversion takes seconds: a cached compile never needs it)

    def __post_init__(self):
        if self.make_sections is not None:
            self._made = None

    def artefact_sections(self) -> dict:
        if self.make_sections is None:
            return self.sections
        if self._made is None:
            self._made = self.make_sections()
        return self._made


def open_source(model, *, fmt=None, file=None, tokenizer=None) -> ModelSource:
    """`model` is a folder, a model id, or a .gguf/.bin file; `fmt`/`file` are mistral.rs'
    `--format gguf -f FILE` (file relative to the model folder when not found as given)."""
    from .model_source import resolve_model_dir
    if fmt is None and file is None and str(model).lower().endswith(".gguf"):
        fmt, file = "gguf", model
    if fmt == "uqff" or fmt is None and str(model).lower().endswith(".ingot"):
        from .source_artefact import open_artefact
        return open_artefact(file or model)
    if fmt in (None, "plain", "hf", "safetensors"):
        from .source_hf import open_hf
        return open_hf(model)
    if fmt == "gguf":
        from .source_gguf import open_gguf
        path = _locate(model, file, resolve_model_dir)
        return open_gguf(path, tokenizer=tokenizer)
    if fmt == "ggml":
        from .source_ggml import open_ggml
        return open_ggml(_locate(model, file, resolve_model_dir), tokenizer=tokenizer)
    from ..errors import IngotError
    raise IngotError(f"unknown --format '{fmt}' (use plain, gguf or ggml)")


def _locate(model, file, resolve) -> pathlib.Path:
    from ..errors import IngotError
    if file is None:
        raise IngotError("--format gguf/ggml needs -f <file>")
    p = pathlib.Path(file).expanduser()
    if p.exists():
        return p
    if model is not None and str(model) != str(file):
        cand = resolve(model) / file
        if cand.exists():
            return cand
    raise IngotError(f"model file '{file}' does not exist")
