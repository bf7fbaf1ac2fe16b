"""The command line and the Python generation API on a tiny compiled model.

Subprocesses only where the process boundary is the point (the console entry, the cache across
runs, stdin); everything else calls `ingot.cli.main` in-process to keep the suite fast.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types

import numpy as np
import pytest

import ingot
from ingot.cli import _chat, _stream, build_parser, guarded, main


def run_cli(*args, env=None, stdin=None, timeout=300) -> subprocess.CompletedProcess:
    full_env = dict(os.environ, **(env or {}))
    full_env.pop("INGOT_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "ingot.cli", *map(str, args)], input=stdin,
                          capture_output=True, text=True, env=full_env, timeout=timeout)


def cli_in_process(*args) -> int:
    """The CLI's main in this process (its kernels already compiled): for tests that only
    need the exit status and the files it writes, without a fresh interpreter's start-up."""
    from ingot.cli import main
    return main([str(a) for a in args])


@pytest.fixture(scope="module")
def model(artefacts):
    m = ingot.load(artefacts("llama"), threads=1)
    yield m
    m.close()


def test_compile_then_run(model_dirs, model, tmp_path):
    folder, _ = model_dirs("llama")
    out = tmp_path / "m.ingot"
    r = run_cli("compile", "-m", folder, "-o", out, "--max-seq-len", 64)
    assert r.returncode == 0, r.stderr
    assert str(out) in r.stdout and "KiB" in r.stdout and out.exists()
    r = run_cli("run", out, "-p", "hello", "--max-tokens", 8)
    assert r.returncode == 0, r.stderr
    # The prompt goes through the chat template; the answer is the API's greedy answer.
    expected = model.generate([{"role": "user", "content": "hello"}], max_tokens=8,
                              temperature=0)
    assert expected and r.stdout == expected + "\n"


def test_run_model_compiles_once_into_cache(model_dirs, tmp_path):
    folder, _ = model_dirs("llama")
    cache = tmp_path / "cache"
    args = ("run", "-m", folder, "--max-seq-len", 64, "-p", "hi", "--max-tokens", 4, "--raw")
    first = run_cli(*args, env={"INGOT_CACHE": str(cache)})
    assert first.returncode == 0, first.stderr
    files = sorted(cache.iterdir())
    assert len(files) == 1 and files[0].suffix == ".ingot"
    mtime = files[0].stat().st_mtime_ns
    second = run_cli(*args, env={"INGOT_CACHE": str(cache)})
    assert second.returncode == 0, second.stderr
    assert sorted(cache.iterdir()) == files and files[0].stat().st_mtime_ns == mtime
    assert second.stdout == first.stdout


def test_inspect(artefacts, capsys):
    assert main(["inspect", str(artefacts("llama"))]) == 0
    text = capsys.readouterr().out
    for fragment in ("arena", "naive sum", "sections", "code", "weights", "KV cache",
                     "layer 1", "passes", "fuse_qkv", "x86_64" if os.uname().machine ==
                     "x86_64" else "target"):
        assert fragment in text


def test_inspect_json(artefacts, capsys):
    assert main(["inspect", "--json", str(artefacts("llama"))]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["plan"]["arena_bytes"] > 0
    assert {s["name"] for s in data["header"]["sections"]} >= {"plan", "code", "weights"}


def test_bench_json(artefacts, capsys):
    args = ["bench", str(artefacts("llama")), "--threads", "1", "--prompt-tokens", "16",
            "--gen-tokens", "8", "--repeats", "1", "--bandwidth-mib", "64", "--json"]
    assert main(args) == 0
    (row,) = json.loads(capsys.readouterr().out)["results"]
    assert row["engine"] == "ingot" and row["threads"] == 1 and row["prefill_tok_s"]["16"] > 0
    for key in ("decode_tok_s", "ttft_s", "load_s", "peak_rss_mib", "decode_of_ceiling"):
        assert row[key] > 0, key


def test_bench_rejects_too_long_a_run(artefacts, capsys):
    assert main(["bench", str(artefacts("llama")), "--prompt-tokens", "120"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "max_seq_len 128" in err[0]


def test_stream_joins_to_the_whole_answer(model):
    whole = model.generate("The quick brown fox", max_tokens=12, temperature=0)
    pieces = list(model.generate("The quick brown fox", max_tokens=12, temperature=0,
                                 stream=True))
    assert len(pieces) > 1 and "".join(pieces) == whole


def test_generate_messages_uses_the_chat_template(model):
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    text = model.generate(messages, max_tokens=8, temperature=0)
    # The same greedy loop by hand, from the ChatML text the tiny model's template produces.
    prompt = ("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
              "<|im_start|>assistant\n")
    ids = model.tokenizer.encode(prompt, add_special_tokens=False)
    model.reset()
    out, logits = [], model.prefill(ids)
    for _ in range(8):
        t = int(np.argmax(logits))
        if t in model.eos_ids():
            break
        out.append(t)
        logits = model.decode(t)
    assert text == model.tokenizer.decode(out)


def test_interactive_chat_through_stdin(artefacts):
    script = "/system be brief\nhello\n/reset\nagain\n/exit\nnever read\n"
    r = run_cli("run", artefacts("llama"), "--max-tokens", 4, stdin=script)
    assert r.returncode == 0, r.stderr
    assert len(r.stdout.splitlines()) == 2  # two answers
    assert "(system prompt set)" in r.stderr and "(context cleared)" in r.stderr


class _Recorder:
    """Stands in for a Model: records the prompts it is given, answers with fixed pieces."""

    def __init__(self, pieces=("ok",), on_piece=None):
        self.artefact = types.SimpleNamespace(has=lambda name: True)
        self.path = types.SimpleNamespace(name="fake.ingot")
        self.prompts, self.pieces, self.on_piece = [], pieces, on_piece

    def generate(self, prompt, stream=False, **kw):
        self.prompts.append(prompt)
        for i, p in enumerate(self.pieces):
            if self.on_piece:
                self.on_piece(i)
            yield p


def _run_args():
    return build_parser().parse_args(["run", "x.ingot"])


def test_chat_keeps_history_system_and_reset(monkeypatch, capsys):
    import io
    fake = _Recorder()
    monkeypatch.setattr(sys, "stdin", io.StringIO("/system be brief\none\ntwo\n/reset\nthree\n"))
    assert _chat(fake, _run_args()) == 0  # EOF ends the chat
    sys_msg = {"role": "system", "content": "be brief"}
    user = lambda t: {"role": "user", "content": t}  # noqa: E731
    bot = {"role": "assistant", "content": "ok"}
    assert fake.prompts == [[sys_msg, user("one")],
                            [sys_msg, user("one"), bot, user("two")],
                            [sys_msg, user("three")]]
    assert capsys.readouterr().out == "ok\nok\nok\n"


def test_ctrl_c_stops_the_answer_not_the_program(capsys):
    fake = _Recorder(pieces=("a", "b", "c", "d"),
                     on_piece=lambda i: i == 1 and os.kill(os.getpid(), signal.SIGINT))
    text, stopped = _stream(fake, "x", _run_args())
    assert stopped and text == "ab"
    assert capsys.readouterr().out == "ab [stopped]\n"
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_unexpected_errors_are_one_line(monkeypatch, capsys):
    def boom():
        raise ZeroDivisionError("oops")
    monkeypatch.delenv("INGOT_DEBUG", raising=False)
    assert guarded(boom) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("ingot: error: unexpected ZeroDivisionError")
    monkeypatch.setenv("INGOT_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        guarded(boom)


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ingot {ingot.__version__}"
