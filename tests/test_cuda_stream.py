"""--max-memory on a CUDA artefact: units kept on the GPU, the others copied into two staging
slots ahead of their launches, on a stand-in libcuda whose launches the simulator runs.

At each launch the test reads every weight word's device bytes and compares them with the
artefact's bytes at that weight's offset: a copy issued late (or into the wrong slot) fails
there, whatever the logits say."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import ingot
from ingot.errors import IngotError
from ingot.runtime.cuda.stream import SLOTS, fixed_device_bytes, plan_device_residency
from test_cuda_e2e import ATOL, _compare, build_pair
from test_cuda_map import _greedy

pytestmark = pytest.mark.xdist_group("cuda")


@pytest.fixture(scope="module")
def cuda_pair(model_dirs, tmp_path_factory):
    return lambda isq=None: build_pair(model_dirs, tmp_path_factory, isq)


@pytest.fixture(scope="module")
def reference(cuda_pair):
    host, _, _ = cuda_pair()
    with ingot.load(host, threads=1) as m:
        return _greedy(m)


def _budgets(plan):
    """All resident; the largest unit kept; the least that runs (every unit streamed)."""
    sizes = sorted(u["bytes"] for u in plan["units"])
    fixed = fixed_device_bytes(plan)
    least = fixed + SLOTS * sizes[-1]
    return [fixed + sum(sizes), least + sizes[-1], least]


def _checked_fake(sim, state):
    from test_cuda_driver import FakeCuda
    lib = ctypes.CDLL(str(sim))
    u3 = ctypes.c_uint * 3

    def execute(kernel, grid, block, shared, a, d):
        drv = state["drv"]
        for name, base in drv._words.items():
            step = drv.plan.step(name)
            j0 = (a - base) // 8
            if 0 <= j0 < step.kind.size and drv._ready.get(name):
                break
        li = int(np.searchsorted(step.start, j0, side="right") - 1)
        end = step.start[li + 1] if li + 1 < len(step) else step.kind.size
        words = np.frombuffer((ctypes.c_int64 * int(end - j0)).from_address(a), np.int64)
        for k, w in zip(range(j0, end), words):
            if step.kind[k] == 1:  # a weight word: the bytes there are the artefact's
                off = int(step.c0[k])
                n = min(64, state["weights"].size - off)
                got = np.frombuffer((ctypes.c_uint8 * n).from_address(int(w)), np.uint8)
                assert np.array_equal(got, state["weights"][off:off + n]), (name, li, off)
        ss = getattr(drv, "_ss", {}).get(name)
        for e in (ss.first_of.get(li, ()) if ss else ()):  # the copy after this one is already issued
            state["ahead"].append(len(drv.stream_log) >= min(e + 2, len(ss.episodes)))
        assert lib.ingot_sim_launch(kernel.encode(), u3(*grid), u3(*block),
                                    ctypes.c_uint(shared), ctypes.c_void_p(a),
                                    ctypes.c_void_p(d)) == 0, kernel
    return FakeCuda(execute=execute)


def test_tokens_match_at_several_budgets(cuda_pair, reference, monkeypatch):
    import ingot.runtime.cuda.driver as drv_mod
    _, gpu, sim = cuda_pair()
    monkeypatch.delenv("INGOT_CUDA_SIM", raising=False)
    from ingot.runtime.artefact import Artefact
    art = Artefact(gpu)
    plan = art.json("plan")
    art.close()
    streamed = []
    for budget in _budgets(plan):
        state = {"ahead": []}
        fake = _checked_fake(sim, state)
        monkeypatch.setattr(drv_mod, "load_libcuda", lambda: fake)
        with ingot.load(gpu, max_memory=budget) as m:
            drv = m._team.backend
            state["drv"], state["weights"] = drv, m._weights
            streamed.append(len(m.streamed_units))
            _compare(reference, _greedy(m), ATOL[None])
            if streamed[-1]:
                assert drv.stream_log and all(state["ahead"])
                # Device memory: what the plan promised, within the budget.
                held = sum(c[1][1].value for c in fake.calls if c[0] == "cuMemAlloc_v2")
                words = sum(8 * max(len(s.c0), 1) for s in drv.plan.steps.values()) + 16
                assert held - words <= budget, (held, budget)
    assert streamed[0] == 0 and 0 < streamed[1] < streamed[2] == len(plan["units"])


def test_below_the_floor_names_the_smallest_budget(cuda_pair):
    _, gpu, _ = cuda_pair()
    from ingot.runtime.artefact import Artefact
    art = Artefact(gpu)
    plan = art.json("plan")
    art.close()
    least = _budgets(plan)[-1]
    plan_device_residency(plan, least)
    with pytest.raises(IngotError, match=f"smallest budget that works is "
                                         f"{least / 2**20:.1f} MiB"):
        ingot.load(gpu, max_memory=least - 1)


def test_inspect_reports_the_gpu_budget(cuda_pair, capsys):
    """`ingot inspect` on a CUDA artefact: the GPU's budget (the same floor a load names), the
    GPU scratch, no per-thread host scratch."""
    from ingot.cli import _size, main
    _, gpu, _ = cuda_pair()
    from ingot.runtime.artefact import Artefact
    art = Artefact(gpu)
    plan = art.json("plan")
    art.close()
    assert main(["inspect", str(gpu)]) == 0
    out = capsys.readouterr().out
    least = _budgets(plan)[-1]
    assert "budget (GPU)" in out and f"smallest --max-memory {_size(least)} streams" in out
    assert "scratch (GPU)" in out and "scratch/thread" not in out
