"""Context overflow: a clear error by default, and the opt-in context shift.

The reference for a shift is its definition: the model is a fresh one that was prefilled with
exactly the kept tokens (the first `keep`, then the most recent (max_seq_len - keep) // 2; the
rule is restated here, not imported). `reference` below runs that with the model's own
single-sequence steps — a freshly loaded model at every shift — and the engine must give the
same greedy tokens and, step by step, the same logits.

Tolerance: 1e-5 of the logit scale. A single sequence runs the very kernels of the reference
on the same tokens, positions and prefill chunks, so its logits agree to the last bit in
practice; two sequences decoded together go through the batched step, whose f32 matrices sum a
tile's rows in another order (test_batch.py: ~1e-6 of the scale after a few hundred products).

Two tiny models, each compiled once with a small context and an 8-token prefill chunk: llama
(full-context layers) and mistral (sliding window 7: its layers keep a 14-row ring, so the
re-prefill after a shift wraps the ring as a fresh prefill does).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

import ingot
from ingot.errors import IngotError
from ingot.runtime.engine import Engine, Request

TOL = 1e-5
CTX = {"llama": 32, "mistral": 48}
pytestmark = pytest.mark.xdist_group("context_shift")


@pytest.fixture(scope="module")
def arts(model_dirs, tmp_path_factory):
    out = tmp_path_factory.mktemp("context-shift")
    return {name: ingot.compile(model_dirs(name)[0], out / f"{name}.ingot", max_seq_len=ctx,
                                prefill_chunk=8, max_batch=2)
            for name, ctx in CTX.items()}


def kept(tokens, keep, ctx):
    """The documented rule: the first `keep` tokens and the most recent (ctx - keep) // 2."""
    return list(tokens[:keep]) + list(tokens[len(tokens) - (ctx - keep) // 2:])


def reference(art, prompt, keep, n):
    """Greedy tokens, the logits each came from, the token lists a fresh model was prefilled
    with (the prompt, then one per shift), and what the cache holds at the end."""
    loaded = [ingot.load(art, threads=1)]
    ctx = loaded[0].max_seq_len
    seen = list(prompt) if len(prompt) < ctx else kept(prompt, keep, ctx)
    windows = [list(seen)]
    logits = loaded[-1].prefill(seen)
    toks, rows = [], []
    try:
        while True:
            t = int(np.argmax(logits))
            toks.append(t)
            rows.append(logits)
            if len(toks) == n:
                return toks, rows, windows, seen
            if len(seen) < ctx:
                seen.append(t)
                logits = loaded[-1].decode(t)
            else:  # no position left for t: a fresh model given the kept tokens
                seen = kept(seen + [t], keep, ctx)
                windows.append(list(seen))
                loaded.append(ingot.load(art, threads=1))
                logits = loaded[-1].prefill(seen)
    finally:
        for m in loaded:
            m.close()


class Recorder:
    """Wraps a model's prefill_at / decode_batch to keep, per slot, the logits each emitted
    token was sampled from and the token lists prefilled from position 0."""

    def __init__(self, model):
        self.calls = []
        prefill, decode = model.prefill_at, model.decode_batch

        def prefill_at(slot, pos, ids):
            out = prefill(slot, pos, ids)
            self.calls.append(("p", int(slot), int(pos), [int(i) for i in ids], out.copy()))
            return out

        def decode_batch(ids, positions, slots):
            out = decode(ids, positions, slots)
            for i, s in enumerate(slots):
                self.calls.append(("d", int(s), int(positions[i]), [int(ids[i])],
                                   out[i].copy()))
            return out
        model.prefill_at, model.decode_batch = prefill_at, decode_batch

    def slot(self, s):
        """(logits of each emitted token, the lists prefilled from position 0) of slot s."""
        calls = [c for c in self.calls if c[1] == s]
        emitted, prefills = [], []
        for i, (kind, _, pos, ids, logits) in enumerate(calls):
            if kind == "p":
                if pos == 0:
                    prefills.append([])
                prefills[-1] += ids
                nxt = calls[i + 1] if i + 1 < len(calls) else None
                if nxt is None or nxt[0] == "d" or nxt[2] != pos + len(ids):
                    emitted.append(logits)  # the last chunk: its logits were sampled
            else:
                emitted.append(logits)
        return emitted, prefills


def close(a, b) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


def request(prompt, n, keep=None, shift=True):
    return Request(list(prompt), n, stop_ids=frozenset(), context_shift=shift, keep=keep)


def prompt_of(n, seed):
    return np.random.default_rng(seed).integers(2, 300, size=n).tolist()


# -- default: a clear error, or "length" at the context ---------------------------------------
def test_overlong_prompt_is_an_error_by_default(arts):
    with ingot.load(arts["llama"], threads=1) as m:
        with pytest.raises(IngotError, match=r"the prompt has 33 tokens; the compiled context "
                                             r"holds 32"):
            m.engine.submit(request(prompt_of(33, 0), 4, shift=None))
        text = "The quick brown fox jumps over the lazy dog. " * 6
        assert len(m.tokenizer.encode(text)) >= 32
        with pytest.raises(IngotError, match=r"the compiled context holds 32"):
            m.generate(text, max_tokens=4)


def test_generation_ends_with_length_at_the_context_by_default(arts):
    art, ctx = arts["llama"], CTX["llama"]
    p = prompt_of(20, 1)
    want = reference(art, p, 0, ctx - len(p) + 1)[0]  # the last token has no position left
    with ingot.load(art, threads=1) as m:
        h = m.engine.submit(request(p, 100, shift=None))
        assert h.tokens() == want
        assert h.finish_reason == "length" and h.context_shifts == 0


# -- with context shift -----------------------------------------------------------------------
@pytest.mark.parametrize("name,keep", [("llama", 4), ("mistral", 5), ("llama", 0)])
def test_shift_equals_a_fresh_model_given_the_kept_tokens(arts, name, keep):
    art, ctx = arts[name], CTX[name]
    p, n = prompt_of(11, 2), 3 * ctx
    toks, rows, windows, _ = reference(art, p, keep, n)
    assert len(windows) >= 4  # several shifts happened in the reference
    with ingot.load(art, threads=1) as m:
        rec = Recorder(m)
        h = Engine(m).submit(request(p, n, keep))
        assert h.tokens() == toks
        assert h.finish_reason == "length" and h.completion_tokens == n
        assert h.context_shifts == len(windows) - 1
        assert h.prompt_tokens == len(p)
        slot = next(c[1] for c in rec.calls)
        emitted, prefills = rec.slot(slot)
        assert prefills == windows  # each shift re-prefilled exactly the kept tokens
        assert len(emitted) == n
        for i, (got, want) in enumerate(zip(emitted, rows)):
            assert close(got, want) < TOL, (name, i)


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_two_shifting_sequences_decoded_together(arts, name):
    art, ctx = arts[name], CTX[name]
    jobs = [(prompt_of(9, 3), 2, 2 * ctx + 5), (prompt_of(17, 4), 6, 3 * ctx)]
    refs = [reference(art, p, k, n) for p, k, n in jobs]
    with ingot.load(art, threads=1) as m:
        rec = Recorder(m)
        eng = Engine(m)
        handles = [eng.submit(request(p, n, k)) for p, k, n in jobs]
        got = [h.tokens() for h in handles]  # drives the engine inline: both run together
        assert eng.stats["decode_rows"] > eng.stats["decode_steps"]  # batched steps happened
        for (p, _, _), h, toks, (want, rows, windows, _) in zip(jobs, handles, got, refs):
            assert toks == want
            slot = next(c[1] for c in rec.calls if c[0] == "p" and c[3] == p[:len(c[3])])
            emitted, prefills = rec.slot(slot)
            assert prefills == windows
            assert max(close(a, b) for a, b in zip(emitted, rows)) < TOL


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_overlong_prompt_with_shift_equals_the_truncated_prompt(arts, name):
    art, ctx = arts[name], CTX[name]
    p, keep = prompt_of(2 * ctx + 7, 5), 3
    toks, rows, windows, _ = reference(art, p, keep, ctx)
    assert windows[0] == p[:keep] + p[-((ctx - keep) // 2):]
    with ingot.load(art, threads=1) as m:
        rec = Recorder(m)
        h = Engine(m).submit(request(p, ctx, keep))
        assert h.tokens() == toks
        assert h.prompt_tokens == len(p)  # what the user sent; the model saw windows[0]
        emitted, prefills = rec.slot(0)
        assert prefills == windows
        assert max(close(a, b) for a, b in zip(emitted, rows)) < TOL


def test_default_keep_is_the_bos_and_generate_takes_the_option(arts):
    art, ctx = arts["llama"], CTX["llama"]
    text = "The quick brown fox jumps over the lazy dog. " * 6
    with ingot.load(art, threads=1) as m:
        ids = m.tokenizer.encode(text)
        assert ids[0] == m.tokenizer.bos_id and len(ids) > ctx
        eos = m.eos_ids()
        got = m.generate(text, max_tokens=40, temperature=0, context_shift=True)
        toks = reference(art, ids, 1, 40)[0]
        toks = toks[:next((i for i, t in enumerate(toks) if t in eos), len(toks))]
        assert got == m.tokenizer.decode(toks)
        assert m.generate(text, max_tokens=40, temperature=0, context_shift=True,
                          keep=1) == got


@pytest.mark.parametrize("name", ["llama", "mistral"])
def test_prefix_reuse_after_a_shift(arts, name):
    """The slot's record of its cache follows the shift: a prompt that shares the kept tokens
    reuses them, and answers as a fresh model does."""
    art, ctx = arts[name], CTX[name]
    p, keep, n = prompt_of(10, 6), 3, 2 * ctx + 3
    held = reference(art, p, keep, n)[3]
    follow = held[:len(held) - 3] + prompt_of(2, 7)
    want = reference(art, follow, keep, 12)[0]
    with ingot.load(art, threads=1) as m:
        eng = Engine(m)
        a = eng.submit(request(p, n, keep))
        a.tokens()
        assert a.context_shifts >= 2
        b = eng.submit(request(follow, 12, keep))
        assert b.tokens() == want
        assert b.cached_tokens == len(held) - 3


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("keep", [-1, 31, 32, 1.5, True])
def test_bad_keep_is_a_one_line_error(arts, keep):
    with ingot.load(arts["llama"], threads=1) as m:
        with pytest.raises(IngotError, match=r"^keep must be an integer from 0 to 30 \(the "
                                             r"compiled context of 32 tokens less 2\)"):
            m.engine.submit(request(prompt_of(5, 8), 4, keep))
        with pytest.raises(IngotError, match=r"^keep must be"):
            m.engine.set_context_shift(True, keep)
        m.engine.submit(request(prompt_of(5, 8), 1, keep, shift=False)).tokens()  # unused


# -- the CLI and the server ------------------------------------------------------------------
def test_cli_flags(arts, capsys):
    from ingot.cli import main
    art = str(arts["llama"])
    text = "The quick brown fox jumps over the lazy dog. " * 6
    base = ["run", art, "--threads", "1", "--raw", "-p", text, "--max-tokens", "40",
            "--temperature", "0"]
    assert main(base + ["--context-shift", "--keep", "2"]) == 0
    out = capsys.readouterr().out
    with ingot.load(art, threads=1) as m:
        want = m.generate(text, max_tokens=40, temperature=0, context_shift=True, keep=2)
    assert out == want + "\n"
    assert main(base) == 1
    assert "the compiled context holds 32" in capsys.readouterr().err
    assert main(base + ["--context-shift", "--keep", "31"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ingot: error: --keep must be an integer from 0 to 30") and \
        "\n" not in err
    for bad in (["--keep", "2"], ["--context-shift", "--keep", "-1"]):
        with pytest.raises(SystemExit) as e:
            main(base + bad)
        assert e.value.code == 2
        assert "--keep" in capsys.readouterr().err


def test_server_applies_the_flag(arts):
    pytest.importorskip("fastapi")
    pytest.importorskip("uvicorn")
    import http.client

    from ingot.runtime.server import BackgroundServer, create_app
    art, ctx = arts["llama"], CTX["llama"]
    p = prompt_of(ctx + 9, 9)

    def post(port):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/completions", json.dumps(
            {"model": "tiny", "prompt": p, "max_tokens": 2 * ctx, "temperature": 0}),
            {"Content-Type": "application/json"})
        r = conn.getresponse()
        out = r.status, json.loads(r.read())
        conn.close()
        return out

    with ingot.load(art, threads=1) as m:
        eng = m.engine.set_context_shift(True, 2).start()
        srv = BackgroundServer(create_app(m, eng, "tiny"))
        try:
            status, body = post(srv.port)
            assert status == 200, body
            eos = m.eos_ids()
            want = reference(art, p, 2, 2 * ctx)[0]
            want = want[:next((i for i, t in enumerate(want) if t in eos), len(want))]
            assert body["choices"][0]["text"] == m.tokenizer.decode(want)
            assert body["usage"]["prompt_tokens"] == len(p)
            assert body["usage"]["completion_tokens"] == len(want)
            eng.set_context_shift(False)
            status, body = post(srv.port)
            assert status == 400 and body["error"]["code"] == "context_length_exceeded"
        finally:
            srv.close()
