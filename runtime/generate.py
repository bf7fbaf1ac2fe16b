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


def generate_tokens(model, ids, max_tokens, params: SamplingParams, stop_ids=None):
    """Yields generated token ids; starts from an empty context."""
    model.reset()
    sampler = Sampler(params, model.vocab_size)
    history = list(ids)
    stop_ids = model.eos_ids() if stop_ids is None else stop_ids
    if len(ids) + max_tokens > model.max_seq_len:
        max_tokens = model.max_seq_len - len(ids)
        if max_tokens <= 0:
            raise IngotError(f"prompt of {len(ids)} tokens does not fit the compiled context "
                             f"of {model.max_seq_len}")
    logits = model.prefill_view(ids)
    for i in range(max_tokens):
        t = int(sampler.sample(logits, history))
        if t in stop_ids:
            return
        history.append(t)
        yield t
        if i + 1 < max_tokens:
            logits = model.decode_view(t)


def generate_stream(model, prompt_or_messages, *, max_tokens=256, stop=None, **sampling):
    """Yields text pieces; stops at an end-of-sequence token, max_tokens, or a stop string."""
    ids = prompt_ids(model, prompt_or_messages)
    params = sampling_params(model, **sampling)
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    dec = model.tokenizer.stream()
    text = ""
    emitted = 0
    for t in generate_tokens(model, ids, max_tokens, params):
        text += dec.put(t)
        if stops:
            hit = min((text.find(s) for s in stops if s in text), default=-1)
            if hit >= 0:
                if hit > emitted:
                    yield text[emitted:hit]
                return
            # hold back what could still become the start of a stop string
            keep = max(len(s) for s in stops) - 1
            safe = max(emitted, len(text) - keep)
        else:
            safe = len(text)
        if safe > emitted:
            yield text[emitted:safe]
            emitted = safe
    text += dec.flush()
    if len(text) > emitted:
        yield text[emitted:]
