"""`ingot serve` through the official `openai` client, on a tiny model with 4 sequence slots.

The server runs in this process (uvicorn on a free loopback port, on a thread); a second,
independent `Model` of the same artefact gives the reference answers by the plain greedy loop
(prefill, then one decode per token), so the server's scheduling, batching, prefix reuse and
text handling are checked against the model itself.
"""
from __future__ import annotations

import concurrent.futures
import http.client
import json
import socket
import time

import numpy as np
import pytest

import ingot

openai = pytest.importorskip("openai")
uvicorn = pytest.importorskip("uvicorn")

SLOTS = 4
# The artefact (1024 context, 4 slots) is shared with test_serial.py and test_run_pty.py.
pytestmark = pytest.mark.xdist_group("llama")


@pytest.fixture(scope="module")
def served(artefacts, tmp_path_factory):
    from ingot.runtime.server import BackgroundServer, create_app
    art = artefacts("llama", max_seq_len=1024, max_batch=SLOTS)
    model = ingot.load(art, threads=1)
    engine = model.engine.start()
    log = tmp_path_factory.mktemp("serve") / "log.jsonl"
    srv = BackgroundServer(create_app(model, engine, "tiny", log_path=log))
    ref = ingot.load(art, threads=1)
    yield {"port": srv.port, "model": model, "engine": engine, "ref": ref, "log": log,
           "client": openai.OpenAI(base_url=srv.url, api_key="none", max_retries=0,
                                   timeout=120)}
    srv.close()
    model.close()
    ref.close()


def greedy(ref, ids, max_tokens):
    """The reference: the model's own greedy loop, no engine."""
    ref.reset()
    logits = ref.prefill(ids)
    out = []
    eos = ref.eos_ids()
    for _ in range(max_tokens):
        t = int(np.argmax(logits))
        if t in eos:
            break
        out.append(t)
        logits = ref.decode(t)
    return out


def chat_ids(ref, messages):
    text = ref.chat_template.render(messages, add_generation_prompt=True)
    return ref.tokenizer.encode(text, add_special_tokens=False)


def raw(port, method, path, body=None):
    """A plain HTTP request (bytes body as is), for what the openai client will not send."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    out = r.status, r.read().decode()
    conn.close()
    return out


def metrics(port) -> dict:
    status, text = raw(port, "GET", "/metrics")
    assert status == 200
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines()
            if line and not line.startswith("#")}


def settle(port, timeout=30):
    """Wait until the engine holds no request; return the metrics then."""
    deadline = time.time() + timeout
    while True:
        m = metrics(port)
        if m["ingot_running_requests"] == 0 and m["ingot_queue_depth"] == 0:
            return m
        assert time.time() < deadline, f"requests still held: {m}"
        time.sleep(0.05)


MSG = [{"role": "user", "content": "hello there"}]


def test_chat_matches_the_models_greedy_answer(served):
    c, ref = served["client"], served["ref"]
    ids = chat_ids(ref, MSG)
    want = greedy(ref, ids, 12)
    r = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=12, temperature=0)
    assert r.choices[0].message.content == ref.tokenizer.decode(want)
    assert r.usage.prompt_tokens == len(ids)
    assert r.usage.completion_tokens == len(want)
    assert r.usage.total_tokens == len(ids) + len(want)
    assert r.choices[0].finish_reason == ("length" if len(want) == 12 else "stop")
    assert r.object == "chat.completion" and r.model == "tiny"


def test_chat_streams_the_same_text_and_reports_usage(served):
    c, ref = served["client"], served["ref"]
    once = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=12, temperature=0)
    whole = once.choices[0].message.content
    chunks = list(c.chat.completions.create(model="tiny", messages=MSG, max_tokens=12,
                                            temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == whole
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] in ("stop", "length")
    usage = chunks[-1].usage
    assert not chunks[-1].choices and usage.prompt_tokens == len(chat_ids(ref, MSG))
    assert usage.completion_tokens == once.usage.completion_tokens


def test_completions_streamed_and_not(served):
    c, ref = served["client"], served["ref"]
    ids = ref.tokenizer.encode("The quick brown fox", add_special_tokens=True)
    want = ref.tokenizer.decode(greedy(ref, ids, 10))
    r = c.completions.create(model="tiny", prompt="The quick brown fox", max_tokens=10,
                             temperature=0)
    assert r.choices[0].text == want and r.usage.prompt_tokens == len(ids)
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model="tiny", prompt="The quick brown fox", max_tokens=10, temperature=0, stream=True)
        if ch.choices)
    assert streamed == want


def test_max_tokens_is_honoured(served):
    c = served["client"]
    for n in (1, 5):
        r = c.completions.create(model="tiny", prompt="count", max_tokens=n, temperature=0,
                                 logit_bias={"1": -100})  # no end token: the bound must stop it
        assert r.usage.completion_tokens == n and r.choices[0].finish_reason == "length"
    r = c.chat.completions.create(model="tiny", messages=MSG, max_completion_tokens=3,
                                  temperature=0, logit_bias={"1": -100})
    assert r.usage.completion_tokens == 3


def test_stop_sequences_end_the_text_before_them(served):
    c, ref = served["client"], served["ref"]
    ids = ref.tokenizer.encode("stop here", add_special_tokens=True)
    full = ref.tokenizer.decode(greedy(ref, ids, 24))
    stop = next(full[i:i + 2] for i in range(3, len(full) - 2) if full[i:i + 2].strip())
    cut = full[:full.index(stop)]
    for stops in (stop, [stop, "\u2603never"]):
        r = c.completions.create(model="tiny", prompt="stop here", max_tokens=24,
                                 temperature=0, stop=stops)
        assert r.choices[0].text == cut and r.choices[0].finish_reason == "stop"
        streamed = "".join(ch.choices[0].text for ch in c.completions.create(
            model="tiny", prompt="stop here", max_tokens=24, temperature=0, stop=stops,
            stream=True) if ch.choices)
        assert streamed == cut


def test_seed_makes_sampling_reproducible(served):
    c = served["client"]

    def sample(seed):
        return c.completions.create(model="tiny", prompt="once upon", max_tokens=16,
                                    temperature=1.0, top_p=0.95, seed=seed).choices[0].text
    a, b = sample(7), sample(7)
    assert a == b
    assert any(sample(s) != a for s in (8, 9, 10))


def test_logprobs_are_the_models_log_softmax(served):
    c, ref = served["client"], served["ref"]
    r = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=3, temperature=0,
                                  logprobs=True, top_logprobs=3)
    ids = chat_ids(ref, MSG)
    ref.reset()
    logits = ref.prefill(ids).astype(np.float64)
    lsm = logits - logits.max() - np.log(np.exp(logits - logits.max()).sum())
    first = r.choices[0].logprobs.content[0]
    assert abs(first.logprob - lsm.max()) < 1e-4  # greedy: the best token's log-probability
    assert [t.logprob for t in first.top_logprobs] == sorted(
        [t.logprob for t in first.top_logprobs], reverse=True)
    assert np.allclose([t.logprob for t in first.top_logprobs], np.sort(lsm)[::-1][:3],
                       atol=1e-4)


def test_n_choices_with_a_seed(served):
    c = served["client"]

    def ask():
        return c.completions.create(model="tiny", prompt="many", max_tokens=6, temperature=1.0,
                                    seed=3, n=3, logit_bias={"1": -100})
    r = ask()
    assert sorted(ch.index for ch in r.choices) == [0, 1, 2]
    assert all(ch.finish_reason == "length" for ch in r.choices)
    assert r.usage.completion_tokens == 18
    texts = [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]
    assert len(set(texts)) > 1  # each choice draws its own numbers
    assert texts == [ch.text for ch in sorted(ask().choices, key=lambda ch: ch.index)]


SCHEMA = {"type": "object", "properties": {
    "city": {"type": "string", "maxLength": 12},
    "days": {"type": "integer", "minimum": 1, "maximum": 7},
    "units": {"enum": ["metric", "imperial"]}},
    "required": ["city", "days", "units"], "additionalProperties": False}


def test_json_schema_output_parses_and_validates(served):
    jsonschema = pytest.importorskip("jsonschema")
    c = served["client"]
    for temperature in (0, 1.0):
        r = c.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "weather please"}],
            max_tokens=100, temperature=temperature, seed=1,
            response_format={"type": "json_schema",
                             "json_schema": {"name": "forecast", "schema": SCHEMA}})
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), SCHEMA)
    # Any object: the random model would fill a string to max_tokens, so a bias on "}" lets
    # it close; the grammar still decides where "}" may go.
    close = served["ref"].tokenizer.encode("}", add_special_tokens=False)[-1]
    r = c.chat.completions.create(model="tiny", messages=MSG, max_tokens=60, temperature=0,
                                  response_format={"type": "json_object"},
                                  logit_bias={str(close): 8})
    assert r.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(r.choices[0].message.content), dict)


TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10}},
                   "required": ["city"], "additionalProperties": False}}},
    {"type": "function", "function": {
        "name": "add", "parameters": {"type": "object", "properties": {
            "a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}]


@pytest.mark.parametrize("stream", [False, True])
def test_a_forced_tool_call_comes_back_as_tool_calls(served, stream):
    jsonschema = pytest.importorskip("jsonschema")
    c = served["client"]
    args = dict(model="tiny", messages=[{"role": "user", "content": "weather in Oslo?"}],
                tools=TOOLS, tool_choice={"type": "function", "function": {"name": "get_weather"}},
                max_tokens=80, temperature=0)
    if stream:
        chunks = list(c.chat.completions.create(stream=True, **args))
        calls = [tc for ch in chunks if ch.choices for tc in (ch.choices[0].delta.tool_calls or [])]
        finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1]
        name, arguments = calls[0].function.name, calls[0].function.arguments
    else:
        r = c.chat.completions.create(**args)
        finish = r.choices[0].finish_reason
        calls = r.choices[0].message.tool_calls
        name, arguments = calls[0].function.name, calls[0].function.arguments
    assert finish == "tool_calls" and len(calls) == 1
    assert name == "get_weather" and calls[0].id.startswith("call_")
    jsonschema.validate(json.loads(arguments), TOOLS[0]["function"]["parameters"])
    # The call goes back in the history with its result, as clients do.
    r = c.chat.completions.create(model="tiny", tools=TOOLS, max_tokens=5, temperature=0,
                                  messages=[args["messages"][0],
                                            {"role": "assistant", "content": None, "tool_calls": [
                                                {"id": calls[0].id, "type": "function",
                                                 "function": {"name": name,
                                                              "arguments": arguments}}]},
                                            {"role": "tool", "tool_call_id": calls[0].id,
                                             "content": "12 C, rain"}])
    assert r.choices[0].finish_reason in ("stop", "length", "tool_calls")


def test_bad_schema_and_tool_choice_are_400(served):
    port = served["port"]
    code, text = raw(port, "POST", "/v1/chat/completions", {
        "model": "tiny", "messages": MSG, "response_format": {
            "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}})
    assert code == 400 and json.loads(text)["error"]["message"]
    code, text = raw(port, "POST", "/v1/chat/completions", {
        "model": "tiny", "messages": MSG, "tools": TOOLS,
        "tool_choice": {"type": "function", "function": {"name": "nope"}}})
    assert code == 400 and "nope" in json.loads(text)["error"]["message"]


@pytest.mark.parametrize("body, status, needle", [
    (b"{this is not json", 400, "not valid JSON"),
    ({"model": "tiny", "messages": MSG, "temperature": "hot"}, 400, "temperature"),
    ({"model": "tiny", "messages": "hello"}, 400, "messages"),
    ({"model": "gpt-17", "messages": MSG}, 404, "gpt-17"),
    ({"model": "tiny", "messages": [{"role": "user", "content": "word " * 1200}]}, 400,
     "context length"),
    ({"model": "tiny", "messages": MSG, "max_tokens": -3}, 400, "max_tokens"),
    ({"model": "tiny", "messages": MSG, "logit_bias": {"99999": 1}}, 400, "logit_bias"),
    ({"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}, 400, "role"),
])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(served, body, status,
                                                                     needle):
    code, text = raw(served["port"], "POST", "/v1/chat/completions", body)
    assert code == status, text
    err = json.loads(text)["error"]
    assert needle.lower() in err["message"].lower() and err["type"]
    r = served["client"].completions.create(model="tiny", prompt="still there", max_tokens=2)
    assert r.usage.completion_tokens >= 1


def test_models_health_and_unknown_paths(served):
    port = served["port"]
    assert [m.id for m in served["client"].models.list()] == ["tiny"]
    status, text = raw(port, "GET", "/health")
    assert status == 200 and json.loads(text)["status"] == "ok"
    status, text = raw(port, "GET", "/v1/nothing-here")
    assert status == 404 and "error" in json.loads(text)


def test_a_full_queue_answers_503(served, monkeypatch):
    from ingot.runtime.engine import QueueFull

    def full(request):
        raise QueueFull("server busy: 4 running and 64 waiting requests")
    monkeypatch.setattr(served["engine"], "submit", full)
    status, text = raw(served["port"], "POST", "/v1/completions",
                       {"model": "tiny", "prompt": "x", "max_tokens": 2})
    assert status == 503 and "busy" in json.loads(text)["error"]["message"]


def test_a_client_that_leaves_mid_stream_frees_its_slot(served):
    port = served["port"]
    settle(port)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "tiny", "prompt": "go on", "max_tokens": 100, "temperature": 0,
            "logit_bias": {"1": -100}, "stream": True}
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    resp = conn.getresponse()
    assert resp.status == 200
    resp.fp.readline()  # the first event has arrived: the request holds a slot
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    m = settle(port)
    assert m["ingot_free_slots"] == SLOTS


def test_a_client_that_leaves_a_plain_request_frees_its_slot(served, monkeypatch):
    port, model = served["port"], served["model"]
    settle(port)
    step = model.decode_batch

    def slow_step(*a):  # the tiny model would finish 900 tokens before anyone noticed
        time.sleep(0.02)
        return step(*a)
    monkeypatch.setattr(model, "decode_batch", slow_step)
    before = metrics(port)["ingot_finished_total{reason=\"cancelled\"}"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "tiny", "prompt": "go on", "max_tokens": 900, "temperature": 0,
            "logit_bias": {"1": -100}}
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    deadline = time.time() + 30
    while metrics(port)["ingot_running_requests"] == 0:
        assert time.time() < deadline
        time.sleep(0.01)
    conn.sock.shutdown(socket.SHUT_RDWR)
    conn.close()
    m = settle(port)
    assert m["ingot_free_slots"] == SLOTS
    assert m["ingot_finished_total{reason=\"cancelled\"}"] == before + 1


def test_concurrent_streams_equal_the_same_requests_alone(served):
    """8 clients x 5 streamed greedy requests over 4 slots: everything completes, each answer
    equals the same request run alone, and no slot is left held."""
    c, port = served["client"], served["port"]
    prompts = [f"request {i} of client {k}" for k in range(8) for i in range(5)]
    alone = {p: c.completions.create(model="tiny", prompt=p, max_tokens=10,
                                     temperature=0).choices[0].text for p in prompts}
    before = metrics(port)

    def client(k):
        out = {}
        for i in range(5):
            p = f"request {i} of client {k}"
            out[p] = "".join(ch.choices[0].text for ch in c.completions.create(
                model="tiny", prompt=p, max_tokens=10, temperature=0, stream=True)
                if ch.choices)
        return out

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = {}
        for part in pool.map(client, range(8)):
            results.update(part)
    assert results == alone
    after = settle(port)
    assert after["ingot_free_slots"] == SLOTS
    assert after["ingot_requests_total"] - before["ingot_requests_total"] == 40
    # Sequences shared decode steps: fewer steps than sequence-tokens.
    rows = after["ingot_decode_rows_total"] - before["ingot_decode_rows_total"]
    steps = after["ingot_decode_steps_total"] - before["ingot_decode_steps_total"]
    assert rows > steps


def test_requests_are_logged(served):
    served["client"].completions.create(model="tiny", prompt="log me", max_tokens=2)
    lines = [json.loads(x) for x in served["log"].read_text().splitlines()]
    assert any(rec.get("request", {}).get("prompt") == "log me" for rec in lines)


def test_ingot_serve_command(artefacts, tmp_path):
    """The console command: serve an artefact with mistral.rs' flags, answer, log, stop."""
    import signal
    import subprocess
    import sys
    art = artefacts("llama", max_seq_len=1024, max_batch=SLOTS)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "output.txt"
    proc = subprocess.Popen([sys.executable, "-m", "ingot.cli", "serve", str(art), "-p",
                             str(port), "--log", str(log), "--threads", "1"],
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read()
            try:
                if raw(port, "GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert time.time() < deadline, "ingot serve did not come up"
            time.sleep(0.2)
        status, text = raw(port, "POST", "/v1/completions",
                           {"model": art.stem, "prompt": "hi", "max_tokens": 3})
        assert status == 200 and json.loads(text)["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert '"prompt": "hi"' in log.read_text()
