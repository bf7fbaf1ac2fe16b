"""Legacy GGML (ggjt v3) Llama files against transformers and SentencePiece.

A tiny random LlamaForCausalLM is written as ggjt v3 the way llama.cpp's converter wrote one
(tests/ggml_writer.py), with a SentencePiece vocabulary trained here. The compiled artefact must
give transformers' logits for the values the file holds (for quantized files: the weights
dequantized by the gguf package), within 1e-3 of the logit scale like the other equivalence tests.
"""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import ingot
from ggml_writer import model_to_ggjt, write_ggjt
from q8_activations import EXACT_Q8_BOUND, quantize_linear_inputs
from ingot.errors import IngotError

TEXTS = ["The quick brown fox jumps over the lazy dog.",
         "Ingot compiles language models ahead of time for small hosts",
         "héllo wörld 12345 and numbers 67890 🙂"]


@pytest.fixture(scope="module")
def sp():
    """A byte-fallback BPE SentencePiece model: <unk>, <s>, </s>, <0x00>..<0xFF>, then pieces."""
    import sentencepiece as spm
    from tiny_models import _CORPUS
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS.split(". ")), model_writer=buf, vocab_size=340,
        model_type="bpe", byte_fallback=True, character_coverage=1.0, hard_vocab_limit=False,
        normalization_rule_name="identity", remove_extra_whitespaces=False, minloglevel=2)
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def build_llama(vocab: int, kv_heads: int, seed: int = 0):
    import transformers
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=kv_heads, rms_norm_eps=1e-6,
        tie_word_embeddings=False, max_position_embeddings=256, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger than the default init so that logits differ visibly
        for p in model.parameters():
            p.normal_(0.0, 0.2) if p.ndim >= 2 else p.add_(torch.randn_like(p) * 0.1)
    return model.float()


def rel_err(a, b) -> float:
    return float(np.abs(np.asarray(a, np.float64) - b).max() / np.abs(b).max())


@pytest.mark.parametrize("qtype,kv_heads", [("f32", 4), ("f32", 2), ("q8_0", 4), ("q4_0", 4)])
def test_ggjt_matches_transformers(qtype, kv_heads, sp, tmp_path):
    hf = build_llama(sp.get_piece_size(), kv_heads)
    path = tmp_path / f"llama-{qtype}.bin"
    stored = model_to_ggjt(hf, sp, path, qtype)
    hf.load_state_dict(stored)  # the reference runs what the file holds
    if qtype in ("q4_0", "q8_0"):  # and the kernels' 8-bit activations (see test_isq)
        quantize_linear_inputs(hf, lambda mod: True)
    art = ingot.compile(path, tmp_path / "m.ingot", format="ggml", file=path, max_seq_len=64)
    m = ingot.load(art, threads=2)
    rng = np.random.default_rng(7)
    ids = rng.integers(3, sp.get_piece_size(), 9).tolist()
    steps = rng.integers(3, sp.get_piece_size(), 4).tolist()
    with torch.no_grad():
        ref = hf(torch.tensor([ids + steps])).logits[0].double().numpy()
    got = [m.prefill(ids)] + [m.decode(t) for t in steps]
    for i, g in enumerate(got):
        pos = len(ids) - 1 + i
        bound = 1e-3 if qtype in ("f32", "f16") else EXACT_Q8_BOUND
        assert rel_err(g, ref[pos]) < bound, f"position {pos}: {rel_err(g, ref[pos]):.2e}"
    if qtype != "f32":
        from ingot.runtime.artefact import Artefact
        from test_isq import base_counts
        assert base_counts(Artefact(art).json("plan")).get(qtype)  # blocks kept as stored


def test_spec_and_tokenizer(sp, tmp_path):
    """Hyperparameters the file lacks come from tensor shapes; tokens match SentencePiece."""
    from tokenizers import Tokenizer
    from ingot.compiler.source_ggml import open_ggml
    hf = build_llama(sp.get_piece_size(), 2)
    path = tmp_path / "llama.bin"
    model_to_ggjt(hf, sp, path)
    src = open_ggml(path)
    s = src.spec
    assert (s.n_heads, s.n_kv_heads, s.head_dim, s.ff, s.norm_eps) == (4, 2, 16, 160, 1e-6)
    assert not s.ropes["global"].neox and s.bos_token_id == 1 and s.eos_token_ids == [2]
    tok = Tokenizer.from_str(src.sections["tokenizer"].decode())
    for text in TEXTS:
        assert tok.encode(text).ids == [1] + sp.encode(text), text
        assert tok.decode(tok.encode(text).ids, skip_special_tokens=True) == text


def _good_file(sp, tmp_path):
    hf = build_llama(sp.get_piece_size(), 4)
    path = tmp_path / "good.bin"
    model_to_ggjt(hf, sp, path)
    return path


def _one_line_error(path):
    with pytest.raises(IngotError) as e:
        ingot.compile(path, path.with_suffix(".ingot"), format="ggml", file=path,
                      max_seq_len=16)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


def test_bad_files(sp, tmp_path):
    good = _good_file(sp, tmp_path).read_bytes()
    cases = {
        "magic.bin": (b"abcd" + good[4:], "bad magic"),
        "gguf.bin": (b"GGUF" + good[4:], "--format gguf"),
        "ggjt1.bin": (good[:4] + (1).to_bytes(4, "little") + good[8:], "ggjt v1"),
        "ggmf.bin": (b"fmgg" + good[4:], "only ggjt v3"),
        "unversioned.bin": (b"lmgg" + good[8:], "only ggjt v3"),
        "short.bin": (good[:len(good) - 100], "truncated"),
        "vocab_cut.bin": (good[:200], "truncated"),
        "empty.bin": (b"", "bad magic"),
    }
    for name, (data, want) in cases.items():
        p = tmp_path / name
        p.write_bytes(data)
        assert want in _one_line_error(p), name


def test_unknown_tensor_type(tmp_path):
    hp = dict(n_vocab=3, n_embd=32, n_mult=256, n_head=1, n_layer=1, n_rot=32, ftype=0)
    p = tmp_path / "odd.bin"
    write_ggjt(p, hp, [(b"", 0.0)] * 3, [("tok_embeddings.weight", [3, 32], "f32",
                                         bytes(3 * 32 * 4))])
    data = bytearray(p.read_bytes())
    at = data.index(b"tok_embeddings.weight") - 4 * 3  # the type, then 2 dims, then the name
    data[at:at + 4] = (99).to_bytes(4, "little")
    p.write_bytes(bytes(data))
    msg = _one_line_error(p)
    assert "tok_embeddings.weight" in msg and "99" in msg
