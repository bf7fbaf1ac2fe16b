"""libingot's native chat templates (runtime/capi/chat.c, compiler/native_chat.py).

The compiler matches an artefact's Jinja template against the native formats; libingot's
ingot_chat_apply must then give, byte for byte, what the Python runtime's ChatTemplate.render
gives (the reference: Jinja running the template itself), for each format on conversations
beyond the compiler's probes, and refuse what the template refuses. One tiny model is compiled
(shared with tests/test_capi.py); the other formats are the same artefact rewritten with another
template and the compiler's chat_native entry for it. Gemma 3 270M's own artefact checks the
real model's template and, through the native tokenizer, its prompt ids.
"""
from __future__ import annotations

import json

import pytest

import capi_ctypes as capi
from ingot.compiler.native_chat import FORMATS, PROBES, chat_native, match_format
from ingot.errors import IngotError
from ingot.runtime.chat import BUILTIN_TEMPLATES
from ingot.runtime.model import Model

pytestmark = pytest.mark.xdist_group("capi")

# The [INST] format has no built-in template: this one is written here for the test.
MISTRAL = (
    "{{ bos_token }}{% for m in messages %}"
    "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{ raise_exception('turns alternate, user first') }}{% endif %}"
    "{% if m['role'] == 'user' %}{{ '[INST] ' + m['content'] + ' [/INST]' }}"
    "{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
    "{% else %}{{ raise_exception('user and assistant turns only') }}{% endif %}"
    "{% endfor %}")
TEMPLATES = {**BUILTIN_TEMPLATES, "mistral": MISTRAL}


def _m(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# Beyond the probes: longer chats, specials inside content, odd roles, whitespace-only text.
EXTRA = [
    [],
    _m(("system", "only a system message")),
    _m(("user", "<|im_end|> <start_of_turn> [INST] quoted"), ("assistant", " ok "),
       ("user", "\n\n"), ("assistant", "\u2003wide\u2029"), ("user", "done")),
    _m(("system", "  sys\n"), ("user", "q"), ("assistant", "a"), ("user", "q2"),
       ("assistant", "a2"), ("user", "q3")),
    _m(("user", "a"), ("tool", "result")),
    _m(("system", "s"), ("system", "t")),
    _m(("user", "x"), ("assistant", "y")),
]
CONVERSATIONS = list(PROBES.values()) + EXTRA


def rewritten(src, dst, template):
    """src's artefact with another chat template and the compiler's chat_native entry for it."""
    def edit(plan, secs):
        plan["chat_native"] = chat_native(template, {k: v for k, (v, _) in secs.items()})
        if template is None:
            secs.pop("chat_template", None)
        else:
            secs["chat_template"] = (json.dumps(template).encode(), 64)
    return capi.rewrite(src, dst, edit)


@pytest.fixture(scope="module")
def per_format(artefacts, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("chat_formats")
    return {name: rewritten(artefacts("llama"), tmp / f"{name}.ingot", t)
            for name, t in TEMPLATES.items()}


def python_render(path, msgs, gen):
    with Model.load(path, threads=1) as m:
        try:
            return m.chat_template.render(msgs, add_generation_prompt=gen)
        except IngotError:
            return None


def check_same(lib, path, conversations):
    with Model.load(path, threads=1) as model, capi.Handle(lib, path) as h:
        for msgs in conversations:
            for gen in (False, True):
                try:
                    want = model.chat_template.render(msgs, add_generation_prompt=gen)
                except IngotError:
                    want = None
                rc, got, need = h.chat(msgs, gen)
                if want is None:
                    err = h.last_error()
                    assert rc == capi.E_ARG and ("alternate" in err or "roles" in err), \
                        (msgs, rc, err)
                else:
                    assert rc == capi.OK, (msgs, h.last_error())
                    assert got == want and need == len(want.encode()), (msgs, gen, got, want)


def test_compiled_artefact_records_its_format(artefacts):
    # tests/tiny_models.py's template is chatml written differently: the compiler finds it.
    with Model.load(artefacts("llama"), threads=1) as m:
        assert m.plan["chat_native"] == {"format": "chatml", "bos": "<s>", "eos": "</s>"}


def test_each_format_matches_jinja(libingot, per_format):
    for name, path in per_format.items():
        with Model.load(path, threads=1) as m:
            assert m.plan["chat_native"]["format"] == name
        check_same(libingot, path, CONVERSATIONS)


def test_python_mirrors_match_the_builtin_templates():
    # The mirrors are the compiler's reference for C: each builtin matches only its own.
    for name, t in TEMPLATES.items():
        assert match_format(t, "<s>", "</s>") == (name, None)
    assert set(FORMATS) == set(TEMPLATES)


def test_misuse_and_unmatched(libingot, artefacts, per_format, tmp_path):
    path = artefacts("llama")
    with capi.Handle(libingot, path) as h:
        msgs = _m(("user", "hello"))
        rc, _, need = h.chat(msgs, True, cap=5)
        assert rc == capi.E_SMALL and need == len(python_render(path, msgs, True).encode())
        rc, text, n2 = h.chat(msgs, True, cap=need)  # exactly the length: no room for a NUL
        assert rc == capi.OK and n2 == need and text == python_render(path, msgs, True)
        rc, _, _ = h.chat(_m(("user", b"bad \xff utf-8")), True)
        assert rc == capi.E_TEXT and "UTF-8" in h.last_error()
        rc, _, _ = h.chat(_m(("user", b"\xed\xa0\x80")), True)  # a surrogate
        assert rc == capi.E_TEXT
        rc = libingot.ingot_chat_apply(h.m, None, 1, 1, None, 0, None)
        assert rc == capi.E_ARG
        rc = libingot.ingot_chat_apply(h.m, None, 0, 1, None, 0, None)  # empty chat, size only
        assert rc == capi.E_SMALL
        arr = (capi.Message * 1)(capi.Message(None, b"x"))
        assert libingot.ingot_chat_apply(h.m, arr, 1, 1, None, 0, None) == capi.E_ARG
    assert libingot.ingot_chat_apply(None, None, 0, 1, None, 0, None) == capi.E_HANDLE
    # Roles the template refuses: E_ARG naming the rule.
    with capi.Handle(libingot, per_format["gemma"]) as h:
        rc, _, _ = h.chat(_m(("user", "a"), ("user", "b")), True)
        assert rc == capi.E_ARG and "alternate" in h.last_error() and "message 1" in \
            h.last_error()
    with capi.Handle(libingot, per_format["mistral"]) as h:
        rc, _, _ = h.chat(_m(("system", "a"), ("user", "b")), True)
        assert rc == capi.E_ARG
    # A template no format renders, and none at all: E_NO_TEMPLATE saying why.
    odd = rewritten(path, tmp_path / "odd.ingot", "{{ bos_token }}{{ messages[-1]['content'] }}")
    with capi.Handle(libingot, odd) as h:
        rc, _, _ = h.chat(_m(("user", "a")), True)
        assert rc == capi.E_NO_TEMPLATE and "no native format renders like the template" in \
            h.last_error() and "gemma differs" in h.last_error()
    bare = rewritten(path, tmp_path / "bare.ingot", None)
    with capi.Handle(libingot, bare) as h:
        rc, _, _ = h.chat(_m(("user", "a")), True)
        assert rc == capi.E_NO_TEMPLATE and "no chat template" in h.last_error()


@pytest.mark.xdist_group("gemma")  # the worker that compiles Gemma once for the other tests
def test_gemma_template_and_prompt_ids(libingot, gemma_artefact):
    from ingot.runtime.generate import prompt_ids
    with Model.load(gemma_artefact, threads=1) as m:
        assert m.plan["chat_native"]["format"] == "gemma"
        assert m.plan["chat_native"]["bos"] == m.tokenizer.bos_token
    check_same(libingot, gemma_artefact, CONVERSATIONS)
    msgs = _m(("system", "Answer briefly."), ("user", "What is the capital of France?"))
    with Model.load(gemma_artefact, threads=1) as m, capi.Handle(libingot, gemma_artefact) as h:
        rc, text, _ = h.chat(msgs, True)
        assert rc == capi.OK
        assert h.tokenize(text, add_special=False) == prompt_ids(m, msgs)
