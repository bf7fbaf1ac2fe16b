"""Chat templates render exactly as transformers' apply_chat_template renders them."""
import pytest
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers

from ingot.errors import IngotError
from ingot.runtime.chat import BUILTIN_TEMPLATES, ChatTemplate, pick_template

transformers = pytest.importorskip("transformers")

BOS, EOS = "<s>", "</s>"

# Qwen-like: a default system prompt, tools as one JSON line each, block tags without '-'
# so trim_blocks/lstrip_blocks matter.
CHATML = """{%- if tools %}
{{- '<|im_start|>system\\n' }}
{%- if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}{% else %}You are helpful.{% endif %}
{{- '\\n\\n# Tools\\n<tools>' }}
{%- for tool in tools %}
{{- '\\n' + tool | tojson }}
{%- endfor %}
{{- '\\n</tools><|im_end|>\\n' }}
{%- elif messages[0]['role'] != 'system' %}
{{- '<|im_start|>system\\nYou are helpful.<|im_end|>\\n' }}
{%- endif %}
{% for message in messages %}
    {% if not (message.role == 'system' and (loop.first and tools)) %}
<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
    {% endif %}
{% endfor %}
{% if add_generation_prompt %}
<|im_start|>assistant
{% endif %}"""

# Llama-3.1-like: bos, a dated system header, tools pretty-printed, trimmed content.
LLAMA3 = """{{- bos_token }}
{%- set ns = namespace(system='') %}
{%- if messages[0]['role'] == 'system' %}
    {%- set ns.system = messages[0]['content'] | trim %}
    {%- set messages = messages[1:] %}
{%- endif %}
{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}
{{- 'Today Date: ' + strftime_now('%d %b %Y') + '\\n\\n' }}
{%- if tools is not none %}
    {%- for t in tools %}{{ t | tojson(indent=4) }}{{ '\\n\\n' }}{% endfor %}
{%- endif %}
{{- ns.system + '<|eot_id|>' }}
{%- for m in messages %}
    {%- if m.role == 'stop' %}{% break %}{% endif %}
    {{- '<|start_header_id|>' + m['role'] + '<|end_header_id|>\\n\\n' }}
    {%- if m.role == 'assistant' %}{% generation %}{{ m['content'] | trim + '<|eot_id|>' }}{% endgeneration %}
    {%- else %}{{ m['content'] | trim + '<|eot_id|>' }}{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"""

STRICT = """{% for m in messages %}
{% if m['role'] not in ['user', 'assistant'] %}{{ raise_exception('Only user and assistant roles are supported, not ' + m['role']) }}{% endif %}
[{{ m['role'] }}] {{ m['content'] }}{{ eos_token }}
{% endfor %}"""

MESSAGES = [
    {"role": "system", "content": "  Be brief. Ünïcode ok → 日本語  "},
    {"role": "user", "content": "Hello <b>there</b> & \"friends\" 🙂"},
    {"role": "assistant", "content": "Hi!\n"},
    {"role": "user", "content": "What is 2+2?"},
]
TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Météo <now>",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]


@pytest.fixture(scope="module")
def inner():
    tok = HFTokenizer(models.WordLevel({"<unk>": 0, BOS: 1, EOS: 2}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok


def _hf(inner, chat_template):
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=inner, bos_token=BOS, eos_token=EOS, chat_template=chat_template)


def _ref(inner, template, messages, name=None, **kw):
    return _hf(inner, template).apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True, chat_template=name, **kw)


@pytest.mark.parametrize("source", [CHATML, LLAMA3, STRICT], ids=["chatml", "llama3", "strict"])
@pytest.mark.parametrize("tools", [None, TOOLS], ids=["plain", "tools"])
def test_matches_transformers(inner, source, tools):
    messages = MESSAGES[1:] if source is STRICT else MESSAGES
    ours = ChatTemplate(source, bos_token=BOS, eos_token=EOS).render(messages, tools=tools)
    assert ours == _ref(inner, source, messages, tools=tools)
    # and without the generation prompt / without a system message
    ours = ChatTemplate(source, BOS, EOS).render(MESSAGES[1:], add_generation_prompt=False, tools=tools)
    assert ours == _hf(inner, source).apply_chat_template(
        MESSAGES[1:], tokenize=False, add_generation_prompt=False, tools=tools)


def test_loop_break(inner):
    messages = MESSAGES + [{"role": "stop", "content": ""}, {"role": "user", "content": "hidden"}]
    ours = ChatTemplate(LLAMA3, BOS, EOS).render(messages)
    assert ours == _ref(inner, LLAMA3, messages) and "hidden" not in ours


def test_extra_variables(inner):
    source = "{{ bos_token }}{% if enable_thinking %}think{% else %}fast{% endif %}"
    for flag in (True, False):
        ours = ChatTemplate(source, BOS, EOS).render(MESSAGES, enable_thinking=flag)
        assert ours == _ref(inner, source, MESSAGES, enable_thinking=flag)


def test_raise_exception(inner):
    with pytest.raises(IngotError, match="Only user and assistant roles are supported, not system"):
        ChatTemplate(STRICT).render(MESSAGES)
    with pytest.raises(Exception, match="Only user and assistant roles"):
        _ref(inner, STRICT, MESSAGES)  # transformers refuses the same conversation


def test_syntax_error():
    with pytest.raises(IngotError, match="^chat template: "):
        ChatTemplate("{% for m in messages %}{{ m }")


def test_sandbox():
    with pytest.raises(IngotError):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}").render(MESSAGES)
    with pytest.raises(IngotError):
        ChatTemplate("{% set x = messages.append(1) %}").render(MESSAGES)


def test_list_form(inner):
    listed = [{"name": "default", "template": CHATML}, {"name": "tool_use", "template": LLAMA3}]
    assert pick_template(listed) == CHATML
    assert pick_template(listed, "tool_use") == LLAMA3
    assert pick_template(CHATML) == CHATML
    assert pick_template(None) is None
    assert pick_template([{"name": "tool_use", "template": LLAMA3}]) is None
    with pytest.raises(IngotError, match="'rag' not found"):
        pick_template(listed, "rag")
    for name in (None, "default", "tool_use"):
        for tools in (None, TOOLS):  # with tools and no name, both pick "tool_use"
            ours = ChatTemplate(pick_template(listed, name, tools), BOS, EOS).render(MESSAGES, tools=tools)
            assert ours == _ref(inner, listed, MESSAGES, name=name, tools=tools)


# Expected strings written from each family's documented prompt format.
BUILTIN_EXPECTED = {
    "chatml": (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nHello<|im_end|>\n"
        "<|im_start|>assistant\nHi there.<|im_end|>\n"
        "<|im_start|>user\nHow are you?<|im_end|>\n"
        "<|im_start|>assistant\n"),
    "llama3": (
        "<|begin_of_text|>"
        "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHi there.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHow are you?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"),
    "gemma": (
        "<bos>"
        "<start_of_turn>user\nBe brief.\n\nHello<end_of_turn>\n"
        "<start_of_turn>model\nHi there.<end_of_turn>\n"
        "<start_of_turn>user\nHow are you?<end_of_turn>\n"
        "<start_of_turn>model\n"),
}
BUILTIN_BOS = {"chatml": "", "llama3": "<|begin_of_text|>", "gemma": "<bos>"}
CONVERSATION = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hello"},
    {"role": "assistant", "content": "Hi there."},
    {"role": "user", "content": "How are you?"},
]


@pytest.mark.parametrize("name", sorted(BUILTIN_EXPECTED))
def test_builtin(name):
    assert set(BUILTIN_EXPECTED) <= set(BUILTIN_TEMPLATES)
    tpl = ChatTemplate(BUILTIN_TEMPLATES[name], bos_token=BUILTIN_BOS[name])
    assert tpl.render(CONVERSATION) == BUILTIN_EXPECTED[name]
    no_prompt = tpl.render(CONVERSATION, add_generation_prompt=False)
    assert BUILTIN_EXPECTED[name].startswith(no_prompt) and no_prompt != BUILTIN_EXPECTED[name]


def test_gemma_rejects_bad_order():
    with pytest.raises(IngotError, match="alternate"):
        ChatTemplate(BUILTIN_TEMPLATES["gemma"]).render(CONVERSATION[1:2] * 2)
