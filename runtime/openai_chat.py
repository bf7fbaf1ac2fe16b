"""`POST /v1/chat/completions`: messages through the chat template, streamed or not; JSON
output constrained by a grammar; tool calls in the model family's format, parsed back."""
from __future__ import annotations

import json
import time

from ..errors import IngotError
from .server import APIError, Choice, answering, merged, new_id, sse


def _template_messages(req) -> list:
    """OpenAI messages as chat templates expect them (text content, dict tool arguments)."""
    out = []
    for m in req.messages:
        try:
            text = m.text()
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from None
        msg = {"role": "system" if m.role == "developer" else m.role, "content": text}
        if m.tool_calls:
            calls = []
            for c in m.tool_calls:
                fn = dict((c or {}).get("function") or {})
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        fn["arguments"] = json.loads(args)
                    except ValueError:
                        pass
                calls.append({**c, "function": fn})
            msg["tool_calls"] = calls
        if m.tool_call_id:
            msg["tool_call_id"] = m.tool_call_id
        if m.name:
            msg["name"] = m.name
        out.append(msg)
    return out


def _tool_choice(req):
    """'none' | 'auto' | 'required' | a function name (forced)."""
    tc = req.tool_choice
    if not req.tools:
        if tc not in (None, "none"):
            raise APIError(400, "tool_choice needs tools", param="tool_choice")
        return "none"
    if tc is None:
        return "auto"
    if isinstance(tc, str):
        return tc
    name = (tc.function or {}).get("name")
    if name not in {t.function.name for t in req.tools}:
        raise APIError(400, f"tool_choice names an unknown function '{name}'",
                       param="tool_choice")
    return name


def _prompt(srv, req, tools, choice) -> list:
    model = srv.model
    try:
        messages = _template_messages(req)
        if tools and choice != "none":
            from .tools import render_with_tools
            forced = None if choice == "auto" else "required" if choice == "required" else \
                {"type": "function", "function": {"name": choice}}
            text = render_with_tools(model, messages, tools, forced)
        else:
            text = model.chat_template.render(messages, add_generation_prompt=True)
    except IngotError as e:
        raise APIError(400, str(e), param="messages") from None
    return model.tokenizer.encode(text, add_special_tokens=False)


def _constraint_factory(srv, req, tools, choice):
    """A fresh grammar matcher per choice, or None."""
    from . import constrain
    model = srv.model
    eos = sorted(model.eos_ids())
    try:
        if tools and choice not in ("none", "auto"):
            from .tools import tool_format
            fmt = tool_format(model.plan.get("family"))
            want = None if choice == "required" else choice
            constrain.tool_call_constraint(model.tokenizer, fmt, tools, want, eos)  # validate
            return lambda: constrain.tool_call_constraint(model.tokenizer, fmt, tools, want,
                                                          eos)
        rf = req.response_format
        if rf is None or rf.type == "text":
            return None
        if rf.type == "json_object":
            constrain.json_object_constraint(model.tokenizer, eos)
            return lambda: constrain.json_object_constraint(model.tokenizer, eos)
        if rf.json_schema is None:
            raise APIError(400, "response_format json_schema needs a json_schema object",
                           param="response_format")
        schema = rf.json_schema.schema_
        constrain.json_schema_constraint(model.tokenizer, schema, eos)
        return lambda: constrain.json_schema_constraint(model.tokenizer, schema, eos)
    except IngotError as e:
        raise APIError(400, str(e), param="response_format") from None


def _lp_entry(choice, t, lp, top) -> dict:
    s = choice.token_text(t)
    return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8")),
            "top_logprobs": [{"token": choice.token_text(i), "logprob": v,
                              "bytes": list(choice.token_text(i).encode("utf-8"))}
                             for i, v in (top or [])]}


def _tool_calls(srv, text: str, tools):
    from .tools import parse_tool_calls, tool_format
    fmt = tool_format(srv.model.plan.get("family"))
    content, calls = parse_tool_calls(text, fmt)
    names = {t["function"]["name"] for t in tools}
    calls = [c for c in calls if c["function"]["name"] in names]
    return content, calls


async def chat_completions(srv, req, http):
    srv.check_model(req.model)
    tools = [t.model_dump(exclude_none=True) for t in req.tools] if req.tools else None
    choice_mode = _tool_choice(req)
    ids = _prompt(srv, req, tools, choice_mode)
    max_tokens = req.max_completion_tokens if req.max_completion_tokens is not None \
        else req.max_tokens
    max_tokens = srv.budget(len(ids), max_tokens)
    top = (req.top_logprobs or 0) if req.logprobs else None
    handles = srv.submit(ids, req, max_tokens, top,
                         _constraint_factory(srv, req, tools, choice_mode))
    use_tools = tools is not None and choice_mode != "none"
    choices = [Choice(i, h, srv.model.tokenizer, req.stop, req.logprobs, keep_special=use_tools)
               for i, h in enumerate(handles)]
    rid, created = new_id("chatcmpl"), int(time.time())

    def chunk(index, delta, lp=None, finish=None):
        return {"id": rid, "object": "chat.completion.chunk", "created": created,
                "model": srv.model_id,
                "choices": [{"index": index, "delta": delta, "logprobs": lp,
                             "finish_reason": finish}]}

    def log(extra):
        srv.log({"time": time.time(), "path": "/v1/chat/completions", "id": rid,
                 "request": req.model_dump(exclude_none=True, by_alias=True), **extra})

    if req.stream:
        async def gen(c):
            yield chunk(c.index, {"role": "assistant", "content": ""})
            held = []  # with tools the answer may be a call: sent whole at the end
            async for piece, lps in c.pieces():
                lp = {"content": [_lp_entry(c, *e) for e in lps]} if c.want_logprobs else None
                if use_tools:
                    held.append(piece)
                    if lp:
                        yield chunk(c.index, {}, lp)
                else:
                    yield chunk(c.index, {"content": piece}, lp)
            finish = c.finish_reason
            if use_tools:
                content, calls = _tool_calls(srv, "".join(held), tools)
                if calls:
                    finish = "tool_calls"
                    yield chunk(c.index, {"tool_calls": [{**call, "index": k} for k, call
                                                         in enumerate(calls)]})
                elif content:
                    yield chunk(c.index, {"content": content})
            yield chunk(c.index, {}, None, finish)

        async def all_chunks():
            try:
                async for ch in merged([gen(c) for c in choices]):
                    yield ch
                if req.stream_options and req.stream_options.include_usage:
                    yield {"id": rid, "object": "chat.completion.chunk", "created": created,
                           "model": srv.model_id, "choices": [],
                           "usage": srv.usage(choices, len(ids))}
            finally:
                for c in choices:
                    c.handle.cancel()
                log({"usage": srv.usage(choices, len(ids))})
        return sse(all_chunks())

    out = []
    async with answering(http, choices):
        for c in choices:
            text, entries = await c.collect()
            message = {"role": "assistant", "content": text}
            finish = c.finish_reason
            if use_tools:
                content, calls = _tool_calls(srv, text, tools)
                if calls:
                    message = {"role": "assistant", "content": content or None,
                               "tool_calls": calls}
                    finish = "tool_calls"
            out.append({"index": c.index, "message": message,
                        "logprobs": {"content": [_lp_entry(c, *e) for e in entries]}
                        if c.want_logprobs else None,
                        "finish_reason": finish})
    body = {"id": rid, "object": "chat.completion", "created": created, "model": srv.model_id,
            "choices": out, "usage": srv.usage(choices, len(ids))}
    log({"response": body})
    return body
