"""A serial line for appliances: JSON lines in, JSON lines out, generation through the engine.

`serve_serial(model, "/dev/ttyUSB0")` opens the port with pyserial (a device path, or any
pyserial URL such as ``socket://host:port`` or ``loop://``) and answers one JSON object per
line until the peer goes away or `stop_event` is set.

Protocol
--------
Both directions carry UTF-8 JSON objects, one per line, each ended by ``\\n`` (a ``\\r`` before
it is ignored, as are blank lines). Nothing is sent unasked: every line out answers a line in.

Lines in:

* A request::

      {"id": 7, "prompt": "Once upon a time", "max_tokens": 64}
      {"id": "a", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.7}

  ``id`` (required): a string, number or boolean chosen by the peer; every event about the
  request carries it back, and no two running requests may share one. Exactly one of
  ``prompt`` (a string: plain text, the tokenizer adds BOS) or ``messages`` (a list of
  ``{"role": str, "content": str}``, rendered with the model's chat template). Optional:
  ``max_tokens`` (integer >= 0, default 256), ``temperature``, ``top_p``, ``top_k``,
  ``min_p``, ``seed`` (integer >= 0), ``repetition_penalty``, ``presence_penalty``,
  ``frequency_penalty`` (numbers; unset ones take the model's generation_config defaults)
  and ``stop`` (a string or a list of strings: the answer ends before the first one, which is
  not sent). Any other field, or a field of the wrong type, refuses the request.
* ``{"id": 7, "cancel": true}`` stops the running request 7: no more token events for it,
  then its ``done`` with ``finish_reason: "cancelled"``.
* ``{"ping": true}`` (an ``id`` is optional and echoed) is answered ``{"event": "pong"}``.

Lines out (``event`` says which):

* ``{"id": 7, "event": "token", "text": " upon", "token": 1234}`` for each generated token:
  ``text`` is the text it made printable, possibly ``""`` (an unfinished UTF-8 character, or
  text held back while it may still become a stop string). At the end of a stream a last
  ``{"event": "token", "text": ..., "token": null}`` may carry held-back text. The ``text``
  fields of a request, joined, are its answer.
* ``{"id": 7, "event": "done", "finish_reason": "stop" | "length" | "cancelled" | "error",
  "usage": {"prompt_tokens": 5, "completion_tokens": 64}}`` ends every request that
  started; ``completion_tokens`` counts the token events sent. With ``"error"`` (the model
  refused a step) a ``message`` says why.
* ``{"id": 7 | null, "event": "error", "message": "..."}`` (one line of text) answers each
  bad line: not UTF-8, not JSON, not an object, an unknown field or a wrong type, a line
  longer than ``max_line`` bytes (discarded up to the next newline, one error), a cancel for
  no running request, or a request refused before it started (prompt longer than the
  compiled context, engine queue full). ``id`` is the line's id when it could be read, else
  null. A refused request gets no ``done``.

Requests run concurrently: each has its own thread feeding it through the shared engine (up to
the model's compiled ``--max-batch`` at once; more wait in the engine's queue), and all of
them write whole lines to the port under one lock, so events of different ids interleave only
at line boundaries.

The peer going away (a read or write fails: unplugged adapter, closed pty master, a write
stalled for more than ``write_timeout`` seconds) cancels every running request, frees their
engine slots and makes `serve_serial` return ``"disconnected"``; it does not wait for the port
to come back, so an appliance runs it in a loop (or under a supervisor) to take the next peer.
Setting `stop_event` cancels the running requests too (their ``done`` events are still sent)
and returns ``"stopped"``.

From the command line: ``ingot serve model.ingot --serial /dev/ttyUSB0 --baud 115200``;
``--log FILE`` appends a JSON record per request (with its answer) and per connection event.
"""
from __future__ import annotations

import json
import math
import os
import queue
import threading
import time

from ..errors import IngotError

# The fields each kind of line may carry, and the types of a request's options.
_INT_FIELDS = ("max_tokens", "top_k", "seed")
_FLOAT_FIELDS = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty")
_REQUEST_FIELDS = frozenset(("id", "prompt", "messages", "stop") + _INT_FIELDS + _FLOAT_FIELDS)
_READ_TIMEOUT = 0.2      # how often the reader looks at stop_event
_JOIN_TIMEOUT = 30.0     # how long shutting down waits for the request threads


class _BadLine(Exception):
    """A line the protocol refuses; its text becomes the error event's message."""


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _one_line(text) -> str:
    return " ".join(str(text).split()) or "error"


class _Log:
    """Where `log` goes: a function (or logging.Logger) gets one line of text per connection
    event; a file path gets JSON lines, as `ingot serve --log` writes them: connection events,
    and every request with its answer or refusal."""

    def __init__(self, log, port):
        self.port, self.text, self.file = str(port), None, None
        self.lock = threading.Lock()
        if log is None:
            pass
        elif isinstance(log, (str, os.PathLike)):
            try:
                self.file = open(log, "a", encoding="utf-8")
            except OSError as e:
                raise IngotError(f"cannot open the log {log}: {e.strerror or e}") from None
        elif hasattr(log, "info"):
            self.text = log.info
        elif callable(log):
            self.text = log
        else:
            raise IngotError("log must be a file path, a function or a logging.Logger")

    def note(self, text: str, **record) -> None:
        """A connection event: a line for a function, a record for a file."""
        if self.text is not None:
            self.text(text)
        if record:
            self.record(record)

    def record(self, record: dict) -> None:
        if self.file is not None:
            line = json.dumps({"time": time.time(), "serial": self.port, **record},
                              ensure_ascii=False, default=str)
            with self.lock:
                self.file.write(line + "\n")
                self.file.flush()

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


class _Lines:
    """Bytes in, complete lines out. A line is complete only at b"\\n"; bytes of an unfinished
    line are kept across reads. A line longer than `max_line` is dropped (up to its newline)
    and reported once, as `None`."""

    def __init__(self, max_line: int):
        self.max_line = int(max_line)
        self.buf = bytearray()
        self.scanned = 0          # bytes of buf already searched for a newline
        self.discarding = False   # inside an oversized line: drop up to the next newline

    def feed(self, data: bytes) -> list:
        out = []
        self.buf += data
        while True:
            i = self.buf.find(b"\n", self.scanned)
            if i < 0:
                if not self.discarding and len(self.buf) > self.max_line:
                    out.append(None)
                    self.discarding = True
                if self.discarding:
                    self.buf.clear()
                self.scanned = len(self.buf)
                return out
            line = bytes(self.buf[:i])
            del self.buf[:i + 1]
            self.scanned = 0
            if self.discarding:
                self.discarding = False
                continue
            if line.endswith(b"\r"):
                line = line[:-1]
            out.append(None if len(line) > self.max_line else line)


class _Job:
    def __init__(self, rid, key):
        self.id, self.key = rid, key
        self.handle = None
        self.cancelled = False
        self.thread: threading.Thread | None = None
        self.lock = threading.Lock()

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            h = self.handle
        if h is not None:
            h.cancel()


class _SerialServer:
    def __init__(self, model, ser, engine, max_line, log):
        self.model, self.ser, self.engine, self.log = model, ser, engine, log
        self.lines = _Lines(max_line)
        self.max_line = max_line
        self.write_lock = threading.Lock()
        self.gone = threading.Event()   # a read or write failed: the peer is not there
        self.jobs: dict = {}            # running requests by id (as JSON text)
        self.threads: list = []         # their threads, and any still ending a request
        self.jobs_lock = threading.Lock()

    # -- writing -------------------------------------------------------------------------------
    def send(self, obj: dict) -> bool:
        """Write one event line; False (and nothing written) once the peer is gone."""
        data = (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
                + "\n").encode("utf-8", "replace")
        with self.write_lock:
            if self.gone.is_set():
                return False
            try:
                self.ser.write(data)
            except Exception as e:  # noqa: BLE001 - SerialException, OSError, closed port
                self.lost(f"writing: {e}")
                return False
        return True

    def error(self, rid, message) -> None:
        self.send({"id": rid, "event": "error", "message": _one_line(message)})

    def lost(self, why: str) -> None:
        if not self.gone.is_set():
            self.gone.set()
            self.log.note(f"serial: peer gone ({_one_line(why)}); cancelling running "
                          f"requests", event="peer gone", reason=_one_line(why))
        self.cancel_all()

    def cancel_all(self) -> None:
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel()

    # -- reading -------------------------------------------------------------------------------
    def read_some(self) -> bytes:
        data = self.ser.read(1)   # blocks up to the port's timeout
        if data:
            n = self.ser.in_waiting
            if n:
                data += self.ser.read(n)
        return data

    def feed(self, data: bytes) -> None:
        for line in self.lines.feed(data):
            try:
                if line is None:
                    raise _BadLine(f"line longer than {self.max_line} bytes; discarded")
                self.handle_line(line)
            except _BadLine as e:
                self.error(getattr(e, "rid", None), e)
                self.log.record({"id": getattr(e, "rid", None), "error": _one_line(e)})
            except Exception as e:  # noqa: BLE001 - one bad line never ends the service
                self.log.note(f"serial: unexpected {type(e).__name__} on a line: {e}",
                              error=f"internal error: {type(e).__name__}: {_one_line(e)}")
                self.error(None, f"internal error: {type(e).__name__}: {e}")

    def handle_line(self, raw: bytes) -> None:
        if not raw.strip():
            return
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _BadLine("the line is not valid UTF-8") from None
        try:
            msg = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as e:
            raise _BadLine(f"the line is not JSON: {e}") from None
        if not isinstance(msg, dict):
            raise _BadLine("each line must be a JSON object")
        rid = msg.get("id")
        if not (rid is None or isinstance(rid, (str, bool, int, float))):
            raise _BadLine("id must be a string, a number or a boolean")
        try:
            if "ping" in msg:
                self.on_ping(msg, rid)
            elif "cancel" in msg:
                self.on_cancel(msg, rid)
            else:
                self.on_request(msg, rid)
        except _BadLine as e:
            e.rid = rid
            raise

    @staticmethod
    def _control(msg, key: str) -> None:
        """A ping or a cancel: only `key` (which must be true) and the id."""
        extra = set(msg) - {key, "id"}
        if extra:
            raise _BadLine(f"unknown field '{sorted(extra)[0]}' in a {key}")
        if msg[key] is not True:
            raise _BadLine(f"{key} must be true")

    def on_ping(self, msg, rid) -> None:
        self._control(msg, "ping")
        self.send({"event": "pong"} if "id" not in msg else {"id": rid, "event": "pong"})

    def on_cancel(self, msg, rid) -> None:
        self._control(msg, "cancel")
        if rid is None:
            raise _BadLine("cancel needs the id of a running request")
        with self.jobs_lock:
            job = self.jobs.get(json.dumps(rid))
        if job is None:
            raise _BadLine(f"no running request with id {json.dumps(rid)}")
        job.cancel()

    def on_request(self, msg, rid) -> None:
        extra = sorted(set(msg) - _REQUEST_FIELDS)
        if extra:
            raise _BadLine(f"unknown field '{extra[0]}'")
        if rid is None:
            raise _BadLine("a request needs an id (a string, a number or a boolean)")
        if ("prompt" in msg) == ("messages" in msg):
            raise _BadLine("a request needs exactly one of 'prompt' or 'messages'")
        if "prompt" in msg:
            source = msg["prompt"]
            if not isinstance(source, str):
                raise _BadLine("prompt must be a string")
        else:
            source = msg["messages"]
            if not isinstance(source, list) or not source or not all(
                    isinstance(m, dict) and set(m) == {"role", "content"}
                    and isinstance(m["role"], str) and isinstance(m["content"], str)
                    for m in source):
                raise _BadLine("messages must be a non-empty list of "
                               "{\"role\": string, \"content\": string}")
        opts = {}
        for k in _INT_FIELDS:
            if k in msg:
                v = msg[k]
                if not _is_int(v) or v < 0:
                    raise _BadLine(f"{k} must be an integer >= 0")
                if k == "seed" and v >= 2 ** 63:
                    raise _BadLine("seed must be below 2**63")
                opts[k] = v
        for k in _FLOAT_FIELDS:
            if k in msg:
                v = msg[k]
                if not _is_number(v) or not math.isfinite(v):
                    raise _BadLine(f"{k} must be a number")
                opts[k] = float(v)
        stop = msg.get("stop")
        if stop is not None and not isinstance(stop, str) and not (
                isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
            raise _BadLine("stop must be a string or a list of strings")
        max_tokens = opts.pop("max_tokens", 256)
        key = json.dumps(rid)
        with self.jobs_lock:
            if key in self.jobs:
                raise _BadLine(f"a request with id {key} is already running")
            if len(self.jobs) >= self.model.max_batch + self.engine.max_queue:
                raise _BadLine("busy: too many requests running and waiting")
            job = self.jobs[key] = _Job(rid, key)
        job.thread = threading.Thread(target=self.run_job,
                                      args=(job, msg, source, max_tokens, stop, opts),
                                      name=f"ingot-serial-{key[:32]}", daemon=True)
        with self.jobs_lock:
            self.threads = [t for t in self.threads if t.is_alive()] + [job.thread]
        job.thread.start()

    # -- one request -----------------------------------------------------------------------------
    def run_job(self, job: _Job, msg, source, max_tokens, stop, opts) -> None:
        from .generate import prompt_ids, request_for
        from .textstream import TextStream
        h = None
        sent = 0
        ended = False   # the handle's stream was read to its end
        answer = []
        try:
            model = self.model
            ids = prompt_ids(model, source)
            request = request_for(model, ids, max_tokens=max_tokens, **opts)
            with job.lock:
                if not job.cancelled:
                    h = job.handle = self.engine.submit(request)
            if h is None:   # cancelled before it reached the engine
                done = {"id": job.id, "event": "done", "finish_reason": "cancelled",
                        "usage": {"prompt_tokens": len(ids), "completion_tokens": 0}}
                self.send(done)
                self.log.record({"id": job.id, "request": msg, "response": done, "text": ""})
                return
            text = TextStream(model.tokenizer, stop)
            reason = None
            for ev in h:
                if job.cancelled:
                    break
                piece = text.put(ev.token)
                if not self.send({"id": job.id, "event": "token", "text": piece,
                                  "token": ev.token}):
                    return   # the peer is gone: nothing more to say
                sent += 1
                answer.append(piece)
                if text.stopped is not None:
                    reason = "stop"
                    break
            else:
                ended = True
            if job.cancelled:
                reason = "cancelled"
            elif reason is None:
                rest = text.finish()
                if rest and not self.send({"id": job.id, "event": "token", "text": rest,
                                           "token": None}):
                    return
                answer.append(rest)
                reason = h.finish_reason or "cancelled"
            done = {"id": job.id, "event": "done", "finish_reason": reason,
                    "usage": {"prompt_tokens": h.prompt_tokens, "completion_tokens": sent}}
            if reason == "error":
                done["message"] = _one_line(h.error)
            self.send(done)
            self.log.record({"id": job.id, "request": msg, "response": done,
                             "text": "".join(answer)})
        except Exception as e:  # noqa: BLE001 - refused (IngotError, QueueFull) or a bug
            if not isinstance(e, IngotError):
                self.log.note(f"serial: request {job.key} failed: {type(e).__name__}: {e}")
            self.error(job.id, e)
            self.log.record({"id": job.id, "request": msg, "error": _one_line(e)})
        finally:
            with self.jobs_lock:   # the id may be used again (its done is out)
                self.jobs.pop(job.key, None)
            if h is not None and not ended:   # stopped early: wait until the slot is free
                h.cancel()
                self._drain(h)

    def _drain(self, h, timeout: float = _JOIN_TIMEOUT) -> None:
        """Wait for the engine to end the handle (its slot is free by then)."""
        if not self.engine.threaded:
            return
        end = time.monotonic() + timeout
        while True:
            try:
                if h.events.get(timeout=max(0.01, end - time.monotonic())) is None:
                    return
            except queue.Empty:
                return

    # -- the loop --------------------------------------------------------------------------------
    def serve(self, stop_event) -> str:
        reason = "stopped"
        try:
            while True:
                if stop_event is not None and stop_event.is_set():
                    break
                if self.gone.is_set():
                    reason = "disconnected"
                    break
                try:
                    data = self.read_some()
                except Exception as e:  # noqa: BLE001 - SerialException, OSError
                    self.lost(f"reading: {e}")
                    reason = "disconnected"
                    break
                if data:
                    self.feed(data)
        finally:
            self.cancel_all()
            self.join_all()
        return reason

    def join_all(self) -> None:
        end = time.monotonic() + _JOIN_TIMEOUT
        while True:
            with self.jobs_lock:
                threads = [t for t in self.threads if t.is_alive()]
            if not threads or time.monotonic() >= end:
                return
            for t in threads:
                t.join(timeout=max(0.01, end - time.monotonic()))


def serve_serial(model, port, baud=115200, *, engine=None, max_line=65536, log=None,
                 stop_event=None, write_timeout=10.0) -> str:
    """Answer the JSON-lines protocol (see the module docstring) on serial `port` (a device
    path or a pyserial URL) until the peer goes away ("disconnected") or `stop_event` is set
    ("stopped"); returns which. `engine` defaults to the model's; it is started on a
    background thread if it is not running yet and left running on return (`model.close()`
    stops the model's), so that calling `serve_serial` again for the next peer finds it
    ready. `log`: a function taking one line (print, logger.info) or a logging.Logger gets the
    connection events; a file path gets JSON lines appended (connection events, and each
    request with its done event and answer text, or its error), like `ingot serve --log`.
    A write that stalls for `write_timeout` seconds counts as the peer being gone."""
    import serial

    if max_line < 1:
        raise IngotError("max_line must be at least 1")
    log = _Log(log, port)
    engine = engine if engine is not None else model.engine
    try:
        ser = serial.serial_for_url(str(port), baudrate=int(baud), timeout=_READ_TIMEOUT,
                                    write_timeout=write_timeout)
    except (serial.SerialException, OSError, ValueError) as e:
        log.close()
        raise IngotError(f"cannot open serial port {port}: {_one_line(e)}") from None
    try:
        if not engine.threaded:
            engine.start()
        log.note(f"serial: serving {port} at {baud} baud", event="serving", baud=baud)
        reason = _SerialServer(model, ser, engine, int(max_line), log).serve(stop_event)
        log.note(f"serial: {port} {reason}", event=reason)
        return reason
    finally:
        try:
            ser.close()
        except Exception:  # noqa: BLE001 - the device may already be gone
            pass
        log.close()
