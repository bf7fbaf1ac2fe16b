"""Device maps (mistral.rs' -n, --topology and automatic mapping): planning only, no GPU."""
from __future__ import annotations

import json

import pytest

from ingot.errors import IngotError
from ingot.runtime.device_map import (DeviceMap, auto_map, layer_kv_bytes, load_topology,
                                      parse_layer_counts, spans, usable_devices)

MiB = 2**20


def cuda(i: int) -> str:
    return f"cuda:{i}"


# -- -n / --num-device-layers ----------------------------------------------------------------
@pytest.mark.parametrize("text, expect", [
    ("0:16;1:8", [cuda(0)] * 16 + [cuda(1)] * 8 + ["cpu"] * 8),
    ("16", [cuda(0)] * 16 + ["cpu"] * 16),            # mistral.rs: a bare count is GPU 0
    ("cpu:*", ["cpu"] * 32),
    ("0:16;cpu:*", [cuda(0)] * 16 + ["cpu"] * 16),
    ("cpu:4;0:*", ["cpu"] * 4 + [cuda(0)] * 28),
    ("0:32", [cuda(0)] * 32),
    (" cuda:1:2 ; cuda[0]:3 ; ", [cuda(1)] * 2 + [cuda(0)] * 3 + ["cpu"] * 27),
    ("0:0;1:*", [cuda(1)] * 32),
])
def test_layer_counts(text, expect):
    dm = parse_layer_counts(text, 32)
    assert list(dm.layers) == expect
    # The non-layer weights go on the main device: the first accelerator in layer order.
    assert dm.head == next((d for d in expect if d != "cpu"), "cpu")


@pytest.mark.parametrize("text, message", [
    ("", "-n '': expected DEVICE:COUNT entries such as 0:16;1:8 (got '')"),
    ("0-16", "-n '0-16': expected DEVICE:COUNT entries such as 0:16;1:8 (got '0-16')"),
    ("0:16;;1:8", "expected DEVICE:COUNT entries such as 0:16;1:8 (got '')"),
    ("0:", "expected DEVICE:COUNT entries such as 0:16;1:8 (got '0:')"),
    ("0:x", "-n '0:x': layer count 'x' is not a number"),
    ("0:-3", "-n '0:-3': layer count -3 for cuda:0 is negative"),
    ("0:20;1:20", "-n '0:20;1:20' maps 40 layers but the model has 32"),
    ("40", "-n '40' maps 40 layers but the model has 32"),
    ("0:8;cuda:0:8", "-n '0:8;cuda:0:8': cuda:0 is listed twice"),
    ("cpu:*;0:4", "-n 'cpu:*;0:4': '*' (all remaining layers) must be the last entry"),
    ("gpu:4", "-n 'gpu:4': unknown device 'gpu' (expected cpu, an ordinal such as 0, or "
              "cuda[0])"),
    ("metal[0]:4", "-n 'metal[0]:4': device 'metal[0]': Ingot has no Metal backend"),
    ("cuda[0:4", "unknown device 'cuda[0'"),
])
def test_layer_counts_errors(text, message):
    with pytest.raises(IngotError) as e:
        parse_layer_counts(text, 32)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


# -- --topology ------------------------------------------------------------------------------
def write(tmp_path, name, obj) -> str:
    p = tmp_path / name
    p.write_text(obj if isinstance(obj, str) else json.dumps(obj))
    return str(p)


def test_topology_json(tmp_path):
    path = write(tmp_path, "t.json", {"0-8": {"device": "cuda[0]"}, "8-12": {"device": "cpu"},
                                      "12-16": {"device": "cuda[1]"}, "20-24": {}})
    dm = load_topology(path, 32)
    assert list(dm.layers) == [cuda(0)] * 8 + ["cpu"] * 4 + [cuda(1)] * 4 + ["cpu"] * 16
    assert dm.head == cuda(0)
    assert dm.devices() == [cuda(0), "cpu", cuda(1)]
    assert load_topology(write(tmp_path, "c.json", {"0-32": {"device": "cpu"}}), 32).all_cpu


@pytest.mark.parametrize("obj, message", [
    ({"0-16": {"device": "cuda[0]"}, "8-20": {"device": "cpu"}},
     "range 8-20 overlaps range 0-16 (layer 8)"),
    ({"0-40": {"device": "cpu"}}, "range 0-40 ends past the model's 32 layers"),
    ({"8-8": {"device": "cpu"}}, "range 8-8 is empty (the end is exclusive: 0-16 is layers "
                                 "0-15)"),
    ({"0:16": {"device": "cpu"}}, "'0:16' is not a layer range such as 0-16"),
    ({"0-16": {"device": "cuda[0]", "dtype": "f16"}},
     "range 0-16: unknown key 'dtype' (expected device or isq)"),
    ({"0-16": {"device": "cuda[0]", "isq": "Q4K"}},
     "range 0-16: per-range isq (Q4K) cannot be applied at load time; compile with --isq or "
     "--quant-policy instead"),
    ({"0-16": {"device": "tpu[0]"}}, "range 0-16: unknown device 'tpu[0]'"),
    ({"0-16": "cuda[0]"}, "range 0-16: expected a mapping such as {device: cuda[0]}"),
    ([], "expected a mapping of layer ranges such as 0-16: {device: cuda[0]}"),
    ({}, "expected a mapping of layer ranges"),
])
def test_topology_errors(tmp_path, obj, message):
    path = write(tmp_path, "t.json", obj)
    with pytest.raises(IngotError) as e:
        load_topology(path, 32)
    assert message in str(e.value) and str(e.value).startswith(path)
    assert "\n" not in str(e.value)


def test_topology_not_parseable(tmp_path):
    path = write(tmp_path, "t.json", '{"0-8": {"device": ')
    with pytest.raises(IngotError, match="not valid (JSON|YAML)"):
        load_topology(path, 32)


def test_topology_without_pyyaml(tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "yaml", None)  # `import yaml` fails
    path = write(tmp_path, "t.json", {"0-4": {"device": "cuda[0]"}})
    assert list(load_topology(path, 6).layers) == [cuda(0)] * 4 + ["cpu"] * 2
    path = write(tmp_path, "t.yaml", "0-4:\n  device: cuda[0]\n")
    with pytest.raises(IngotError) as e:
        load_topology(path, 6)
    assert str(e.value) == f"{path}: not valid JSON at line 1 (YAML needs PyYAML: pip install " \
        "pyyaml)"


def test_topology_yaml(tmp_path):
    pytest.importorskip("yaml", reason="PyYAML is not installed: topology files are JSON only")
    path = write(tmp_path, "t.yml", "# mistral.rs' layout\n"
                                    "0-16:\n  device: cuda[0]\n"
                                    "16-24:\n  device: cpu\n"
                                    "24-32:\n")
    dm = load_topology(path, 32)
    assert list(dm.layers) == [cuda(0)] * 16 + ["cpu"] * 16
    path = write(tmp_path, "bad.yml", "0-16:\n  device: cuda[0]\n  isq: Q4K\n")
    with pytest.raises(IngotError, match=r"per-range isq \(Q4K\)"):
        load_topology(path, 32)


# -- the availability check ------------------------------------------------------------------
def test_check_available():
    dm = parse_layer_counts("0:16;1:8", 32)
    with pytest.raises(IngotError) as e:
        dm.check_available(usable_devices())
    assert str(e.value).startswith("layers 0-15 are mapped to cuda:0 but this runtime has no "
                                   "CUDA device to run them on")
    with pytest.raises(IngotError) as e:
        dm.check_available(["cpu", "cuda:0"])
    assert str(e.value) == "layers 16-23 are mapped to cuda:1 but this host has only cuda:0"
    dm.check_available(["cpu", "cuda[0]", "1"])
    with pytest.raises(IngotError, match="^layer 3 is mapped to cuda:2 but"):
        parse_layer_counts("cpu:3;2:1", 32).check_available(["cpu"])
    for text in ("cpu:*", "0:0"):
        parse_layer_counts(text, 32).check_available(usable_devices())  # all on the CPU: fine
    head_only = DeviceMap(("cpu",) * 4, "cuda:0")
    with pytest.raises(IngotError, match="^the output head is mapped to cuda:0 but this "
                                         "runtime has no CUDA device"):
        head_only.check_available(["cpu"])


def test_json_and_describe():
    dm = parse_layer_counts("0:2;1:1", 4)
    assert dm.to_json() == {"layers": ["cuda:0", "cuda:0", "cuda:1", "cpu"], "head": "cuda:0"}
    assert DeviceMap.from_json(json.loads(json.dumps(dm.to_json())), 4) == dm
    with pytest.raises(IngotError, match="expected a 'layers' list of 5 devices"):
        DeviceMap.from_json(dm.to_json(), 5)
    plan = {"n_layers": 4, "layer_weight_bytes": [10 * MiB] * 4, "weights_bytes": 43 * MiB,
            "units": [{"name": "embed", "offset": 0, "bytes": 1 * MiB}]}
    assert dm.describe(plan).splitlines() == [
        "device  layers          weights",
        "cuda:0  0-1 (2) + head  22.0 MiB",
        "cuda:1  2 (1)           10.0 MiB",
        "cpu     3 (1)           10.0 MiB"]
    assert "cuda:0  0-1 (2) + head  -" in dm.describe()
    assert spans([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


# -- automatic mapping -----------------------------------------------------------------------
def synthetic_plan(**over) -> dict:
    """12 layers of 10 MiB, nothing else: the shape of compiler/pipeline.py's plan."""
    plan = {"n_layers": 12, "layer_weight_bytes": [10 * MiB] * 12, "weights_bytes": 120 * MiB,
            "units": [{"name": f"layer {i}", "offset": i * 10 * MiB, "bytes": 10 * MiB}
                      for i in range(12)],
            "arena_bytes": 0, "scratch_bytes_per_thread": 0, "state_bytes": 0, "max_batch": 1,
            "kv_bytes_per_token": 0, "max_seq_len": 1024, "prefill_chunk": 128}
    plan.update(over)
    return plan


def test_auto_weights_only():
    dm = auto_map(synthetic_plan(), [("cuda:0", 25 * MiB), ("cuda:1", 40 * MiB)])
    assert list(dm.layers) == [cuda(0)] * 2 + [cuda(1)] * 4 + ["cpu"] * 6
    assert dm.head == cuda(0)  # no head bytes: it always fits
    assert auto_map(synthetic_plan(), []).all_cpu
    assert list(auto_map(synthetic_plan(), [("0", 200 * MiB)]).layers) == [cuda(0)] * 12


def test_auto_kv_reserve_and_head():
    # 1 kv head of 64 dims, full attention: K+V f32 rows of 512 bytes x 1024 = 512 KiB per
    # slot, x 2 slots = 1 MiB per layer; a 3 MiB head; a 2 MiB reserve on each device.
    spec = {"n_kv_heads": 1, "head_dim": 64, "layers": [{"sliding_window": 0}] * 12}
    plan = synthetic_plan(spec=spec, max_batch=2, weights_bytes=123 * MiB,
                          state_bytes=12 * 512 * 1024)
    assert layer_kv_bytes(plan) == [512 * 1024] * 12
    dm = auto_map(plan, [("cuda[0]", 25 * MiB), ("cuda[1]", 40 * MiB)], reserve_bytes=2 * MiB)
    # cuda:0: 25 - 2 - 3 = 20 MiB -> one 11 MiB layer; cuda:1: 40 - 2 = 38 -> three.
    assert list(dm.layers) == [cuda(0)] + [cuda(1)] * 3 + ["cpu"] * 8
    assert dm.head == cuda(0)
    # The head is placed before the layers (mistral.rs' non-mapped parts come first) ...
    dm = auto_map(plan, [("cuda:0", 14 * MiB)], reserve_bytes=2 * MiB)
    assert dm.all_cpu is False and list(dm.layers) == ["cpu"] * 12 and dm.head == cuda(0)
    # ... but a head too big for the first device stays on the CPU; layers still go there.
    big_head = dict(plan, weights_bytes=150 * MiB)
    dm = auto_map(big_head, [("cuda:0", 14 * MiB)], reserve_bytes=2 * MiB)
    assert list(dm.layers) == [cuda(0)] + ["cpu"] * 11 and dm.head == "cpu"
    # Without a spec, one slot's caches are split evenly; the default reserve is the arena
    # plus one thread's scratch.
    del plan["spec"]
    assert layer_kv_bytes(plan) == [512 * 1024] * 12
    plan.update(arena_bytes=1 * MiB, scratch_bytes_per_thread=1 * MiB)
    assert list(auto_map(plan, [("cuda:0", 25 * MiB)]).layers) == [cuda(0)] + ["cpu"] * 11


def test_auto_order_is_kept():
    # Layer 1 is too big for cuda:0's leftover room: cuda:1 takes over from it, and cuda:0
    # does not come back for the small layers after it.
    plan = synthetic_plan(n_layers=4, layer_weight_bytes=[10 * MiB, 30 * MiB, MiB, MiB],
                          weights_bytes=42 * MiB, units=[])
    dm = auto_map(plan, [("cuda:0", 20 * MiB), ("cuda:1", 31 * MiB)])
    assert list(dm.layers) == [cuda(0), cuda(1), cuda(1), "cpu"]


@pytest.mark.parametrize("devices, message", [
    ([("cpu", MiB)], "list accelerators only; the CPU takes the rest"),
    ([("0", MiB), ("cuda:0", MiB)], "cuda:0 is listed twice"),
    ([("cuda:0", -1)], "cuda:0 has negative free memory"),
    ([("npu0", MiB)], "unknown device 'npu0'"),
])
def test_auto_errors(devices, message):
    with pytest.raises(IngotError, match=message):
        auto_map(synthetic_plan(), devices)


# -- the real Gemma 3 270M plan --------------------------------------------------------------
def gemma_plan() -> dict:
    """The fields of Gemma 3 270M's plan (Q4_K_M GGUF, max_seq_len 1024) as the compiler wrote
    them: 18 layers, a sliding window of 512 on five layers in six, one 256-dim kv head, and
    a tied 262144 x 640 embedding that is most of the weights."""
    big, small = 3995648, 3596288
    sizes = [big, big, small, small, big, small, small, big, small, small, big, small, small,
             big, small, big, big, big]
    return {"n_layers": 18, "layer_weight_bytes": sizes, "weights_bytes": 248685056,
            "arena_bytes": 3473408, "scratch_bytes_per_thread": 360448,
            "state_bytes": 25921536, "kv_bytes_per_token": 6144, "max_seq_len": 1024,
            "prefill_chunk": 128, "n_kv_heads": 1, "head_dim": 256, "kv_ring_layers": 15,
            "spec": {"n_kv_heads": 1, "head_dim": 256, "tie_embeddings": True,
                     "layers": [{"sliding_window": 0 if (i + 1) % 6 == 0 else 512,
                                 "rope": "global" if (i + 1) % 6 == 0 else "local"}
                                for i in range(18)]}}


def test_gemma_plan():
    plan = gemma_plan()
    kv = layer_kv_bytes(plan)
    # The estimate is the compiler's own cache layout: it adds up to one slot's state, and the
    # full-attention layers grow by kv_bytes_per_token.
    assert sum(kv) == plan["state_bytes"]
    full = [i for i in range(18) if (i + 1) % 6 == 0]
    assert sum(kv[i] for i in full) == plan["kv_bytes_per_token"] * plan["max_seq_len"]
    assert kv[0] == 2 * 256 * 4 * (512 + 128 - 1)
    # A 64 MiB device: the 171 MiB head does not fit, so it stays on the CPU; whole layers do.
    dm = auto_map(plan, [("cuda:0", 64 * MiB)])
    reserve = plan["arena_bytes"] + plan["scratch_bytes_per_thread"]
    on_gpu = dm.layers_on("cuda:0")
    used = sum(plan["layer_weight_bytes"][i] + kv[i] for i in on_gpu)
    assert on_gpu == list(range(len(on_gpu))) and dm.head == "cpu"
    nxt = len(on_gpu)
    assert used + reserve <= 64 * MiB < used + reserve + plan["layer_weight_bytes"][nxt] + kv[nxt]
    # A 1 GiB device holds everything, head included.
    dm = auto_map(plan, [("cuda:0", 2**30)])
    assert dm.devices() == ["cuda:0"]
    assert "cuda:0  0-17 (18) + head  237.2 MiB" in dm.describe(plan)
    with pytest.raises(IngotError, match="^layers 0-17 are mapped to cuda:0 but this runtime "
                                         "has no CUDA device"):
        dm.check_available(usable_devices())
    assert parse_layer_counts("0:12", 18).layers_on("cpu") == list(range(12, 18))
