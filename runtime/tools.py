"""Tool calls in the text each model family was tuned to write, and back into OpenAI's form.

A family's format is the wrapper around `{"name": ..., "arguments": {...}}` objects:

  hermes   <tool_call>\\n{...}\\n</tool_call>, one block per call (Qwen 2.5/3, SmolLM3, and
           the default for families without a format of their own: Gemma, Phi 2, StarCoder 2,
           GLM 4 — Hermes-style is the most widely tuned JSON tool format)
  llama3   a bare {"name": ..., "parameters": {...}} object (Llama 3.1+ JSON tool calling;
           `<|python_tag|>` before it is tolerated)
  mistral  [TOOL_CALLS][{...}, ...]
  granite  <|tool_call|>[{...}, ...] (Granite 3)
  phi4     <|tool_call|>[{...}, ...]<|/tool_call|> (Phi-4-mini, model_type phi3)

Markers such as [TOOL_CALLS] are special tokens in their vocabularies: decode the answer with
special tokens kept before parsing (a bare JSON call or list is also accepted, for when they
were dropped).
"""
from __future__ import annotations

import json
import re
import secrets
from dataclasses import dataclass

from ..errors import IngotError


@dataclass(frozen=True)
class ToolFormat:
    name: str
    open: str            # marker before a call (or before the list of calls)
    close: str = ""      # marker after it
    many: bool = False   # True: one marker pair around a JSON list; False: one pair per call
    args_key: str = "arguments"
    pad: str = ""        # between marker and JSON
    sep: str | None = "\n"  # between per-call blocks; None: one call per answer


FORMATS = {
    "hermes": ToolFormat("hermes", "<tool_call>", "</tool_call>", pad="\n"),
    "llama3": ToolFormat("llama3", "", args_key="parameters", sep=None),
    "mistral": ToolFormat("mistral", "[TOOL_CALLS]", many=True),
    "granite": ToolFormat("granite", "<|tool_call|>", many=True),
    "phi4": ToolFormat("phi4", "<|tool_call|>", "<|/tool_call|>", many=True),
}

# Family (arch/registry.py names) -> format; anything else gets hermes.
FAMILY_FORMATS = {"llama": "llama3", "mistral": "mistral", "granite": "granite", "phi3": "phi4"}
DEFAULT_FORMAT = "hermes"


def tool_format(family: str | None) -> ToolFormat:
    """The tool-call format for a family name (or a format name from FORMATS)."""
    if family in FORMATS:
        return FORMATS[family]
    return FORMATS[FAMILY_FORMATS.get(family or "", DEFAULT_FORMAT)]


def tool_specs(tools) -> dict:
    """OpenAI `tools` -> {function name: parameters schema}; IngotError names what is wrong."""
    if not isinstance(tools, list) or not tools:
        raise IngotError("tools must be a non-empty list")
    specs = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" \
                or not isinstance(fn, dict):
            raise IngotError(f'tools[{i}] must be {{"type": "function", "function": {{...}}}}')
        name = fn.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise IngotError(f"tools[{i}].function.name must be 1-64 letters, digits, _ . or -")
        if name in specs:
            raise IngotError(f"tools: function {name!r} is given twice")
        params = fn.get("parameters", {"type": "object"})
        if not isinstance(params, dict):
            raise IngotError(f"tools[{i}].function.parameters must be a JSON Schema object")
        specs[name] = params or {"type": "object"}
    return specs


# --- calls -> text -------------------------------------------------------------------------

def _call_json(call: dict, fmt: ToolFormat) -> str:
    fn = call.get("function", call)
    args = fn.get("arguments", fn.get("parameters", {}))
    if isinstance(args, str):  # OpenAI messages carry arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass
    return json.dumps({"name": fn["name"], fmt.args_key: args}, ensure_ascii=False)


def format_tool_calls(calls: list, fmt: ToolFormat) -> str:
    """OpenAI tool_calls (or {"name", "arguments"} dicts) as the model would write them; for
    replaying an assistant turn through a template that does not render tool calls."""
    items = [_call_json(c, fmt) for c in calls]
    if fmt.many:
        return f"{fmt.open}[{', '.join(items)}]{fmt.close}"
    blocks = [f"{fmt.open}{fmt.pad}{item}{fmt.pad}{fmt.close}" for item in items]
    return (fmt.sep or "\n").join(blocks)


def render_tools_prompt(tools, fmt: ToolFormat, tool_choice=None) -> str:
    """System-prompt text listing the tools and how to call them, for chat templates that
    ignore `tools` (see `template_ignores_tools`)."""
    specs = [t.get("function", t) for t in tools]
    example = format_tool_calls([{"name": "<function name>",
                                  "arguments": {"<argument>": "<value>"}}], fmt)
    lines = ["You may call these functions (JSON Schema signatures):", "<tools>",
             *(json.dumps(s, ensure_ascii=False) for s in specs), "</tools>",
             "To call a function, reply with exactly:", example]
    if fmt.many:
        lines.append("Put several calls in the one list.")
    elif fmt.sep is not None:
        lines.append("For several calls, write one block per call.")
    if tool_choice == "required":
        lines.append("You must call at least one function.")
    elif isinstance(tool_choice, dict):
        name = (tool_choice.get("function") or {}).get("name")
        lines.append(f"You must call the function {name}.")
    elif tool_choice == "none":
        lines.append("Do not call any function now; answer in text.")
    return "\n".join(lines)


def template_ignores_tools(template, messages, tools) -> bool:
    """True when rendering with `tools` gives the same prompt as without (or fails), i.e. the
    template has no tool support and `render_tools_prompt` must tell the model instead."""
    plain = [m for m in messages if m.get("role") != "tool" and not m.get("tool_calls")]
    try:
        return template.render(plain, tools=tools) == template.render(plain, tools=None)
    except IngotError:
        return True


def render_with_tools(model, messages, tools, tool_choice=None) -> str:
    """The prompt for a chat with `tools`, from a loaded model (its chat template and plan
    family): the template's own tool rendering when it has one, else the fallback prompt."""
    template = model.chat_template
    if not template_ignores_tools(template, messages, tools):
        return template.render(messages, add_generation_prompt=True, tools=tools)
    fmt = tool_format(model.plan.get("family"))
    return template.render(messages_with_tools(messages, tools, fmt, tool_choice),
                           add_generation_prompt=True)


def messages_with_tools(messages, tools, fmt: ToolFormat, tool_choice=None) -> list:
    """`messages` for a template without tool support: the tools prompt joins the system
    message, assistant tool calls become their text, tool results become user turns, and
    neighbouring turns of one role merge (templates such as Gemma's require alternation)."""
    prompt = render_tools_prompt(tools, fmt, tool_choice)
    out = []
    for m in messages:
        role, content = m.get("role"), m.get("content") or ""
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if role == "assistant" and m.get("tool_calls"):
            content = "\n".join(filter(None, [content, format_tool_calls(m["tool_calls"], fmt)]))
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        if out and out[-1]["role"] == role:
            out[-1]["content"] += "\n\n" + content
        else:
            out.append({"role": role, "content": content})
    if out and out[0]["role"] == "system":
        out[0]["content"] = out[0]["content"] + "\n\n" + prompt
    else:
        out.insert(0, {"role": "system", "content": prompt})
    return out


# --- text -> calls -------------------------------------------------------------------------

_DECODER = json.JSONDecoder()


def _as_call(obj) -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get("arguments", obj.get("parameters"))
    if args is None:
        args = {}
    if isinstance(args, str):  # some models write the arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    return {"id": "call_" + secrets.token_hex(12), "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)}}


def _calls(value) -> list | None:
    items = value if isinstance(value, list) else [value]
    calls = [_as_call(v) for v in items]
    return calls if calls and all(calls) else None


def _json_at(text: str, i: int):
    """(value, end) of the JSON value starting at text[i] after blanks, or (None, i)."""
    while i < len(text) and text[i].isspace():
        i += 1
    try:
        return _DECODER.raw_decode(text, i)
    except json.JSONDecodeError:
        return None, i


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str, list]:
    """(content, tool_calls) from a model's answer: every well-formed call in the format is
    taken out, in order. The content is the text around the calls, each piece trimmed, one per
    line ("" when there is none); a malformed call stays in the content as written."""
    if fmt.open:
        pieces, calls = _parse_marked(text, fmt)
    else:
        pieces, calls = _parse_bare(text.replace("<|python_tag|>", ""))
    if not calls:  # markers lost (decoded without special tokens), or a fenced JSON answer
        body = re.sub(r"^```(?:json|tool_call)?\s*|\s*```$", "", text.strip())
        value, end = _json_at(body, 0)
        found = _calls(value) if value is not None and not body[end:].strip() else None
        if found:
            return "", found
    # Blank or separator-only pieces (between two calls) are not content.
    return "\n".join(p.strip() for p in pieces if p.strip(" \t\r\n;,")), calls


def _parse_marked(text: str, fmt: ToolFormat) -> tuple[list, list]:
    pieces, calls, pos, search = [], [], 0, 0
    close = re.compile(r"\s*" + re.escape(fmt.close)) if fmt.close else None
    while (start := text.find(fmt.open, search)) >= 0:
        search = start + len(fmt.open)
        value, end = _json_at(text, search)
        found = _calls(value) if value is not None else None
        if not found:  # not a call after all: it stays in the text
            continue
        m = close.match(text, end) if close else None
        end = m.end() if m else end  # a missing close marker is forgiven
        pieces.append(text[pos:start])
        calls.extend(found)
        pos = search = end
    pieces.append(text[pos:])
    return pieces, calls


def _parse_bare(text: str) -> tuple[list, list]:
    # Llama 3 writes calls as bare objects (several separated by ';'): take every JSON object
    # that has a name and arguments, wherever it starts.
    pieces, calls, pos, i = [], [], 0, 0
    while (i := text.find("{", i)) >= 0:
        value, end = _json_at(text, i)
        call = _as_call(value) if value is not None else None
        if call is None:
            i += 1
            continue
        pieces.append(text[pos:i])
        calls.append(call)
        pos = i = end
    pieces.append(text[pos:])
    return pieces, calls
