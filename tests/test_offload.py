"""Memory as a promise: layer streaming under --max-memory, the refusal below the smallest
budget, the compile-time default, no allocation per step, and a load that reads the weights
into huge pages where the host has them (or, with mmap=True, maps them and reads nothing).

Peak RSS is read from the kernel (VmHWM) in a fresh subprocess per run. The fixed overhead
(the interpreter, numpy, tokenizers, the artefact's code) is measured first: the all-resident
run's peak minus what the plan says it holds. A streamed run must then peak under its budget
plus that overhead (plus 4 MiB for allocator and page-table slack, measured at ~1 MiB here).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import ingot
from ingot.runtime.hugepages import thp_mode

MiB = 2**20
pytestmark = pytest.mark.xdist_group("offload")  # one worker compiles the model once
WORKER = textwrap.dedent("""
    import json, sys
    import numpy as np
    import ingot
    def hwm():
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM"):
                return int(line.split()[1]) * 1024
    def huge_kib(addr):  # AnonHugePages of the mapping that holds addr
        inside = False
        for line in open("/proc/self/smaps"):
            head = line.split()[0]
            if "-" in head and not head.endswith(":"):
                lo, hi = (int(x, 16) for x in head.split("-"))
                inside = lo <= addr < hi
            elif inside and head == "AnonHugePages:":
                return int(line.split()[1])
        return 0
    art, budget = sys.argv[1], None if sys.argv[2] == "none" else int(sys.argv[2])
    before = hwm()
    m = ingot.load(art, threads=1, max_memory=budget, prefetch=sys.argv[3] == "1",
                   mmap=sys.argv[4] == "1")
    after_load = hwm()
    logits = m.prefill(list(range(2, 14)))
    toks = []
    for _ in range(16):
        toks.append(int(np.argmax(logits)))
        logits = m.decode(toks[-1])
    print(json.dumps({"tokens": toks, "peak": hwm(), "before": before, "after_load": after_load,
                      "needed": m.memory_needed(1), "streamed": m.streamed_units,
                      "read_ahead": m.read_ahead, "huge_pages": m.huge_pages,
                      "weights": m._weights.size, "huge_kib": huge_kib(m._wb),
                      "started": m._read_ahead.started if m._read_ahead else 0}))
""")


def run_worker(art, budget=None, prefetch=True, mmap=False) -> dict:
    out = subprocess.run([sys.executable, "-c", WORKER, str(art), str(budget or "none"),
                          "1" if prefetch else "0", "1" if mmap else "0"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def deep(tmp_path_factory):
    """A 12-layer random Llama whose weights (~41 MiB in f32) dwarf everything else."""
    from tiny_models import build_model, save_model
    model = build_model("llama", vocab_size=1000, hidden_size=256, intermediate_size=768,
                        num_hidden_layers=12, head_dim=64, max_position_embeddings=128)
    folder = save_model(model, tmp_path_factory.mktemp("deep"))
    out = tmp_path_factory.mktemp("deep-art")
    return ingot.compile(folder, out / "deep.ingot", dtype="f32", max_seq_len=128)


def test_streamed_layers_give_the_same_tokens_under_a_third_of_the_memory(deep):
    resident = run_worker(deep)
    overhead = resident["peak"] - resident["needed"]
    budget = resident["needed"] // 3
    streamed = run_worker(deep, budget)
    assert len(streamed["streamed"]) >= 9  # most layers come from the file each step
    assert streamed["tokens"] == resident["tokens"]
    assert streamed["peak"] <= budget + overhead + 4 * MiB, (
        f"peak {streamed['peak'] / MiB:.1f} MiB over budget {budget / MiB:.1f} + overhead "
        f"{overhead / MiB:.1f} MiB")
    assert not streamed["huge_pages"]  # streamed units come from the file map
    # With mmap=True loading maps the file: nothing of the weights is read until a step needs
    # it. By default, all resident, the weights are read into huge pages at load where the host
    # has transparent huge pages (runtime/hugepages.py), and the kernel backs them with some.
    mapped = run_worker(deep, mmap=True)
    assert mapped["tokens"] == resident["tokens"] and not mapped["huge_pages"]
    assert mapped["after_load"] - mapped["before"] < 8 * MiB
    if thp_mode() == "never":
        assert not resident["huge_pages"]
    else:
        assert resident["huge_pages"]
        assert resident["after_load"] - resident["before"] >= resident["weights"]
        assert resident["huge_kib"] >= 2048, "no huge page backs the weights"
    # The step woke the read-ahead thread for the next streamed unit, step after step (17
    # steps, each with 9+ streamed units; wake-ups can coalesce, so at least one per step).
    assert streamed["read_ahead"] and streamed["started"] >= 17
    # Without read-ahead (or with room for one streamed unit only): the same tokens.
    plain = run_worker(deep, budget, prefetch=False)
    assert not plain["read_ahead"] and plain["started"] == 0
    assert plain["tokens"] == resident["tokens"]
    assert plain["peak"] <= budget + overhead + 4 * MiB


def test_a_budget_below_one_streamed_unit_is_refused_with_the_smallest_that_works(deep):
    with ingot.load(deep) as m:
        needed = m.memory_needed(1)
    with pytest.raises(ingot.IngotError, match=r"smallest budget that works is ([\d.]+) MiB") \
            as err:
        ingot.load(deep, threads=1, max_memory="4MiB")
    smallest = float(err.value.args[0].split("works is ")[1].split(" MiB")[0])
    with ingot.load(deep, threads=1, max_memory=int((smallest + 0.1) * MiB)) as m:
        assert len(m.streamed_units) == len(m.plan["units"])  # everything streams, and runs
        assert not m.read_ahead  # room for one streamed unit: no second one read ahead
        m.prefill([2, 3, 4])
    with ingot.load(deep, threads=1, max_memory=needed) as m:
        assert m.streamed_units == []


def test_the_compile_time_budget_is_the_default(deep, tmp_path):
    from ingot.cli import main
    art = tmp_path / "hinted.ingot"
    src = ingot.load(deep)
    budget = src.memory_needed(1) // 2
    src.close()
    assert main(["compile", "--from-uqff", str(deep), "-o", str(art), "--max-seq-len", "128",
                 "--max-memory", str(budget)]) == 0
    with ingot.load(art, threads=1) as m:
        assert m.max_memory == budget and m.streamed_units
    assert main(["inspect", str(art)]) == 0


def test_decode_allocates_nothing_after_load(deep):
    """100 decode steps: no net growth in Python-visible memory, and no buffer the size of an
    activation or a logits row made per step (numpy reports its allocations to tracemalloc)."""
    with ingot.load(deep, threads=1) as m:
        tokens = [int(t) for t in np.random.default_rng(0).integers(2, m.vocab_size, 101)]
        m.prefill_view(list(range(2, 10)))
        m.decode_view(tokens[0])  # first-call costs (ctypes argument conversion caches)
        tracemalloc.start()
        base, _ = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        for t in tokens[1:]:
            m.decode_view(t)
        now, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert now - base < 1024, f"grew by {now - base} bytes over 100 steps"
    assert peak - base < 4 * 1000, f"a step allocated {peak - base} bytes at once"


def test_device_maps_that_name_a_gpu_fail_before_loading(deep, capsys):
    """-n with mistral.rs' syntax: all-CPU maps run; a GPU layer is one clear error."""
    from ingot.cli import main
    assert main(["run", str(deep), "-n", "cpu:*", "-p", "hi", "--raw", "--max-tokens", "2",
                 "--max-memory", "30MiB"]) == 0
    capsys.readouterr()
    assert main(["run", str(deep), "-n", "0:4;cpu:*", "-p", "hi", "--raw"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "layers 0-3 are mapped to cuda:0" in err[0]
    assert main(["run", str(deep), "-n", "0:99", "-p", "hi"]) == 1
    assert "the model has 12" in capsys.readouterr().err
