"""`ingot serve`: an OpenAI-compatible HTTP API over one model and its engine.

FastAPI (ASGI, pydantic validation) serves `/v1/chat/completions`, `/v1/completions` (both
streamed as server-sent events or not), `/v1/models`, `/health` and `/metrics`. Every request
becomes one engine request per choice; the engine batches the decode steps of all of them. Bad
requests get an OpenAI-style JSON error with a 4xx status and the server keeps serving.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
import time
import uuid

from fastapi import FastAPI, Request as HTTPRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import IngotError
from .engine import QueueFull
from .generate import request_for
from .metrics import render_metrics
from .openai_schema import ChatRequest, CompletionRequest, error_body
from .textstream import TextStream


class APIError(Exception):
    def __init__(self, status: int, message: str, param=None, code=None,
                 kind="invalid_request_error"):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = \
            status, message, param, code, kind


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


async def _events(handle):
    """The handle's TokenEvents, awaited without blocking the event loop."""
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    handle.notify = lambda: loop.call_soon_threadsafe(ready.set)
    while True:
        try:
            ev = handle.events.get_nowait()
        except queue.Empty:
            await ready.wait()
            ready.clear()
            continue
        if ev is None:
            return
        yield ev


class Choice:
    """One generated choice: text pieces (stop strings applied) and logprob entries."""

    def __init__(self, index: int, handle, tokenizer, stops, logprobs: bool,
                 keep_special=False):
        self.index, self.handle, self.tok = index, handle, tokenizer
        # Tool-call markers may be special tokens ([TOOL_CALLS]): kept when tools may answer.
        self.text = TextStream(tokenizer, stops, skip_special_tokens=not keep_special)
        self.want_logprobs = logprobs
        self.finish_reason = None

    def token_text(self, t: int) -> str:
        return self.tok.decode([t], skip_special_tokens=False)

    async def pieces(self):
        """Yields (text piece, [(token id, logprob, top)]) as tokens arrive."""
        try:
            async for ev in _events(self.handle):
                piece = self.text.put(ev.token)
                lps = [(ev.token, ev.logprob, ev.top)] if self.want_logprobs else []
                if piece or lps:
                    yield piece, lps
                if self.text.stopped is not None:
                    self.handle.cancel()
                    self.finish_reason = "stop"
                    break
            rest = self.text.finish()
            if rest:
                yield rest, []
        finally:
            self.handle.cancel()  # a client that went away frees the slot at once
        if self.handle.error:
            raise APIError(500, f"generation failed: {self.handle.error}", kind="server_error")
        if self.finish_reason is None:
            self.finish_reason = "length" if self.handle.finish_reason == "length" else "stop"

    async def collect(self) -> tuple:
        """The whole answer of a non-streamed request: (text, logprob entries)."""
        text, entries = [], []
        async for piece, lps in self.pieces():
            text.append(piece)
            entries += lps
        return "".join(text), entries


class _StatusCounter:
    """Counts responses by status for /metrics. Plain ASGI (a BaseHTTPMiddleware would wrap
    `receive` and hide a client's disconnect from the handlers)."""

    def __init__(self, app, counts: dict):
        self.app, self.counts = app, counts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting_send(message):
            if message["type"] == "http.response.start":
                status = message["status"]
                self.counts[status] = self.counts.get(status, 0) + 1
            await send(message)
        await self.app(scope, receive, counting_send)


class Server:
    def __init__(self, model, engine, model_id: str, log_path=None):
        self.model, self.engine, self.model_id = model, engine, model_id
        self.created = int(time.time())
        self.http_counts: dict = {}
        self._log_lock = threading.Lock()
        self._log = open(log_path, "a", encoding="utf-8") if log_path else None

    # -- shared pieces -----------------------------------------------------------------------
    def log(self, record: dict) -> None:
        if self._log is not None:
            with self._log_lock:
                self._log.write(json.dumps(record, ensure_ascii=False) + "\n")
                self._log.flush()

    def check_model(self, name: str) -> None:
        if name not in (self.model_id, "default"):
            raise APIError(404, f"The model '{name}' does not exist; this server serves "
                           f"'{self.model_id}'", param="model", code="model_not_found")

    def budget(self, n_prompt: int, max_tokens) -> int:
        """max_tokens for the engine. Without context shift the context bounds the answer;
        with it (`ingot serve --context-shift`) an unset max_tokens means one context's worth."""
        ctx = self.model.max_seq_len
        shift = self.engine.context_shift
        if n_prompt >= ctx and not shift:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens; the "
                           f"prompt has {n_prompt}", param="messages",
                           code="context_length_exceeded")
        if max_tokens is not None and max_tokens < 0:
            raise APIError(400, f"max_tokens must be at least 0, got {max_tokens}",
                           param="max_tokens")
        room = ctx if shift else ctx - n_prompt
        if max_tokens is None:
            return room
        return int(max_tokens) if shift else min(int(max_tokens), room)

    def sampling(self, req, index: int) -> dict:
        bias = None
        if req.logit_bias:
            try:
                bias = {int(k): float(v) for k, v in req.logit_bias.items()}
            except ValueError:
                raise APIError(400, "logit_bias keys must be token ids", param="logit_bias")
            if any(not 0 <= k < self.model.vocab_size for k in bias):
                raise APIError(400, "logit_bias names a token outside the vocabulary",
                               param="logit_bias")
        return dict(temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                    min_p=req.min_p, presence_penalty=req.presence_penalty,
                    frequency_penalty=req.frequency_penalty,
                    repetition_penalty=req.repetition_penalty,
                    seed=None if req.seed is None else req.seed + index, logit_bias=bias)

    def submit(self, ids, req, max_tokens, top_logprobs, constraint_for=None) -> list:
        """One engine request per choice; all or none (a full queue refuses the lot)."""
        handles = []
        try:
            for i in range(req.n):
                r = request_for(self.model, ids, max_tokens=max_tokens,
                                **self.sampling(req, i))
                r.penalize_prompt = False  # OpenAI's penalties look at the answer only
                r.top_logprobs = top_logprobs
                if constraint_for is not None:
                    r.constraint = constraint_for()
                handles.append(self.engine.submit(r))
        except QueueFull as e:
            for h in handles:
                h.cancel()
            raise APIError(503, str(e), kind="server_overloaded", code="queue_full") from None
        except IngotError as e:
            for h in handles:
                h.cancel()
            raise APIError(400, str(e)) from None
        return handles

    @staticmethod
    def usage(choices, n_prompt: int) -> dict:
        done = sum(c.handle.completion_tokens for c in choices)
        cached = max((c.handle.cached_tokens for c in choices), default=0)
        return {"prompt_tokens": n_prompt, "completion_tokens": done,
                "total_tokens": n_prompt + done,
                "prompt_tokens_details": {"cached_tokens": cached}}


def create_app(model, engine, model_id: str, log_path=None) -> FastAPI:
    from .openai_chat import chat_completions
    from .openai_completions import completions

    srv = Server(model, engine, model_id, log_path)
    app = FastAPI(title="Ingot", version="1", docs_url=None, redoc_url=None)
    app.state.server = srv

    def error(status, message, **kw):
        return JSONResponse(error_body(message, **kw), status_code=status)

    @app.exception_handler(APIError)
    async def _api_error(request, exc: APIError):
        srv.log({"time": time.time(), "path": request.url.path, "status": exc.status,
                 "error": exc.message})
        return error(exc.status, exc.message, kind=exc.kind, param=exc.param, code=exc.code)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        errs = exc.errors()
        first = errs[0] if errs else {}
        loc = [str(x) for x in first.get("loc", ()) if x != "body"]
        if first.get("type") == "json_invalid":
            msg, loc = "the request body is not valid JSON", []
        else:
            msg = f"{'.'.join(loc) or 'body'}: {first.get('msg', 'invalid value')}"
        return error(400, msg, param=".".join(loc) or None)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # a bug: say so in JSON, keep serving
        srv.log({"time": time.time(), "path": request.url.path, "status": 500,
                 "error": f"{type(exc).__name__}: {exc}"})
        return error(500, f"internal error: {type(exc).__name__}: {exc}", kind="server_error")

    app.add_middleware(_StatusCounter, counts=srv.http_counts)

    @app.get("/health")
    async def health():
        return {"status": "ok", "model": srv.model_id}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": srv.model_id, "object": "model",
                                            "created": srv.created, "owned_by": "ingot"}]}

    @app.get("/metrics")
    async def metrics():
        return PlainTextResponse(render_metrics(srv.engine, srv.http_counts),
                                 media_type="text/plain; version=0.0.4")

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, http: HTTPRequest):
        return await chat_completions(srv, req, http)

    @app.post("/v1/completions")
    async def complete(req: CompletionRequest, http: HTTPRequest):
        return await completions(srv, req, http)

    return app


async def watch_disconnect(http, choices, every: float = 0.25) -> None:
    """Cancel the choices' requests when the client of a non-streamed request goes away
    (streamed responses are cancelled by the ASGI server itself)."""
    while True:
        await asyncio.sleep(every)
        if await http.is_disconnected():
            for c in choices:
                c.handle.cancel()
            return


class BackgroundServer:
    """uvicorn serving `app` on a thread (loopback, a free port unless given): for tests,
    benchmarks and embedding the API in another program. `close()` stops it."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0, timeout: float = 60):
        import socket

        import uvicorn
        if port == 0:
            with socket.socket() as s:
                s.bind((host, 0))
                port = s.getsockname()[1]
        self.host, self.port = host, port
        self._srv = uvicorn.Server(uvicorn.Config(app, host=host, port=port,
                                                  log_level="warning"))
        self._thread = threading.Thread(target=self._srv.run, daemon=True, name="ingot-http")
        self._thread.start()
        deadline = time.time() + timeout
        while not self._srv.started:
            if time.time() > deadline or not self._thread.is_alive():
                raise IngotError(f"the HTTP server did not start on {host}:{port}")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def close(self) -> None:
        self._srv.should_exit = True
        self._thread.join(timeout=30)


@contextlib.asynccontextmanager
async def answering(http, choices):
    """Around a non-streamed answer: its requests end with it, or when the client leaves."""
    watcher = asyncio.create_task(watch_disconnect(http, choices))
    try:
        yield
    finally:
        watcher.cancel()
        for c in choices:
            c.handle.cancel()


def sse(chunks):
    """Server-sent events from an async iterator of JSON-able chunks, ending with [DONE]."""
    async def body():
        async for c in chunks:
            yield f"data: {json.dumps(c, ensure_ascii=False)}\n\n"
        yield "data: [DONE]\n\n"
    return StreamingResponse(body(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache"})


async def merged(gens):
    """Items of several async generators as they come (n > 1 choices stream together)."""
    q: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(g):
        try:
            async for item in g:
                await q.put(item)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer
            await q.put(e)
        finally:
            await q.put(done)

    tasks = [asyncio.create_task(pump(g)) for g in gens]
    try:
        left = len(tasks)
        while left:
            item = await q.get()
            if item is done:
                left -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield item
    finally:
        for t in tasks:
            t.cancel()
