"""A GGUF file's tokenizer metadata -> a Hugging Face ``tokenizer.json`` that tokenizes as llama.cpp
does, plus the tokenizer_config facts the runtime needs.

Two GGUF tokenizer kinds are covered:
- "llama" (SentencePiece style): llama.cpp repeatedly joins the adjacent pair whose concatenation
  is the highest-scoring vocabulary token (leftmost on ties) and spells unknown characters as
  ``<0xNN>`` bytes. A BPE model whose merges are every (left, right) split of every token, ranked
  by the token's score, makes exactly the same choices.
- "gpt2" (byte-level BPE): the stored merges as they are, and the pre-tokenizer regexes llama.cpp
  uses for the ``tokenizer.ggml.pre`` name.
Like llama.cpp with ``parse_special``, control tokens are matched in the text as special tokens and
user-defined ones as plain added tokens, both on the raw text (before spaces become "▁").
"""
from __future__ import annotations

import json

from ..errors import IngotError

# tokenizer.ggml.token_type values (gguf's TokenType).
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

_K = "tokenizer.ggml."

# llama.cpp's pre-tokenizer regexes by tokenizer.ggml.pre name; a list is applied one regex
# after another, each splitting the pieces the previous one left.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# For these llama.cpp returns a word that is itself a token as that token, without merging.
_LLAMA3_NAMES = ("llama3", "llama-v3", "llama-bpe", "falcon3", "pixtral")
_DEFAULT = [r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"]
_PRE_REGEXES = {
    "default": _DEFAULT,
    **dict.fromkeys(["gpt-2", "phi-2", "mpt", "olmo"], [_GPT2]),
    **dict.fromkeys(_LLAMA3_NAMES, [_LLAMA3]),
    **dict.fromkeys(["qwen2", "deepseek-r1-qwen", "stablelm2"], [_QWEN2]),
}


def tokenizer_from_gguf(meta: dict) -> tuple[str, dict]:
    """(tokenizer.json text, tokenizer_config dict) for a GGUF's tokenizer metadata."""
    kind = meta.get(_K + "model")
    tokens = meta.get(_K + "tokens")
    if not tokens:
        raise IngotError("GGUF has no tokenizer.ggml.tokens")
    tokens = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]  # as llama.cpp names them
    types = _token_kinds(tokens, meta.get(_K + "token_type") or [NORMAL] * len(tokens))
    # llama.cpp's defaults when the metadata is silent: SentencePiece vocabularies add <s> (id 1)
    # and end with </s> (id 2); byte-level ones add a BOS only for Llama-3-style pre-tokenizers.
    if kind == "llama":
        spec, add_bos, bos_default, eos_default = _sentencepiece(meta, tokens), True, 1, 2
    elif kind == "gpt2":
        spec = _byte_level(meta, tokens)
        add_bos, bos_default, eos_default = _pre_name(meta) in _LLAMA3_NAMES, None, None
    else:
        raise IngotError(f"GGUF tokenizer model {kind!r} is not supported "
                         "(only 'llama' and 'gpt2')")

    def token_id(key, default):
        i = meta.get(_K + key, default)
        return i if isinstance(i, int) and 0 <= i < len(tokens) else None

    bos, eos = token_id("bos_token_id", bos_default), token_id("eos_token_id", eos_default)
    add_bos = bool(meta.get(_K + "add_bos_token", add_bos)) and bos is not None
    add_eos = bool(meta.get(_K + "add_eos_token", False)) and eos is not None
    spec["added_tokens"] = _added_tokens(meta, tokens, types)
    spec["post_processor"] = _post_processor(tokens, bos if add_bos else None,
                                             eos if add_eos else None)
    config = {"add_bos_token": add_bos, "add_eos_token": add_eos}
    named = {"bos_token": bos, "eos_token": eos, "unk_token": token_id("unknown_token_id", None),
             "pad_token": token_id("padding_token_id", None)}
    config.update({name: tokens[i] for name, i in named.items() if i is not None})
    if meta.get("tokenizer.chat_template"):
        config["chat_template"] = meta["tokenizer.chat_template"]
    return json.dumps(spec, ensure_ascii=False), config


def _vocab(tokens: list[str]) -> dict[str, int]:
    # llama.cpp's text->id map keeps the last of duplicate texts; the earlier ids still decode
    # through their added-token entry or a placeholder name.
    vocab = {t: i for i, t in enumerate(tokens)}
    for i, t in enumerate(tokens):
        if vocab[t] != i:
            vocab[f"[DUPLICATE_{i}]"] = i
    return vocab


def _sentencepiece(meta: dict, tokens: list[str]) -> dict:
    scores = meta.get(_K + "scores") or [0.0] * len(tokens)
    vocab = _vocab(tokens)
    # Every way to write a token as two tokens is a merge, ranked by the token's score (higher
    # first); ties keep token order. One dict lookup per split point keeps 262k tokens fast.
    order = sorted(range(len(tokens)), key=lambda i: (-scores[i], i))
    merges = []
    for i in order:
        t = tokens[i]
        if vocab.get(t) != i:
            continue
        merges.extend([t[:k], t[k:]] for k in range(1, len(t)) if t[:k] in vocab and t[k:] in vocab)
    prefix = bool(meta.get(_K + "add_space_prefix", True))
    normalizers = [{"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]
    if prefix:  # llama.cpp prefixes each stretch of text: at the start and after special tokens
        normalizers.insert(0, {"type": "Prepend", "prepend": "▁"})
    decoders = [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                {"type": "ByteFallback"}, {"type": "Fuse"}]
    if prefix:
        decoders.append({"type": "Strip", "content": " ", "start": 1, "stop": 0})
    unk = meta.get(_K + "unknown_token_id", 0)
    unk = tokens[unk] if isinstance(unk, int) and 0 <= unk < len(tokens) else None
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "normalizer": {"type": "Sequence", "normalizers": normalizers},
        "pre_tokenizer": None,
        "decoder": {"type": "Sequence", "decoders": decoders},
        "model": {"type": "BPE", "dropout": None,
                  "unk_token": unk,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                  "vocab": vocab, "merges": merges},
    }


def _byte_level(meta: dict, tokens: list[str]) -> dict:
    pre = _pre_name(meta)
    if pre not in _PRE_REGEXES:
        raise IngotError(f"GGUF pre-tokenizer {pre!r} is not supported yet "
                         f"(known: {', '.join(sorted(_PRE_REGEXES))})")
    vocab = _vocab(tokens)
    merges = []
    for m in meta.get(_K + "merges") or []:
        cut = m.find(" ", 1)  # llama.cpp splits at the first space after the first character
        a, b = (m[:cut], m[cut + 1:]) if cut > 0 else (m, "")
        # tokenizers needs both halves and the result in the vocabulary; llama.cpp would merge
        # anyway and spell an out-of-vocabulary result as bytes. Such merges are rare; skip them.
        if a in vocab and b in vocab and a + b in vocab:
            merges.append([a, b])
    splits = [{"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
              for r in _PRE_REGEXES[pre]]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                  "use_regex": False}
    return {
        "version": "1.0", "truncation": None, "padding": None,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": splits + [byte_level]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False,
                    "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": pre in _LLAMA3_NAMES,
                  "vocab": vocab, "merges": merges},
    }


# llama.cpp (as vendored in llama-cpp-python 0.3.36) decides some token kinds by their text,
# whatever the GGUF says: these end-of-generation texts become control tokens, and gpt-oss's
# channel markers user-defined.
_EOG_TEXTS = frozenset([
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["])
_HARMONY_MARKERS = frozenset(["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"])


def _token_kinds(tokens: list[str], types: list[int]) -> list[int]:
    kinds = list(types)
    present = set(tokens)
    eog = set(_EOG_TEXTS)
    if present & {"<|tool_response>", "<|plamo:eos|>"}:
        eog.discard("</s>")  # Gemma 4 and PLaMo use </s> as ordinary text
    harmony_end = {"<|return|>", "<|call|>"} <= present or {"<|calls|>", "<|flush|>"} <= present
    for i, t in enumerate(tokens):
        if t in _HARMONY_MARKERS or (t == "<|end|>" and harmony_end):
            kinds[i] = USER_DEFINED
        elif t in eog:
            kinds[i] = CONTROL
    return kinds


def _pre_name(meta: dict) -> str:
    return meta.get(_K + "pre") or "default"  # llama.cpp's choice when the key is missing


def _added_tokens(meta: dict, tokens: list[str], types: list[int]) -> list[dict]:
    # Phi-3 GGUFs: llama.cpp eats the whitespace after most special tokens (chosen by model name).
    name = str(meta.get("general.name", "")).lower()
    phi3 = "phi-3" in name or "phi3" in name
    out = []
    for i, (t, ty) in enumerate(zip(tokens, types)):
        if ty not in (CONTROL, UNKNOWN, USER_DEFINED):
            continue
        rstrip = phi3 and t not in ("<unk>", "<s>", "<|endoftext|>")
        out.append({"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": rstrip,
                    "normalized": False, "special": ty != USER_DEFINED})
    return out


def _post_processor(tokens: list[str], bos: int | None, eos: int | None) -> dict:
    def seq(name, type_id):
        return {"Sequence": {"id": name, "type_id": type_id}}

    def special(i, type_id):
        return [{"SpecialToken": {"id": tokens[i], "type_id": type_id}}] if i is not None else []

    single = special(bos, 0) + [seq("A", 0)] + special(eos, 0)
    pair = single + special(bos, 1) + [seq("B", 1)] + special(eos, 1)
    specials = {tokens[i]: {"id": tokens[i], "ids": [i], "tokens": [tokens[i]]}
                for i in (bos, eos) if i is not None}
    return {"type": "TemplateProcessing", "single": single, "pair": pair,
            "special_tokens": specials}
