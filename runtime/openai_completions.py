"""`POST /v1/completions`: plain-text prompts, streamed or not."""
from __future__ import annotations

import time

from .server import APIError, Choice, answering, merged, new_id, sse


def _prompts(srv, prompt) -> list:
    """A string, a list of strings, a list of token ids, or a list of those."""
    tok = srv.model.tokenizer
    if isinstance(prompt, str):
        return [tok.encode(prompt, add_special_tokens=True)]
    if not prompt:
        raise APIError(400, "prompt is empty", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        ids = [list(prompt)]
    elif all(isinstance(p, str) for p in prompt):
        ids = [tok.encode(p, add_special_tokens=True) for p in prompt]
    else:
        ids = [list(p) for p in prompt]
    for p in ids:
        if not p:
            raise APIError(400, "prompt is empty", param="prompt")
        if any(not 0 <= t < srv.model.vocab_size for t in p):
            raise APIError(400, "prompt holds a token id outside the vocabulary",
                           param="prompt")
    return ids


def _logprobs_block(choice, entries, offset: int) -> dict:
    """The legacy completions logprobs object for some tokens."""
    toks, lps, tops, offs = [], [], [], []
    for t, lp, top in entries:
        s = choice.token_text(t)
        toks.append(s)
        lps.append(lp)
        tops.append({choice.token_text(i): v for i, v in (top or [])})
        offs.append(offset)
        offset += len(s)
    return {"tokens": toks, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offs}


async def completions(srv, req, http):
    srv.check_model(req.model)
    if req.echo or req.suffix or (req.best_of not in (None, 1)):
        raise APIError(400, "echo, suffix and best_of are not supported", param="echo")
    prompts = _prompts(srv, req.prompt)
    rid, created = new_id("cmpl"), int(time.time())
    choices = []
    for p_i, ids in enumerate(prompts):
        max_tokens = srv.budget(len(ids), req.max_tokens if req.max_tokens is not None else 16)
        handles = srv.submit(ids, req, max_tokens, req.logprobs)
        choices += [(Choice(p_i * req.n + i, h, srv.model.tokenizer, req.stop,
                             req.logprobs is not None), len(ids))
                    for i, h in enumerate(handles)]
    n_prompt = sum(n for _, n in choices[::req.n])
    plain = [c for c, _ in choices]

    def chunk(choice, text, lp, finish=None):
        return {"id": rid, "object": "text_completion", "created": created,
                "model": srv.model_id,
                "choices": [{"index": choice.index, "text": text, "logprobs": lp,
                             "finish_reason": finish}]}

    if req.stream:
        async def gen(choice):
            offset = 0
            async for piece, lps in choice.pieces():
                lp = _logprobs_block(choice, lps, offset) if choice.want_logprobs else None
                offset += len(piece)
                yield chunk(choice, piece, lp)
            yield chunk(choice, "", None, choice.finish_reason)

        async def all_chunks():
            try:
                async for c in merged([gen(c) for c in plain]):
                    yield c
                if req.stream_options and req.stream_options.include_usage:
                    yield {"id": rid, "object": "text_completion", "created": created,
                           "model": srv.model_id, "choices": [],
                           "usage": srv.usage(plain, n_prompt)}
            finally:
                for c in plain:
                    c.handle.cancel()
                srv.log({"time": time.time(), "path": "/v1/completions", "id": rid,
                         "request": req.model_dump(exclude_none=True),
                         "usage": srv.usage(plain, n_prompt)})
        return sse(all_chunks())

    out = []
    async with answering(http, plain):
        for choice in plain:
            text, entries = await choice.collect()
            out.append({"index": choice.index, "text": text,
                        "logprobs": _logprobs_block(choice, entries, 0)
                        if choice.want_logprobs else None,
                        "finish_reason": choice.finish_reason})
    body = {"id": rid, "object": "text_completion", "created": created, "model": srv.model_id,
            "choices": out, "usage": srv.usage(plain, n_prompt)}
    srv.log({"time": time.time(), "path": "/v1/completions", "id": rid,
             "request": req.model_dump(exclude_none=True), "response": body})
    return body
