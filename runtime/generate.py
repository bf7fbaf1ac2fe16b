"""The generation loop shared by the Python API, the CLI and (later) the server."""
from __future__ import annotations

from ..errors import IngotError
from .sampling import Sampler, SamplingParams


def prompt_ids(model, prompt_or_messages) -> list:
    """Token ids for a prompt string (tokenizer adds BOS as configured) or chat messages
    (rendered with the model's chat template, which carries its own special tokens)."""
    tok = model.tokenizer
    if isinstance(prompt_or_messages, str):
        return tok.encode(prompt_or_messages, add_special_tokens=True)
    if isinstance(prompt_or_messages, (list, tuple)):
        text = model.chat_template.render(list(prompt_or_messages), add_generation_prompt=True)
        return tok.encode(text, add_special_tokens=False)
    raise IngotError("prompt must be a string or a list of {role, content} messages")


def sampling_params(model, **given) -> SamplingParams:
    """Explicit arguments win over the model's generation_config defaults."""
    defaults = dict(model.generation.get("defaults") or {})
    fields = {k: v for k, v in defaults.items() if k in SamplingParams.__dataclass_fields__}
    fields.update({k: v for k, v in given.items() if v is not None})
    return SamplingParams(**fields)


def request_for(model, ids, *, max_tokens=256, stop_ids=None, context_shift=None, keep=None,
                **sampling):
    """An engine request with the model's defaults (end tokens, generation_config).
    context_shift / keep: None leaves them to the engine's setting (`set_context_shift`)."""
    from .engine import Request
    return Request(list(ids), int(max_tokens), sampling_params(model, **sampling),
                   frozenset(model.eos_ids() if stop_ids is None else stop_ids),
                   penalize_prompt=True, context_shift=context_shift, keep=keep)


def generate_stream(model, prompt_or_messages, *, max_tokens=256, stop=None, **sampling):
    """Yields text pieces; stops at an end-of-sequence token, max_tokens, or a stop string.
    Runs through the model's engine, as the server does (which refuses an over-long prompt
    unless context shift is on)."""
    from .textstream import TextStream
    ids = prompt_ids(model, prompt_or_messages)
    handle = model.engine.submit(request_for(model, ids, max_tokens=max_tokens, **sampling))
    text = TextStream(model.tokenizer, stop)
    try:
        for ev in handle:
            piece = text.put(ev.token)
            if piece:
                yield piece
            if text.stopped is not None:
                break
        rest = text.finish()
        if rest:
            yield rest
        if handle.error:
            raise IngotError(handle.error)
    finally:
        handle.cancel()
