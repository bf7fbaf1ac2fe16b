"""The graph IR: one small op enum, tensors, weights, nodes and a builder.

Every activation is a 2-D row-major f32 matrix ``[rows, cols]`` whose rows are the tokens of the
step (``T``, dynamic up to the compiled chunk size) or a fixed count. A tensor may be a *view* of
another (a column slice of a fused projection, or the last row of a matrix); views own no memory.
Weights are named, typed constants resolved from the model files when the artefact is written.
State tensors (KV cache, later recurrent state) persist between steps and live outside the arena.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

T = "T"  # the symbolic row count: tokens in this step

# KV cache storage types. A cached row (one position's keys or values, heads side by side)
# is stored as f32, f16, or q8_0: GGUF's Q8_0 numbers (int8 quants, an f16 scale per block of
# 32) with the blocks cut along each head, a head's last block holding head_dim % 32 values
# when head_dim is not a multiple of 32 (no padding); the row's quants come first, then its
# scales (2-byte aligned).
KV_TYPES = ("f32", "f16", "q8_0")
KV_BLOCK = 32


def kv_row_layout(dtype: str, heads: int, head_dim: int) -> tuple:
    """(bytes of one cached row, byte offset of its scales; 0 for float types)."""
    width = heads * head_dim
    if dtype == "f32":
        return 4 * width, 0
    if dtype == "f16":
        return 2 * width, 0
    if dtype == "q8_0":
        scales_at = (width + 1) // 2 * 2
        return scales_at + 2 * heads * ((head_dim + KV_BLOCK - 1) // KV_BLOCK), scales_at
    raise ValueError(f"unknown KV cache type {dtype!r}")


class Op(enum.Enum):
    EMBED = "embed"              # tokens -> rows of the embedding table (times a scale)
    RMSNORM = "rmsnorm"          # x -> x / rms(x) * (w [+ 1]); per `group` columns (qk-norm)
    ADD_RMSNORM = "add_rmsnorm"  # fused: (x, r) -> (x + r, rmsnorm(x + r))
    LAYERNORM = "layernorm"      # x -> (x - mean) / std * w + b (Phi 2, Starcoder 2)
    LINEAR = "linear"            # x @ W.T (+ b)
    ROPE = "rope"                # rotary position embedding on heads
    ATTENTION = "attention"      # store k, v into the cache; causal (windowed) softmax attention
    SWIGLU = "swiglu"            # silu(gate) * up from one fused [gate | up] matrix
    MUL_ACT = "mul_act"          # act(a) * b from two matrices (unfused gate/up)
    ACT = "act"                  # act(x): the plain (ungated) MLP's activation
    ADD = "add"                  # residual add
    SCALE = "scale"              # x * c (logit / residual multipliers)
    SOFTCAP = "softcap"          # c * tanh(x / c)
    # Later families extend this enum (MoE routing, MLA, recurrent state, vision patches);
    # each op carries its own attrs, numpy reference and kernel emitter.


@dataclass(eq=False)
class Weight:
    """A constant tensor: `shape` is [out, in] for matrices, [n] for vectors.

    `source` says how to produce its float32 data: ("file", name) reads one model tensor,
    ("concat", [Weight, ...]) stacks rows of others (fused projections), ("array", ndarray) is
    computed at compile time (RoPE tables).
    """
    name: str
    shape: tuple
    dtype: str  # storage type in the artefact: f32, f16, bf16 (quantized types later)
    source: tuple

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(eq=False)
class Tensor:
    name: str
    rows: Any  # T or an int
    cols: int
    kind: str = "act"  # act | input | output | state
    dtype: str = "f32"
    base: Optional["Tensor"] = None  # set for views
    col_offset: int = 0  # view: first column within base
    last_row: bool = False  # view: only the last row of base

    @property
    def root(self) -> "Tensor":
        return self.base.root if self.base is not None else self

    @property
    def row_stride(self) -> int:
        return self.root.cols

    def nbytes(self, t_max: int) -> int:
        rows = t_max if self.rows == T else self.rows
        return rows * self.cols * (4 if self.dtype in ("f32", "i32") else 2)


@dataclass(eq=False)
class Node:
    op: Op
    inputs: list
    outputs: list
    attrs: dict = field(default_factory=dict)
    weights: dict = field(default_factory=dict)  # role -> Weight (e.g. "w", "b")
    states: dict = field(default_factory=dict)   # role -> state Tensor (e.g. "k_cache")


@dataclass
class Graph:
    nodes: list
    inputs: dict   # name -> Tensor (tokens)
    outputs: dict  # name -> Tensor (logits)
    states: list   # persistent tensors (KV caches), in layer order
    meta: dict = field(default_factory=dict)

    def weights(self) -> list:
        """Distinct weights in first-use order (deterministic)."""
        seen, out = set(), []
        for n in self.nodes:
            for w in n.weights.values():
                if id(w) not in seen:
                    seen.add(id(w))
                    out.append(w)
        return out

    def tensors(self) -> list:
        seen, out = set(), []
        for t in list(self.inputs.values()) + [t for n in self.nodes for t in n.inputs + n.outputs]:
            if id(t) not in seen:
                seen.add(id(t))
                out.append(t)
        return out


class GraphBuilder:
    """What architecture files and shared blocks call to emit nodes.

    `weight(role)` asks the model loader for a named tensor and checks its shape, so shape errors
    are reported with the file's tensor name.
    """

    def __init__(self, get_weight: Callable[[str, tuple, bool], Optional[Weight]],
                 chunk: int = 1 << 30, kv_cache: str = "f32"):
        self._get_weight = get_weight
        self.chunk = chunk  # the most tokens one step takes (prefill chunk)
        self.kv_cache = kv_cache  # storage type of KV cache states (KV_TYPES)
        self.nodes: list = []
        self.inputs: dict = {}
        self.outputs: dict = {}
        self.states: list = []
        self._n = 0

    def weight(self, role: str, shape: tuple, optional: bool = False) -> Optional[Weight]:
        return self._get_weight(role, tuple(shape), optional)

    def const(self, name: str, array) -> Weight:
        return Weight(name, tuple(array.shape), "f32", ("array", array))

    def tensor(self, name: str, cols: int, rows=T, kind="act", dtype="f32") -> Tensor:
        self._n += 1
        return Tensor(f"{name}#{self._n}", rows, cols, kind, dtype)

    def input(self, name: str, cols: int, dtype: str) -> Tensor:
        t = Tensor(name, T, cols, "input", dtype)
        self.inputs[name] = t
        return t

    def state(self, name: str, cols: int, rows: int, dtype: str = "f32") -> Tensor:
        t = Tensor(name, rows, cols, "state", dtype)
        self.states.append(t)
        return t

    def emit(self, op: Op, inputs, out_cols, name, *, rows=None, n_out=1, weights=None,
             states=None, **attrs):
        rows = rows if rows is not None else inputs[0].rows
        outs = [self.tensor(f"{name}.{k}" if n_out > 1 else name, out_cols, rows)
                for k in range(n_out)]
        self.nodes.append(Node(op, list(inputs), outs, attrs, dict(weights or {}),
                               dict(states or {})))
        return outs if n_out > 1 else outs[0]

    def view(self, t: Tensor, col_offset: int, cols: int) -> Tensor:
        """Columns [col_offset, col_offset + cols) of `t` (views compose onto the root)."""
        return Tensor(f"{t.name}[{col_offset}:{col_offset + cols}]", t.rows, cols, t.kind,
                      t.dtype, base=t.root, col_offset=t.col_offset + col_offset,
                      last_row=t.last_row)

    def last_row(self, t: Tensor) -> Tensor:
        return Tensor(f"{t.name}[-1]", 1, t.cols, t.kind, t.dtype, base=t.root,
                      col_offset=t.col_offset, last_row=True)

    def mark_output(self, name: str, t: Tensor) -> None:
        t.kind = "output"
        self.outputs[name] = t

    def finish(self, **meta) -> Graph:
        return Graph(self.nodes, self.inputs, self.outputs, self.states, meta)
