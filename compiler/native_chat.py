"""Which native chat format (libingot's runtime/capi/chat.c) renders an artefact's template.

Jinja cannot run in C, so at compile time the template is rendered (runtime/chat.py, as the
Python runtime does) on fixed probe conversations and compared with a Python mirror of each C
format. The first format that gives the same text — or refuses the same conversations — on
every probe is recorded in the plan as {"format", "bos", "eos"}; otherwise {"skipped": why},
which libingot reports from ingot_chat_apply. Each mirror below is the C code's definition:
change both together (tests/test_capi_chat.py checks C == Jinja byte for byte).
"""
from __future__ import annotations

import json

from ..errors import IngotError


class Refused(Exception):
    """A conversation the format does not accept (the Jinja's raise_exception)."""


def _alternate(msgs) -> None:
    for i, m in enumerate(msgs):
        if (m["role"] == "user") != (i % 2 == 0):
            raise Refused("roles must alternate user/assistant/user/...")


def _chatml(msgs, gen, bos, eos):
    out = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in msgs)
    return out + ("<|im_start|>assistant\n" if gen else "")


def _llama3(msgs, gen, bos, eos):
    out = bos + "".join(f"<|start_header_id|>{m['role']}<|end_header_id|>\n\n"
                        f"{m['content'].strip()}<|eot_id|>" for m in msgs)
    return out + ("<|start_header_id|>assistant<|end_header_id|>\n\n" if gen else "")


def _phi3(msgs, gen, bos, eos):
    out = "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in msgs)
    return out + ("<|assistant|>\n" if gen else "")


def _gemma(msgs, gen, bos, eos):
    # A leading system message becomes a prefix of the first turn; then user/model alternate.
    prefix, turns = "", list(msgs)
    if turns and turns[0]["role"] == "system":
        prefix, turns = turns[0]["content"] + "\n\n", turns[1:]
    _alternate(turns)
    out = bos
    for i, m in enumerate(turns):
        role = "model" if m["role"] == "assistant" else m["role"]
        out += f"<start_of_turn>{role}\n{prefix if i == 0 else ''}{m['content'].strip()}" \
               f"<end_of_turn>\n"
    return out + ("<start_of_turn>model\n" if gen else "")


def _mistral(msgs, gen, bos, eos):
    # [INST] turns (Mistral v0.1 / Llama 2 without a system block); no generation prompt.
    _alternate(msgs)
    out = bos
    for m in msgs:
        if m["role"] == "user":
            out += f"[INST] {m['content']} [/INST]"
        elif m["role"] == "assistant":
            out += m["content"] + eos
        else:
            raise Refused("only user and assistant roles are supported")
    return out


# In libingot's order (chat.c's formats table).
FORMATS = {"chatml": _chatml, "llama3": _llama3, "phi3": _phi3, "gemma": _gemma,
           "mistral": _mistral}


def _msgs(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


# Probe conversations: each is rendered with and without the generation prompt.
PROBES = {
    "system+user": _msgs(("system", "You are terse."), ("user", "Hi there")),
    "user": _msgs(("user", "Hello")),
    "multi-turn": _msgs(("user", "2+2?"), ("assistant", "4"), ("user", "And 3+3?")),
    "system+multi-turn": _msgs(("system", "Be kind."), ("user", "a"), ("assistant", "b"),
                               ("user", "c")),
    "whitespace+unicode": _msgs(("user", "  line one\nline two  \n"),
                                ("assistant", "\t héllo 日本語 🙂\u3000"),
                                ("user", "\u00a0x\ny\n\n")),
    "empty": _msgs(("user", "")),
    "two users": _msgs(("user", "a"), ("user", "b")),
    "assistant first": _msgs(("assistant", "a"), ("user", "b")),
}


def _outcome(render):
    try:
        return ("text", render())
    except (IngotError, Refused):
        return ("refused", None)


def _plain(s: str) -> bool:
    """Whether s stays a plain JSON string (libingot's JSON reader takes no escapes)."""
    return all(" " <= c <= "~" and c not in '"\\' for c in s)


def match_format(source: str, bos: str = "", eos: str = ""):
    """(format name, None) for the first format that agrees with the template on every probe,
    else (None, why)."""
    from ..runtime.chat import ChatTemplate
    try:
        tpl = ChatTemplate(source, bos_token=bos, eos_token=eos)
    except IngotError as err:
        return None, str(err)
    misses = []
    for name, fmt in FORMATS.items():
        miss = next((f"{probe}{' +gen' if gen else ''}" for probe, msgs in PROBES.items()
                     for gen in (False, True)
                     if _outcome(lambda: tpl.render(msgs, add_generation_prompt=gen))
                     != _outcome(lambda: fmt(msgs, gen, bos, eos))), None)
        if miss is None:
            return name, None
        misses.append(f"{name} differs on '{miss}'")
    return None, "no native format renders like the template (" + "; ".join(misses) + ")"


def chat_native(template, sections: dict) -> dict:
    """The plan's "chat_native" entry for an artefact's template (a string, a list of named
    templates or None) and tokenizer sections (bos/eos strings from tokenizer_config)."""
    from ..runtime.chat import pick_template
    from ..runtime.tokenizer import _token_text
    source = pick_template(template) if template else None
    if not source:
        return {"skipped": "the artefact has no chat template"}
    cfg = json.loads(sections.get("tokenizer_config") or b"{}")
    bos, eos = _token_text(cfg.get("bos_token")) or "", _token_text(cfg.get("eos_token")) or ""
    name, why = match_format(source, bos, eos)
    if name is not None:
        if _plain(bos) and _plain(eos):
            return {"format": name, "bos": bos, "eos": eos}
        why = f"the template renders as '{name}' but its BOS/EOS text is not plain ASCII"
    # libingot prints the reason as it is: keep it a plain JSON string.
    return {"skipped": "".join(c if _plain(c) else "?" for c in why)[:400]}
