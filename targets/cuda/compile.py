"""CUDA code for a planned graph: the launch lists of the prefill and decode steps (and, with
--max-batch, the batched decode step's), the kernel source, and its PTX and cubin, as artefact
sections.

The addresses are the CPU path's: the same arena plan, weight offsets and KV state offsets,
each a Word relative to a base the runtime fills in (weights, arena, KV, scratch) plus a
multiple of n, the step's token count. The runtime resolves them once per n.
"""
from __future__ import annotations

import json
import struct

from ...errors import IngotError

# Word kinds as the artefact stores them: the index into the runtime's base table. A float
# word is stored as an integer word holding its float32 bits.
KINDS = ("i", "w", "a", "k", "s")
LAUNCHES_VERSION = 1
MAX_BLOCK_THREADS = 1024
MAX_GRID_YZ = 65535


class Ctx:
    """The renderers' view of the plan (kernel_table.Ctx). `fixed_n` is 1 for the decode step
    and None for prefill (n up to `max_tokens`), for renderers that pick kernels by step;
    `batch` marks the batched decode step (n rows of n sequences, up to `max_tokens`)."""

    def __init__(self, plan, weight_offsets, state_offsets, max_tokens, fixed_n=None,
                 batch=False):
        from .kernel_table import Word
        self._word = Word
        self.plan, self.wo, self.so = plan, weight_offsets, state_offsets
        self.max_tokens, self.fixed_n, self.batch = max_tokens, fixed_n, batch

    def act(self, t):
        if t.kind == "state":
            return self.state(t)
        off = self.plan.offset(t) + 4 * t.col_offset
        if t.last_row:  # row n - 1 of its base
            return self._word("a", off - 4 * t.row_stride, 4 * t.row_stride)
        return self._word("a", off)

    def weight(self, w):
        return self._word("i", 0) if w is None else self._word("w", self.wo[id(w)])

    def state(self, t):
        return self._word("k", self.so[id(t)])


def _word(w) -> list:
    if w.kind == "f":
        if w.c1:
            raise IngotError(f"CUDA launch: a float word cannot depend on n ({w})")
        return [0, struct.unpack("<I", struct.pack("<f", float(w.c0)))[0], 0]
    if w.kind not in KINDS:
        raise IngotError(f"CUDA launch: unknown word kind {w.kind!r}")
    return [KINDS.index(w.kind), int(w.c0), int(w.c1)]


def _dim(d, n: int) -> int:
    return -(-(d.c0 + d.c1 * n) // d.div)


def _check(launch, n_max: int, fixed_n) -> None:
    """Grids and blocks the hardware accepts at both ends of the step's token range."""
    bx, by, bz = launch.block
    if not 1 <= bx * by * bz <= MAX_BLOCK_THREADS or min(launch.block) < 1:
        raise IngotError(f"CUDA launch {launch.kernel}: block {launch.block} is not 1.."
                         f"{MAX_BLOCK_THREADS} threads")
    for n in ({fixed_n} if fixed_n else {1, n_max}):
        g = [_dim(d, n) for d in launch.grid]
        if min(g) < 1 or g[0] >= 2 ** 31 or max(g[1:]) > MAX_GRID_YZ:
            raise IngotError(f"CUDA launch {launch.kernel}: grid {g} at n = {n} is out of range")


def render_launches(graph, plan, weight_offsets, state_offsets, max_tokens: int,
                    fixed_n=None, nodes=None, batch=False) -> list:
    """The step's launches in order; `nodes`, if a list, gets each launch's node index."""
    from .kernel_table import RENDERERS
    ctx = Ctx(plan, weight_offsets, state_offsets, max_tokens, fixed_n, batch)
    out = []
    for i, node in enumerate(graph.nodes):
        render = RENDERERS.get(node.op)
        if render is None:
            raise IngotError(f"the CUDA target has no kernel for op '{node.op.value}'")
        for launch in render(ctx, node):
            _check(launch, max_tokens, fixed_n)
            out.append(launch)
            if nodes is not None:
                nodes.append(i)
    return out


def encode_launches(steps: dict, nodes: dict | None = None) -> dict:
    """{step: [Launch]} -> the "cuda_launches" JSON: kernel names once, then per launch
    [kernel index, [[kind, c0, c1] per word], [[c0, c1, div] x 3], [bx, by, bz], shared];
    with `nodes` ({step: node index per launch}) also "launch_nodes", which device maps and
    weight streaming use to find a layer's launches."""
    kernels = sorted({l.kernel for ls in steps.values() for l in ls})
    index = {k: i for i, k in enumerate(kernels)}
    enc = {name: [[index[l.kernel], [_word(w) for w in l.args],
                   [[int(d.c0), int(d.c1), int(d.div)] for d in l.grid],
                   [int(b) for b in l.block], int(l.shared)] for l in ls]
           for name, ls in steps.items()}
    out = {"version": LAUNCHES_VERSION, "kernels": kernels, "steps": enc}
    if nodes is not None:
        out["launch_nodes"] = nodes
    return out


def cuda_sections(graph, plan, weight_offsets, state_offsets, chunk: int, target,
                  workdir=None, cpu_target=None, batch=None) -> tuple[dict, dict]:
    """(artefact sections, plan entries) for a CUDA target; with `cpu_target` (a CPU target
    object) also the per-segment host code ("code") that device maps run layers on; with
    `batch` = (batch graph, its plan, max rows) the batched decode step's launches too (the
    batch graph is the step graph node for node, so launch nodes index both alike)."""
    from .host_code import host_code, segment_plan
    from .kernel_table import kernel_source, scratch_bytes
    from .nvcc import build
    nodes: dict = {"prefill": [], "decode": []}
    steps = {"prefill": render_launches(graph, plan, weight_offsets, state_offsets, chunk,
                                        nodes=nodes["prefill"]),
             "decode": render_launches(graph, plan, weight_offsets, state_offsets, chunk,
                                       fixed_n=1, nodes=nodes["decode"])}
    rows = 1
    if batch is not None:
        bgraph, bplan, rows = batch
        nodes["batch"] = []
        steps["batch"] = render_launches(bgraph, bplan, weight_offsets, state_offsets, rows,
                                         nodes=nodes["batch"], batch=True)
    launches = encode_launches(steps, nodes)
    n_layers = int(graph.meta.get("n_layers") or 0) or _count_layers(graph)
    segs = segment_plan(graph, plan, n_layers)
    source = kernel_source(set(launches["kernels"]))
    ptx, cubin = build(source, target.arch)  # nvcc: the cubin, and the PTX it assembled
    sections = {
        "cuda_launches": json.dumps(launches, sort_keys=True, separators=(",", ":")).encode(),
        "cuda_source": source.encode(),
        "cuda_ptx": ptx,
        "cuda_cubin": cubin,
    }
    extra = {"device": "cuda", "cuda_arch": target.arch,
             "cuda_scratch_bytes": (int(scratch_bytes(graph, chunk, rows)) + 255) // 256 * 256,
             "cuda_launch_counts": {k: len(v) for k, v in steps.items()}, **segs}
    if cpu_target is None:
        extra["scratch_bytes_per_thread"] = 0  # no CPU code: no CPU scratch
    else:
        sections["code"], more = host_code(graph, plan, weight_offsets, state_offsets,
                                           segs["segments"]["bounds"], cpu_target, workdir)
        extra.update(more)
    return sections, extra


def _count_layers(graph) -> int:
    from ...compiler.units import node_units
    return len({u for u in node_units(graph) if u and u.startswith("layer ")})
