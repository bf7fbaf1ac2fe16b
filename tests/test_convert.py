"""`ingot convert`: Hugging Face folders written as GGUF files. The gguf package reads them
back; Ingot compiles them to the same model (f32: the logits of the folder's own compile up to
summation order, 1e-5 of the logit scale — Llama's q/k rows are permuted for GGUF's RoPE
pairing, which reorders sums inside a head); with --isq the quantized blocks are byte for
byte those a compile with the same --isq makes, so the logits are identical."""
from __future__ import annotations

import numpy as np
import pytest

import ingot
from ingot.quant.registry import base_type
from ingot.runtime.artefact import Artefact
from test_cli import cli_in_process
from test_equivalence import by_family, prompt, rel_err
from test_isq import logits_run as _logits

NAMES = ["llama", "qwen2", "qwen3", "phi2", "phi3", "starcoder2"]


@pytest.mark.parametrize("name", by_family(NAMES))
def test_convert_round_trip(name, model_dirs, artefacts, tmp_path):
    import gguf
    folder, hf = model_dirs(name)
    out = tmp_path / f"{name}.gguf"
    assert cli_in_process("convert", "-m", folder, "-o", out) == 0
    reader = gguf.GGUFReader(out)  # the gguf package reads what Ingot wrote
    names = {t.name for t in reader.tensors}
    assert "token_embd.weight" in names and f"blk.{hf.config.num_hidden_layers - 1}.ffn_down.weight" in names
    # One token per embedding row, as llama.cpp requires.
    assert len(reader.fields["tokenizer.ggml.tokens"].data) == hf.config.vocab_size
    g = ingot.compile(out, tmp_path / f"{name}.ingot", max_seq_len=128)
    ids, steps = prompt(13, hf.config.vocab_size, 7), prompt(6, hf.config.vocab_size, 8)
    for a, b in zip(_logits(g, ids, steps), _logits(artefacts(name), ids, steps)):
        assert rel_err(a, b) < 1e-5
    text = "Ingot compiles héllo wörld 12345 🙂"
    ours = ingot.load(g, threads=1).tokenizer
    theirs = ingot.load(artefacts(name), threads=1).tokenizer
    assert ours.encode(text) == theirs.encode(text)


def test_convert_isq_matches_compile_isq(tmp_path):
    from test_isq import WIDE
    from tiny_models import build_model, save_model
    folder = save_model(build_model("phi2", **WIDE["phi2"]), tmp_path / "phi2")
    out = tmp_path / "q8.gguf"
    assert cli_in_process("convert", "-m", folder, "--isq", "Q8_0", "-o", out) == 0
    a = ingot.compile(out, tmp_path / "a.ingot", max_seq_len=64)
    b = ingot.compile(folder, tmp_path / "b.ingot", isq="Q8_0", max_seq_len=64)
    ta, tb = Artefact(a).json("plan")["tensors"], Artefact(b).json("plan")["tensors"]
    assert [(t["name"], t["dtype"]) for t in ta] == [(t["name"], t["dtype"]) for t in tb]
    assert {base_type(t["dtype"]) for t in ta} == {"q8_0", "f32"}
    ids, steps = prompt(11, 300, 3), prompt(4, 300, 4)
    for x, y in zip(_logits(a, ids, steps), _logits(b, ids, steps)):
        np.testing.assert_array_equal(x, y)


def test_a_gguf_is_requantized_as_a_compile_would(tmp_path):
    """`convert -m file.gguf --isq Q4_0`: every tensor gets the type `compile --isq Q4_0` of the
    same file gives it, with the same bytes (identical logits from the two artefacts); the
    metadata is copied except the file type; unchanged tensors are copied byte for byte."""
    import gguf
    from test_isq import WIDE
    from tiny_models import build_model, save_model
    folder = save_model(build_model("phi2", **WIDE["phi2"]), tmp_path / "phi2")
    q8 = tmp_path / "q8.gguf"
    assert cli_in_process("convert", "-m", folder, "--isq", "Q8_0", "-o", q8) == 0
    q4 = tmp_path / "q4.gguf"
    assert cli_in_process("convert", "-m", q8, "--isq", "Q4_0", "-o", q4) == 0
    assert not list(tmp_path.glob("*.partial"))
    old, new = gguf.GGUFReader(q8), gguf.GGUFReader(q4)
    assert set(old.fields) - set(new.fields) <= {"general.file_type"}
    assert set(new.fields) <= set(old.fields)
    for name in set(new.fields) - {"GGUF.kv_count"}:
        assert new.fields[name].contents() == old.fields[name].contents(), name
    a = ingot.compile(q4, tmp_path / "a.ingot", max_seq_len=64)
    b = ingot.compile(q8, tmp_path / "b.ingot", isq="Q4_0", max_seq_len=64)
    ta, tb = Artefact(a).json("plan")["tensors"], Artefact(b).json("plan")["tensors"]
    assert [(t["name"], t["dtype"]) for t in ta] == [(t["name"], t["dtype"]) for t in tb]
    assert "q4_0" in {base_type(t["dtype"]) for t in ta}  # stored in a CPU layout of Q4_0
    ids, steps = prompt(11, 300, 3), prompt(4, 300, 4)
    for x, y in zip(_logits(a, ids, steps), _logits(b, ids, steps)):
        np.testing.assert_array_equal(x, y)
    before = {t.name: t for t in old.tensors}
    kept = [t for t in new.tensors if t.tensor_type == before[t.name].tensor_type]
    assert kept and all(bytes(t.data) == bytes(before[t.name].data) for t in kept)


def test_convert_refuses_a_family_without_gguf(model_dirs, tmp_path):
    folder, _ = model_dirs("glm4")
    assert cli_in_process("convert", "-m", folder, "-o", tmp_path / "x.gguf") == 1
    assert not (tmp_path / "x.gguf").exists() and not (tmp_path / "x.gguf.partial").exists()


def test_convert_pads_the_vocabulary_to_the_embedding(tmp_path):
    """An embedding with more rows than the tokenizer has tokens (as Qwen's): the GGUF lists
    one token per row, the rest as unused "[PADi]", so llama.cpp accepts it; Ingot reads it."""
    import gguf
    from tiny_models import build_model, make_tokenizer, save_model
    folder = save_model(build_model("qwen3", vocab_size=320), tmp_path / "qwen3")
    make_tokenizer(300).save(str(folder / "tokenizer.json"))
    out = tmp_path / "padded.gguf"
    assert cli_in_process("convert", "-m", folder, "-o", out) == 0
    tokens = gguf.GGUFReader(out).fields["tokenizer.ggml.tokens"]
    names = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    assert len(names) == 320 and names[300:] == [f"[PAD{i}]" for i in range(300, 320)]
    m = ingot.load(ingot.compile(out, tmp_path / "p.ingot", max_seq_len=32), threads=1)
    try:
        assert m.prefill(m.tokenizer.encode("Ingot pads")).shape == (320,)
    finally:
        m.close()
