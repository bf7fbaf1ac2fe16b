"""Text <-> token ids, on top of a Hugging Face ``tokenizer.json``, plus streaming detokenization."""
from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer as _HFTokenizer

from ..errors import IngotError


def _token_text(value) -> str | None:
    # tokenizer_config.json writes special tokens either as "<s>" or as {"content": "<s>", ...}.
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


class Tokenizer:
    """A ``tokenizers.Tokenizer`` plus the few facts from tokenizer_config.json the runtime needs."""

    def __init__(self, inner: _HFTokenizer, config: dict | None = None):
        config = config or {}
        self.inner = inner
        self.config = config
        self.bos_token = _token_text(config.get("bos_token"))
        self.eos_token = _token_text(config.get("eos_token"))
        self.chat_template = config.get("chat_template")
        # None means "leave it to tokenizer.json's post-processor"; a bool overrides it.
        self._add_bos = config.get("add_bos_token")
        self._add_eos = config.get("add_eos_token")
        self._special_ids = frozenset(
            i for i, tok in inner.get_added_tokens_decoder().items() if tok.special)

    @classmethod
    def from_parts(cls, tokenizer_json: str, config: dict | None = None) -> "Tokenizer":
        try:
            inner = _HFTokenizer.from_str(tokenizer_json)
        except Exception as err:  # the tokenizers library raises a bare Exception
            raise IngotError(f"tokenizer.json: {err}") from None
        return cls(inner, config)

    @classmethod
    def from_file(cls, path: str, config: dict | None = None) -> "Tokenizer":
        with open(path, encoding="utf-8") as f:
            return cls.from_parts(f.read(), config)

    # --- facts ---
    def token_to_id(self, token: str) -> int | None:
        return self.inner.token_to_id(token)

    def id_to_token(self, token_id: int) -> str | None:
        return self.inner.id_to_token(token_id)

    @property
    def bos_id(self) -> int | None:
        return self.token_to_id(self.bos_token) if self.bos_token else None

    @property
    def eos_id(self) -> int | None:
        return self.token_to_id(self.eos_token) if self.eos_token else None

    @property
    def vocab_size(self) -> int:
        return self.inner.get_vocab_size(with_added_tokens=True)

    def is_special(self, token_id: int) -> bool:
        return token_id in self._special_ids

    # --- text <-> ids ---
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        ids = self.inner.encode(text, add_special_tokens=add_special_tokens).ids
        if not add_special_tokens:
            return ids
        bos, eos = self.bos_id, self.eos_id
        if bos is not None and self._add_bos is not None:
            ids = self._fix_end(ids, bos, self._add_bos, text, first=True)
        if eos is not None and self._add_eos is not None:
            ids = self._fix_end(ids, eos, self._add_eos, text, first=False)
        return ids

    def _fix_end(self, ids: list[int], tok: int, want: bool, text: str, first: bool) -> list[int]:
        # The config's add_bos/add_eos wins over tokenizer.json's post-processor, as in transformers.
        at = 0 if first else -1
        has = bool(ids) and ids[at] == tok
        if want and not has:
            return [tok] + ids if first else ids + [tok]
        if not want and has:
            # Drop it only if the post-processor put it there, not the text itself.
            raw = self.inner.encode(text, add_special_tokens=False).ids
            if not (raw and raw[at] == tok):
                return ids[1:] if first else ids[:-1]
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self.inner.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def stream(self, skip_special_tokens: bool = True) -> "StreamDecoder":
        return StreamDecoder(self, skip_special_tokens)


class StreamDecoder:
    """Turns token ids, fed one at a time, into printable text pieces.

    Decoding one token alone is wrong for two reasons: a UTF-8 character may span several
    byte tokens, and SentencePiece/byte-level decoders treat a leading space differently at the
    start of a text. So we decode a short window of recent tokens twice (with and without the
    new ones) and emit the difference, holding back while the text ends in U+FFFD (an
    unfinished character). Pieces concatenate to ``decode(all ids)``.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True):
        self.tok = tokenizer
        self.skip = skip_special_tokens
        self.ids: list[int] = []
        self._prefix = 0  # window start: text before it has been emitted
        self._read = 0    # tokens before this have been emitted

    def put(self, token_id: int) -> str:
        # Dropping skipped specials up front keeps the window's leading-space handling the same
        # as a whole decode, which also drops them before running the decoder.
        if self.skip and self.tok.is_special(token_id):
            return ""
        self.ids.append(token_id)
        return self._emit(final=False)

    def flush(self) -> str:
        """Emit whatever was held back (an unfinished character at the very end)."""
        return self._emit(final=True)

    def _emit(self, final: bool) -> str:
        window = self.ids[self._prefix:]
        done = self.tok.decode(window[: self._read - self._prefix], self.skip)
        text = self.tok.decode(window, self.skip)
        if len(text) <= len(done) or (text.endswith("\ufffd") and not final):
            return ""
        self._prefix, self._read = self._read, len(self.ids)
        return text[len(done):]
