"""Ingot: an ahead-of-time compiler and a lean edge runtime for language models.

This module stays light: importing it (or ``ingot.runtime``) pulls in neither torch, numba nor
the compiler. ``ingot.compile`` imports the compiler only when it is called.
"""
from __future__ import annotations

import pathlib

from .errors import IngotError

__version__ = "0.1.0"
__all__ = ["compile", "load", "IngotError", "__version__"]


def compile(model, output=None, *, dtype=None, isq=None, target="host", max_seq_len=4096,
            **opts) -> pathlib.Path:
    """Compile a Hugging Face folder (or a cached model id) into an artefact; returns its path."""
    from .compiler.pipeline import compile_model

    return compile_model(model, output, dtype=dtype, isq=isq, target=target,
                         max_seq_len=max_seq_len, **opts)


def load(path, *, threads=None, max_memory=None, prefetch=True, device_map=None, mmap=False):
    """Map an artefact and return a ready ``Model``. ``max_memory`` (bytes or "96MiB") keeps
    the weights that fit resident and streams the rest from the file each step (on a CUDA
    artefact: from host memory into the GPU). ``device_map`` (a DeviceMap or -n text such as
    "0:16;cpu:*") puts a CUDA artefact's layers on the GPU or the CPU. With every weight
    resident on the CPU they are read into transparent huge pages where the host has them
    (faster decode); ``mmap=True`` steps through the file map instead (faster load)."""
    from .runtime.model import Model

    return Model.load(path, threads=threads, max_memory=max_memory, prefetch=prefetch,
                      device_map=device_map, mmap=mmap)
