"""Renders a planned graph into the Python source of one step function.

The step is a flat list of kernel calls with every address an arena/weights/state base plus a
constant offset, and a barrier between kernels. numba compiles it (and the kernels it calls)
into one LLVM module; the renderer table below says how each op becomes calls.
"""
from __future__ import annotations

from ...compiler.ir import Op, Tensor, kv_row_layout
from . import kernels as K

STEP_ARGS = ("wb", "ab", "kb", "sb", "n", "pos", "tid", "nth", "sync")


class Ctx:
    def __init__(self, plan, weight_offsets, state_offsets, batch=None):
        self.plan, self.wo, self.so = plan, weight_offsets, state_offsets
        # The batched step: `pos` is the address of the row table (positions then slots, `nb`
        # each) and sequence s's caches start s * slot_bytes bytes after slot 0's.
        if batch is None:
            self.pos, self.table, self.nb, self.slot_bytes = "pos", "0", 0, 0
        else:
            self.pos, self.table = "0", "pos"
            self.nb, self.slot_bytes = batch

    def addr(self, t: Tensor) -> str:
        if t.kind == "state":
            return f"kb + {self.so[id(t)]}"
        off = self.plan.offset(t) + 4 * t.col_offset
        if t.last_row:
            return f"ab + {off} + (n - 1) * {4 * t.row_stride}"
        return f"ab + {off}"

    def w(self, w) -> str:
        return "0" if w is None else f"wb + {self.wo[id(w)]}"

    @staticmethod
    def rows(t: Tensor) -> str:
        return "n" if t.rows == "T" else str(t.rows)


def _embed(c, n):
    w = n.weights["w"]
    return [f"EMBED_{w.dtype}({c.addr(n.inputs[0])}, n, {c.w(w)}, {w.shape[1]}, "
            f"{float(n.attrs.get('scale', 1.0))!r}, {c.addr(n.outputs[0])}, tid, nth)"]


def _linear(c, n):
    x, y, w = n.inputs[0], n.outputs[0], n.weights["w"]
    return [f"LINEAR_{w.dtype}({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {w.shape[1]}, "
            f"{c.w(w)}, {w.shape[0]}, {c.w(n.weights.get('b'))}, {c.addr(y)}, sb, tid, nth)"]


def _rmsnorm(c, n):
    x, y, a = n.inputs[0], n.outputs[0], n.attrs
    return [f"rmsnorm({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {x.cols}, "
            f"{a.get('group') or x.cols}, {c.w(n.weights['w'])}, {float(a['eps'])!r}, "
            f"{1.0 if a.get('unit_offset') else 0.0}, {c.addr(y)}, {y.row_stride}, tid, nth)"]


def _layernorm(c, n):
    x, y = n.inputs[0], n.outputs[0]
    return [f"layernorm({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {x.cols}, "
            f"{c.w(n.weights['w'])}, {c.w(n.weights.get('b'))}, {float(n.attrs['eps'])!r}, "
            f"{c.addr(y)}, tid, nth)"]


def _act(c, n):
    x = n.inputs[0]
    return [f"act_rows({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {x.cols}, "
            f"{K.ACT_CODES[n.attrs['act']]}, {c.addr(n.outputs[0])}, tid, nth)"]


def _add_rmsnorm(c, n):
    a, b = n.inputs
    s, y = n.outputs
    return [f"add_rmsnorm({c.addr(a)}, {c.addr(b)}, {c.rows(a)}, {a.cols}, "
            f"{c.w(n.weights['w'])}, {float(n.attrs['eps'])!r}, "
            f"{1.0 if n.attrs.get('unit_offset') else 0.0}, {c.addr(s)}, {c.addr(y)}, tid, nth)"]


def _rope(c, n):
    x, y, a = n.inputs[0], n.outputs[0], n.attrs
    return [f"rope({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {a['n_heads']}, {a['head_dim']}, "
            f"{a['rot_dim']}, {bool(a['neox'])}, {c.w(n.weights['cos'])}, "
            f"{c.w(n.weights['sin'])}, {c.pos}, {c.table}, {c.addr(y)}, tid, nth)"]


def _attention(c, n):
    q, k, v = n.inputs
    a = n.attrs
    kcs, vcs = n.states["k_cache"], n.states["v_cache"]
    kc, vc = c.addr(kcs), c.addr(vcs)
    dt = kcs.dtype  # both caches share the storage type
    row_bytes, soff = kv_row_layout(dt, a["n_kv_heads"], a["head_dim"])
    cache = (f"{c.pos}, {c.table}, {c.nb}, {c.slot_bytes}, {int(a['ring'])}, {row_bytes}, "
             f"{soff}")
    store = (f"KV_STORE_{dt}({c.addr(k)}, {k.row_stride}, {c.addr(v)}, {v.row_stride}, "
             f"{c.rows(q)}, {a['n_kv_heads']}, {a['head_dim']}, {kc}, {vc}, {cache}, tid, nth)")
    attend = (f"ATTENTION_{dt}({c.addr(q)}, {q.row_stride}, {c.rows(q)}, {a['n_heads']}, "
              f"{a['n_kv_heads']}, {a['head_dim']}, {kc}, {vc}, {cache}, "
              f"{float(a['scale'])!r}, "
              f"{int(a['window'])}, {float(a['softcap'])!r}, {c.addr(n.outputs[0])}, sb, "
              f"tid, nth)")
    return [store, attend]


def _mul_act(c, n):
    a, b = n.inputs
    return [f"mul_act({c.addr(a)}, {a.row_stride}, {c.addr(b)}, {b.row_stride}, {c.rows(a)}, "
            f"{a.cols}, {K.ACT_CODES[n.attrs.get('act', 'silu')]}, {c.addr(n.outputs[0])}, "
            f"tid, nth)"]


def _swiglu(c, n):
    x = n.inputs[0]
    f = x.cols // 2
    base = c.addr(x)
    return [f"mul_act({base}, {x.row_stride}, {base} + {4 * f}, {x.row_stride}, {c.rows(x)}, "
            f"{f}, {K.ACT_CODES[n.attrs.get('act', 'silu')]}, {c.addr(n.outputs[0])}, "
            f"tid, nth)"]


def _add(c, n):
    a, b = n.inputs
    return [f"add({c.addr(a)}, {a.row_stride}, {c.addr(b)}, {b.row_stride}, {c.rows(a)}, "
            f"{a.cols}, {c.addr(n.outputs[0])}, tid, nth)"]


def _scale(c, n, softcap):
    x = n.inputs[0]
    return [f"scale({c.addr(x)}, {x.row_stride}, {c.rows(x)}, {x.cols}, "
            f"{float(n.attrs['c'])!r}, {softcap}, {c.addr(n.outputs[0])}, tid, nth)"]


RENDERERS = {
    Op.EMBED: _embed, Op.LINEAR: _linear, Op.RMSNORM: _rmsnorm, Op.ADD_RMSNORM: _add_rmsnorm,
    Op.LAYERNORM: _layernorm, Op.ACT: _act, Op.ROPE: _rope, Op.ATTENTION: _attention,
    Op.MUL_ACT: _mul_act, Op.SWIGLU: _swiglu,
    Op.ADD: _add, Op.SCALE: lambda c, n: _scale(c, n, False),
    Op.SOFTCAP: lambda c, n: _scale(c, n, True),
}


def kernel_globals() -> dict:
    g = {f"EMBED_{k}": v for k, v in K.EMBED.items()}
    g.update({f"LINEAR_{k}": v for k, v in K.LINEAR.items()})
    from .quant_embed import QUANT_EMBED
    from .q8_kernels import Q8_LINEAR
    from .quant_kernels import QUANT_LINEAR
    # Integer dot products with 8-bit activations where the type has them; float otherwise.
    from .x8_kernels import X8_LINEAR
    from .xk_kernels import XK_LINEAR
    g.update({f"LINEAR_{k}": v for k, v in {**QUANT_LINEAR, **Q8_LINEAR, **X8_LINEAR,
                                              **XK_LINEAR}.items()})
    g.update({f"EMBED_{k}": v for k, v in QUANT_EMBED.items()})
    g.update(rmsnorm=K.rmsnorm, add_rmsnorm=K.add_rmsnorm, layernorm=K.layernorm,
             act_rows=K.act_rows, rope=K.rope, mul_act=K.mul_act, add=K.add, scale=K.scale)
    g.update({f"KV_STORE_{k}": v for k, v in K.KV_STORE.items()})
    from .attention import ATTENTION
    g.update({f"ATTENTION_{k}": v for k, v in ATTENTION.items()})
    from .intrinsics import barrier, stamp, unit_enter, unit_leave
    g.update(barrier=barrier, stamp=stamp, unit_enter=unit_enter, unit_leave=unit_leave)
    return g


PART_CALLS = 24  # kernel calls per part: numba's typing grows faster than linearly with
# function length, so the step is a short chain of parts rather than one long body.


def call_labels(graph) -> list:
    """What each kernel call of a step computes, for profile builds: the op, and for matrices
    their type and shape."""
    labels = []
    for node in graph.nodes:
        label = node.op.value
        if node.op is Op.LINEAR:
            w = node.weights["w"]
            label = f"linear {w.dtype} {w.shape[0]}x{w.shape[1]}"
        labels += [label] * len(RENDERERS[node.op](_NoAddresses(), node))
    return labels


class _NoAddresses(Ctx):
    """A renderer context that only counts calls."""
    def __init__(self):
        super().__init__(None, None, None)

    def addr(self, t):
        return "0"

    def w(self, w):
        return "0"


def _unit_code(units, node_units) -> list:
    """Per kernel-call boundary, the offload statements to put there: (call index, code).
    Entering a unit asks for the next one to be read ahead; leaving it (after its barrier)
    drops it."""
    runs, order, ctl = units["runs"], units["order"], units["ctl"]

    def enter(u):
        nxt = order[(order.index(u) + 1) % len(order)]
        return f"unit_enter(ab + {ctl}, {runs[nxt][0]}, {len(runs)}, tid)"

    def leave(u):
        k, off, nb = runs[u]
        return f"unit_leave(ab + {ctl}, {k}, {len(runs)}, wb, {off}, {nb}, tid)"

    out = []
    current = None
    for i, u in enumerate(node_units):
        if u is None or u not in runs or u == current:
            continue  # unit-less nodes (shared tables, no weights) keep the current unit
        if current is not None:
            out.append((i, leave(current)))
        out.append((i, enter(u)))
        current = u
    if current is not None:
        out.append((len(node_units), leave(current)))
    return out


def render_step(graph, plan, weight_offsets, state_offsets, name: str, fixed_n=None,
                profile=False, batch=None, units=None) -> str:
    """Source of the step's parts `def {name}_partK(wb, ab, kb, sb, n, pos, tid, nth, sync)`,
    which the build compiles separately and calls in order from one native entry. With
    `fixed_n` the token count is a constant so LLVM specialises the kernels (decode: n = 1).
    With `batch` = (max rows, bytes per sequence's caches) each row is its own sequence.
    With `units` (runs, order, ctl, node_units) the step streams offloaded units."""
    c = Ctx(plan, weight_offsets, state_offsets, batch)
    calls, first_call = [], []
    for node in graph.nodes:
        first_call.append(len(calls))
        calls += RENDERERS[node.op](c, node)
    extra: dict = {}
    if units is not None and units["runs"]:
        for node_i, code in _unit_code(units, units["node_units"]):
            at = first_call[node_i] if node_i < len(first_call) else len(calls)
            extra.setdefault(at, []).append(code)
    args = ", ".join(STEP_ARGS)
    out = []
    for k in range(0, len(calls), PART_CALLS):
        out.append(f"def {name}_part{k // PART_CALLS}({args}):")
        if fixed_n is not None:
            out.append(f"    n = {int(fixed_n)}")
        if profile and k == 0:
            out.append("    stamp(sync, 0, tid)")
        for i, call in enumerate(calls[k:k + PART_CALLS]):
            out += [f"    {code}" for code in extra.get(k + i, [])]
            out.append(f"    {call}")
            out.append("    barrier(sync, nth)")
            if profile:  # slot j + 1: the cycle counter once call j (and its barrier) is done
                out.append(f"    stamp(sync, {k + i + 1}, tid)")
        if k + PART_CALLS >= len(calls):
            out += [f"    {code}" for code in extra.get(len(calls), [])]
        out.append("    return 0\n")
    return "\n".join(out) + "\n"
