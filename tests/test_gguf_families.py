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
from test_equivalence import prompt, ref_logits, rel_err

NAMES = ["llama", "qwen2", "qwen3", "phi2", "phi3", "starcoder2"]


@pytest.mark.parametrize("name", NAMES)
def test_gguf_matches_transformers(name, model_dirs, tmp_path):
    _, hf = model_dirs(name)
    path = tmp_path / f"{name}.gguf"
    write_gguf(hf, path)
    m = ingot.load(ingot.compile(path, tmp_path / f"{name}.ingot", max_seq_len=64), threads=2)
    ids = prompt(19, hf.config.vocab_size, 1)
    steps = prompt(16, hf.config.vocab_size, 2)
    ref = ref_logits(hf, ids + steps)
    got = [m.prefill(ids)] + [m.decode(t) for t in steps]
    for i, g in enumerate(got):
        pos = len(ids) - 1 + i
        assert rel_err(g, ref[pos]) < 1e-3, f"position {pos}: {rel_err(g, ref[pos]):.2e}"
