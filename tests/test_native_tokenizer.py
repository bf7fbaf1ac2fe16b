"""libingot's native tokenizer (runtime/capi/tokenizer.c reading the vocab_native section that
compiler/native_vocab.py writes) against Hugging Face `tokenizers` through runtime/tokenizer.py:
the same ids for every text in tests/tokenizer_texts.py and seeded random mixed-script text, the
same decoded text, on Gemma 3 270M's real GGUF vocabulary, Gemma 3's official tokenizer.json, a
tiny model's trained byte-level BPE (also with added-token stripping and a prefix space), byte-level
GGUFs with the GPT-2 / Qwen2 / Llama 3 pre-tokenizers, and a SentencePiece GGUF with a "▁" prefix.
Corrupt sections must give error codes; the comparisons run once more under ASan/UBSan.

The C code is built here with the system C compiler and called through ctypes (a test harness).
"""
from __future__ import annotations

import ctypes
import gzip
import json
import pathlib
import random
import shutil
import struct
import subprocess
import sys
import zlib

import pytest

from ingot.compiler.gguf_file import gguf_metadata
from ingot.compiler.gguf_tokenizer import tokenizer_from_gguf
from ingot.compiler.native_vocab import HEADER_SIZE, native_vocab, native_vocab_sections
from ingot.errors import IngotError
from ingot.runtime.tokenizer import Tokenizer
from tokenizer_texts import TEXTS

pytestmark = pytest.mark.xdist_group("native_tokenizer")

ROOT = pathlib.Path(__file__).resolve().parent.parent
CAPI = ROOT / "runtime" / "capi"
DATA = pathlib.Path(__file__).parent / "data"
OK, E_ARG, E_FORMAT, E_VERSION, E_CHECKSUM, E_UTF8, E_TOO_LONG, E_SMALL, E_ID = \
    0, -1, -3, -4, -5, -6, -7, -8, -9
ADD_SPECIAL, SKIP_SPECIAL, CONTINUE = 1, 1, 2


def _cc() -> str:
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        pytest.skip("NO C COMPILER (cc/gcc/clang) on PATH: the native tokenizer is NOT tested")
    return cc


# --- the C library through ctypes ----------------------------------------------------------------

# Test-only export of the pre-tokenizer's piece boundaries (tokenizer.c keeps it static).
_PIECES = r"""
#include "tokenizer.c"
size_t ingot_test_pieces(unsigned pretok, const char *s, size_t n, size_t *ends, size_t cap) {
    ingot_tok t;
    memset(&t, 0, sizeof t);
    t.pretok = pretok;
    size_t k = 0;
    for (size_t i = 0; i < n; k++) {
        i = next_piece(&t, (const uint8_t *)s, n, i);
        if (k < cap) ends[k] = i;
    }
    return k;
}
"""


@pytest.fixture(scope="session")
def lib(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("native_tok")
    (tmp / "harness.c").write_text(_PIECES)
    out = tmp / "libingot_tok.so"
    subprocess.run([_cc(), "-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-shared", "-fPIC",
                    f"-I{CAPI}", str(tmp / "harness.c"), "-o", str(out)], check=True)
    so = ctypes.CDLL(str(out))
    c = ctypes
    so.ingot_test_pieces.argtypes = [c.c_uint, c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t),
                                     c.c_size_t]
    so.ingot_test_pieces.restype = c.c_size_t
    so.ingot_tok_create.argtypes = [c.c_void_p, c.c_size_t, c.c_size_t,
                                    c.POINTER(c.c_void_p), c.c_char_p, c.c_size_t]
    so.ingot_tok_encode.argtypes = [c.c_void_p, c.c_char_p, c.c_size_t, c.c_uint,
                                    c.POINTER(c.c_int32), c.c_size_t, c.POINTER(c.c_size_t)]
    so.ingot_tok_decode.argtypes = [c.c_void_p, c.POINTER(c.c_int32), c.c_size_t, c.c_uint,
                                    c.c_char_p, c.c_size_t, c.POINTER(c.c_size_t)]
    so.ingot_tok_free.argtypes = [c.c_void_p]
    so.ingot_tok_last_error.argtypes = [c.c_void_p]
    so.ingot_tok_last_error.restype = c.c_char_p
    for name in ("vocab_size", "bos", "eos"):
        getattr(so, f"ingot_tok_{name}").argtypes = [c.c_void_p]
    return so


class Native:
    """One ingot_tok handle over a copy of the section."""

    def __init__(self, so, blob: bytes, max_text: int = 0):
        self.so = so
        self.buf = ctypes.create_string_buffer(blob, len(blob))  # stays alive with the handle
        self.h = ctypes.c_void_p()
        err = ctypes.create_string_buffer(256)
        self.rc = so.ingot_tok_create(self.buf, len(blob), max_text, ctypes.byref(self.h),
                                      err, 256)
        self.err = err.value.decode()

    def __del__(self):
        if getattr(self, "h", None):
            self.so.ingot_tok_free(self.h)

    def encode_rc(self, data: bytes, add_special: bool, cap: int | None = None):
        cap = len(data) * 3 + 8 if cap is None else cap
        out, need = (ctypes.c_int32 * max(cap, 1))(), ctypes.c_size_t()
        rc = self.so.ingot_tok_encode(self.h, data, len(data), ADD_SPECIAL if add_special else 0,
                                      out, cap, ctypes.byref(need))
        return rc, list(out[:min(need.value, cap)]), need.value

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        rc, ids, _ = self.encode_rc(text.encode(), add_special)
        assert rc == OK, (rc, self.so.ingot_tok_last_error(self.h))
        return ids

    def decode_rc(self, ids, flags: int, cap: int | None = None):
        arr = (ctypes.c_int32 * max(len(ids), 1))(*ids)
        cap = 64 * len(ids) + 8 if cap is None else cap
        out, need = ctypes.create_string_buffer(max(cap, 1)), ctypes.c_size_t()
        rc = self.so.ingot_tok_decode(self.h, arr, len(ids), flags, out, cap, ctypes.byref(need))
        return rc, out.raw[:min(need.value, cap)], need.value

    def decode(self, ids, skip: bool = True, cont: bool = False) -> bytes:
        rc, data, _ = self.decode_rc(ids, (SKIP_SPECIAL if skip else 0) | (CONTINUE if cont else 0))
        assert rc == OK, (rc, self.so.ingot_tok_last_error(self.h))
        return data


# --- the tokenizers under test -------------------------------------------------------------------

def _tiny():
    from tiny_models import make_tokenizer
    return json.loads(make_tokenizer(300).to_str())


def _tiny_config():
    return {"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True}


def _tiny_strip():
    # Stripping added tokens, as Phi-3's GGUFs (rstrip) and some Hugging Face tokenizers
    # (lstrip) do.
    spec = _tiny()
    for a in spec["added_tokens"]:
        a["rstrip"] = a["content"] in ("<|im_start|>", "</s>")
        a["lstrip"] = a["content"] in ("<|im_end|>", "</s>")
    # Outside GPT-2's byte alphabet (decoded as its UTF-8), and one that decodes to " word"
    # and is matched after normalization (the second added-token pass).
    n = len(spec["model"]["vocab"])
    spec["added_tokens"] += [
        {"id": n, "content": "<｜end▁of▁sentence｜>", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": False, "special": True},
        {"id": n + 1, "content": "Ġword", "single_word": False, "lstrip": False,
         "rstrip": False, "normalized": True, "special": False}]
    return spec


def _tiny_prefix():
    spec = _tiny()
    spec["pre_tokenizer"]["add_prefix_space"] = True
    return spec


def _byte_level_gguf(pre: str, tmp):
    from test_gguf_tokenizer import _train_byte_level, _write_byte_level_gguf
    _write_byte_level_gguf(_train_byte_level(pre), pre, tmp / f"{pre}.gguf")
    text, config = tokenizer_from_gguf(gguf_metadata(tmp / f"{pre}.gguf"))
    return json.loads(text), config


def _llama3_hf():
    # The Hugging Face layout itself: Split + ByteLevel, ignore_merges, a normalized added token.
    from test_gguf_tokenizer import _train_byte_level
    return json.loads(_train_byte_level("llama-bpe").to_str()), None


def _big_byte_level(pre: str):
    """A byte-level BPE trained on the test texts themselves with a large vocabulary, so that
    most pre-tokenizer pieces become one token: a piece cut differently shows as other ids."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import decoders, models, pre_tokenizers, trainers

    from test_gguf_tokenizer import _LAYOUTS
    tok = HFTokenizer(models.BPE(ignore_merges=pre == "llama-bpe"))
    tok.pre_tokenizer = _LAYOUTS[pre]
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=6000, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    corpus = [*TEXTS.values(), *_EDGE.values(), *_fuzz_texts({}, seed=99).values()]
    tok.train_from_iterator(corpus, trainer)
    return json.loads(tok.to_str()), None


def _sentencepiece_prefix():
    """A small llama-type (SentencePiece) GGUF vocabulary with add_space_prefix (Prepend "▁",
    Strip decoder); some characters are left out so that they fall back to bytes."""
    rng = random.Random(7)
    corpus = " ".join(t for t in TEXTS.values() if t)
    chars = sorted({c for c in corpus if c != " "} - set("ñ日ж😀"))
    words = sorted({"\u2581" + w for w in corpus.split()}, key=lambda w: (len(w), w))
    pieces = [w[:k] for w in words for k in range(2, min(len(w), 6) + 1)]
    pieces = list(dict.fromkeys(["\u2581", "\u2581\u2581", *pieces]))
    rng.shuffle(pieces)
    tokens = (["<unk>", "<s>", "</s>", "<tool>"] + [f"<0x{b:02X}>" for b in range(256)]
              + chars + [p for p in pieces[:700] if p not in chars])
    types = [2, 3, 3, 4] + [6] * 256 + [1] * (len(tokens) - 260)
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [-float(i) for i in range(len(tokens))],
            "tokenizer.ggml.token_type": types, "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2}
    text, config = tokenizer_from_gguf(meta)
    return json.loads(text), config


@pytest.fixture(scope="session")
def specs(gemma_gguf, tmp_path_factory):
    """name -> (tokenizer.json dict, tokenizer_config dict or None)."""
    tmp = tmp_path_factory.mktemp("native_tok_gguf")
    text, config = tokenizer_from_gguf(gguf_metadata(gemma_gguf))
    out = {"gemma_gguf": (json.loads(text), config)}
    # Gemma's official tokenizer.json ships in tests/data: a missing file is an error.
    with gzip.open(DATA / "gemma3_tokenizer.json.gz", "rt", encoding="utf-8") as f:
        out["gemma_official"] = (json.load(f), None)
    out.update({
        "tiny_bpe": (_tiny(), _tiny_config()),
        "tiny_strip": (_tiny_strip(), _tiny_config()),
        "tiny_prefix": (_tiny_prefix(), None),
        "gpt2_gguf": _byte_level_gguf("gpt-2", tmp),
        "qwen2_gguf": _byte_level_gguf("qwen2", tmp),
        "llama3_gguf": _byte_level_gguf("llama-bpe", tmp),
        "llama3_hf": _llama3_hf(),
        **{f"{pre}_big": _big_byte_level(pre) for pre in ("gpt-2", "qwen2", "llama-bpe")},
        "sp_prefix_gguf": _sentencepiece_prefix(),
    })
    return out


NAMES = ["gemma_gguf", "gemma_official", "tiny_bpe", "tiny_strip", "tiny_prefix", "gpt2_gguf",
         "qwen2_gguf", "llama3_gguf", "llama3_hf", "gpt-2_big", "qwen2_big", "llama-bpe_big",
         "sp_prefix_gguf"]
_built: dict = {}


def _case(name, specs, lib):
    """(reference Tokenizer, Native handle, section bytes, texts), built once per session."""
    if name not in _built:
        spec, config = specs[name]
        ref = Tokenizer.from_parts(json.dumps(spec), config)
        blob = native_vocab(spec, config)
        nat = Native(lib, blob)
        assert nat.rc == OK, nat.err
        _built[name] = (ref, nat, blob, {**TEXTS, **_EDGE, **_fuzz_texts(spec)})
    return _built[name]


# --- seeded random text ---------------------------------------------------------------------------

_SCRIPTS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", "éèêëàâäôöûüçñßøåæœÉÀÇŁąę",
    "абвгдежзийклмнопрстуфхцчшщъыьэюяЁЖ", "αβγδεζηθικλμνξοπρστυφχψωΑΒΓ", "مرحبابالعالمفارسی",
    "שלוםעולם", "नमस्तेदुनियाहिन्दी", "สวัสดีชาวโลก", "日本語中文测试你好世界のテキストカタ",
    "한국어텍스트입니다", "0123456789", "٠١٢٣٤٥٦٧٨٩１２３²³½ⅫⅦ߀",
    ".,;:!?'\"()[]{}<>_-=+*/\\|@#$%^&~`—–…«»¿¡€£¥©®™°±×÷", "\u0301\u0308\u200b\u200d\ufeff",
]
_SPACES = [" ", "  ", "   ", "    ", "\t", "\n", "\n\n", "\r\n", "\r", " \n ", "\t\n", "\u00a0",
           "\u3000", "\u2009", "\u2028", "\u0085", "\x0b", "\x0c", "\x1c", " \u00a0 "]
_BITS = ["😀", "🎉", "🚀", "👩‍💻", "🇫🇷", "❤️", "👍🏽", "🦙", "'s", "'t", "'re", "'ve", "'m",
         "'ll", "'d", "'S", "'LL", "'Re", "'ſ", "'x", "''", "▁", "▁▁", "<0x41>", "<0x0A>", "\x00",
         "\x7f", "123456", " the", "ing"]


# Corners of the pre-tokenizer regexes.
_EDGE = {
    "contractions": "'ſtop 'Stop I'LLx 'REa x'ſſ'ſa don't won'T it's 'sx '' 'Kelvin",
    "space_runs": "a  b   1  2   !  ?\t\tx \t y\n\n z  \n\n  w   ",
    "line_breaks": "x\r\n\r\n  \n y.\n\nz!\r\n  \t\n",
    "unicode_spaces": "a\u3000\u3000b \u00a0c\u2028\u2029d\u0085e\x1c\x1df\u2009 g",
    "numbers": "1234567 ١٢٣٤٥ ½½½ Ⅻ2 x²³ 12a34b567",
    "marks": "ab\u0301c \u0301x e\u0308\u0308 —word (paren) 'quote",
    "trailing_space": "ends with spaces   ",
}


def _fuzz_texts(spec: dict, n: int = 70, seed: int = 1234) -> dict[str, str]:
    """Random mixed-script text with the tokenizer's own added tokens embedded; two long ones."""
    specials = sorted(a["content"] for a in spec.get("added_tokens") or [])
    rng = random.Random(seed)
    specials = rng.sample(specials, min(24, len(specials)))

    def bit():
        r = rng.random()
        if r < 0.45:
            s = rng.choice(_SCRIPTS)
            return "".join(rng.choice(s) for _ in range(rng.randint(1, 8)))
        if r < 0.65:
            return rng.choice(_SPACES)
        if r < 0.8:
            return rng.choice(_BITS)
        if r < 0.9 and specials:
            return rng.choice(specials)
        cp = rng.randrange(0x80, 0x30000)
        return chr(cp) if not 0xD800 <= cp < 0xE000 else "?"

    texts = {f"fuzz{i}": "".join(bit() for _ in range(rng.randint(0, 40))) for i in range(n)}
    texts.update({f"long{i}": "".join(bit() for _ in range(900)) for i in range(2)})
    return texts


# --- comparisons ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_encode_matches_tokenizers(name, specs, lib):
    ref, nat, _, texts = _case(name, specs, lib)
    assert sum(map(len, texts.values())) > 5000
    bad = [(key, add) for key, text in texts.items() for add in (True, False)
           if nat.encode(text, add) != ref.encode(text, add)]
    assert bad == [], f"{len(bad)} of {2 * len(texts)} differ, e.g. {bad[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_decode_matches_tokenizers(name, specs, lib):
    ref, nat, _, texts = _case(name, specs, lib)
    byte_level = specs[name][0]["decoder"]["type"] == "ByteLevel"
    for key, text in texts.items():
        ids = ref.encode(text)
        for skip in (True, False):
            got = nat.decode(ids, skip)
            assert got.decode("utf-8") == ref.decode(ids, skip), (key, skip)
        # Pieces decoded one id at a time (streaming) join to the whole.
        assert b"".join(nat.decode([i], False, cont=k > 0) for k, i in enumerate(ids)) \
            == nat.decode(ids, False), key
    # Random ids, byte tokens and special tokens included. A split character is kept as raw
    # bytes; `tokenizers` shows U+FFFD there (per byte for ByteFallback, as Python's "replace"
    # does for byte-level).
    rng = random.Random(5)
    n = ref.vocab_size
    pool = list(range(min(n, 300))) + [rng.randrange(n) for _ in range(300)]
    for _ in range(300):
        ids = [rng.choice(pool) for _ in range(rng.randint(1, 10))]
        for skip in (True, False):
            got, want = nat.decode(ids, skip), ref.decode(ids, skip)
            try:
                assert got.decode("utf-8") == want, ids
            except UnicodeDecodeError:
                assert "\ufffd" in want, ids
                if byte_level:
                    assert got.decode("utf-8", "replace") == want, ids


@pytest.mark.parametrize("family", ["gpt2", "llama3", "qwen2"])
def test_pre_tokenizer_pieces_match_regex(family, lib):
    # Piece for piece against the regex in `tokenizers` (BPE alone would hide a missed split
    # wherever no merge crosses it).
    from tokenizers import Regex, pre_tokenizers

    from ingot.compiler import native_vocab as nv
    code = {"gpt2": nv.PRE_GPT2, "llama3": nv.PRE_LLAMA3, "qwen2": nv.PRE_QWEN2}[family]
    regexes = [r for r, c in nv._REGEX_FAMILY.items() if c == code]
    texts = {**TEXTS, **_EDGE, **_fuzz_texts({"added_tokens": [{"content": "<s>"}]}, 150, 8)}
    for regex in regexes:
        split = pre_tokenizers.Split(Regex(regex), "isolated")
        for key, text in texts.items():
            data = text.encode()
            ends = (ctypes.c_size_t * (len(data) + 1))()
            k = lib.ingot_test_pieces(code, data, len(data), ends, len(data) + 1)
            starts = [0] + list(ends[:k - 1]) if k else []
            got = [data[a:b].decode() for a, b in zip(starts, ends[:k])]
            assert got == [p for p, _ in split.pre_tokenize_str(text)], (regex, key)


def test_facts_match_runtime_tokenizer(specs, lib):
    for name in ("gemma_gguf", "tiny_bpe", "llama3_gguf"):
        ref, nat, _, _ = _case(name, specs, lib)
        assert lib.ingot_tok_vocab_size(nat.h) == ref.vocab_size
        assert lib.ingot_tok_bos(nat.h) == (-1 if ref.bos_id is None else ref.bos_id)
        assert lib.ingot_tok_eos(nat.h) == (-1 if ref.eos_id is None else ref.eos_id)


def test_add_bos_follows_runtime_rules(specs, lib):
    # tiny_bpe: BOS from tokenizer_config (no post-processor): added unless the text starts with it.
    ref, nat, _, _ = _case("tiny_bpe", specs, lib)
    for text in ("<s>hi", "hi<s>", "", "</s>", " <s>"):
        assert nat.encode(text) == ref.encode(text), text
    assert nat.encode("<s>hi")[:2] != [0, 0]


# --- the C API's contract -----------------------------------------------------------------------

def test_api_errors_and_buffer_sizes(specs, lib):
    _, nat, blob, _ = _case("tiny_bpe", specs, lib)
    text = "Hello world, héllo 🙂".encode()
    rc, ids, need = nat.encode_rc(text, True)
    assert rc == OK and len(ids) == need > 3
    assert nat.encode_rc(text, True, cap=need) == (OK, ids, need)
    rc, part, need2 = nat.encode_rc(text, True, cap=need - 1)
    assert rc == E_SMALL and need2 == need
    rc, _, need0 = nat.encode_rc(text, False, cap=0)
    assert rc == E_SMALL and need0 == need - 1  # no BOS
    for bad in (b"\xff", b"ab\xc0\x80", b"\xed\xa0\x80", b"\xe2\x82", b"ok\x80",
                b"\xf4\x90\x80\x80"):
        assert nat.encode_rc(bad, True)[0] == E_UTF8, bad
    rc, data, need = nat.decode_rc(ids, SKIP_SPECIAL)
    assert rc == OK and need == len(data)
    assert nat.decode_rc(ids, SKIP_SPECIAL, cap=need - 1)[0] == E_SMALL
    n = lib.ingot_tok_vocab_size(nat.h)
    assert nat.decode_rc([1, n], 0)[0] == E_ID
    assert b"outside the vocabulary" in lib.ingot_tok_last_error(nat.h)
    assert nat.decode_rc([-1], 0)[0] == E_ID
    assert nat.decode_rc([1], 4)[0] == E_ARG
    small = Native(lib, blob, max_text=16)
    assert small.encode_rc(b"x" * 17, False)[0] == E_TOO_LONG
    assert b"over the 16" in lib.ingot_tok_last_error(small.h)
    assert small.encode_rc(b"x" * 16, False)[0] == OK
    assert lib.ingot_tok_last_error(small.h) == b""
    h = ctypes.c_void_p()
    assert lib.ingot_tok_create(None, 0, 0, ctypes.byref(h), None, 0) == E_ARG and not h.value


def test_corrupt_sections_are_errors(specs, lib):
    _, _, blob, _ = _case("tiny_bpe", specs, lib)
    for cut in (0, 7, 8, 24, 100, HEADER_SIZE - 1, HEADER_SIZE, len(blob) // 2, len(blob) - 1):
        assert Native(lib, blob[:cut]).rc in (E_FORMAT, E_CHECKSUM), cut
    assert Native(lib, blob + b"\0" * 8).rc == E_FORMAT
    rng = random.Random(3)
    for _ in range(40):
        bad = bytearray(blob)
        bad[rng.randrange(24, len(bad))] ^= 1 << rng.randrange(8)
        assert Native(lib, bytes(bad)).rc == E_CHECKSUM
    bad = bytearray(blob)
    bad[8] = 99
    assert Native(lib, bytes(bad)).rc == E_VERSION
    # Past the checksum (corruptions re-stamped): structural checks, and no crash if it opens.
    for variant in _restamped_corruptions(blob, 150, seed=4):
        nat = Native(lib, variant)
        assert nat.rc in (OK, E_FORMAT), nat.rc
        if nat.rc == OK:
            for text in ("Hello world <s> 123 héllo 🙂", TEXTS["code"]):
                nat.encode_rc(text.encode(), True)
            nat.decode_rc(list(range(0, 300, 7)), 0)


def _restamped_corruptions(blob: bytes, n: int, seed: int):
    """Corrupted copies whose CRC is recomputed: table directory entries, counts, offsets and
    random bytes, so that the C side's structural validation is what stands between it and a
    crash."""
    rng = random.Random(seed)
    for k in range(n):
        bad = bytearray(blob)
        if k % 3 == 0:  # a header field or directory entry
            pos = rng.randrange(24, HEADER_SIZE // 4) * 4
            old = struct.unpack_from("<I", bad, pos)[0]
            new = rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(blob), rng.randrange(1 << 32),
                              old + rng.choice([-4, -1, 1, 4, 8])])
            struct.pack_into("<I", bad, pos, new % (1 << 32))
        else:
            for _ in range(rng.randint(1, 4)):
                bad[rng.randrange(HEADER_SIZE, len(bad))] = rng.randrange(256)
        struct.pack_into("<I", bad, 20, zlib.crc32(bad[24:]))
        yield bytes(bad)


# --- the same checks under AddressSanitizer / UBSan ----------------------------------------------

_DRIVER = r"""
/* Test driver: for each section file, open it and run the encode/decode requests of INPUT. */
#include "tokenizer.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); exit(2); }
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    void *p = malloc(*n ? *n : 1);
    if (*n && fread(p, 1, *n, f) != *n) exit(2);
    fclose(f);
    return p;
}

static void put32(FILE *f, int32_t v) { fwrite(&v, 4, 1, f); }

int main(int argc, char **argv) {
    size_t nin;
    uint8_t *in = slurp(argv[1], &nin);
    FILE *out = fopen(argv[2], "wb");
    for (int a = 3; a < argc; a++) {
        size_t ns;
        void *sec = slurp(argv[a], &ns);
        ingot_tok *t;
        char err[256];
        int rc = ingot_tok_create(sec, ns, 0, &t, err, sizeof err);
        put32(out, rc);
        if (rc == 0) {
            for (size_t p = 0; p + 8 <= nin;) {
                uint32_t flags, len;
                memcpy(&flags, in + p, 4);
                memcpy(&len, in + p + 4, 4);
                const char *text = (const char *)in + p + 8;
                p += 8 + len;
                size_t cap = 3 * (size_t)len + 8, need, nb;
                int32_t *ids = malloc(cap * sizeof *ids);
                rc = ingot_tok_encode(t, text, len, flags & 1, ids, cap, &need);
                put32(out, rc);
                put32(out, (int32_t)need);
                fwrite(ids, 4, rc == 0 ? need : 0, out);
                char *bytes = malloc(64 * need + 8);
                rc = ingot_tok_decode(t, ids, rc == 0 ? need : 0, flags >> 1, bytes,
                                      64 * need + 8, &nb);
                put32(out, rc);
                put32(out, (int32_t)nb);
                fwrite(bytes, 1, rc == 0 ? nb : 0, out);
                free(ids);
                free(bytes);
            }
            ingot_tok_free(t);
        }
        free(sec);
    }
    fclose(out);
    free(in);
    return 0;
}
"""


def _read_results(data: bytes, n_sections: int, n_texts: int):
    pos, out = 0, []

    def i32():
        nonlocal pos
        v = struct.unpack_from("<i", data, pos)[0]
        pos += 4
        return v

    for _ in range(n_sections):
        rc, rows = i32(), []
        if rc == OK:
            for _ in range(n_texts):
                erc, n = i32(), i32()
                ids = list(struct.unpack_from(f"<{n}i", data, pos)) if erc == OK else None
                pos += 4 * n if erc == OK else 0
                drc, nb = i32(), i32()
                rows.append((erc, ids, drc, data[pos:pos + nb] if drc == OK else None))
                pos += nb if drc == OK else 0
        out.append((rc, rows))
    return out


def test_under_address_and_ub_sanitizers(specs, lib, tmp_path):
    exe = tmp_path / "driver"
    (tmp_path / "driver.c").write_text(_DRIVER)
    build = subprocess.run(
        [_cc(), "-std=c11", "-g", "-O1", "-fsanitize=address,undefined",
         "-fno-sanitize-recover=all", "-fno-omit-frame-pointer", f"-I{CAPI}",
         str(tmp_path / "driver.c"), str(CAPI / "tokenizer.c"), "-o", str(exe)],
        capture_output=True, text=True)
    if build.returncode != 0:
        pytest.skip(f"NO SANITIZER BUILD (cc -fsanitize=address,undefined failed): {build.stderr}")
    env = {"ASAN_OPTIONS": "detect_leaks=1:abort_on_error=0", "PATH": "/usr/bin:/bin"}
    for name in ("gemma_gguf", "tiny_strip", "llama3_gguf", "qwen2_gguf", "gpt2_gguf",
                 "sp_prefix_gguf", "llama3_hf"):
        ref, _, blob, texts = _case(name, specs, lib)
        items = list(texts.values())
        (tmp_path / "in").write_bytes(b"".join(
            struct.pack("<II", (1 if k % 2 else 0) | 2, len(t.encode())) + t.encode()
            for k, t in enumerate(items)))
        sections = [tmp_path / "ok.vocab"]
        sections[0].write_bytes(blob)
        if name == "tiny_strip":  # corrupted variants through the sanitizers too
            for k, variant in enumerate(_restamped_corruptions(blob, 60, seed=9)):
                sections.append(tmp_path / f"bad{k}.vocab")
                sections[-1].write_bytes(variant)
        run = subprocess.run([str(exe), str(tmp_path / "in"), str(tmp_path / "out"),
                              *map(str, sections)], capture_output=True, text=True, env=env,
                             timeout=120)
        assert run.returncode == 0, run.stderr[-3000:]
        results = _read_results((tmp_path / "out").read_bytes(), len(sections), len(items))
        rc, rows = results[0]
        assert rc == OK
        for k, (text, (erc, ids, drc, data)) in enumerate(zip(items, rows)):
            want = ref.encode(text, add_special_tokens=bool(k % 2))
            assert erc == OK and ids == want, (name, text[:40])
            assert drc == OK and data.decode("utf-8") == ref.decode(want), (name, text[:40])
        assert all(rc in (OK, E_FORMAT) for rc, _ in results[1:])


# --- what the compile side refuses or skips -------------------------------------------------------

def test_unsupported_features_are_refused(specs):
    tiny = _tiny()

    def refused(spec, match):
        with pytest.raises(IngotError, match=match):
            native_vocab(spec)

    refused({**tiny, "normalizer": {"type": "NFC"}}, "normalizer 'NFC'")
    refused({**tiny, "model": {**tiny["model"], "type": "WordPiece"}}, "model type 'WordPiece'")
    refused({**tiny, "model": {**tiny["model"], "dropout": 0.1}}, "dropout")
    refused({**tiny, "added_tokens": [{**tiny["added_tokens"][0], "single_word": True}]},
            "single_word")
    split = {"type": "Split", "pattern": {"Regex": r"\p{L}+"}, "behavior": "Isolated",
             "invert": False}
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "use_regex": False}
    refused({**tiny, "pre_tokenizer": {"type": "Sequence", "pretokenizers": [split, byte_level]}},
            "pre-tokenizer")
    refused({**tiny, "post_processor": {"type": "BertProcessing"}}, "post-processor")
    gemma = specs["gemma_gguf"][0]
    refused({**gemma, "decoder": {"type": "Metaspace"}}, "decoder")
    refused({**gemma, "normalizer": {"type": "Lowercase"}}, "normalizer")


def test_pipeline_sections_and_skip_note(specs):
    spec, config = specs["tiny_bpe"]
    plan: dict = {}
    sections = {"tokenizer": json.dumps(spec).encode(), "tokenizer_config": json.dumps(config)}
    out = native_vocab_sections(sections, plan)
    assert out["vocab_native"] == native_vocab(spec, config) and plan == {}
    assert native_vocab_sections({**sections, "tokenizer": json.dumps(
        {**spec, "normalizer": {"type": "NFKC"}}).encode()}, plan) == {}
    assert "NFKC" in plan["vocab_native"]["skipped"]
    assert native_vocab_sections({}, plan) == {}
    assert "no tokenizer" in plan["vocab_native"]["skipped"]


def test_section_is_deterministic(specs):
    spec, config = specs["llama3_gguf"]
    assert native_vocab(spec, config) == native_vocab(json.loads(json.dumps(spec)), config)


def test_unicode_header_is_current():
    pytest.importorskip("unicodedata2", reason="tools/gen_unicode_tables.py needs unicodedata2")
    run = subprocess.run([sys.executable, str(ROOT / "tools" / "gen_unicode_tables.py"), "--check"],
                         capture_output=True, text=True)
    if run.returncode == 2:
        pytest.skip(run.stderr.strip())
    assert run.returncode == 0, run.stderr
