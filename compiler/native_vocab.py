"""tokenizer.json -> the ``vocab_native`` section: a compact binary vocabulary that libingot's C
tokenizer (runtime/capi/tokenizer.c) reads in place, tokenizing exactly as `tokenizers` does.

Only the tokenizer.json shapes Ingot's artefacts carry are accepted; anything else raises an
IngotError naming the feature, so the C side never silently differs:
- SentencePiece-style BPE (GGUF "llama" vocabularies, Gemma's tokenizer.json): normalizer
  [Prepend "▁"] + Replace " "->"▁", no pre-tokenizer (or Gemma's no-op Split on " "), decoder
  Replace "▁"->" ", ByteFallback, Fuse [, Strip one leading space].
- byte-level BPE: ByteLevel pre-tokenizer (GPT-2 regex), or Split(one of the GPT-2 / Llama 3 /
  Qwen2 regexes) + ByteLevel(use_regex=false); ByteLevel decoder; no normalizer.

Layout (little-endian; every table 8-byte aligned; offsets from the section start):
    0   magic b"INGOTVOC", u32 version, u32 header size, u32 total size,
    20  u32 CRC-32 of bytes [24, total)
    24  u32 model, pretok, flags, n_tokens, unk, bos, eos, i32 bos_fix, eos_fix, u32 n_prefix,
        n_suffix   (ids: NONE = 0xFFFFFFFF; *_fix: -1 = leave to the post-processor, 0/1 = the
        tokenizer_config's add_bos_token/add_eos_token, applied as runtime/tokenizer.py does)
    68  NTABLES x (u32 offset, u32 count); see TABLES.
"""
from __future__ import annotations

import json
import struct
import zlib
from itertools import chain

import numpy as np

from ..errors import IngotError

MAGIC = b"INGOTVOC"
VERSION = 1
NONE = 0xFFFFFFFF

MODEL_SP_BPE, MODEL_BYTE_BPE = 1, 2
PRE_NONE, PRE_GPT2, PRE_LLAMA3, PRE_QWEN2 = 0, 1, 2, 3

# flags
F_BYTE_FALLBACK = 1 << 0
F_FUSE_UNK = 1 << 1
F_IGNORE_MERGES = 1 << 2
F_PREPEND_SPACE = 1 << 3    # SentencePiece: "▁" before each stretch of text
F_SPACE_TO_META = 1 << 4    # SentencePiece: " " -> "▁"
F_ADD_PREFIX_SPACE = 1 << 5  # byte-level: " " before each stretch not starting with one
F_STRIP_SPACE = 1 << 6      # decode: drop one leading space

# per-token flags (table tok_flags)
T_SPECIAL, T_BYTE, T_MISSING = 1, 2, 4
# per-added-token flags
A_LSTRIP, A_RSTRIP, A_NORMALIZED, A_SPECIAL = 1, 2, 4, 8

# Table order; tokenizer.c uses the same indices.
TABLES = ("dec_off", "dec_bytes", "tok_flags", "lk_off", "lk_bytes", "lk_ids", "merge_row",
          "merges", "byte_ids", "add_off", "add_bytes", "add_info", "add_lens", "pp_ids")
_HEAD = struct.Struct("<8sIIII" + "IIIIIIIiiII")
HEADER_SIZE = _HEAD.size + 8 * len(TABLES)

_META = "\u2581"
_GPT2_RE = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_L3_HEAD = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|"
_L3_TAIL = r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
# Regexes (as Split patterns) the C state machines implement, by family. GPT-2's with or
# without the final "|\s+": with Isolated splitting both give the same pieces.
_REGEX_FAMILY = {
    _GPT2_RE: PRE_GPT2, _GPT2_RE + r"|\s+": PRE_GPT2,
    _L3_HEAD + r"\p{N}{1,3}" + _L3_TAIL: PRE_LLAMA3,
    _L3_HEAD + r"\p{N}" + _L3_TAIL: PRE_QWEN2,
}


def _byte_unicode() -> dict[str, int]:
    """GPT-2's byte <-> printable character table, reversed: character -> byte."""
    keep = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    chars = {b: b for b in keep}
    n = 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + n
            n += 1
    return {chr(c): b for b, c in chars.items()}


_CHAR_BYTE = _byte_unicode()


def _refuse(what: str):
    raise IngotError(f"native tokenizer: {what} is not supported")


def native_vocab(spec: dict, config: dict | None = None) -> bytes:
    """The vocab_native section for a parsed tokenizer.json (+ tokenizer_config dict)."""
    config = config or {}
    model = spec.get("model") or {}
    if model.get("type", "BPE") != "BPE":
        _refuse(f"model type {model.get('type')!r}")
    if model.get("dropout") not in (None, 0, 0.0):
        _refuse("BPE dropout")
    for key in ("continuing_subword_prefix", "end_of_word_suffix"):
        if model.get(key):
            _refuse(f"BPE {key}")
    if spec.get("truncation") or spec.get("padding"):
        _refuse("truncation/padding in tokenizer.json")
    byte_level = (spec.get("decoder") or {}).get("type") == "ByteLevel"
    flags = ((F_BYTE_FALLBACK if model.get("byte_fallback") else 0)
             | (F_FUSE_UNK if model.get("fuse_unk") else 0)
             | (F_IGNORE_MERGES if model.get("ignore_merges") else 0))
    if byte_level:
        kind = MODEL_BYTE_BPE
        pretok, extra = _byte_level_layout(spec)
    else:
        kind, pretok = MODEL_SP_BPE, PRE_NONE
        extra = _sentencepiece_layout(spec)
        if flags & F_IGNORE_MERGES:
            _refuse("ignore_merges with a SentencePiece-style normalizer")
    flags |= extra

    vocab: dict = model.get("vocab") or {}
    if not vocab:
        raise IngotError("native tokenizer: the BPE vocabulary is empty")
    added = {}
    for a in spec.get("added_tokens") or []:
        if a.get("single_word"):
            _refuse(f"added token {a['content']!r} with single_word")
        if a.get("normalized") and kind == MODEL_SP_BPE:
            _refuse(f"normalized added token {a['content']!r} with a SentencePiece normalizer")
        added[int(a["id"])] = a
    by_id: dict[int, str] = {}
    for text, i in vocab.items():
        if i in by_id:
            _refuse(f"two vocabulary entries with id {i}")
        by_id[i] = text
    n = max(max(by_id), max(added, default=-1)) + 1
    if n >= NONE:
        raise IngotError("native tokenizer: vocabulary too large")

    # Decode bytes per id: what the tokenizer.json decoder makes of the token alone.
    texts = [added[i]["content"] if i in added else by_id.get(i) for i in range(n)]
    tflags = np.array([T_MISSING if t is None else 0 for t in texts], np.uint8)
    for i, a in added.items():
        if a.get("special"):
            tflags[i] |= T_SPECIAL
    if kind == MODEL_BYTE_BPE:
        dec = [b"" if t is None else _unbyte(t) or t.encode() for t in texts]
    else:
        dec = [b"" if t is None else t.replace(_META, " ").encode() for t in texts]
        for i, t in enumerate(texts):
            if t is not None and len(t) == 6 and t.startswith("<0x") \
                    and (b := _byte_token(t)) is not None:
                dec[i] = bytes([b])
                tflags[i] |= T_BYTE

    # Encoding lookups: the model vocabulary by the bytes the C side sees.
    lookup = []
    for text, i in vocab.items():
        key = _unbyte(text) if kind == MODEL_BYTE_BPE else text.encode()
        if key is not None:  # byte-level tokens outside GPT-2's alphabet can't come from bytes
            lookup.append((key, i))
    lookup.sort()

    merges = _merges(model.get("merges") or [], vocab)
    byte_ids = np.full(256, NONE, np.uint32)
    if kind == MODEL_SP_BPE:
        for b in range(256):
            byte_ids[b] = vocab.get(f"<0x{b:02X}>", NONE)

    adds = sorted((a["content"].encode(), i, a) for i, a in added.items())
    add_info = np.array([[i, (A_LSTRIP if a.get("lstrip") else 0)
                          | (A_RSTRIP if a.get("rstrip") else 0)
                          | (A_NORMALIZED if a.get("normalized") else 0)
                          | (A_SPECIAL if a.get("special") else 0)] for _, i, a in adds],
                        np.uint32).reshape(-1, 2)
    add_lens = sorted({len(c) for c, _, _ in adds}, reverse=True)

    token_id = _token_id_fn(vocab, added)
    prefix, suffix = _post_processor(spec.get("post_processor"), token_id)
    bos, eos = (token_id(_token_text(config.get(k))) for k in ("bos_token", "eos_token"))
    bos_fix = _fix(config.get("add_bos_token"), bos)
    eos_fix = _fix(config.get("add_eos_token"), eos)
    unk = vocab.get(model.get("unk_token"), NONE) if model.get("unk_token") else NONE

    tables = {
        "dec_off": _offsets(dec), "dec_bytes": b"".join(dec), "tok_flags": tflags.tobytes(),
        "lk_off": _offsets([k for k, _ in lookup]), "lk_bytes": b"".join(k for k, _ in lookup),
        "lk_ids": np.array([i for _, i in lookup], np.uint32).tobytes(),
        "merge_row": _merge_rows(merges["rows"], n), "merges": merges["merges"],
        "byte_ids": byte_ids.tobytes(),
        "add_off": _offsets([c for c, _, _ in adds]), "add_bytes": b"".join(c for c, _, _ in adds),
        "add_info": add_info.tobytes(), "add_lens": np.array(add_lens, np.uint32).tobytes(),
        "pp_ids": np.array(prefix + suffix, np.uint32).tobytes(),
    }
    counts = {"dec_off": n + 1, "tok_flags": n, "lk_off": len(lookup) + 1, "lk_ids": len(lookup),
              "merge_row": n + 1, "merges": len(merges["merges"]) // 12, "byte_ids": 256,
              "add_off": len(adds) + 1, "add_info": len(adds), "add_lens": len(add_lens),
              "pp_ids": len(prefix) + len(suffix)}
    body, directory, pos = [], [], HEADER_SIZE
    for name in TABLES:
        data = tables[name]
        pad = (-pos) % 8
        body.append(b"\0" * pad)
        pos += pad
        directory.append((pos, counts.get(name, len(data))))
        body.append(data)
        pos += len(data)
    if pos >= 1 << 32:
        raise IngotError("native tokenizer: vocabulary section over 4 GiB")
    head = _HEAD.pack(MAGIC, VERSION, HEADER_SIZE, pos, 0, kind, pretok, flags, n, unk,
                      NONE if bos is None else bos, NONE if eos is None else eos,
                      bos_fix, eos_fix, len(prefix), len(suffix))
    head += b"".join(struct.pack("<II", o, c) for o, c in directory)
    blob = bytearray(head + b"".join(body))
    struct.pack_into("<I", blob, 20, zlib.crc32(memoryview(blob)[24:]))
    return bytes(blob)


def native_vocab_sections(sections: dict, plan: dict) -> dict:
    """{"vocab_native": bytes} for an artefact's tokenizer sections, or {} with the reason noted
    in the plan (libingot reports it when it opens such an artefact)."""
    raw = sections.get("tokenizer")
    if raw is None:
        plan["vocab_native"] = {"skipped": "the artefact has no tokenizer"}
        return {}
    cfg = sections.get("tokenizer_config")
    try:
        return {"vocab_native": native_vocab(json.loads(raw), json.loads(cfg) if cfg else None)}
    except IngotError as err:
        plan["vocab_native"] = {"skipped": str(err)}
        return {}


# --- tokenizer.json shapes ---------------------------------------------------------------------

def _sentencepiece_layout(spec: dict) -> int:
    norm = spec.get("normalizer")
    steps = norm.get("normalizers", []) if norm and norm.get("type") == "Sequence" else [norm]
    flags = 0
    if steps and steps[0] == {"type": "Prepend", "prepend": _META}:
        flags |= F_PREPEND_SPACE
        steps = steps[1:]
    if steps != [{"type": "Replace", "pattern": {"String": " "}, "content": _META}]:
        _refuse(f"normalizer {json.dumps(norm)[:200]}")
    flags |= F_SPACE_TO_META
    pre = spec.get("pre_tokenizer")
    # Gemma's Split on " " runs after every " " has become "▁": it never splits.
    if pre not in (None, {"type": "Split", "pattern": {"String": " "},
                          "behavior": "MergedWithPrevious", "invert": False}):
        _refuse(f"pre-tokenizer {json.dumps(pre)[:200]} with a SentencePiece vocabulary")
    dec = spec.get("decoder") or {}
    steps = dec.get("decoders", []) if dec.get("type") == "Sequence" else [dec]
    want = [{"type": "Replace", "pattern": {"String": _META}, "content": " "},
            {"type": "ByteFallback"}, {"type": "Fuse"}]
    if steps[:3] != want:
        _refuse(f"decoder {json.dumps(dec)[:200]}")
    if steps[3:] == [{"type": "Strip", "content": " ", "start": 1, "stop": 0}]:
        flags |= F_STRIP_SPACE
    elif steps[3:]:
        _refuse(f"decoder {json.dumps(dec)[:200]}")
    return flags


def _byte_level_layout(spec: dict) -> tuple[int, int]:
    if spec.get("normalizer") is not None:
        _refuse(f"normalizer {spec['normalizer'].get('type')!r} with a byte-level vocabulary")
    pre = spec.get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", []) if pre.get("type") == "Sequence" else [pre]
    if not steps or steps[-1].get("type") != "ByteLevel":
        _refuse(f"byte-level pre-tokenizer {json.dumps(pre)[:200]}")
    last = steps[-1]
    flags = F_ADD_PREFIX_SPACE if last.get("add_prefix_space") else 0
    if last.get("use_regex", True):
        if len(steps) != 1:
            _refuse("a Split before a ByteLevel pre-tokenizer that also splits")
        return PRE_GPT2, flags
    if len(steps) != 2:
        _refuse(f"pre-tokenizer chain {json.dumps(pre)[:200]} (e.g. llama.cpp's 'default')")
    split = steps[0]
    regex = (split.get("pattern") or {}).get("Regex")
    if (split.get("type") != "Split" or split.get("behavior") != "Isolated"
            or split.get("invert") or regex not in _REGEX_FAMILY):
        _refuse(f"pre-tokenizer {json.dumps(split)[:200]}")
    return _REGEX_FAMILY[regex], flags


def _token_text(value):
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _token_id_fn(vocab, added):
    by_content = {a["content"]: i for i, a in added.items()}
    return lambda t: None if t is None else by_content.get(t, vocab.get(t))


def _fix(value, token) -> int:
    # runtime/tokenizer.py applies the config's add_bos/add_eos only when it is a bool and the
    # token exists; otherwise the post-processor alone decides.
    return int(bool(value)) if value is not None and token is not None else -1


def _post_processor(pp, token_id) -> tuple[list[int], list[int]]:
    if pp is None:
        return [], []
    steps = pp.get("processors", []) if pp.get("type") == "Sequence" else [pp]
    prefix, suffix = [], []
    for step in steps:
        if step.get("type") == "ByteLevel":
            continue  # only moves offsets
        if step.get("type") != "TemplateProcessing" or prefix or suffix:
            _refuse(f"post-processor {step.get('type')!r}")
        single = step.get("single") or []
        seq = [k for k, item in enumerate(single) if "Sequence" in item]
        if len(seq) != 1 or single[seq[0]]["Sequence"].get("id") != "A":
            _refuse("a TemplateProcessing template without exactly one $A")
        for k, item in enumerate(single):
            if k == seq[0]:
                continue
            name = item["SpecialToken"]["id"]
            ids = step.get("special_tokens", {}).get(name, {}).get("ids")
            if ids is None:
                ids = [token_id(name)]
            if any(i is None for i in ids):
                raise IngotError(f"native tokenizer: post-processor token {name!r} is unknown")
            (prefix if k < seq[0] else suffix).extend(ids)
    return prefix, suffix


# --- tables --------------------------------------------------------------------------------------

def _unbyte(text: str) -> bytes | None:
    try:
        return bytes(_CHAR_BYTE[c] for c in text)
    except KeyError:
        return None


def _byte_token(text: str) -> int | None:
    # What the ByteFallback decoder reads as one byte: "<0x" + two hex digits (Rust's
    # from_str_radix, which also takes a leading "+") + ">".
    if len(text) != 6 or not text.startswith("<0x") or not text.endswith(">"):
        return None
    digits = text[3:5]
    body = digits[1:] if digits[0] == "+" else digits
    if not body or any(c not in "0123456789abcdefABCDEF" for c in body):
        return None
    return int(body, 16)


def _offsets(parts: list[bytes]) -> bytes:
    return np.concatenate([[0], np.cumsum([len(p) for p in parts], dtype=np.int64)]) \
        .astype(np.uint32).tobytes()


def _merges(merges: list, vocab: dict) -> dict:
    """Merges as rows by left id: (right id, rank, result id), sorted by right id. As in
    `tokenizers`, a pair listed twice keeps its last rank."""
    pairs = [m.split(" ") if isinstance(m, str) else m for m in merges]
    get = vocab.__getitem__
    try:
        flat = np.fromiter(chain.from_iterable((get(a), get(b), get(a + b)) for a, b in pairs),
                           np.uint32, 3 * len(pairs))
    except (KeyError, ValueError):
        bad = next(m for m in pairs if len(m) != 2 or any(x not in vocab for x in (*m, "".join(m))))
        raise IngotError(f"native tokenizer: merge {bad!r} is not two vocabulary tokens whose "
                         "join is one too") from None
    arr = np.empty((len(pairs), 4), np.uint32)
    arr[:, [0, 1, 3]] = flat.reshape(-1, 3)
    arr[:, 2] = np.arange(len(pairs), dtype=np.uint32)  # rank: the listing order
    key = arr[:, 0].astype(np.uint64) << np.uint64(32) | arr[:, 1]
    _, last = np.unique(key[::-1], return_index=True)  # sorted by (left, right); last listing
    arr = arr[len(arr) - 1 - last]
    return {"merges": np.ascontiguousarray(arr[:, 1:]).tobytes(), "rows": arr[:, 0]}


def _merge_rows(lefts: np.ndarray, n: int) -> bytes:
    counts = np.bincount(lefts.astype(np.int64), minlength=n)
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.uint32).tobytes()
