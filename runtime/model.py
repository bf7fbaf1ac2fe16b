"""`Model`: a mapped artefact with its arena, KV cache, native steps and tokenizer.

Everything the step touches is allocated here, once: the arena (activations), per-thread
scratch, the KV cache and the logits view. `prefill` and `decode` only write token ids into
the arena and make one native call per thread.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import IngotError
from .artefact import Artefact
from .hostcheck import check_target
from .hugepages import read_into_huge_pages
from .native import ThreadTeam, entry, load_library

_SYNC_BYTES = 128


def _aligned(nbytes: int, align: int = 64) -> np.ndarray:
    raw = np.zeros(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + nbytes]


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


class Model:
    def __init__(self, art: Artefact, threads=None, max_memory=None, prefetch=True,
                 device_map=None, mmap=False):
        self.artefact = art
        self.path = art.path
        check_target(art.header.get("target", {}), art.path)
        self.plan = p = art.json("plan")
        self.vocab_size = p["vocab_size"]
        self.max_seq_len = p["max_seq_len"]
        self.chunk = p["prefill_chunk"]
        self.threads = int(threads) if threads else default_threads()
        if self.threads < 1:
            raise IngotError("threads must be at least 1")
        from .offload import plan_streaming
        if max_memory is None:
            max_memory = p.get("max_memory_hint")  # the compile-time --max-memory
        self.max_memory = None if max_memory is None else parse_bytes(max_memory)
        # Units (layers, head) kept mapped; the rest stream from the artefact each step, the
        # next one faulted in by a background thread while the step computes (read_ahead).
        self.device = p.get("device", "cpu")
        self.device_map = _device_map(device_map, p, self.path, self.device)
        if self.device == "cuda":  # the budget is the GPU's: CudaSteps plans its streaming
            self.resident, self.read_ahead = [True] * len(p.get("units", [])), False
        else:
            self.resident, self.read_ahead = plan_streaming(p, self.threads, self.max_memory,
                                                            self.path, read_ahead=prefetch)
        self._read_ahead = None

        if self.device == "cuda":  # launch lists instead of native code: steps by name
            self._prefill, self._decode = "prefill", "decode"
            # The batched step takes the same row table address as `pos` (runtime/cuda/steps.py)
            self._batch = "batch" if "batch" in p["entry_points"] else None
        else:
            self._lib = load_library(art.section("code"))
            self._prefill = entry(self._lib, p["entry_points"]["prefill"])
            self._decode = entry(self._lib, p["entry_points"]["decode"])
            # The batched decode step (several sequences, one token each) reads its row table
            # (positions, then slots) from the address passed as `pos`.
            self._batch = entry(self._lib, p["entry_points"]["batch"]) \
                if "batch" in p["entry_points"] else None
        self._weights = np.frombuffer(art.section("weights", check=False), np.uint8)
        # All resident on the CPU: read the weights into huge pages (runtime/hugepages.py)
        # rather than step through the file map's 4 KiB pages; `mmap` keeps the map.
        self.huge_pages = False
        if not mmap and self.device == "cpu" and all(self.resident) and self._weights.size:
            huge = read_into_huge_pages(art.path, *art.span("weights"))
            if huge is not None:
                self._weights, self.huge_pages = huge, True
        scratch = p["scratch_bytes_per_thread"]
        # Profile builds keep a cycle stamp per decode call after the barrier words.
        self._profile_calls = p.get("profile_calls") or []
        sync_bytes = _SYNC_BYTES + 8 * (len(self._profile_calls) + 1)
        self._arena = _aligned(p["arena_bytes"] + self.threads * scratch + sync_bytes)
        # One KV cache per sequence slot; the batched step addresses slot s at s * state_bytes.
        self.max_batch = int(p.get("max_batch", 1))
        self._slot_bytes = p["state_bytes"]
        self._kv = _aligned(max(p["state_bytes"] * self.max_batch, 64))
        a = self._arena.ctypes.data
        self._wb = self._weights.ctypes.data if self._weights.size else 0
        self._ab, self._kb = a, self._kv.ctypes.data
        sync = a + p["arena_bytes"] + self.threads * scratch
        self._stamps = self._arena[sync - a + 64:sync - a + 64 + 8 * (len(self._profile_calls) + 1)] \
            .view(np.int64)
        if self.device == "cuda":
            from .cuda.steps import CudaSteps
            self._team = CudaSteps(
                art, p, weights=self._weights, arena=self._arena, kv=self._kv,
                device_map=self.device_map, max_memory=self.max_memory,
                cpu_team=lambda: ThreadTeam(self.threads, a + p["arena_bytes"], scratch, sync))
            self.resident = self._team.resident
        else:
            self._team = ThreadTeam(self.threads, a + p["arena_bytes"], scratch, sync)
        self._tokens = self._arena[p["tokens_offset"]:p["tokens_offset"] + 4 * self.chunk] \
            .view(np.int32)
        lo = p["logits_offset"]
        self._logits = self._arena[lo:lo + 4 * self.vocab_size].view(np.float32)
        if self._batch is not None:
            bt, bl = p["batch_tokens_offset"], p["batch_logits_offset"]
            self._batch_tokens = self._arena[bt:bt + 4 * self.max_batch].view(np.int32)
            self._batch_logits = self._arena[bl:bl + 4 * self.vocab_size * self.max_batch] \
                .view(np.float32).reshape(self.max_batch, self.vocab_size)
            self._rows = np.zeros(2 * self.max_batch, np.int32)  # positions, then slots
        units = p.get("units", [])
        if units:
            co = p["units_ctl_offset"]
            self._ctl = self._arena[co:co + 8 * len(units)].view(np.int64)
            # 1 resident; 0 streamed, read ahead one unit early; 2 streamed, no read-ahead.
            self._ctl[:] = [1 if r else (0 if self.read_ahead else 2) for r in self.resident]
            if self.read_ahead:
                from .offload import ReadAhead
                sig = self._arena[co + 8 * len(units):co + 8 * (len(units) + 3)].view(np.int64)
                self._read_ahead = ReadAhead(sig, self._weights, units)
        self.pos = 0
        # Profile builds: cycles per kernel call (thread 0, barrier included), summed over steps.
        self.profile_cycles = np.zeros(len(self._profile_calls), np.int64)
        self.profile_prefill_cycles = np.zeros(len(self._profile_calls), np.int64)
        self._tokenizer = None
        self._chat = None
        self._engine = None
        self.generation = self._generation_config()

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path, *, threads=None, max_memory=None, prefetch=True,
             device_map=None, mmap=False) -> "Model":
        art = Artefact(path)
        try:
            return cls(art, threads=threads, max_memory=max_memory, prefetch=prefetch,
                       device_map=device_map, mmap=mmap)
        except BaseException:
            art.close()
            raise

    def memory_needed(self, threads: int) -> int:
        """Bytes with every unit resident."""
        from .offload import fixed_bytes
        return fixed_bytes(self.plan, threads) + sum(u["bytes"]
                                                     for u in self.plan.get("units", []))

    @property
    def streamed_units(self) -> list:
        return [u["name"] for u, r in zip(self.plan.get("units", []), self.resident) if not r]

    def close(self) -> None:
        """Stop the worker threads (the mapping goes with the last reference)."""
        engine = getattr(self, "_engine", None)
        if engine is not None:
            engine.stop()
        team = getattr(self, "_team", None)
        if team is not None:
            team.close()
        read_ahead = getattr(self, "_read_ahead", None)
        if read_ahead is not None:
            read_ahead.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # -- the step ----------------------------------------------------------------------------
    def _check_tokens(self, ids: np.ndarray, pos: int) -> None:
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            bad = int(ids[(ids < 0) | (ids >= self.vocab_size)][0])
            raise IngotError(f"token id {bad} is outside the vocabulary (0..{self.vocab_size - 1})")
        if pos + ids.size > self.max_seq_len:
            raise IngotError(f"context overflow: {pos} + {ids.size} tokens exceed the "
                             f"compiled max_seq_len {self.max_seq_len}")

    def _slot_kv(self, slot: int) -> int:
        if not 0 <= slot < self.max_batch:
            raise IngotError(f"sequence slot {slot} is outside 0..{self.max_batch - 1} (compile "
                             f"with --max-batch for more)")
        return self._kb + slot * self._slot_bytes

    def prefill_at(self, slot: int, pos: int, token_ids) -> np.ndarray:
        """Feed tokens to sequence `slot` from position `pos` (its cache before `pos` is kept);
        returns the logits buffer of the last one (valid until the next step)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        if ids.size == 0:
            raise IngotError("prefill needs at least one token")
        self._check_tokens(ids, pos)
        kb = self._slot_kv(slot)
        for start in range(0, ids.size, self.chunk):
            part = ids[start:start + self.chunk]
            self._tokens[:part.size] = part
            self._team.run(self._prefill, self._wb, self._ab, kb, part.size, pos + start)
            if self._profile_calls:
                self.profile_prefill_cycles += np.diff(self._stamps)
        return self._logits

    def decode_batch(self, token_ids, positions, slots) -> np.ndarray:
        """One token for each of several sequences: row i is token_ids[i] at positions[i] of
        sequence slots[i]. Returns the logits buffer [n, vocab] (valid until the next step).
        The weights are read once for all rows."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        n = ids.size
        if n == 0 or n > self.max_batch:
            raise IngotError(f"a batch holds 1..{self.max_batch} sequences, not {n}")
        self._check_tokens(ids, 0)  # the vocabulary
        last = max(int(p) for p in positions)
        if last >= self.max_seq_len:
            raise IngotError(f"context overflow: {last} + 1 tokens exceed the compiled "
                             f"max_seq_len {self.max_seq_len}")
        if len(set(int(s) for s in slots)) != n:
            raise IngotError("a batch cannot hold the same sequence slot twice")
        for s in slots:
            self._slot_kv(int(s))
        if n == 1:  # one sequence: the decode step, specialised for a single row
            self._tokens[0] = ids[0]
            self._team.run(self._decode, self._wb, self._ab, self._slot_kv(int(slots[0])), 1,
                           int(positions[0]))
            return self._logits.reshape(1, self.vocab_size)
        self._batch_tokens[:n] = ids
        self._rows[:n] = positions
        self._rows[self.max_batch:self.max_batch + n] = slots
        self._team.run(self._batch, self._wb, self._ab, self._kb, n, self._rows.ctypes.data)
        return self._batch_logits[:n]

    def _forget_slot0(self) -> None:
        if self._engine is not None:  # the direct interface wrote slot 0 behind its back
            self._engine.forget(0)

    def reusable_prefix(self, common: int, held: int) -> int:
        """How much of a `common` prefix of a slot's `held` cached tokens a new prompt can
        keep. Sliding-window layers keep a ring: its rows for the window before the cut must
        not have been overwritten by the cached tokens after it."""
        rings = self.plan.get("kv_rings")
        if rings is None:
            return 0 if self.plan.get("kv_ring_layers") else common
        ok = all(held - common <= ring - window + 1 for ring, window in rings)
        return common if ok else 0

    # The single-sequence interface: sequence slot 0, positions counted here.
    def prefill_view(self, token_ids) -> np.ndarray:
        """Like `prefill`, but returns the logits buffer itself (valid until the next step)."""
        ids = np.asarray(token_ids, dtype=np.int64).reshape(-1)
        self._forget_slot0()
        out = self.prefill_at(0, self.pos, ids)
        self.pos += ids.size
        return out

    def decode_view(self, token_id: int) -> np.ndarray:
        ids = np.asarray([token_id], dtype=np.int64)
        self._check_tokens(ids, self.pos)
        self._forget_slot0()
        self._tokens[0] = token_id
        self._team.run(self._decode, self._wb, self._ab, self._kb, 1, self.pos)
        self.pos += 1
        if self._profile_calls:
            self.profile_cycles += np.diff(self._stamps)
        return self._logits

    @property
    def engine(self):
        """The scheduler that generation runs through (inline unless started on a thread)."""
        if self._engine is None:
            from .engine import Engine
            self._engine = Engine(self)
        return self._engine

    def prefill(self, token_ids) -> np.ndarray:
        """Feed tokens after the current position; float32 logits of the last one, [vocab]."""
        return self.prefill_view(token_ids).copy()

    def decode(self, token_id: int) -> np.ndarray:
        """Feed one token; float32 logits for the next, [vocab]."""
        return self.decode_view(token_id).copy()

    def reset(self) -> None:
        """Forget the context (the cache is overwritten as positions are reused)."""
        self.pos = 0

    # -- text --------------------------------------------------------------------------------
    def _generation_config(self) -> dict:
        from .genconfig import merge_generation_config
        gen = self.artefact.json("generation_config") \
            if self.artefact.has("generation_config") else {}
        g = merge_generation_config(gen)
        if not g.get("eos_token_ids"):
            g["eos_token_ids"] = list(self.plan.get("eos_token_ids") or [])
        return g

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            if not self.artefact.has("tokenizer"):
                raise IngotError(f"{self.path}: artefact carries no tokenizer (the model folder "
                                 f"had no tokenizer.json); pass token ids instead")
            from .tokenizer import Tokenizer
            cfg = self.artefact.json("tokenizer_config") \
                if self.artefact.has("tokenizer_config") else {}
            self._tokenizer = Tokenizer.from_parts(bytes(self.artefact.section("tokenizer"))
                                                   .decode("utf-8"), cfg)
        return self._tokenizer

    @property
    def chat_template(self):
        if self._chat is None:
            from .chat import ChatTemplate, pick_template
            src = pick_template(self.artefact.json("chat_template")) \
                if self.artefact.has("chat_template") else None
            if not src:
                raise IngotError(f"{self.path}: the model has no chat template; pass a plain "
                                 f"prompt string")
            tok = self.tokenizer
            self._chat = ChatTemplate(src, bos_token=tok.bos_token or "",
                                      eos_token=tok.eos_token or "")
        return self._chat

    def eos_ids(self) -> set:
        ids = set(self.generation.get("eos_token_ids") or [])
        if not ids and self.tokenizer.eos_id is not None:
            ids.add(self.tokenizer.eos_id)
        return ids

    def generate(self, prompt_or_messages, max_tokens: int = 256, temperature=None, top_k=None,
                 top_p=None, min_p=None, repetition_penalty=None, presence_penalty=None,
                 frequency_penalty=None, logit_bias=None, seed=None, stop=None,
                 stream: bool = False, context_shift=None, keep=None):
        """Generate text for a prompt string or a list of chat messages ({role, content}).
        Returns the text, or with stream=True an iterator of text pieces. Runs through the
        model's engine (the server's scheduler): calls from several threads share decode
        steps once the engine is started (`model.engine.start()`).
        context_shift=True: a sequence that outgrows the context keeps its first `keep`
        tokens (default: the BOS) and the most recent ones, and goes on (README, "Context
        overflow"); None: the engine's setting, off unless `engine.set_context_shift()`."""
        from .generate import generate_stream
        it = generate_stream(self, prompt_or_messages, max_tokens=max_tokens,
                             temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                             repetition_penalty=repetition_penalty,
                             presence_penalty=presence_penalty,
                             frequency_penalty=frequency_penalty, logit_bias=logit_bias,
                             seed=seed, stop=stop, context_shift=context_shift, keep=keep)
        return it if stream else "".join(it)

    def chat(self, messages: list, message: str | None = None, **generate_kw) -> str:
        """One chat turn: appends `message` (if given) as the user's and the answer as the
        assistant's to `messages` (kept by the caller across turns); returns the answer."""
        if message is not None:
            messages.append({"role": "user", "content": message})
        answer = self.generate(list(messages), **generate_kw)
        messages.append({"role": "assistant", "content": answer})
        return answer


def _device_map(dm, plan: dict, path, device: str):
    """A DeviceMap from a map, its -n text, or None; a CPU artefact runs only "cpu" maps."""
    if dm is None:
        return None
    from .device_map import DeviceMap, parse_layer_counts
    if not isinstance(dm, DeviceMap):
        dm = parse_layer_counts(str(dm), int(plan["n_layers"]))
    if device != "cuda" and not dm.all_cpu:
        raise IngotError(f"{path} is compiled for the CPU; layers mapped to a GPU need an "
                         f"artefact compiled with --target cuda-sm80/sm87/sm90")
    return dm if device == "cuda" else None


def parse_bytes(value) -> int:
    """'512MiB', '2GiB', '1.5G', '1000000' -> bytes."""
    if isinstance(value, (int, float)):
        return int(value)
    s = str(value).strip()
    units = {"k": 1e3, "kb": 1e3, "kib": 2**10, "m": 1e6, "mb": 1e6, "mib": 2**20,
             "g": 1e9, "gb": 1e9, "gib": 2**30, "b": 1}
    num = s.rstrip("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
    unit = s[len(num):].strip().lower()
    try:
        return int(float(num) * (units[unit] if unit else 1))
    except (ValueError, KeyError):
        raise IngotError(f"cannot read memory size '{value}' (use e.g. 512MiB or 2GiB)") from None

