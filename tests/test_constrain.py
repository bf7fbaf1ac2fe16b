"""Constrained decoding (runtime/constrain.py) and tool-call formats (runtime/tools.py).

References, not self-consistency: constrained outputs are checked with `json.loads` and the
`jsonschema` validator; tool-call parsing against the formats as the model vendors document them
and against transformers' own response parser for the Hermes/Qwen format. Tokenizers: the tiny
test BPE one and the real Gemma 3 vocabulary (262k tokens) from the default model's GGUF.
"""
from __future__ import annotations

import gzip
import json
import pathlib
import time

import numpy as np
import pytest

from ingot.errors import IngotError
from ingot.runtime import constrain, tools
from ingot.runtime.chat import BUILTIN_TEMPLATES, ChatTemplate
from ingot.runtime.tokenizer import Tokenizer
from tiny_models import make_tokenizer

pytest.importorskip("llguidance")
# One worker builds the Gemma vocabulary's matcher tables (seconds) for the whole file.
pytestmark = pytest.mark.xdist_group("constrain")

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 12},
        "unit": {"enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
        "hourly": {"type": "boolean"},
        "at": {"$ref": "#/$defs/point"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 5}, "maxItems": 2},
        "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 8}]},
    },
    "required": ["city", "unit", "days", "at"],
    "additionalProperties": False,
    "$defs": {"point": {"type": "object", "additionalProperties": False,
                        "properties": {"lat": {"type": "number", "minimum": -90, "maximum": 90},
                                       "lon": {"type": "number", "minimum": -180, "maximum": 180}},
                        "required": ["lat", "lon"]}},
}
TOOLS = [
    {"type": "function", "function": {"name": "get_weather", "description": "Forecast",
                                      "parameters": SCHEMA}},
    {"type": "function", "function": {"name": "send_mail", "parameters": {
        "type": "object", "additionalProperties": False, "required": ["to"],
        "properties": {"to": {"type": "string", "maxLength": 20},
                       "urgent": {"type": "boolean"}}}}},
    {"type": "function", "function": {"name": "ping"}},  # no parameters: any object
]
PARAMS = {t["function"]["name"]: t["function"].get("parameters", {"type": "object"})
          for t in TOOLS}


def _validate(value, schema):
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(value, schema)


# --- tokenizers ---------------------------------------------------------------------------------

class _Tok:
    """A runtime Tokenizer plus, per token, whether its text only closes JSON (", }, ])."""

    def __init__(self, tok: Tokenizer, eos: list, pad: int):
        self.tok, self.eos, self.vocab = tok, eos, tok.vocab_size + pad
        self.closers = np.zeros(max(self.vocab, tok.vocab_size), np.float32)
        for text, i in tok.inner.get_vocab().items():
            if text.strip() and set(text) <= set('"}]'):
                self.closers[i] = 1.0

    def drive(self, con, seed: int, steps: int = 400) -> list:
        """Random logits, the argmax of the allowed ones; after a few steps the walk leans to
        closing tokens and to the end token so that it finishes. Returns the ids before the end."""
        rng = np.random.default_rng(seed)
        ids = []
        for step in range(steps):
            mask = con.allowed(self.vocab)
            assert mask.dtype == bool and mask.shape == (self.vocab,)
            assert not mask[self.tok.vocab_size:].any(), "padding rows must stay disallowed"
            x = rng.normal(size=self.vocab).astype(np.float32)
            x += min(step / 8, 6.0) * self.closers[:self.vocab]
            x[self.eos] += 50
            x[~mask] = -np.inf
            t = int(np.argmax(x))
            con.advance(t)
            assert con.error is None
            if t in self.eos:
                assert con.done()
                return ids
            ids.append(t)
            if con.done():
                return ids
        raise AssertionError(f"no end after {steps} steps: {self.tok.decode(ids)!r}")

    def text(self, ids) -> str:
        return self.tok.decode(ids, skip_special_tokens=False)


@pytest.fixture(scope="module")
def tiny():
    tok = Tokenizer(make_tokenizer(300), {"eos_token": "</s>"})
    return _Tok(tok, [tok.eos_id], pad=20)


GEMMA_TIMES: dict = {}


@pytest.fixture(scope="module")
def gemma():
    # Gemma 3's official tokenizer.json (the same ids as the default model's GGUF, see
    # test_gguf_tokenizer.py): the cheapest way to the real 262k vocabulary.
    path = pathlib.Path(__file__).parent / "data" / "gemma3_tokenizer.json.gz"
    with gzip.open(path, "rt", encoding="utf-8") as f:
        tok = Tokenizer.from_parts(f.read(), {"eos_token": "<eos>"})
    t0 = time.perf_counter()
    constrain.build_lltokenizer(tok)
    GEMMA_TIMES["lltokenizer_ms"] = (time.perf_counter() - t0) * 1e3
    # Chat answers end on <end_of_turn>; <eos> too. The model's logits row is 262144 long.
    eos = [tok.token_to_id("<end_of_turn>"), tok.eos_id]
    return _Tok(tok, eos, pad=262144 - tok.vocab_size)


@pytest.fixture(params=["tiny", "gemma"])
def tk(request):
    return request.getfixturevalue(request.param)


# --- Constraint ---------------------------------------------------------------------------------

def test_lltokenizer_is_built_once_per_tokenizer(tiny):
    a = constrain.build_lltokenizer(tiny.tok)
    assert constrain.build_lltokenizer(tiny.tok) is a
    other = Tokenizer(tiny.tok.inner, {"eos_token": "</s>"})
    assert constrain.build_lltokenizer(other) is not a


def _qwen_like_tokenizer() -> Tokenizer:
    # Byte-level BPE with added tokens as Qwen has them: markup that is not flagged special,
    # a whitespace run, and a flagged special one.
    from tokenizers import AddedToken
    inner = make_tokenizer(300)
    inner.add_tokens([AddedToken("<tool_call>", special=False, normalized=False),
                      AddedToken("\n\n\n", special=False, normalized=False)])
    inner.add_special_tokens(["[TOOL_CALLS]"])
    return Tokenizer(inner, {"eos_token": "</s>"})


@pytest.mark.parametrize("make", [lambda: Tokenizer(make_tokenizer(300), {"eos_token": "</s>"}),
                                  _qwen_like_tokenizer], ids=["tiny", "qwen-like"])
def test_token_bytes_match_llguidances_own_reading(make):
    # Ingot hands llguidance each token's bytes (faster than it parsing tokenizer.json); they
    # must be what llguidance reads from tokenizer.json itself. (Gemma's 262k vocabulary, both
    # the official tokenizer.json and the GGUF-derived one, was compared the same way once; it
    # takes seconds, so not here.)
    import llguidance
    tok = make()
    ours = constrain.build_lltokenizer(tok)
    ref = llguidance.LLTokenizer(tok.inner.to_str(), n_vocab=tok.vocab_size, eos_token=tok.eos_id)
    assert ours.vocab_size == ref.vocab_size == tok.vocab_size
    for i in range(tok.vocab_size):
        assert ours.decode_bytes([i]) == ref.decode_bytes([i]), i
        assert ours.is_special_token(i) == ref.is_special_token(i), i


def test_first_mask_is_opening_brace_only(tk):
    con = constrain.json_object_constraint(tk.tok, tk.eos)
    mask = con.allowed(tk.vocab)
    allowed = np.flatnonzero(mask)
    assert tk.tok.token_to_id("{") in allowed
    assert not mask[tk.eos].any()  # nothing is complete yet
    for i in allowed:
        assert tk.tok.decode([i]).startswith("{"), tk.tok.decode([i])


def test_mask_shorter_than_vocabulary(tiny):
    con = constrain.json_object_constraint(tiny.tok, tiny.eos)
    assert con.allowed(10).shape == (10,)


@pytest.mark.parametrize("seed", range(4))
def test_json_object_random_walk(tk, seed):
    con = constrain.json_object_constraint(tk.tok, tk.eos)
    text = tk.text(tk.drive(con, seed))
    assert isinstance(json.loads(text), dict), text


@pytest.mark.parametrize("seed", range(4))
def test_json_schema_random_walk(tk, seed):
    con = constrain.json_schema_constraint(tk.tok, SCHEMA, tk.eos)
    text = tk.text(tk.drive(con, seed))
    _validate(json.loads(text), SCHEMA)


def test_end_token_allowed_only_when_complete(tiny):
    # An integer may grow, so after "12" the grammar is complete but not finished: the end
    # token joins the allowed set, and consuming it (as the engine does before its stop check)
    # ends the constraint without an error.
    con = constrain.json_schema_constraint(tiny.tok, {"type": "integer"}, tiny.eos)
    assert not con.allowed(tiny.vocab)[tiny.eos].any()
    for t in tiny.tok.encode("12", add_special_tokens=False):
        assert con.allowed(tiny.vocab)[t]
        con.advance(t)
    assert not con.done()
    mask = con.allowed(tiny.vocab)
    assert mask[tiny.eos].all() and mask[tiny.tok.token_to_id("3")]
    con.advance(tiny.eos[0])
    assert con.done() and con.error is None


def test_closed_object_is_done_without_end_token(tiny):
    con = constrain.json_object_constraint(tiny.tok, tiny.eos)
    for t in tiny.tok.encode('{"a": [1, {"b": null}]}', add_special_tokens=False):
        assert not con.done()
        con.advance(t)
    assert con.done() and con.error is None


def test_refused_token_sets_error_and_done(tiny):
    con = constrain.json_object_constraint(tiny.tok, tiny.eos)
    con.advance(tiny.tok.token_to_id("]"))
    assert con.error and con.done()


@pytest.mark.parametrize("schema, words", [
    ({"type": "foo"}, "foo"),
    ({"type": "string", "pattern": "(("}, "unclosed group"),
    ({"$ref": "#/$defs/missing"}, "missing"),
    ({"type": "integer", "minimum": 5, "maximum": 2}, "minimum"),
    ({"not": {"type": "string"}}, "not"),
    ([{"type": "object"}], "JSON object"),
    ({"type": "object", "properties": {"d": {"type": "string", "format": "nope"}}}, "nope"),
])
def test_bad_schema_is_one_line_ingot_error(tiny, schema, words):
    with pytest.raises(IngotError) as err:
        constrain.json_schema_constraint(tiny.tok, schema, tiny.eos)
    msg = str(err.value)
    assert words in msg and "\n" not in msg, msg


@pytest.mark.parametrize("tools_, choice, words", [
    (TOOLS, {"type": "function", "function": {"name": "nope"}}, "nope"),
    (TOOLS, "auto", "auto"),
    ([], "required", "non-empty"),
    ([{"type": "function", "function": {"name": "a b"}}], "required", "name"),
    ([{"type": "function", "function": {"name": "f", "parameters": {"type": "bar"}}}],
     "required", "bar"),
    (TOOLS + TOOLS[:1], "required", "twice"),
])
def test_bad_tools_are_ingot_errors(tiny, tools_, choice, words):
    with pytest.raises(IngotError) as err:
        constrain.tool_call_constraint(tiny.tok, "qwen2", tools_, choice, tiny.eos)
    assert words in str(err.value) and "\n" not in str(err.value)


# --- forced tool calls --------------------------------------------------------------------------

@pytest.mark.parametrize("family", ["qwen3", "llama", "mistral", "granite", "phi3", "gemma3"])
@pytest.mark.parametrize("choice", ["required", "send_mail", "get_weather"])
def test_forced_tool_call_tiny(tiny, family, choice):
    _forced_call(tiny, family, choice, seed=len(family))


@pytest.mark.parametrize("choice", ["required", "get_weather", "ping"])
def test_forced_tool_call_gemma(gemma, choice):
    _forced_call(gemma, "gemma3", choice, seed=3)


def _forced_call(tk, family, choice, seed):
    fmt = tools.tool_format(family)
    tool_choice = choice if choice == "required" else {"type": "function",
                                                       "function": {"name": choice}}
    if seed % 2:  # the short forms: None for "required", the bare function name
        tool_choice = None if choice == "required" else choice
    con = constrain.tool_call_constraint(tk.tok, fmt, TOOLS, tool_choice, tk.eos)
    text = tk.text(tk.drive(con, seed))
    content, calls = tools.parse_tool_calls(text, fmt)
    assert content == "" and calls, text
    if choice != "required":
        assert len(calls) == 1 and calls[0]["function"]["name"] == choice
    for call in calls:
        assert call["type"] == "function" and call["id"].startswith("call_")
        name = call["function"]["name"]
        _validate(json.loads(call["function"]["arguments"]), PARAMS[name])


@pytest.mark.parametrize("family, marker", [("mistral", "[TOOL_CALLS]"), ("qwen2", "<tool_call>")])
def test_marker_token_is_forced_as_that_token(family, marker):
    # A marker that is one token of its own in the vocabulary ([TOOL_CALLS] flagged special,
    # Qwen's <tool_call> only markup-like) must come out as that token, as the model was tuned.
    tok = _qwen_like_tokenizer()
    con = constrain.tool_call_constraint(tok, family, TOOLS, "required", [tok.eos_id])
    assert np.flatnonzero(con.allowed(tok.vocab_size)).tolist() == [tok.token_to_id(marker)]


def test_engine_runs_a_constrained_request(tiny):
    # The scheduler's contract: allowed() before sampling, advance() before the stop check.
    from ingot.runtime.engine import Engine, Request

    class Model:  # random logits that lean towards closing tokens and the end token
        max_batch, max_seq_len, chunk = 2, 512, 16
        vocab_size = tiny.vocab

        def __init__(self):
            self.rng = np.random.default_rng(0)

        def _row(self):
            x = self.rng.normal(size=self.vocab_size).astype(np.float32) + 3 * tiny.closers
            x[tiny.eos] += 50
            return x

        def prefill_at(self, slot, pos, tokens):
            return self._row()

        def decode_batch(self, tokens, positions, slots):
            return np.stack([self._row() for _ in tokens])

        def reusable_prefix(self, n, held):
            return n

    engine = Engine(Model())
    con = constrain.json_schema_constraint(tiny.tok, SCHEMA, tiny.eos)
    h = engine.submit(Request(prompt=[5, 6, 7], max_tokens=300, constraint=con,
                              stop_ids=frozenset(tiny.eos)))
    ids = h.tokens()
    assert h.finish_reason == "stop" and not set(ids) & set(tiny.eos)
    _validate(json.loads(tiny.tok.decode(ids)), SCHEMA)


def test_gemma_mask_speed(gemma, record_property):
    con = constrain.json_schema_constraint(gemma.tok, SCHEMA, gemma.eos)
    text = '{"city": "Paris", "unit": "celsius", "days": 3, "at": {"lat": 48.8, "lon": 2.35}}'
    times = []
    for t in gemma.tok.encode(text, add_special_tokens=False):
        t0 = time.perf_counter()
        mask = con.allowed(gemma.vocab)
        times.append(time.perf_counter() - t0)
        assert mask[t], gemma.tok.decode([t])
        con.advance(t)
    assert con.done() and con.error is None
    GEMMA_TIMES["mask_ms_median"] = float(np.median(times) * 1e3)
    GEMMA_TIMES["mask_ms_max"] = float(np.max(times) * 1e3)
    for k, v in GEMMA_TIMES.items():
        record_property(k, round(v, 2))
    print("gemma timings:", {k: round(v, 2) for k, v in GEMMA_TIMES.items()})
    assert GEMMA_TIMES["mask_ms_median"] < 20


# --- tool-call text -----------------------------------------------------------------------------

# Tool-call answers as the model vendors document them (Qwen's function-calling guide, Meta's
# Llama 3.1 prompt format, Mistral 7B Instruct v0.3, IBM Granite 3, Microsoft Phi-4-mini).
VENDOR = {
    "qwen2": ('<tool_call>\n{"name": "get_current_temperature", "arguments": {"location": '
              '"San Francisco, CA, USA"}}\n</tool_call>\n<tool_call>\n{"name": '
              '"get_temperature_date", "arguments": {"location": "San Francisco, CA, USA", '
              '"date": "2024-10-01"}}\n</tool_call>',
              [("get_current_temperature", {"location": "San Francisco, CA, USA"}),
               ("get_temperature_date", {"location": "San Francisco, CA, USA",
                                         "date": "2024-10-01"})]),
    "llama": ('{"name": "get_current_conditions", "parameters": {"location": "San Francisco, '
              'CA", "unit": "Fahrenheit"}}',
              [("get_current_conditions", {"location": "San Francisco, CA",
                                           "unit": "Fahrenheit"})]),
    "mistral": ('[TOOL_CALLS] [{"name": "get_current_weather", "arguments": {"location": '
                '"Paris, France", "format": "celsius"}}]',
                [("get_current_weather", {"location": "Paris, France", "format": "celsius"})]),
    "granite": ('<|tool_call|>[{"name": "get_current_weather", "arguments": {"location": '
                '"Boston, MA"}}]',
                [("get_current_weather", {"location": "Boston, MA"})]),
    "phi3": ('<|tool_call|>[{"name": "get_weather_updates", "arguments": {"location": '
             '"London"}}]<|/tool_call|>',
             [("get_weather_updates", {"location": "London"})]),
}


def _pairs(calls):
    return [(c["function"]["name"], json.loads(c["function"]["arguments"])) for c in calls]


@pytest.mark.parametrize("family", sorted(VENDOR))
@pytest.mark.parametrize("before, after", [("", ""), ("Let me look that up.\n", "\nDone.")])
def test_parse_vendor_examples(family, before, after):
    text, want = VENDOR[family]
    content, calls = tools.parse_tool_calls(before + text + after, tools.tool_format(family))
    assert _pairs(calls) == want
    assert content == "\n".join(filter(None, [before.strip(), after.strip()]))
    assert len({c["id"] for c in calls}) == len(calls)


@pytest.mark.parametrize("family", sorted(VENDOR))
def test_format_round_trip(family):
    fmt = tools.tool_format(family)
    calls = [{"id": "call_1", "type": "function",
              "function": {"name": "a", "arguments": '{"x": [1, "é"]}'}},
             {"id": "call_2", "type": "function", "function": {"name": "b", "arguments": "{}"}}]
    if fmt.sep is None:
        calls = calls[:1]  # Llama 3 writes one call per answer
    text = tools.format_tool_calls(calls, fmt)
    assert _pairs(tools.parse_tool_calls(f"Sure.\n{text}", fmt)[1]) == _pairs(calls)


def test_lost_markers_and_fences_still_parse():
    # Decoded with special tokens dropped, Mistral's answer is a bare list.
    _, calls = tools.parse_tool_calls(' [{"name": "f", "arguments": {"a": 1}}]',
                                      tools.tool_format("mistral"))
    assert _pairs(calls) == [("f", {"a": 1})]
    _, calls = tools.parse_tool_calls('```json\n{"name": "f", "arguments": {}}\n```',
                                      tools.tool_format("gemma3"))
    assert _pairs(calls) == [("f", {})]


def test_llama_python_tag_and_several_calls():
    text = ('<|python_tag|>{"name": "a", "parameters": {"x": 1}}; '
            '{"name": "b", "parameters": {}}<|eom_id|>')
    content, calls = tools.parse_tool_calls(text, tools.tool_format("llama"))
    assert _pairs(calls) == [("a", {"x": 1}), ("b", {})] and content == "<|eom_id|>"


def test_malformed_call_stays_text():
    text = 'Hmm <tool_call>\n{"name": "f", "arguments": {oops}\n</tool_call>'
    content, calls = tools.parse_tool_calls(text, tools.tool_format("qwen2"))
    assert calls == [] and content == text.strip()
    content, calls = tools.parse_tool_calls("plain answer {not json}", tools.tool_format("llama"))
    assert calls == [] and content == "plain answer {not json}"


def _transformers_qwen_response_template() -> dict:
    # The template is a literal in transformers' serving module, which imports torch (seconds);
    # read the literal from its source instead.
    import ast
    import importlib.util
    spec = importlib.util.find_spec("transformers")
    source = pathlib.Path(spec.origin).parent / "cli" / "serving" / "utils.py"
    if not source.exists():
        pytest.skip(f"transformers {_transformers_version()} predates its response parser "
                    f"(cli/serving/utils.py), the reference here; the Hermes format is still "
                    f"checked against the vendor examples in test_parse_vendor_examples")
    for node in ast.parse(source.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == \
                "_RESPONSE_TEMPLATE_FALLBACKS":
            table = ast.literal_eval(node.value)
            return next(v for k, v in table.items() if "qwen2" in k)
    pytest.skip(f"transformers {_transformers_version()} ships no Qwen response template, the "
                f"reference here; the Hermes format is still checked against the vendor "
                f"examples in test_parse_vendor_examples")


def _transformers_version() -> str:
    from importlib.metadata import version
    return version("transformers")


def test_hermes_parse_matches_transformers(gemma):
    # transformers' own response parser with its Qwen template is the reference; inputs are the
    # vendor example after some prose, and a constrained Gemma output. (transformers keeps only
    # the last stretch of content, so no text after the calls here.)
    template = _transformers_qwen_response_template()
    from transformers.utils.chat_parsing.response_parser import parse_response
    fmt = tools.tool_format("qwen2")
    con = constrain.tool_call_constraint(gemma.tok, fmt, TOOLS, "required", gemma.eos)
    texts = ["I will check both.\n" + VENDOR["qwen2"][0], gemma.text(gemma.drive(con, 11))]
    for text in texts:
        ref = parse_response(text, template, prefix="<|im_start|>assistant\n")
        content, calls = tools.parse_tool_calls(text, fmt)
        assert content == ref.get("content", "")
        assert _pairs(calls) == [(c["function"]["name"], c["function"]["arguments"])
                                 for c in ref["tool_calls"]]


# --- prompts for templates without tool support -------------------------------------------------

def test_gemma_template_gets_the_tools_prompt():
    template = ChatTemplate(BUILTIN_TEMPLATES["gemma"], bos_token="<bos>")
    fmt = tools.tool_format("gemma3")
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": '{"temp": 22}'},
    ]
    assert tools.template_ignores_tools(template, messages, TOOLS)
    prompt = template.render(tools.messages_with_tools(messages, TOOLS, fmt, "required"))
    assert prompt.startswith("<bos><start_of_turn>user\nBe brief.\n\nYou may call")
    assert json.dumps(TOOLS[0]["function"]) in prompt
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>' \
        in prompt
    assert prompt.count("<tool_response>") == 2 and prompt.endswith("<start_of_turn>model\n")
    assert "You must call at least one function." in prompt


def test_template_with_tools_is_left_alone():
    source = ("{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
              "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}")
    messages = [{"role": "user", "content": "hi"}]
    assert not tools.template_ignores_tools(ChatTemplate(source), messages, TOOLS)


@pytest.mark.parametrize("source, family, marker", [
    ("{% if tools %}TOOLS:{{ tools | tojson }}\n{% endif %}"
     "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}", "qwen3", "TOOLS:"),
    (BUILTIN_TEMPLATES["gemma"], "gemma3", "You may call these functions"),
])
def test_render_with_tools(source, family, marker):
    class Model:  # what render_with_tools reads from a loaded model
        chat_template = ChatTemplate(source, bos_token="<bos>")
        plan = {"family": family}
    prompt = tools.render_with_tools(Model(), [{"role": "user", "content": "hi"}], TOOLS)
    assert marker in prompt and "get_weather" in prompt
