"""libingot, the C library (runtime/capi, ingot.h), against the Python runtime.

`ingot build-capi`'s builder compiles libingot.so into a temporary folder; tests/capi/ingot_test.c
(built with cc against the installed ingot.h) opens an artefact, tokenizes a prompt and generates
greedily. Its prompt ids must equal Hugging Face `tokenizers`' (through runtime/tokenizer.py) and
its generated ids the Python runtime's greedy ids, token for token, on a tiny model and on Gemma 3
270M. Misuse (NULL and closed handles, small buffers, bad ids, context overflow, bad sampling
parameters) and damaged artefacts (bad magic, truncation, checksums, foreign CPU) must give the
documented status codes and messages. The misuse and tiny-model paths run once more with the
library and the program built under AddressSanitizer/UBSan.
"""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import struct
import subprocess
import zlib

import numpy as np
import pytest

from ingot.runtime.model import Model

pytestmark = pytest.mark.xdist_group("capi")

ROOT = pathlib.Path(__file__).resolve().parent.parent
DRIVER = ROOT / "tests" / "capi" / "ingot_test.c"
SAN = ("-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
       "-fno-omit-frame-pointer", "-g")
PROMPTS = ["Hello world, this is a test.", "The quick brown fox", "  spaces\tand\nlines 123"]

# ingot.h's status codes
OK, E_ARG, E_HANDLE, E_IO, E_FORMAT, E_CHECKSUM, E_HOST = 0, -1, -2, -3, -4, -5, -6
E_CONTEXT, E_TOKEN, E_SMALL, E_TEXT, E_STATE, E_BUDGET = -9, -10, -11, -13, -15, -16


def _build(tmp: pathlib.Path, flags=()) -> pathlib.Path:
    from ingot.errors import IngotError
    from ingot.runtime.capi_build import build_capi, find_cc
    try:
        cc = find_cc()
    except IngotError as e:
        pytest.skip(f"NO C COMPILER: libingot is NOT tested ({e})")
    lib = build_capi(tmp, extra_flags=flags)
    exe = tmp / "ingot_test"
    subprocess.run([cc, "-std=c99", "-Wall", "-Wextra", "-Werror", *flags, f"-I{tmp}",
                    str(DRIVER), "-o", str(exe), f"-L{tmp}", "-lingot", f"-Wl,-rpath,{tmp}"],
                   check=True)
    assert lib.exists() and (tmp / "ingot.h").exists()
    return exe


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    return _build(tmp_path_factory.mktemp("capi"))


@pytest.fixture(scope="module")
def san_driver(tmp_path_factory):
    from ingot.runtime.capi_build import find_cc
    tmp = tmp_path_factory.mktemp("capi_san")
    (tmp / "probe.c").write_text("int main(void) { return 0; }\n")
    probe = subprocess.run([find_cc(), *SAN, str(tmp / "probe.c"), "-o", str(tmp / "probe")],
                           capture_output=True)
    if probe.returncode != 0 or subprocess.run([str(tmp / "probe")]).returncode != 0:
        pytest.skip("SANITIZER RUNTIME MISSING (libasan/libubsan): libingot's sanitizer run is "
                    "NOT done")
    return _build(tmp / "lib", SAN)


def run(exe, *args, check=True) -> str:
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1",
               UBSAN_OPTIONS="print_stacktrace=1")
    r = subprocess.run([str(exe), *map(str, args)], capture_output=True, env=env, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr.decode(errors="replace")
    return r.stdout.decode()


def parse_gen(out: str):
    prompt = [int(x[2:]) for x in out.splitlines() if x.startswith("P ")]
    gen = [int(x[2:]) for x in out.splitlines() if x.startswith("G ")]
    text = bytes.fromhex(next(x[2:] for x in out.splitlines() if x.startswith("T ")))
    return prompt, gen, text


def python_greedy(path, prompt: str, n: int):
    """The Python runtime's prompt ids, greedy ids and text (the engine's stopping rule: an end
    token ends generation and is not output)."""
    with Model.load(path, threads=2) as m:
        ids = m.tokenizer.encode(prompt, add_special_tokens=True)
        eos, out = m.eos_ids(), []
        logits = m.prefill(ids)
        while len(out) < n:
            t = int(np.argmax(logits))
            if t in eos:
                break
            out.append(t)
            logits = m.decode(t)
        text = m.generate(prompt, max_tokens=n, temperature=0.0)
        return ids, out, text


def check_generation(exe, path, prompt: str, n: int = 32):
    want_prompt, want, want_text = python_greedy(path, prompt, n)
    got_prompt, got, text = parse_gen(run(exe, "gen", path, 2, n, "--text", prompt))
    assert got_prompt == want_prompt
    assert got == want, f"C {got} != Python {want}"
    assert text.decode("utf-8", errors="replace") == want_text


def test_tiny_model_greedy_matches_python(driver, artefacts):
    path = artefacts("llama")
    for prompt in PROMPTS[:2]:
        check_generation(driver, path, prompt)
    # Prompt ids given directly (single-token prompt: the prefill step, as the Python engine).
    _, got, _ = parse_gen(run(driver, "gen", path, 1, 8, "--ids", "5"))
    with Model.load(path, threads=1) as m:
        logits, want = m.prefill([5]), []
        for _ in range(8):
            want.append(int(np.argmax(logits)))
            logits = m.decode(want[-1])
    assert got[:len(want)] == want[:len(got)] and len(got) >= 1


@pytest.mark.xdist_group("gemma")  # the worker that compiles Gemma once for the other tests
def test_gemma_greedy_matches_python(driver, gemma_artefact):
    check_generation(driver, gemma_artefact, "The capital of France is")


@pytest.mark.xdist_group("gemma")
def test_tokenizer_matches_tokenizers(driver, artefacts, gemma_artefact):
    for path in (artefacts("llama"), gemma_artefact):
        out = run(driver, "tok", path, *PROMPTS)
        got = [[int(x) for x in line.split()[1:]] for line in out.splitlines()]
        with Model.load(path, threads=1) as m:
            want = [m.tokenizer.encode(p, add_special_tokens=True) for p in PROMPTS]
        assert got == want


def misuse_report(exe, path) -> dict:
    out = run(exe, "misuse", path)
    assert out.rstrip().endswith("done"), out
    rows = {}
    for line in out.splitlines()[:-1]:
        name, code, msg = (line.split(" ", 2) + [""])[:3]
        rows[name] = (int(code), msg)
    return rows


def check_misuse(r: dict) -> None:
    expect = {
        "open_null_path": (E_ARG, "must not be NULL"), "open_null_out": (E_ARG, "NULL"),
        "open_bad_size": (E_ARG, "ingot_options.size"), "open_bad_threads": (E_ARG, "threads"),
        "open_big_context": (E_CONTEXT, "max_seq_len"),
        "open_small_budget": (E_BUDGET, "memory_budget"),
        "null_eval": (E_HANDLE, "NULL"), "null_logits": (E_HANDLE, "NULL"),
        "null_sample": (E_HANDLE, "NULL"), "null_tokenize": (E_HANDLE, "NULL"),
        "null_reset": (E_HANDLE, "NULL"), "null_close": (OK, ""),
        "logits_before_eval": (E_STATE, "no logits"), "sample_before_eval": (E_STATE, "no logits"),
        "eval_empty": (E_ARG, "at least one token"), "eval_bad_token": (E_TOKEN, "outside"),
        "eval_overflow": (E_CONTEXT, "context overflow"), "eval_ok": (OK, ""),
        "logits_null_out": (E_ARG, "NULL"), "logits_ok": (OK, ""),
        "sample_bad_top_p": (E_ARG, "top_p"), "sample_bad_size": (E_ARG, "ingot_sampling.size"),
        "logits_after_reset": (E_STATE, "no logits"),
        "generate_null_prompt": (E_ARG, "at least one token"),
        "generate_neg_max": (E_ARG, "max_tokens"), "generate_to_context": (OK, ""),
        "generate_full": (E_CONTEXT, "context overflow"), "tokenize": (OK, ""),
        "detokenize_small": (E_SMALL, ""), "tokenize_small": (E_SMALL, ""),
        "tokenize_bad_utf8": (E_TEXT, ""), "detokenize_bad_id": (E_TOKEN, ""),
        "close": (OK, ""), "closed_eval": (E_HANDLE, "closed"),
        "closed_sample": (E_HANDLE, "closed"), "closed_close": (E_HANDLE, "closed"),
    }
    for name, (code, text) in expect.items():
        assert name in r, name
        assert r[name][0] == code and text in r[name][1], (name, r[name])
    assert r["null_vocab"][0] == -1 and r["closed_vocab"][0] == -1
    assert r["vocab"][0] == 300 and r["vocab"][1] == "300"
    assert r["seeded_repeat"][0] == 1 and r["narrow_is_argmax"][0] == 1
    assert r["made"][0] == 14 and r["made"][1] == "pos 16"  # 3 prompt + 13 fed, the last unfed
    assert r["detokenize_needed"][0] > 1 and r["tokenize_needed"][0] >= 2
    assert r["abi"][0] == 1


def test_misuse(driver, artefacts):
    check_misuse(misuse_report(driver, artefacts("llama")))


# --- damaged artefacts ---------------------------------------------------------------------------

def _rewrite_header(data: bytes, edit) -> bytes:
    """The artefact with its JSON header changed by edit(header) and a valid header checksum."""
    hoff, hlen = struct.unpack_from("<QQ", data, 16)
    head = json.loads(data[hoff:hoff + hlen])
    edit(head)
    return _with_header(data, json.dumps(head, sort_keys=True, separators=(",", ":")).encode())


def _with_header(data: bytes, blob: bytes) -> bytes:
    magic, ver, res, hoff, _, _ = struct.unpack_from("<8sIIQQI", data, 0)
    pre = struct.pack("<8sIIQQI", magic, ver, res, hoff, len(blob), zlib.crc32(blob))
    return pre + data[len(pre):hoff] + blob


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


def damaged(src: pathlib.Path, tmp: pathlib.Path) -> dict:
    data = src.read_bytes()
    hoff = struct.unpack_from("<Q", data, 16)[0]
    head = json.loads(data[hoff:])
    sec = {s["name"]: s for s in head["sections"]}

    def foreign_cpu(h):
        h["target"]["required_flags"] = ["avx2", "no_such_cpu_flag"]

    def past_end(h):
        next(s for s in h["sections"] if s["name"] == "code")["size"] = hoff

    cases = {
        "magic": (_flip(data, 0), E_FORMAT, "bad magic"),
        "short": (data[:20], E_FORMAT, "too short"),
        "truncated": (data[:hoff // 2], E_FORMAT, "truncated"),
        "version": (data[:8] + struct.pack("<I", 99) + data[12:], E_FORMAT, "format version 99"),
        "header_crc": (_flip(data, hoff + 5), E_CHECKSUM, "header is corrupt"),
        "plan_crc": (_flip(data, sec["plan"]["offset"] + 3), E_CHECKSUM, "'plan' is corrupt"),
        "code_crc": (_flip(data, sec["code"]["offset"] + 100), E_CHECKSUM, "'code' is corrupt"),
        "vocab_crc": (_flip(data, sec["vocab_native"]["offset"] + 70), E_CHECKSUM,
                      "'vocab_native' is corrupt"),
        "section_range": (_rewrite_header(data, past_end), E_FORMAT, "'code' is truncated"),
        "foreign_cpu": (_rewrite_header(data, foreign_cpu), E_HOST, "no_such_cpu_flag"),
        "not_json": (_with_header(data, b'{"sections": [{'), E_FORMAT, "not valid JSON"),
    }
    out = {}
    for name, (blob, code, text) in cases.items():
        p = tmp / f"{name}.ingot"
        p.write_bytes(blob)
        out[name] = (p, code, text)
    out["missing"] = (tmp / "nope.ingot", E_IO, "cannot open")
    return out


def check_damaged(exe, src, tmp) -> None:
    for name, (path, code, text) in damaged(src, tmp).items():
        line = run(exe, "open", path).strip()
        _, rc, msg = line.split(" ", 2)
        assert int(rc) == code and text in msg, (name, line)


def test_damaged_artefacts(driver, artefacts, tmp_path):
    check_damaged(driver, artefacts("llama"), tmp_path)


def test_sanitizers(san_driver, artefacts, tmp_path):
    path = artefacts("llama")
    check_misuse(misuse_report(san_driver, path))
    check_damaged(san_driver, path, tmp_path)
    check_generation(san_driver, path, PROMPTS[0], n=16)


def test_build_capi_cli(tmp_path):
    from ingot.cli import main
    assert main(["build-capi", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "libingot.so").stat().st_size > 0
    assert "ingot_abi_version" in (tmp_path / "ingot.h").read_text()
    if shutil.which("nm"):  # only the public API is exported
        syms = subprocess.run(["nm", "-D", "--defined-only", str(tmp_path / "libingot.so")],
                              capture_output=True, text=True).stdout.split()
        names = [s for s in syms if s.startswith(("ingot", "team_", "mj_", "art_", "plan_"))]
        assert names and all(s.startswith("ingot_") and not s.startswith("ingot_tok_")
                             for s in names), names
