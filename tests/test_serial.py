"""The serial line (runtime/serial_line.py) over a pseudo-terminal: serve_serial opens the slave
end as it would a UART, the test plays the appliance's peer on the master end.

Every wait has a timeout, so a broken server fails a test instead of hanging the suite.
"""
from __future__ import annotations

import contextlib
import json
import os
import select
import threading
import time
import tty
import types

import pytest

import ingot
from ingot.runtime.engine import Engine
from ingot.runtime.generate import prompt_ids
from ingot.runtime.serial_line import serve_serial

pytestmark = [pytest.mark.xdist_group("llama"),
              # a traceback on any thread (the server's, a request's) fails the test
              pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")]

CTX = 1024            # room for long answers (the tiny model ends its greedy one near 280 tokens)
BATCH = 4             # sequence slots (as test_server.py: one compile for both)
MAX_LINE = 4096       # the server's line limit in these tests
WAIT = 60.0           # seconds: generous, for a loaded 2-core CI machine
CHAT = [{"role": "user", "content": "hi there"}]


@pytest.fixture(scope="module")
def model(artefacts):
    m = ingot.load(artefacts("llama", max_seq_len=CTX, max_batch=BATCH), threads=1)
    assert m.max_batch == BATCH
    # The reference answers, through the model's own engine before any other engine touches
    # the sequence slots (an engine reuses what it believes a slot's cache holds).
    full = m.generate("hello", max_tokens=40, temperature=0)
    stop = full[len(full) // 2:len(full) // 2 + 2]
    m.expected = {
        "hello5": m.generate("hello", max_tokens=5, temperature=0),
        "hello40": full,
        "chat40": m.generate(CHAT, max_tokens=40, temperature=0),
        "stop": stop,
        "hello_stop": m.generate("hello", max_tokens=40, temperature=0, stop=[stop]),
    }
    assert full and m.expected["hello_stop"] == full[:full.index(stop)]
    yield m
    m.close()


class Peer:
    """The master end of the pty: send JSON lines, read event lines (with timeouts)."""

    def __init__(self, fd: int):
        self.fd, self.buf, self.closed = fd, b"", False

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        end = time.monotonic() + WAIT
        while view:
            _, w, _ = select.select([], [self.fd], [], max(0.0, end - time.monotonic()))
            assert w, "the server stopped reading"
            view = view[os.write(self.fd, view):]

    def send(self, obj) -> None:
        self.write(json.dumps(obj).encode() + b"\n")

    def event(self, timeout: float = WAIT) -> dict:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            r, _, _ = select.select([self.fd], [], [], max(0.0, left))
            assert r, f"no event within {timeout} s (have {self.buf[:200]!r})"
            self.buf += os.read(self.fd, 65536)
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def until(self, pred, timeout: float = WAIT) -> list:
        """Events up to and including the first one `pred` accepts."""
        end, out = time.monotonic() + timeout, []
        while True:
            out.append(self.event(max(0.0, end - time.monotonic())))
            if pred(out[-1]):
                return out

    def finish(self, rid, timeout: float = WAIT) -> list:
        """The events of request `rid` up to its done (or error) event."""
        evs = self.until(lambda e: e.get("id") == rid and e["event"] in ("done", "error"),
                         timeout)
        return [e for e in evs if e.get("id") == rid]

    def ping(self) -> list:
        """Everything up to the answer of a ping: the server is alive and caught up."""
        self.send({"ping": True, "id": "ping"})
        return self.until(lambda e: e == {"id": "ping", "event": "pong"})[:-1]

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self.fd)


@contextlib.contextmanager
def serving(model, log_path=None):
    """serve_serial on the slave end of a fresh pty, on a thread, with its own started engine;
    its log goes to a function (which also says when the port is open) or to `log_path`."""
    master, slave = os.openpty()
    tty.setraw(slave)   # no newline translation or echo (pyserial sets raw mode as well)
    engine = Engine(model).start()
    stop, ready, logs, result = threading.Event(), threading.Event(), [], {}

    def log(text):
        logs.append(text)
        if "serving" in text:
            ready.set()

    def serve():
        try:
            result["reason"] = serve_serial(model, os.ttyname(slave), engine=engine,
                                            max_line=MAX_LINE, log=log_path or log,
                                            stop_event=stop)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            result["error"] = e
            ready.set()

    thread = threading.Thread(target=serve, name="test-serve-serial", daemon=True)
    thread.start()
    peer = Peer(master)
    try:
        end = time.monotonic() + WAIT
        while log_path and not ready.is_set() and time.monotonic() < end:
            if os.path.exists(log_path) and '"serving"' in open(log_path).read():
                ready.set()
            time.sleep(0.02)
        assert ready.wait(max(0.0, end - time.monotonic())), "serve_serial did not open the port"
        assert "error" not in result, result
        assert peer.ping() == []
        yield types.SimpleNamespace(peer=peer, engine=engine, thread=thread, result=result,
                                    logs=logs, stop=stop)
    finally:
        stop.set()
        thread.join(WAIT)
        engine.stop()
        peer.close()
        os.close(slave)
    assert not thread.is_alive(), "serve_serial did not return"
    assert "error" not in result, result


@pytest.fixture
def line(model):
    with serving(model) as ns:
        yield ns


@pytest.fixture
def slow(model, monkeypatch):
    """30 ms per decode step: a stream lasts seconds, long enough to cancel or unplug in."""
    fast = model.decode_batch

    def decode_batch(*args):
        time.sleep(0.03)
        return fast(*args)
    monkeypatch.setattr(model, "decode_batch", decode_batch)


def text_of(events) -> str:
    return "".join(e["text"] for e in events if e["event"] == "token")


def test_requests_stream_the_api_answer(line, model):
    peer, exp = line.peer, model.expected
    peer.send({"id": 1, "prompt": "hello", "max_tokens": 5, "temperature": 0})
    evs = peer.finish(1)
    tokens, done = evs[:-1], evs[-1]
    assert all(e["event"] == "token" and isinstance(e["token"], int) for e in tokens)
    assert len(tokens) == 5 and text_of(tokens) == exp["hello5"]
    assert done == {"id": 1, "event": "done", "finish_reason": "length",
                    "usage": {"prompt_tokens": len(prompt_ids(model, "hello")),
                              "completion_tokens": 5}}
    assert model.tokenizer.decode([e["token"] for e in tokens]) == exp["hello5"]

    # Two at once (string and numeric ids), chat messages, a stop string: each its own answer.
    peer.send({"id": "chat", "messages": CHAT, "max_tokens": 40, "temperature": 0})
    peer.send({"id": 2.5, "prompt": "hello", "max_tokens": 40, "temperature": 0,
               "stop": [exp["stop"]]})
    evs, ended = [], set()
    while ended != {"chat", 2.5}:
        evs.append(peer.event())
        if evs[-1]["event"] in ("done", "error"):
            ended.add(evs[-1]["id"])
    chat = [e for e in evs if e["id"] == "chat"]
    stopped = [e for e in evs if e["id"] == 2.5]
    assert text_of(chat) == exp["chat40"] and chat[-1]["event"] == "done"
    assert text_of(stopped) == exp["hello_stop"] and stopped[-1]["finish_reason"] == "stop"
    assert not [e for e in evs if e["event"] == "error"]


def test_garbage_partial_and_oversized_lines(line, model):
    peer = line.peer
    # Not UTF-8, not JSON, not an object, NUL bytes: one error each, with no id to tell.
    peer.write(b"\xff\xfe\x80garbage\xc3\n{not json\n[1, 2]\n\x00\x00\x00\n\n\r\n")
    errs = peer.ping()
    assert [e["event"] for e in errs] == ["error"] * 4 and all(e["id"] is None for e in errs)
    assert "UTF-8" in errs[0]["message"] and "JSON" in errs[1]["message"]
    assert "object" in errs[2]["message"]
    assert all("\n" not in e["message"] for e in errs)

    # A line completed by a second write, well after the first one's read timed out.
    peer.write(b'{"id": "p", "prom')
    time.sleep(0.6)
    peer.write(b'pt": "hello", "max_tokens": 5, "temperature": 0}\n')
    evs = peer.finish("p")
    assert text_of(evs) == model.expected["hello5"] and evs[-1]["event"] == "done"

    # Oversized, trickled in without a newline, then in one piece with it: one error each, and
    # the line after each one is served.
    big = b'{"id": 9, "prompt": "' + b"a" * (3 * MAX_LINE) + b'"}'
    for i in range(0, len(big), 700):
        peer.write(big[i:i + 700])
        time.sleep(0.05)
    peer.write(b'\n{"ping": true, "id": 1}\n' + big + b'\n{"ping": true, "id": 2}\n')
    evs = peer.until(lambda e: e.get("id") == 2 and e["event"] == "pong")
    assert [e["event"] for e in evs] == ["error", "pong", "error", "pong"]
    assert all(e["id"] is None and "longer than" in e["message"] for e in evs[::2])
    # A maximal line still fits.
    pad = MAX_LINE - len(b'{"ping": true, "id": ""}')
    peer.write(b'{"ping": true, "id": "' + b"x" * pad + b'"}\n')
    assert peer.event() == {"id": "x" * pad, "event": "pong"}


@pytest.mark.parametrize("msg, words", [
    ({"id": 5, "prompt": 3}, "prompt must be a string"),
    ({"id": 6, "prompt": "x", "max_tokens": "ten"}, "max_tokens"),
    ({"id": 7, "prompt": "x", "bogus": 1}, "unknown field 'bogus'"),
    ({"id": 8, "prompt": "x", "temperature": True}, "temperature"),
    ({"id": 10, "prompt": "x", "seed": -1}, "seed"),
    ({"id": 11, "prompt": "x", "stop": [1]}, "stop"),
    ({"id": 12, "prompt": "x", "messages": CHAT}, "exactly one"),
    ({"id": 13, "messages": [{"role": "user"}]}, "messages"),
    ({"id": 14, "prompt": "x", "top_p": 0}, "sampling"),   # refused by the engine
    ({"id": 15, "prompt": "x" * 1500}, "context"),         # longer than the compiled context
    ({"id": 16}, "exactly one"),
    ({"id": [1], "prompt": "x"}, "id must be"),
    ({"prompt": "x"}, "needs an id"),
    ({"id": 17, "cancel": True}, "no running request"),
    ({"id": 18, "cancel": 1}, "cancel must be true"),
    ({"ping": "yes"}, "ping must be true"),
])
def test_bad_requests_get_one_error_each(line, msg, words):
    line.peer.send(msg)
    # Some are refused by the line's reader, some by the request's thread: wait for the error.
    evs = line.peer.until(lambda e: e["event"] != "pong")
    assert evs[-1]["event"] == "error" and line.peer.ping() == [], evs
    evs = evs[-1:]
    rid = msg.get("id")
    assert evs[0]["id"] == (rid if not isinstance(rid, list) else None)
    assert words in evs[0]["message"], evs[0]


def test_cancel_stops_a_running_request(line, model, slow):
    peer = line.peer
    peer.send({"id": "long", "prompt": "hello", "max_tokens": 900, "temperature": 0})
    first = peer.event()
    assert first["id"] == "long" and first["event"] == "token"
    peer.send({"id": "long", "cancel": True})
    evs = [first] + peer.finish("long")
    assert evs[-1]["event"] == "done" and evs[-1]["finish_reason"] == "cancelled"
    assert evs[-1]["usage"]["completion_tokens"] == len(evs) - 1 < 200
    assert peer.ping() == []   # nothing more for "long" after its done
    end = time.monotonic() + WAIT
    while line.engine.running and time.monotonic() < end:
        time.sleep(0.01)
    assert line.engine.free_slots == model.max_batch and line.engine.running == 0
    # The id is free again, and the server still answers.
    peer.send({"id": "long", "prompt": "hello", "max_tokens": 5, "temperature": 0})
    assert peer.finish("long")[-1]["finish_reason"] == "length"


def test_peer_vanishing_mid_stream_frees_the_slots(line, model, slow):
    peer = line.peer
    slots = model.max_batch
    for i in range(1, slots + 1):  # every slot streaming, and one more request waiting
        peer.send({"id": i, "messages": CHAT, "max_tokens": 900, "temperature": 0} if i == 2
                  else {"id": i, "prompt": f"hello {i}", "max_tokens": 900, "temperature": 0})
    peer.send({"id": "queued", "prompt": "queued", "max_tokens": 900, "temperature": 0})
    seen = set()
    while seen != set(range(1, slots + 1)):
        ev = peer.event()
        assert ev["event"] == "token" and ev["id"] in range(1, slots + 1), ev
        seen.add(ev["id"])
    assert line.engine.running == slots and line.engine.queued == 1
    peer.close()   # the cable is pulled: the slave's reads and writes fail with EIO
    t0 = time.monotonic()
    line.thread.join(WAIT)
    assert not line.thread.is_alive(), "serve_serial did not notice the peer leaving"
    assert time.monotonic() - t0 < 20   # promptly: nothing waited out a timeout
    assert line.result == {"reason": "disconnected"}
    assert line.engine.free_slots == model.max_batch
    assert line.engine.running == 0 and line.engine.queued == 0
    assert any("peer gone" in s for s in line.logs)
    assert not any("unexpected" in s or s.startswith("serial: request") for s in line.logs)


def test_stop_event_cancels_and_still_reports(line, slow):
    peer = line.peer
    peer.send({"id": "s", "prompt": "hello", "max_tokens": 900, "temperature": 0})
    assert peer.event()["event"] == "token"
    line.stop.set()
    evs = peer.finish("s")
    assert evs[-1]["event"] == "done" and evs[-1]["finish_reason"] == "cancelled"
    line.thread.join(WAIT)
    assert line.result == {"reason": "stopped"}
    assert line.engine.free_slots == line.engine.model.max_batch and line.engine.running == 0


def test_log_file_records_requests_and_connection(model, tmp_path):
    path = tmp_path / "serial.jsonl"
    with serving(model, log_path=path) as line:
        line.peer.send({"id": "a", "prompt": "hello", "max_tokens": 5, "temperature": 0})
        assert line.peer.finish("a")[-1]["event"] == "done"
        line.peer.write(b"oops\n")
        assert line.peer.ping()[0]["event"] == "error"
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert [r.get("event") for r in records] == ["serving", None, None, "stopped"]
    served, bad = records[1], records[2]
    assert served["request"]["id"] == "a" and served["text"] == model.expected["hello5"]
    assert served["response"]["finish_reason"] == "length"
    assert bad["id"] is None and "JSON" in bad["error"]
    assert all(r["serial"].startswith("/dev/") and r["time"] > 0 for r in records)
