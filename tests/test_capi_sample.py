"""libingot's sampling filters (runtime/capi/sample.c) against the Python runtime's
(runtime/sampling.py): for the same logits and parameters, repetition penalty, temperature,
top-k, top-p and min-p must leave the same candidate set with the same probabilities. Only the
random draw differs (each side has its own generator, as ingot.h says).

The C filters are built with a small probe (tests/capi/sample_probe.c) into their own library,
since libingot exports only its API. Logits are random normal with a wide scale, so no two
candidates tie at a filter's boundary (where the order of equal values is the libraries' own).
Parameters are float32 values, as the C API takes them.
"""
from __future__ import annotations

import ctypes
import pathlib
import subprocess

import numpy as np
import pytest

from ingot.errors import IngotError
from ingot.runtime.sampling import Sampler, SamplingParams

ROOT = pathlib.Path(__file__).resolve().parent.parent
f32 = lambda v: float(np.float32(v))  # noqa: E731

CASES = [  # temperature, top_k, top_p, min_p, repetition_penalty
    (1.0, 0, 1.0, 0.0, 1.0), (0.7, 0, 1.0, 0.0, 1.0), (0.8, 40, 1.0, 0.0, 1.0),
    (1.0, 0, 0.9, 0.0, 1.0), (0.6, 0, 0.5, 0.0, 1.0), (1.3, 0, 1.0, 0.05, 1.0),
    (0.9, 50, 0.95, 0.02, 1.0), (0.7, 0, 0.8, 0.1, 1.3), (1.0, 5, 1.0, 0.0, 0.8),
    (0.5, 300, 0.99, 0.0, 1.1), (0.0, 0, 1.0, 0.0, 1.2), (2.0, 1, 1.0, 0.0, 1.0),
]


@pytest.fixture(scope="module")
def probe(tmp_path_factory):
    from ingot.runtime.capi_build import find_cc
    try:
        cc = find_cc()
    except IngotError as e:
        pytest.skip(f"NO C COMPILER: libingot's sampler is NOT tested ({e})")
    out = tmp_path_factory.mktemp("sample_probe") / "libprobe.so"
    capi = ROOT / "runtime" / "capi"
    subprocess.run([cc, "-std=c11", "-O2", "-fPIC", "-shared", f"-I{capi}",
                    str(capi / "sample.c"), str(ROOT / "tests" / "capi" / "sample_probe.c"),
                    "-o", str(out), "-lm"], check=True)
    lib = ctypes.CDLL(str(out))
    P = ctypes.POINTER
    lib.probe_filter.argtypes = [P(ctypes.c_float), ctypes.c_int32, ctypes.c_float,
                                 ctypes.c_int32, ctypes.c_float, ctypes.c_float, ctypes.c_float,
                                 P(ctypes.c_int32), ctypes.c_size_t, P(ctypes.c_int32),
                                 P(ctypes.c_double)]
    return lib


def c_filtered(lib, logits, case, history):
    t, k, tp, mp, rp = case
    n = len(logits)
    ids, probs = (ctypes.c_int32 * n)(), (ctypes.c_double * n)()
    h = (ctypes.c_int32 * max(len(history), 1))(*history)
    m = lib.probe_filter(logits.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), n, t, k, tp,
                         mp, rp, h, len(history), ids, probs)
    assert m > 0
    return dict(zip(ids[:m], probs[:m]))


def py_filtered(logits, case, history):
    t, k, tp, mp, rp = (f32(v) if isinstance(v, float) else v for v in case)
    s = Sampler(SamplingParams(temperature=t, top_k=k, top_p=tp, min_p=mp,
                               repetition_penalty=rp, seed=0), len(logits))
    seen = {}

    def capture(probs, ids):  # the filtered distribution, just before the draw
        seen["ids"] = np.arange(len(probs)) if ids is None else np.asarray(ids)
        seen["p"] = np.asarray(probs, np.float64) / np.sum(probs, dtype=np.float64)
        return 0
    s._draw = capture
    pick = s.sample(logits, history)
    if t == 0:  # greedy never draws
        return {pick: 1.0}
    return dict(zip(seen["ids"].tolist(), seen["p"].tolist()))


def test_filters_match_python(probe):
    rng = np.random.default_rng(1)
    for trial in range(4):
        for n in (300, 4099):
            logits = (rng.standard_normal(n) * (2.0 + trial)).astype(np.float32)
            history = rng.integers(0, n, 12).tolist() + [n + 5]  # one id past the head
            for case in CASES:
                got = c_filtered(probe, logits, case, history)
                want = py_filtered(logits, case, history)
                assert sorted(got) == sorted(want), (n, case, len(got), len(want))
                # Probabilities: float32 exp on each side (numpy's vs libm's, within an ulp or
                # two), normalised in float64: 1e-6 relative is far above that, far below any
                # filter change.
                g = np.array([got[i] for i in sorted(got)])
                w = np.array([want[i] for i in sorted(want)])
                np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-9)
