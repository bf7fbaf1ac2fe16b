"""Chat templates: render a conversation into the prompt text a model was tuned on.

Templates ship inside tokenizer_config.json as Jinja and are untrusted, so they run in Jinja's
immutable sandbox with the same helpers Hugging Face templates expect (``raise_exception``,
``strftime_now``, a non-escaping ``tojson``), so a template renders here exactly as it does in
transformers.
"""
from __future__ import annotations

import json
from datetime import datetime

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment

from ..errors import IngotError


def _raise_exception(message):
    raise IngotError(f"chat template: {message}")


def _strftime_now(fmt):
    return datetime.now().strftime(fmt)


def _tojson(value, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # Jinja's own tojson HTML-escapes '<', '>' and '&', which would change the prompt text.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` marks assistant text for training masks; here it
    only has to parse and render its body unchanged."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller):
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTag])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


class ChatTemplate:
    """One compiled chat template plus the special tokens it may print."""

    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        try:
            self.template = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as err:
            raise IngotError(f"chat template: {err.message} (line {err.lineno})") from None
        self.source = source
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""

    def render(self, messages, add_generation_prompt: bool = True, tools=None, **extra) -> str:
        context = {"bos_token": self.bos_token, "eos_token": self.eos_token, **extra,
                   "messages": list(messages), "tools": tools,
                   "add_generation_prompt": add_generation_prompt}
        try:
            return self.template.render(**context)
        except IngotError:
            raise
        except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as err:
            raise IngotError(f"chat template: {err}") from None


def pick_template(chat_template, name: str | None = None, tools=None) -> str | None:
    """The template source from tokenizer_config.json's ``chat_template`` (a string, or a list of
    ``{"name", "template"}``). With no name: "tool_use" when tools are given and it exists (as
    transformers does), else "default", else None."""
    if not chat_template:
        return None
    if isinstance(chat_template, str):
        return chat_template
    if isinstance(chat_template, dict):  # transformers' in-memory form {name: template}
        chat_template = [{"name": k, "template": v} for k, v in chat_template.items()]
    named = {t.get("name"): t.get("template") for t in chat_template if isinstance(t, dict)}
    if name is None:
        return named.get("tool_use") if tools and "tool_use" in named else named.get("default")
    if name not in named:
        raise IngotError(f"chat template {name!r} not found; the model has: {', '.join(map(str, named))}")
    return named[name]


# Well-known formats for models that ship no template (e.g. a bare GGUF). Written for plain
# system/user/assistant turns; the models' own templates add tools and reasoning on top.
BUILTIN_TEMPLATES: dict[str, str] = {
    # Qwen and many others: every turn is <|im_start|>role\n...<|im_end|>\n.
    "chatml": (
        "{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    ),
    # Llama 3: header-delimited roles, trimmed content, <|eot_id|> after each turn.
    "llama3": (
        "{{ bos_token }}"
        "{% for m in messages %}"
        "{{ '<|start_header_id|>' + m['role'] + '<|end_header_id|>\n\n' + m['content'] | trim + '<|eot_id|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
    ),
    # Phi 3 / 3.5: <|role|>\n...<|end|>\n for each turn.
    "phi3": (
        "{% for m in messages %}"
        "{{ '<|' + m['role'] + '|>\n' + m['content'] + '<|end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    ),
    # Gemma 2/3: only user and model turns; a system message is folded into the first user turn.
    "gemma": (
        "{{ bos_token }}"
        "{% set ns = namespace(prefix='') %}"
        "{% set turns = messages %}"
        "{% if messages and messages[0]['role'] == 'system' %}"
        "{% set ns.prefix = messages[0]['content'] + '\n\n' %}"
        "{% set turns = messages[1:] %}"
        "{% endif %}"
        "{% for m in turns %}"
        "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
        "{{ raise_exception('roles must alternate user/assistant/user/...') }}"
        "{% endif %}"
        "{% set role = 'model' if m['role'] == 'assistant' else m['role'] %}"
        "{{ '<start_of_turn>' + role + '\n' + (ns.prefix if loop.first else '') + m['content'] | trim + '<end_of_turn>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
    ),
}
