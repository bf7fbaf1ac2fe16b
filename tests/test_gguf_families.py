"""GGUF inputs of every architecture the seed lists for GGUF (llama, qwen2, qwen3, phi2, phi3,
starcoder2), written from tiny transformers models the way llama.cpp's converter writes them
(tests/gguf_from_hf.py), against transformers on the original model.

f32 tensors, so the bound is test_equivalence's 1e-3 of the logit scale: only summation order
differs (and, for Llama, the interleaved RoPE pairing that the converter's row permutation
turns into transformers' half-split one).
"""
from __future__ import annotations

import pytest

import ingot
from gguf_from_hf import write_gguf
from test_equivalence import check_against_transformers

NAMES = ["llama", "qwen2", "qwen3", "phi2", "phi3", "starcoder2"]


@pytest.mark.parametrize("name", NAMES)
def test_gguf_matches_transformers(name, model_dirs, tmp_path):
    _, hf = model_dirs(name)
    path = tmp_path / f"{name}.gguf"
    write_gguf(hf, path)
    m = ingot.load(ingot.compile(path, tmp_path / f"{name}.ingot", max_seq_len=64), threads=2)
    check_against_transformers(m, hf)
