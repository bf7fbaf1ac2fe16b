"""Layer streaming in libingot (runtime/capi/offload.c) under ingot_options.memory_budget.

The reference is the Python runtime's --max-memory (runtime/offload.py plan_streaming): for
every budget around the thresholds where the choice changes, libingot must keep the same units
resident, read ahead exactly when Python does, and refuse the same budgets naming the same
smallest budget. Streaming only moves pages, so the greedy tokens must equal full residency's
(and the Python runtime's under the same budget) exactly. The tiny llama (shared with
tests/test_capi.py) has four units: embed, layer 0, layer 1 (equal sizes: the tie order
matters) and head. The streamed generation runs once more under AddressSanitizer.
"""
from __future__ import annotations

import ctypes
import itertools
import re
import subprocess

import numpy as np
import pytest

import capi_ctypes as capi
from ingot.errors import IngotError
from ingot.runtime.model import Model
from ingot.runtime.offload import fixed_bytes, plan_streaming

pytestmark = pytest.mark.xdist_group("capi")

PROMPT = [5, 17, 42, 99, 7]


def budgets(plan, threads):
    """Budgets at and one byte below every sum the rule compares: fixed + any set of units."""
    fixed = fixed_bytes(plan, threads)
    sizes = [u["bytes"] for u in plan["units"]]
    sums = {sum(c) for k in range(len(sizes) + 1) for c in itertools.combinations(sizes, k)}
    return sorted({fixed + s + d for s in sums for d in (-1, 0)})


def python_greedy(path, budget, n):
    with Model.load(path, threads=1, max_memory=budget) as m:
        out, logits = [], m.prefill(PROMPT)
        for _ in range(n):
            out.append(int(np.argmax(logits)))
            logits = m.decode(out[-1])
        return out, m.resident, m.read_ahead


def test_residency_matches_python(libingot, artefacts):
    path = artefacts("llama")
    with Model.load(path, threads=1) as m:
        plan = m.plan
    seen = set()
    for threads in (1, 2):
        for b in budgets(plan, threads):
            h = capi.Handle(libingot, path, threads=threads, budget=b)
            try:
                want = plan_streaming(plan, threads, b, path)
            except IngotError as err:
                assert h.rc == capi.E_BUDGET, (b, h.rc, h.error)
                smallest = re.search(r"smallest budget that works is ([\d.]+) MiB", str(err))
                assert smallest and f"works is {smallest.group(1)} MiB" in h.error, h.error
                assert f"memory_budget {b / 2**20:.1f} MiB" in h.error
                seen.add("refused")
                continue
            with h:
                info, resident = h.memory()
            assert (resident, bool(info.read_ahead)) == (list(want[0]), want[1]), b
            assert info.n_streamed == want[0].count(False)
            assert info.full_bytes == fixed_bytes(plan, threads) + sum(
                u["bytes"] for u in plan["units"])
            assert info.peak_bytes <= b
            seen.add((info.n_streamed, info.read_ahead))
    # The sweep reached a refusal, full residency, and streaming with and without read-ahead.
    assert {"refused", (0, 0)} <= seen and any(s[1] == 1 for s in seen if s != "refused") \
        and any(s[0] and not s[1] for s in seen if s != "refused"), seen


def test_streamed_tokens_equal_resident(libingot, artefacts):
    path = artefacts("llama")
    with Model.load(path, threads=1) as m:
        plan = m.plan
    sizes = sorted((u["bytes"] for u in plan["units"]), reverse=True)
    with capi.Handle(libingot, path) as h:
        want = h.greedy(PROMPT, 12)
    py_full, _, _ = python_greedy(path, None, 12)
    assert want == py_full[:len(want)] and want
    # The floor (one streamed unit held, no read-ahead) and room for two (read-ahead); Python
    # runs 1 thread, libingot 2 (the budget counts each thread's scratch).
    for extra, ahead in ((sizes[0], False), (sizes[0] + sizes[1], True)):
        py, resident, py_ahead = python_greedy(path, fixed_bytes(plan, 1) + extra, 12)
        assert not all(resident) and py_ahead == ahead
        with capi.Handle(libingot, path, threads=2, budget=fixed_bytes(plan, 2) + extra) as h:
            info, _ = h.memory()
            assert info.n_streamed and bool(info.read_ahead) == ahead
            assert h.greedy(PROMPT, 12) == want
        assert py[:len(want)] == want


def test_resident_weights_are_read_into_huge_pages(libingot, artefacts):
    """All resident: libingot reads the weights into huge pages where the host has them, as
    the Python runtime does (runtime/hugepages.py); mmap=1 and a streamed budget keep the file
    map. The tokens are the same either way."""
    from ingot.runtime.hugepages import thp_mode
    path = artefacts("llama")
    with Model.load(path, threads=1) as m:
        weights, huge = m._weights.size, m.huge_pages
    with capi.Handle(libingot, path) as h:
        held = h.memory()[0].huge_page_bytes
        want = h.greedy(PROMPT, 12)
    assert (held > 0) == huge == (thp_mode() != "never")
    assert held == 0 or held == -(-weights // (2 << 20)) * (2 << 20)  # whole 2 MiB pages
    with capi.Handle(libingot, path, mmap=1) as h:
        assert h.memory()[0].huge_page_bytes == 0
        assert h.greedy(PROMPT, 12) == want
    # A program built against the header before these fields passes shorter structs: the
    # library reads and writes only what their sizes cover (mmap=1 past the size is ignored).
    opt, m = capi.Options(capi.Options.mmap.offset, 1, 0, 0, 1), ctypes.c_void_p()
    assert libingot.ingot_open(str(path).encode(), ctypes.byref(opt), ctypes.byref(m)) == capi.OK
    info = capi.Memory(capi.Memory.huge_page_bytes.offset, huge_page_bytes=7)
    try:
        assert libingot.ingot_memory_info(m, ctypes.byref(info), None, 0) == capi.OK
        assert info.huge_page_bytes == 7 and info.n_units > 0
        info.size = capi.Memory.huge_page_bytes.offset - 8
        assert libingot.ingot_memory_info(m, ctypes.byref(info), None, 0) == capi.E_ARG
    finally:
        assert libingot.ingot_close(m) == capi.OK


def test_compile_time_budget_is_the_default(libingot, artefacts, tmp_path):
    # memory_budget 0 takes the plan's max_memory_hint, as the Python runtime does.
    path = artefacts("llama")
    with Model.load(path, threads=1) as m:
        b = fixed_bytes(m.plan, 1) + max(u["bytes"] for u in m.plan["units"])
    hinted = capi.rewrite(path, tmp_path / "hinted.ingot",
                          lambda plan, secs: plan.update(max_memory_hint=b))
    with Model.load(hinted, threads=1) as m:
        want = m.resident
    with capi.Handle(libingot, hinted) as h:
        info, resident = h.memory()
    assert resident == want and not all(want) and info.budget == b
    with capi.Handle(libingot, hinted, budget=1 << 40) as h:  # an explicit budget wins
        assert h.memory()[0].n_streamed == 0


def test_streaming_under_sanitizers(artefacts, tmp_path):
    from test_capi import SAN, _build, parse_gen, run
    from ingot.runtime.capi_build import find_cc
    (tmp_path / "probe.c").write_text("int main(void) { return 0; }\n")
    probe = subprocess.run([find_cc(), *SAN, str(tmp_path / "probe.c"), "-o",
                            str(tmp_path / "probe")], capture_output=True)
    if probe.returncode != 0 or subprocess.run([str(tmp_path / "probe")]).returncode != 0:
        pytest.skip("SANITIZER RUNTIME MISSING: the streamed run under sanitizers is NOT done")
    exe = _build(tmp_path / "lib", SAN)
    path = artefacts("llama")
    with Model.load(path, threads=1) as m:
        sizes = sorted((u["bytes"] for u in m.plan["units"]), reverse=True)
        b = fixed_bytes(m.plan, 2) + sizes[0] + sizes[1]
    ids = ",".join(map(str, PROMPT))
    _, full, _ = parse_gen(run(exe, "gen", path, 2, 10, "--ids", ids))
    out = run(exe, "gen", path, 2, 10, "--budget", b, "--ids", ids)
    _, got, _ = parse_gen(out)
    streamed, ahead = map(int, next(x for x in out.splitlines() if x.startswith("S "))[2:].split())
    assert got == full and streamed > 0 and ahead == 1
    # chat.c under the sanitizers too (the tiny model's template is chatml).
    out = run(exe, "chat", path, "system", " s ", "user", "héllo\n").split()
    assert out[1] == "0" and bytes.fromhex(out[2]).decode() == \
        "<|im_start|>system\n s <|im_end|>\n<|im_start|>user\nhéllo\n<|im_end|>\n" \
        "<|im_start|>assistant\n"
