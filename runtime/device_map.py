"""Which device runs each layer: mistral.rs' device mapping, the planning side.

Three ways to make a map, as mistral.rs has them:

* ``-n`` / ``--num-device-layers`` (`parse_layer_counts`): ``"0:16;1:8"`` puts the first 16
  layers on CUDA device 0, the next 8 on device 1 and the rest on the CPU; a bare ``"16"`` is
  16 layers on device 0. Ingot also takes ``cpu`` as a device and ``*`` as "all the remaining
  layers" (``"cpu:*"``, ``"0:16;cpu:*"``, ``"cpu:4;0:*"``).
* ``--topology FILE`` (`load_topology`): half-open layer ranges with a device each,
  ``0-16: {device: cuda[0]}``; layers no range names run on the CPU.
* automatic (`auto_map`): fill the devices in order with whole layers, by the artefact's
  per-layer weight bytes plus their KV caches plus a reserve for activations.

Devices are named ``cpu`` and ``cuda:N``; ``N``, ``cuda[N]`` and ``cuda:N`` are all read as
``cuda:N``. The weights outside the layers (final norm, output head, shared tables) go where
mistral.rs puts its "non-mapped" parts: the main device, the first accelerator the map uses
(the CPU when none). The token embedding unit stays on the host: its lookup reads one row per
token. Nothing here imports torch or touches a device: `check_available` is told what exists.
"""
from __future__ import annotations

import json
import pathlib
import re
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

from ..errors import IngotError

CPU = "cpu"


def usable_devices() -> list[str]:
    """The devices Ingot's runtime can run layers on: the CPU and the CUDA devices the driver
    finds (looked up lazily; none without libcuda), or cuda:0 when the CUDA simulator is set
    (INGOT_CUDA_SIM). Only a CUDA artefact can use a GPU (the load says so)."""
    import os
    from .cuda.driver import device_count
    from .cuda.sim import ENV
    n = 1 if os.environ.get(ENV) else device_count()
    return [CPU] + [f"cuda:{i}" for i in range(n)]


def device_name(text, where: str) -> str:
    """'cpu', '0', 'cuda:0', 'cuda[0]' -> 'cpu' / 'cuda:0'; `where` prefixes the error."""
    s = str(text).strip().lower()
    if s == CPU:
        return CPU
    if m := re.fullmatch(r"(?:cuda(?::|\[)\s*)?(\d+)\s*\]?", s):
        # Reject the half-bracketed spellings ('cuda[0', '0]') the loose pattern lets through.
        if s.startswith("cuda[") == s.endswith("]"):
            return f"cuda:{int(m.group(1))}"
    if s.startswith(("metal", "mps")):
        raise IngotError(f"{where}: device '{text}': Ingot has no Metal backend (use cpu or "
                         f"cuda[N])")
    raise IngotError(f"{where}: unknown device '{text}' (expected cpu, an ordinal such as 0, "
                     f"or cuda[0])")


def spans(layers: Iterable[int]) -> str:
    """[0, 1, 2, 5] -> '0-2, 5' (inclusive, for people; topology files are half-open)."""
    out: list[str] = []
    xs = sorted(layers)
    i = 0
    while i < len(xs):
        j = i
        while j + 1 < len(xs) and xs[j + 1] == xs[j] + 1:
            j += 1
        out.append(str(xs[i]) if i == j else f"{xs[i]}-{xs[j]}")
        i = j + 1
    return ", ".join(out)


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _main_device(layers: Sequence[str]) -> str:
    return next((d for d in layers if d != CPU), CPU)


@dataclass(frozen=True)
class DeviceMap:
    """A device per layer (index = layer) and the device of the non-layer weights."""
    layers: tuple[str, ...]
    head: str = CPU

    @classmethod
    def of(cls, layers: Sequence[str]) -> "DeviceMap":
        """A map whose head follows mistral.rs: on the main device."""
        return cls(tuple(layers), _main_device(layers))

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def all_cpu(self) -> bool:
        return self.head == CPU and all(d == CPU for d in self.layers)

    def devices(self) -> list[str]:
        """The devices the map uses, in the order a step reaches them (the head's last)."""
        out: list[str] = []
        for d in (*self.layers, self.head):
            if d not in out:
                out.append(d)
        return out

    def layers_on(self, device: str) -> list[int]:
        return [i for i, d in enumerate(self.layers) if d == device]

    def describe(self, plan: Optional[dict] = None) -> str:
        """A short table: device, layers, weight bytes (with `plan`; '-' without)."""
        sizes = plan.get("layer_weight_bytes") if plan else None
        rows = [("device", "layers", "weights")]
        for dev in self.devices():
            idx = self.layers_on(dev)
            text = f"{spans(idx)} ({len(idx)})" if idx else "none"
            if dev == self.head:
                text += " + head"
            size = "-"
            if sizes and len(sizes) == self.n_layers:
                size = _mib(sum(sizes[i] for i in idx)
                            + (_head_bytes(plan) if dev == self.head else 0))
            rows.append((dev, text, size))
        w0 = max(len(r[0]) for r in rows)
        w1 = max(len(r[1]) for r in rows)
        return "\n".join(f"{a:<{w0}}  {b:<{w1}}  {c}".rstrip() for a, b, c in rows)

    def to_json(self) -> dict:
        """A JSON-ready dict (what an artefact or a log records); `from_json` reads it back."""
        return {"layers": list(self.layers), "head": self.head}

    @classmethod
    def from_json(cls, obj: dict, n_layers: int) -> "DeviceMap":
        layers = obj.get("layers") if isinstance(obj, dict) else None
        if not isinstance(layers, list) or len(layers) != n_layers:
            raise IngotError(f"device map: expected a 'layers' list of {n_layers} devices")
        return cls(tuple(device_name(d, "device map") for d in layers),
                   device_name(obj.get("head", _main_device(layers)), "device map"))

    def check_available(self, available_devices: Sequence[str]) -> None:
        """Raise, naming the first layers (or the head) whose device this host lacks."""
        have = {device_name(d, "available devices") for d in available_devices} | {CPU}
        cudas = sorted((d for d in have if d != CPU), key=lambda d: int(d.split(":")[1]))
        lacks = ("this runtime has no CUDA device to run them on (no CUDA driver or GPU "
                 "found: run them on the CPU with -n cpu:* or drop -n)" if not cudas
                 else f"this host has only {', '.join(cudas)}")
        for dev in self.devices():
            if dev in have:
                continue
            idx = self.layers_on(dev)
            what = f"layers {spans(idx)} are" if len(idx) > 1 else \
                f"layer {idx[0]} is" if idx else "the output head is"
            raise IngotError(f"{what} mapped to {dev} but {lacks}")


# -- -n / --num-device-layers ----------------------------------------------------------------
def parse_layer_counts(text: str, n_layers: int) -> DeviceMap:
    """mistral.rs' ``-n``: ``DEV:COUNT`` entries joined by ``;``, consumed in order from layer
    0; ``*`` (last entry only) takes every remaining layer; the layers left over run on the
    CPU. A bare count ``N`` is ``0:N``. A device may appear once; the counts may not add up to
    more layers than the model has."""
    where = f"-n '{text}'"
    s = str(text).strip()
    if re.fullmatch(r"\d+", s):  # mistral.rs: a bare number is that many layers on GPU 0
        s = f"0:{s}"
    items = [x.strip() for x in s.split(";")]
    if items and items[-1] == "" and len(items) > 1:  # a trailing ';' is harmless
        items.pop()
    layers: list[str] = []
    seen: set[str] = set()
    for k, item in enumerate(items):
        dev_text, sep, count_text = item.rpartition(":")
        if not item or not sep or not dev_text.strip() or not count_text.strip():
            raise IngotError(f"{where}: expected DEVICE:COUNT entries such as 0:16;1:8 "
                             f"(got '{item}')")
        dev = device_name(dev_text, where)
        if dev in seen:
            raise IngotError(f"{where}: {dev} is listed twice")
        seen.add(dev)
        count_text = count_text.strip()
        if count_text == "*":
            if k != len(items) - 1:
                raise IngotError(f"{where}: '*' (all remaining layers) must be the last entry")
            count = n_layers - len(layers)
        else:
            try:
                count = int(count_text)
            except ValueError:
                raise IngotError(f"{where}: layer count '{count_text}' is not a number") \
                    from None
            if count < 0:
                raise IngotError(f"{where}: layer count {count} for {dev} is negative")
        layers += [dev] * count
    if len(layers) > n_layers:
        raise IngotError(f"{where} maps {len(layers)} layers but the model has {n_layers}")
    return DeviceMap.of(layers + [CPU] * (n_layers - len(layers)))


# -- --topology ------------------------------------------------------------------------------
_RANGE = re.compile(r"\s*(\d+)\s*-\s*(\d+)\s*")
_KEYS = ("device", "isq")


def _read_topology(path: pathlib.Path):
    text = path.read_text()
    try:
        import yaml
    except ImportError:
        yaml = None
    if yaml is not None:  # JSON is YAML too: one reader for both
        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            at = f" at line {mark.line + 1}" if mark is not None else ""
            raise IngotError(f"{path}: not valid YAML{at}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        hint = " (YAML needs PyYAML: pip install pyyaml)" if path.suffix in (".yaml", ".yml") \
            else ""
        raise IngotError(f"{path}: not valid JSON at line {e.lineno}{hint}") from None


def load_topology(path, n_layers: int) -> DeviceMap:
    """mistral.rs' topology file: ``"A-B": {device: ...}`` per range, half-open (layers A to
    B-1), ranges may not overlap, layers no range names (and ranges without a device) run on
    the CPU. Per-range ``isq`` is refused: an artefact's weight types are fixed when it is
    compiled."""
    path = pathlib.Path(path)
    data = _read_topology(path)
    if not isinstance(data, dict) or not data:
        raise IngotError(f"{path}: expected a mapping of layer ranges such as "
                         f"0-16: {{device: cuda[0]}}")
    layers: list[Optional[str]] = [None] * n_layers
    owner: dict[int, str] = {}
    for key, body in data.items():
        m = _RANGE.fullmatch(str(key)) if isinstance(key, str) else None
        where = f"{path}: range {key}"
        if m is None:
            raise IngotError(f"{path}: '{key}' is not a layer range such as 0-16 "
                             f"(start inclusive, end exclusive)")
        a, b = int(m.group(1)), int(m.group(2))
        if a >= b:
            raise IngotError(f"{where} is empty (the end is exclusive: 0-16 is layers 0-15)")
        if b > n_layers:
            raise IngotError(f"{where} ends past the model's {n_layers} layers")
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise IngotError(f"{where}: expected a mapping such as {{device: cuda[0]}}")
        unknown = [k for k in body if k not in _KEYS]
        if unknown:
            raise IngotError(f"{where}: unknown key '{unknown[0]}' (expected "
                             f"{' or '.join(_KEYS)})")
        if body.get("isq") is not None:
            raise IngotError(f"{where}: per-range isq ({body['isq']}) cannot be applied at load "
                             f"time; compile with --isq or --quant-policy instead")
        dev = device_name(body["device"], where) if body.get("device") is not None else CPU
        for i in range(a, b):
            if i in owner:
                raise IngotError(f"{where} overlaps range {owner[i]} (layer {i})")
            owner[i] = str(key).strip()
            layers[i] = dev
    return DeviceMap.of([d or CPU for d in layers])


# -- automatic -------------------------------------------------------------------------------
def layer_kv_bytes(plan: dict) -> list[int]:
    """KV cache bytes per layer for one sequence slot, estimated from the plan.

    With the spec's per-layer windows: K and V rows of n_kv_heads * head_dim values in the
    cache's storage type (--kv-cache; f32 in older plans), max_seq_len rows for a
    full-attention layer and a ring of window + prefill_chunk - 1 rows (at most max_seq_len)
    for a sliding one, as arch/blocks.py sizes them; these add up to the plan's state_bytes.
    Without them: state_bytes (one slot's caches) split evenly across the layers."""
    n = int(plan["n_layers"])
    spec = plan.get("spec") or {}
    specs = spec.get("layers")
    kv_heads = plan.get("n_kv_heads") or spec.get("n_kv_heads")
    head_dim = plan.get("head_dim") or spec.get("head_dim")
    max_seq = int(plan.get("max_seq_len") or 0)
    if specs and len(specs) == n and kv_heads and head_dim and max_seq:
        row = int(plan.get("kv_row_bytes") or 2 * int(kv_heads) * int(head_dim) * 4)
        chunk = int(plan.get("prefill_chunk") or 1)
        return [row * (min(max_seq, w + chunk - 1) if (w := int(s.get("sliding_window") or 0))
                       else max_seq) for s in specs]
    return [int(plan.get("state_bytes", 0)) // n] * n if n else []


def _head_bytes(plan: dict) -> int:
    """The weights a step reads outside the layers and the embedding lookup: the output head,
    final norm and shared tables (a tied embedding belongs to the head's unit)."""
    embed = sum(u["bytes"] for u in plan.get("units", []) if u["name"] == "embed")
    return max(0, int(plan["weights_bytes"]) - sum(plan["layer_weight_bytes"]) - embed)


def auto_map(plan: dict, devices: Sequence[tuple[str, int]],
             reserve_bytes: Optional[int] = None) -> DeviceMap:
    """Fill `devices` ((name, free bytes), in order) with whole consecutive layers; the rest
    run on the CPU.

    A layer costs its weights (plan["layer_weight_bytes"]) plus its KV caches for every
    sequence slot (`layer_kv_bytes` x max_batch: the artefact's caches are sized by its
    max_seq_len and max_batch at compile time, so there is nothing to choose here). Each
    device first sets aside `reserve_bytes` for activations (default: the plan's arena, one
    prefill chunk of activations, plus one thread's scratch). The output head goes on the
    first device when it fits there after the reserve, otherwise on the CPU. Layers stay in
    order: once a layer does not fit, the next device takes over from it."""
    n = int(plan["n_layers"])
    sizes = list(plan["layer_weight_bytes"])
    if len(sizes) != n:
        raise IngotError(f"plan: {len(sizes)} layer sizes for {n} layers")
    slots = int(plan.get("max_batch") or 1)
    cost = [w + kv * slots for w, kv in zip(sizes, layer_kv_bytes(plan))]
    if reserve_bytes is None:
        reserve_bytes = (int(plan.get("arena_bytes", 0))
                         + int(plan.get("scratch_bytes_per_thread", 0)))
    names: list[str] = []
    for name, free in devices:
        dev = device_name(name, "auto device map")
        if dev == CPU:
            raise IngotError("auto device map: list accelerators only; the CPU takes the rest")
        if dev in names:
            raise IngotError(f"auto device map: {dev} is listed twice")
        if int(free) < 0:
            raise IngotError(f"auto device map: {dev} has negative free memory ({free})")
        names.append(dev)
    layers = [CPU] * n
    head = CPU
    i = 0
    for k, (dev, (_, free)) in enumerate(zip(names, devices)):
        room = int(free) - reserve_bytes
        if k == 0 and room >= _head_bytes(plan):
            head = dev
            room -= _head_bytes(plan)
        while i < n and cost[i] <= room:
            layers[i] = dev
            room -= cost[i]
            i += 1
    return DeviceMap(tuple(layers), head)
