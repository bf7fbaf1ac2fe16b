"""Tokenizer wrapper and streaming detokenization, on two tiny tokenizers trained here: a
byte-level BPE (GPT-2/Llama-3 style) and a SentencePiece-style BPE with byte fallback
(Llama-2/Gemma style)."""
import json

import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, processors, trainers

from ingot.errors import IngotError
from ingot.runtime.tokenizer import Tokenizer

CORPUS = [
    "hello world, héllo wörld! naïve café.",
    "日本語のテキストです。 emoji 🙂 and 🚀 rockets",
    "The quick brown fox jumps over the lazy dog. 12345 67890",
    "def f(x):\n    return x * 2  # comment",
    "Ünïcödé strings — with dashes… and “quotes”",
] * 4
SPECIALS = ["<s>", "</s>", "<unk>"]
SAMPLES = [
    "héllo 日本語 emoji 🙂",
    "🙂🙂🚀 rocket",
    " leading space and  double  spaces",
    "naïve café — “quoted” text\nnew line",
    "unseen: 中文 ✨ Ω≈ç√",
    "plain ascii",
]


def _byte_level() -> HFTokenizer:
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", tok.token_to_id("<s>"))])
    return tok


def _sentencepiece_style() -> HFTokenizer:
    tok = HFTokenizer(models.BPE(unk_token="<unk>"))
    # Llama-2's layout: the normalizer marks spaces, so a leading space survives a round trip.
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never")
    # Train without CJK and emoji so those fall back to <0xNN> byte tokens.
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=SPECIALS)
    tok.train_from_iterator([t for t in CORPUS if t.isascii() or "é" in t], trainer)
    # The trainer cannot make byte-fallback tokens, so add them to the model as SentencePiece does.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0}]}
    return HFTokenizer.from_str(json.dumps(spec))


@pytest.fixture(scope="module", params=["byte_level", "sentencepiece"])
def tok(request):
    inner = _byte_level() if request.param == "byte_level" else _sentencepiece_style()
    return Tokenizer.from_parts(inner.to_str(), {"bos_token": "<s>", "eos_token": {"content": "</s>"}})


def test_round_trip(tok):
    for text in SAMPLES:
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
        assert tok.decode(tok.encode(text)) == text  # <s> is skipped


def test_byte_fallback_used():
    tok = Tokenizer.from_parts(_sentencepiece_style().to_str(), {})
    pieces = [tok.id_to_token(i) for i in tok.encode("日本語 🙂")]
    assert any(p.startswith("<0x") for p in pieces)  # the stream test below then splits characters


def test_special_ids_and_config(tok):
    assert tok.bos_id == tok.token_to_id("<s>") is not None
    assert tok.eos_id == tok.token_to_id("</s>") is not None
    assert tok.vocab_size == tok.inner.get_vocab_size(with_added_tokens=True)
    assert tok.decode([tok.bos_id] + tok.encode("hi", False)) == "hi"
    assert tok.decode([tok.bos_id], skip_special_tokens=False) == "<s>"


def test_add_bos_eos_flags():
    bl = _byte_level().to_str()
    cfg = {"bos_token": "<s>", "eos_token": "</s>"}
    plain = Tokenizer.from_parts(bl, cfg)
    ids = plain.encode("hello")
    assert ids[0] == plain.bos_id  # from the post-processor
    no_bos = Tokenizer.from_parts(bl, {**cfg, "add_bos_token": False})
    assert no_bos.encode("hello") == ids[1:]
    with_eos = Tokenizer.from_parts(bl, {**cfg, "add_eos_token": True})
    assert with_eos.encode("hello") == ids + [with_eos.eos_id]
    sp = Tokenizer.from_parts(_sentencepiece_style().to_str(), {**cfg, "add_bos_token": True})
    assert sp.encode("hello")[0] == sp.bos_id
    assert sp.encode("hello", add_special_tokens=False)[0] != sp.bos_id
    unknown = Tokenizer.from_parts(bl, {})
    assert unknown.bos_id is None and unknown.eos_id is None


def test_bad_json():
    with pytest.raises(IngotError):
        Tokenizer.from_parts("{not json", {})


@pytest.mark.parametrize("skip", [True, False])
def test_stream_matches_decode(tok, skip):
    for text in SAMPLES:
        ids = [tok.bos_id] + tok.encode(text, add_special_tokens=False) + [tok.eos_id]
        stream = tok.stream(skip_special_tokens=skip)
        pieces = [stream.put(i) for i in ids]
        pieces.append(stream.flush())
        assert "".join(pieces) == tok.decode(ids, skip_special_tokens=skip), text
        assert not any("\ufffd" in p for p in pieces)


def test_stream_holds_split_characters():
    tok = Tokenizer.from_parts(_sentencepiece_style().to_str(), {})
    ids = tok.encode("🙂", add_special_tokens=False)
    assert len(ids) > 1  # four byte tokens (plus maybe a space marker)
    stream = tok.stream()
    out = [stream.put(i) for i in ids]
    assert out[-1].endswith("🙂") and all("🙂" not in p for p in out[:-1])


def test_stream_flushes_invalid_tail():
    tok = Tokenizer.from_parts(_sentencepiece_style().to_str(), {})
    ids = tok.encode("ab", add_special_tokens=False) + [tok.token_to_id("<0xE6>")]
    stream = tok.stream()
    text = "".join(stream.put(i) for i in ids)
    assert text + stream.flush() == tok.decode(ids)
