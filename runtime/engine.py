"""The scheduler: many generation requests share one model, one native step at a time.

Each running request holds a sequence slot (its own KV cache, compiled with --max-batch).
An iteration of `step()` admits waiting requests into free slots, prefills at most one chunk of
one new prompt, and then decodes one token for every running sequence in a single batched
native step, so the weights are read once per step for the whole batch. Requests beyond the
free slots wait in a bounded queue; a full queue refuses new ones (`QueueFull`).

A sequence that outgrows the compiled context ends with "length" (an over-long prompt is refused
at submit), unless context shift is on for it (`Request.context_shift`, or the engine-wide
`set_context_shift`): then it keeps its first `keep` tokens and the most recent ones and is
re-prefilled from position 0 (runtime/context_shift.py), and generation goes on.

The engine runs either on its own thread (`start()`: the server, the serial line) or inline,
driven by whoever iterates a handle (the Python API) — the same code path either way.
"""
from __future__ import annotations

import collections
import functools
import queue
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from ..errors import IngotError
from .context_shift import check_keep, default_keep, shifted
from .sampling import Sampler, SamplingParams


class QueueFull(IngotError):
    """Every slot is busy and the waiting queue is at its bound."""


@dataclass
class Request:
    prompt: list                     # token ids
    max_tokens: int = 256
    params: SamplingParams = field(default_factory=SamplingParams)
    stop_ids: frozenset = frozenset()
    top_logprobs: int | None = None  # None: no logprobs; 0..20: the chosen one plus this many
    constraint: object = None        # has allowed(vocab) -> bool array | None, advance(id), done()
    penalize_prompt: bool = False    # transformers penalizes the prompt; OpenAI does not
    context_shift: bool | None = None  # None: the engine's setting (set_context_shift)
    keep: int | None = None          # tokens a shift keeps from the start; None: the engine's


@dataclass
class TokenEvent:
    token: int
    logprob: float | None = None
    top: list | None = None          # [(id, logprob)] when asked for


class Handle:
    """A submitted request: iterate it for TokenEvents; `finish_reason` is set at the end
    ("stop": an end token or the constraint finished, "length": max_tokens or the context,
    "cancelled", or "error" with `error` holding the message)."""

    def __init__(self, engine: "Engine", request: Request):
        self.engine, self.request = engine, request
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.finish_reason: str | None = None
        self.error: str | None = None
        self.prompt_tokens = len(request.prompt)
        self.completion_tokens = 0
        self.cached_tokens = 0   # prompt tokens whose cache was reused (prefix caching)
        self.shift_keep: int | None = None  # set at submit when context shift is on
        self.seen_prompt = list(request.prompt)  # the prompt as the model sees it
        self.context_shifts = 0  # times the sequence was shifted (an over-long prompt counts)
        self.submitted = time.perf_counter()
        self.first_token_at: float | None = None
        self.cancelled = False
        self.notify = None  # called (on the engine's thread) after each event: async bridges

    def _put(self, ev) -> None:
        self.events.put(ev)
        if self.notify is not None:
            self.notify()

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the engine's next iteration."""
        self.cancelled = True
        self.engine._wake()

    def __iter__(self):
        while True:
            try:
                ev = self.events.get_nowait()
            except queue.Empty:
                if self.engine.threaded:
                    ev = self.events.get()
                else:
                    self.engine.step()
                    continue
            if ev is None:
                return
            yield ev

    def tokens(self) -> list:
        return [ev.token for ev in self]


class _Sequence:
    def __init__(self, handle: Handle, slot: int, vocab: int):
        self.handle, self.slot = handle, slot
        req, prompt = handle.request, handle.seen_prompt
        self.sampler = Sampler(req.params, vocab)
        self.history = list(prompt) if req.penalize_prompt else []
        self.todo = list(prompt)       # tokens still to prefill
        self.pos = 0                   # tokens in this slot's cache
        self.held: list = []           # those tokens (what a context shift starts from)
        self.last: int | None = None   # the token to feed next
        self.generated = 0


class Engine:
    def __init__(self, model, max_queue: int = 64):
        self.model = model
        self.max_queue = int(max_queue)
        self.slots = list(range(model.max_batch))
        self._free = collections.deque(self.slots)
        # What each slot's cache holds, for reusing a shared prompt prefix.
        self._cached: dict = {s: [] for s in self.slots}
        self._waiting: collections.deque = collections.deque()
        self._running: list = []
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._step_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stop = False
        self.threaded = False
        self.stats = collections.Counter()
        self.busy_seconds = 0.0
        self.context_shift = False     # the default for requests that do not say
        self.keep: int | None = None   # None: keep the BOS token when the prompt starts with it

    def set_context_shift(self, on: bool = True, keep: int | None = None) -> "Engine":
        """The default for requests that do not choose (`ingot serve --context-shift`)."""
        if keep is not None:
            check_keep(keep, self.model.max_seq_len)
        self.context_shift, self.keep = bool(on), keep
        return self

    # -- submitting ----------------------------------------------------------------------------
    def submit(self, request: Request) -> Handle:
        n, ctx = len(request.prompt), self.model.max_seq_len
        if n == 0:
            raise IngotError("the prompt is empty")
        shift = self.context_shift if request.context_shift is None else request.context_shift
        if n >= ctx and not shift:
            raise IngotError(f"the prompt has {n} tokens; the compiled context holds {ctx} "
                             f"(prompt and answer together; with context shift on, its start "
                             f"and most recent tokens would be kept)")
        if request.max_tokens < 0:
            raise IngotError("max_tokens must not be negative")
        request.params.check()
        h = Handle(self, request)
        if shift:
            keep = self.keep if request.keep is None else request.keep
            if keep is None:
                keep = default_keep(request.prompt, self._bos_id)
            check_keep(keep, ctx)
            h.shift_keep = keep
            if n >= ctx:
                h.seen_prompt = shifted(request.prompt, keep, ctx)
                h.context_shifts = 1
                self.stats["context_shifts"] += 1
        with self._lock:
            if len(self._waiting) >= self.max_queue:
                self.stats["rejected"] += 1
                raise QueueFull(f"server busy: {len(self._running)} running and "
                                f"{len(self._waiting)} waiting requests")
            self._waiting.append(h)
            self.stats["requests"] += 1
            self._work.notify_all()
        return h

    @functools.cached_property
    def _bos_id(self):
        """The tokenizer's BOS id, or None (no tokenizer: token-id prompts only)."""
        art = getattr(self.model, "artefact", None)
        return self.model.tokenizer.bos_id if art is not None and art.has("tokenizer") else None

    def forget(self, slot: int) -> None:
        """The slot's cache was changed outside the engine: reuse nothing from it."""
        self._cached[slot] = []

    def _wake(self) -> None:
        with self._lock:
            self._work.notify_all()

    @property
    def queued(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def free_slots(self) -> int:
        return len(self._free)

    # -- the background thread ------------------------------------------------------------------
    def start(self) -> "Engine":
        if self._thread is None:
            self._stop = False
            self.threaded = True
            self._thread = threading.Thread(target=self._loop, name="ingot-engine", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stop = True
            self._work.notify_all()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.threaded = False

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._stop and not self._waiting and not self._running:
                    self._work.wait()
                if self._stop:
                    break
            self.step()
        for seq in list(self._running):
            self._finish(seq, "cancelled")
        while self._waiting:
            h = self._waiting.popleft()
            h.finish_reason = "cancelled"
            h._put(None)

    # -- one iteration --------------------------------------------------------------------------
    def step(self) -> bool:
        """Admit, prefill one chunk, decode one token per running sequence. False when idle."""
        with self._step_lock:
            t0 = time.perf_counter()
            self._drop_cancelled()
            self._admit()
            if not self._running:
                return False
            try:
                self._prefill_one()
                self._decode_all()
            except Exception as e:  # noqa: BLE001 - end the requests, keep the engine alive
                msg = str(e) if isinstance(e, IngotError) else f"{type(e).__name__}: {e}"
                for seq in list(self._running):
                    seq.handle.error = msg
                    self._finish(seq, "error")
            self.busy_seconds += time.perf_counter() - t0
            return True

    def _drop_cancelled(self) -> None:
        with self._lock:
            for h in [h for h in self._waiting if h.cancelled]:
                self._waiting.remove(h)
                h.finish_reason = "cancelled"
                h._put(None)
        for seq in [s for s in self._running if s.handle.cancelled]:
            self._finish(seq, "cancelled")

    def _admit(self) -> None:
        with self._lock:
            while self._waiting and self._free:
                h = self._waiting.popleft()
                prompt = h.seen_prompt
                slot = self._best_slot(prompt)
                try:
                    seq = _Sequence(h, slot, self.model.vocab_size)
                except Exception as e:  # noqa: BLE001 - e.g. a logit_bias outside the vocab
                    h.error, h.finish_reason = str(e), "error"
                    self.stats["finished_error"] += 1
                    h._put(None)
                    continue
                self._free.remove(slot)
                # Reuse the cached prefix (leave at least one token: its logits are needed).
                keep = self._shared_prefix(slot, prompt)
                keep = min(keep, len(prompt) - 1)
                seq.pos = keep
                seq.todo = list(prompt[keep:])
                h.cached_tokens = keep
                seq.held = list(prompt[:keep])
                self._cached[slot] = list(seq.held)
                self._running.append(seq)

    def _shared_prefix(self, slot: int, prompt: list) -> int:
        held = self._cached[slot]
        n = min(len(held), len(prompt))
        i = 0
        while i < n and held[i] == prompt[i]:
            i += 1
        return self.model.reusable_prefix(i, len(held))

    def _best_slot(self, prompt: list) -> int:
        return max(self._free, key=lambda s: self._shared_prefix(s, prompt))

    def _prefill_one(self) -> None:
        seq = next((s for s in self._running if s.todo), None)
        if seq is None:
            return
        m = self.model
        part, seq.todo = seq.todo[:m.chunk], seq.todo[m.chunk:]
        logits = m.prefill_at(seq.slot, seq.pos, part)
        seq.pos += len(part)
        seq.held += part
        self._cached[seq.slot] += part
        self.stats["prompt_tokens"] += len(part)
        if not seq.todo:
            self._emit(seq, logits)

    def _decode_all(self) -> None:
        ready = [s for s in self._running if not s.todo and s.last is not None]
        if not ready:
            return
        logits = self.model.decode_batch([s.last for s in ready], [s.pos for s in ready],
                                         [s.slot for s in ready])
        self.stats["decode_steps"] += 1
        self.stats["decode_rows"] += len(ready)
        for i, seq in enumerate(ready):
            seq.held.append(seq.last)
            self._cached[seq.slot].append(seq.last)
            seq.pos += 1
            self._emit(seq, logits[i])

    def _emit(self, seq: _Sequence, logits: np.ndarray) -> None:
        """Sample the next token from `logits`, hand it out, and decide whether to go on."""
        h, req = seq.handle, seq.handle.request
        if seq.generated >= req.max_tokens:
            self._finish(seq, "length")
            return
        con = req.constraint
        mask = con.allowed(self.model.vocab_size) if con is not None else None
        t = seq.sampler.sample(logits, seq.history, mask=mask, top_logprobs=req.top_logprobs)
        if con is not None:
            con.advance(t)
        seq.generated += 1
        if h.first_token_at is None:
            h.first_token_at = time.perf_counter()
        if t in req.stop_ids:
            self._finish(seq, "stop")
            return
        seq.history.append(t)
        h.completion_tokens += 1
        self.stats["completion_tokens"] += 1
        lp = seq.sampler.logprobs if req.top_logprobs is not None else None
        h._put(TokenEvent(t, lp[0] if lp else None, lp[1] if lp else None))
        if con is not None and con.done():
            self._finish(seq, "stop")
        elif seq.generated >= req.max_tokens:
            self._finish(seq, "length")
        elif seq.pos < self.model.max_seq_len:
            seq.last = t
        elif h.shift_keep is not None:
            self._shift(seq, t)
        else:
            self._finish(seq, "length")  # no room left to feed it: the context is full

    def _shift(self, seq: _Sequence, t: int) -> None:
        """The context is full and `t` has no position: keep the start and the most recent
        tokens (t among them) and prefill them again from position 0; the prefill's last
        logits give the next token, exactly as for a fresh sequence with these tokens."""
        kept = shifted(seq.held + [t], seq.handle.shift_keep, self.model.max_seq_len)
        seq.todo, seq.pos, seq.held, seq.last = kept, 0, [], None
        self._cached[seq.slot] = []  # filled again as the kept tokens are prefilled
        seq.handle.context_shifts += 1
        self.stats["context_shifts"] += 1

    def _finish(self, seq: _Sequence, reason: str) -> None:
        h = seq.handle
        h.finish_reason = reason
        self.stats[f"finished_{reason}"] += 1
        self._running.remove(seq)
        with self._lock:
            self._free.append(seq.slot)
        h._put(None)
