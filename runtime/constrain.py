"""Constrained decoding: a token mask per step that keeps the output inside a grammar.

The grammar engine is llguidance (pip `llguidance`, the `serve` extra): JSON Schema and Lark
grammars are compiled to a matcher that, given the tokens so far, says which tokens may come
next. A `Constraint` wraps one matcher for one request in the interface the scheduler
(`engine.py`) calls: `allowed(vocab)` before sampling, `advance(token)` after, `done()`.

End tokens are the request's, not the tokenizer's: chat turns end with e.g. Gemma's
<end_of_turn>, so the matcher's own EOS is replaced by `eos_ids` in the mask, and only while
the grammar is complete.
"""
from __future__ import annotations

import json
import re
import threading
import weakref

import numpy as np

from ..errors import IngotError

# JSON whitespace between tokens: none or one space (one line, as compact JSON). Newlines and
# indentation let a weak model spend its whole budget on blanks inside a valid object.
JSON_OPTIONS = {"whitespace_pattern": r"\x20?"}

_cache: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise IngotError("constrained output needs llguidance: "
                         "pip install 'ingot-lm[serve]'") from None
    return llguidance


def build_lltokenizer(tokenizer):
    """llguidance's view of an Ingot `Tokenizer` (each token's bytes, which are special), built
    once per tokenizer object: seconds for a 262k vocabulary."""
    with _cache_lock:  # one build even when two requests ask at once
        llt = _cache.get(tokenizer)
        if llt is None:
            llt = _cache[tokenizer] = _build(tokenizer)
        return llt


def _build(tokenizer):
    lg = _llguidance()
    table = _token_bytes(tokenizer)
    try:
        if table is None:  # a decoder we do not know: let llguidance read tokenizer.json
            return lg.LLTokenizer(tokenizer.inner.to_str(), n_vocab=tokenizer.vocab_size,
                                  eos_token=tokenizer.eos_id)
        return lg.LLTokenizer(lg.TokenizerWrapper(_Vocabulary(tokenizer, *table)))
    except (ValueError, RuntimeError) as err:
        raise IngotError(f"constrained output: cannot read the tokenizer: {_one_line(err)}") \
            from None


class _Vocabulary:
    """What llguidance's TokenizerWrapper reads. Handing it each token's bytes is about twice
    as fast as letting it parse tokenizer.json, whose merges it does not need."""

    def __init__(self, tokenizer, tokens: list, special: list):
        self.tokens, self.special_token_ids = tokens, special
        self.eos_token_id, self.bos_token_id = tokenizer.eos_id, tokenizer.bos_id
        self._inner = tokenizer.inner

    def __call__(self, text):
        if not isinstance(text, str):
            raise TypeError("text, not bytes")  # TokenizerWrapper then passes str
        return self._inner.encode(text, add_special_tokens=False).ids


def _byte_level_chars() -> dict:
    # GPT-2 byte-level BPE spells byte b as chr(b) when that is printable Latin-1, and the
    # other 68 bytes as chr(256), chr(257), ... in byte order.
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    spelled = {b: chr(b) for b in printable}
    extra = iter(range(256, 512))
    return {spelled.get(b) or chr(next(extra)): b for b in range(256)}


_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")
_MARKUP = re.compile(r"<[^<>\s]+>")


def _token_bytes(tokenizer):
    """([bytes per id], [special ids]) for byte-level and SentencePiece-style decoders; None
    for any other decoder."""
    inner = tokenizer.inner
    state = json.loads(inner.decoder.__getstate__()) if inner.decoder is not None else {}
    parts = state.get("decoders", [state])
    kinds = {d.get("type") for d in parts}
    if "ByteLevel" in kinds:
        chars = _byte_level_chars()

        def spell(text):
            if all(c in chars for c in text):
                return bytes(chars[c] for c in text)
            return text.encode()
    elif kinds & {"ByteFallback", "Metaspace", "Replace"} and kinds <= {
            "ByteFallback", "Metaspace", "Replace", "Fuse", "Strip"}:
        space = next((d.get("replacement") for d in parts if d.get("type") == "Metaspace"), None) \
            or next((d["pattern"].get("String") for d in parts if d.get("type") == "Replace"
                     and d.get("content") == " " and "String" in d.get("pattern", {})), "\u2581")
        fallback = "ByteFallback" in kinds

        def spell(text):
            if fallback and text.startswith("<0x") and (m := _BYTE_PIECE.fullmatch(text)):
                return bytes([int(m.group(1), 16)])
            return text.replace(space, " ").encode()
    else:
        return None
    tokens = [b""] * tokenizer.vocab_size
    for text, i in inner.get_vocab(with_added_tokens=False).items():
        if i < len(tokens):
            tokens[i] = spell(text)
    special = []
    for i, added in inner.get_added_tokens_decoder().items():
        if i >= len(tokens):
            continue
        # Markup-like added tokens (<unused0>, Qwen's <tool_call>) count as special even when
        # not flagged, as llguidance itself reads them: text never spells them, a grammar names
        # them. Other added tokens (whitespace runs) are text, spelt like the rest.
        if added.special or _MARKUP.fullmatch(added.content):
            tokens[i] = added.content.encode()
            special.append(i)
        else:
            tokens[i] = spell(added.content)
    # Byte 0xFF is llguidance's own marker for special tokens; it is never valid UTF-8 anyway.
    special += [i for i, b in enumerate(tokens) if b[:1] == b"\xff" and i not in special]
    return tokens, special


def _one_line(message) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _eos_list(tokenizer, eos_ids) -> list:
    ids = {int(i) for i in (eos_ids or ())}
    if not ids and tokenizer.eos_id is not None:
        ids = {tokenizer.eos_id}
    return sorted(ids)


class Constraint:
    """One request's grammar state. `allowed` -> bool mask (length `vocab_size`, the model's
    logits row, which may be longer than the tokenizer's vocabulary: the extra rows are never
    allowed); `advance` consumes the sampled token; `done` once the grammar is complete and
    nothing may follow, an end token was taken, or the matcher failed (see `error`)."""

    def __init__(self, tokenizer, grammar: str, eos_ids=(), what: str = "grammar"):
        lg = _llguidance()
        self._llt = build_lltokenizer(tokenizer)
        self._matcher = lg.LLMatcher(self._llt, grammar, log_level=0)
        if self._matcher.is_error():
            raise IngotError(f"{what}: {_one_line(self._matcher.get_error())}")
        self.eos_ids = _eos_list(tokenizer, eos_ids)
        self._own_eos = list(self._llt.eos_tokens)
        self._ended = False
        self._mask = None  # the allowed-token mask, reused step to step
        self.error: str | None = None  # set if a token the grammar refuses was consumed

    def allowed(self, vocab_size: int) -> np.ndarray:
        m = self._matcher
        # One mask per constraint, refilled each step (the engine reads it before the next).
        mask = self._mask
        if mask is None or mask.size != vocab_size:
            mask = self._mask = np.zeros(vocab_size, dtype=bool)
        else:
            mask[:] = False
        if not (self._ended or m.is_stopped()):
            bits = np.unpackbits(np.frombuffer(m.compute_bitmask(), dtype=np.uint8),
                                 bitorder="little")
            n = min(vocab_size, self._llt.vocab_size)
            mask[:n] = bits[:n].astype(bool)
            mask[[i for i in self._own_eos if i < vocab_size]] = False
        if m.is_accepting() or m.is_error():
            # Complete (or broken): let the request's end token close the answer.
            mask[[i for i in self.eos_ids if i < vocab_size]] = True
        return mask

    def advance(self, token_id: int) -> None:
        token_id = int(token_id)
        if self._ended:
            return
        if token_id in self.eos_ids:
            # The engine ends the request on its stop ids; the matcher need not see them.
            self._ended = True
            return
        if not self._matcher.consume_token(token_id) and self.error is None:
            self.error = _one_line(self._matcher.get_error())

    def done(self) -> bool:
        return self._ended or self._matcher.is_stopped()

    def accepting(self) -> bool:
        """The output so far is a complete sentence of the grammar."""
        return self._matcher.is_accepting()


# --- factories ---------------------------------------------------------------------------------

def _schema_grammar(schema, what: str) -> str:
    if not isinstance(schema, dict):
        raise IngotError(f"{what}: the schema must be a JSON object, not {type(schema).__name__}")
    lg = _llguidance()
    try:
        grammar = lg.LLMatcher.grammar_from_json_schema(schema, defaults=JSON_OPTIONS)
    except (ValueError, TypeError) as err:
        raise IngotError(f"{what}: {_one_line(err)}") from None
    problem = lg.LLMatcher.validate_grammar(grammar)
    if problem and not problem.startswith("WARNING"):
        raise IngotError(f"{what}: {_one_line(problem)}")
    return grammar


def json_object_constraint(tokenizer, eos_ids=()) -> Constraint:
    """Any JSON object (response_format {"type": "json_object"})."""
    return Constraint(tokenizer, _schema_grammar({"type": "object"}, "json_object"), eos_ids,
                      "json_object")


def json_schema_constraint(tokenizer, schema: dict, eos_ids=()) -> Constraint:
    """A JSON value matching `schema` (response_format {"type": "json_schema"}). A schema that
    is invalid or uses keywords llguidance cannot enforce raises IngotError."""
    what = "response_format json_schema"
    return Constraint(tokenizer, _schema_grammar(schema, what), eos_ids, what)


def tool_call_constraint(tokenizer, family_format, tools, tool_choice, eos_ids=()) -> Constraint:
    """Output that is exactly the family's tool-call text: one call of the named function
    (tool_choice {"type": "function", "function": {"name": ...}}, or the bare name), or one or
    more calls of any of `tools` (tool_choice "required", or None), each with arguments matching
    the tool's parameters. `family_format` is a `tools.ToolFormat` or a family/format name."""
    from .tools import ToolFormat, tool_format, tool_specs
    fmt = family_format if isinstance(family_format, ToolFormat) else tool_format(family_format)
    specs = tool_specs(tools)
    name = (tool_choice.get("function") or {}).get("name") if isinstance(tool_choice, dict) \
        else tool_choice
    if tool_choice is None or tool_choice == "required":
        many = True
    elif name in specs:
        specs, many = {name: specs[name]}, False
    elif tool_choice in ("auto", "none"):
        raise IngotError(f"tool_choice {tool_choice!r} does not force a tool call "
                         "(use \"required\" or a named function)")
    else:
        raise IngotError(f"tool_choice names function {name!r}, which is not in tools")
    lark = _tool_lark(tokenizer, fmt, specs, many)
    return Constraint(tokenizer, _llguidance().LLMatcher.grammar_from_lark(lark), eos_ids, "tools")


def _tool_lark(tokenizer, fmt, specs: dict, many: bool) -> str:
    """A Lark grammar for the format's wrapper around `{"name": N, "<args_key>": ARGS}`. The
    name part is fixed text; each tool's arguments embed its own schema with %json, so a $ref
    in one tool's parameters resolves against that tool's schema."""
    rules, names = [], []
    for i, (name, params) in enumerate(specs.items()):
        _schema_grammar(params, f"tools: function {name!r} parameters")  # a one-line error
        head = "{" + f'"name": {json.dumps(name)}, "{fmt.args_key}": '
        params = dict(params, **{"x-guidance": {**JSON_OPTIONS, **params.get("x-guidance", {})}})
        rules.append(f"call_{i}: {_lit(head)} args_{i} \"}}\"")
        rules.append(f"args_{i}: %json {json.dumps(params)}")
        names.append(f"call_{i}")
    rules.append("call: " + " | ".join(names))
    llt = build_lltokenizer(tokenizer)
    open_, close = _marker(tokenizer, llt, fmt.open), _marker(tokenizer, llt, fmt.close)
    pad = _lit(fmt.pad)
    if fmt.many:  # one wrapper around a JSON list of calls
        calls = 'call ("," " " call)*' if many else "call"
        top = f'{open_} "[" {calls} "]" {close}'
    else:  # one wrapper per call
        block = f"{open_} {pad} call {pad} {close}"
        top = f"{block} ({_lit(fmt.sep)} {block})*" if many and fmt.sep is not None else block
    return "\n".join([f"start: {top}", *rules])


def _lit(text: str) -> str:
    return json.dumps(text) if text else ""


def _marker(tokenizer, llt, text: str) -> str:
    # A marker that is one special token in this vocabulary ([TOOL_CALLS], Qwen's <tool_call>)
    # must be produced as that token, as the model was trained; plain text never matches it.
    if not text:
        return ""
    tid = tokenizer.token_to_id(text)
    if tid is not None and tid < llt.vocab_size and llt.is_special_token(tid):
        return f"<[{tid}]>"
    return _lit(text)
