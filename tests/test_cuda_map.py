"""Device maps over a CUDA artefact: layers on the GPU (the simulator, or a stand-in libcuda
whose launches the simulator runs) and on the CPU (the artefact's per-segment host code), in
any order; tokens and logits must equal the CPU artefact's. The tiny Llama has 2 layers, so
segments are: layer 0 (with the token lookup), layer 1, the tail (final norm, head)."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

import ingot
from ingot.errors import IngotError
from test_cuda_e2e import ATOL, PROMPT, _compare, build_pair

pytestmark = pytest.mark.xdist_group("cuda")
STEPS = 2  # greedy decode steps after the prompt: the simulator is slow (~1 s a step)


def _greedy(model):
    logits = [model.prefill(PROMPT)]
    tokens = []
    for _ in range(STEPS):
        tokens.append(int(logits[-1].argmax()))
        logits.append(model.decode(tokens[-1]))
    return tokens, np.stack(logits)


@pytest.fixture(scope="module")
def cuda_pair(model_dirs, tmp_path_factory):
    """isq -> (CPU artefact, cuda-sm87 artefact, simulator), shared with test_cuda_e2e."""
    return lambda isq=None: build_pair(model_dirs, tmp_path_factory, isq)


@pytest.fixture(scope="module")
def reference(cuda_pair):
    host, gpu, sim = cuda_pair()
    with ingot.load(host, threads=1) as m:
        return _greedy(m)


@pytest.mark.parametrize("text", ["cpu:*", "0:1;cpu:*", "cpu:1;0:*", "0:*"])
def test_maps_on_the_simulator_match_the_cpu_artefact(cuda_pair, reference, monkeypatch, text):
    _, gpu, sim = cuda_pair()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))
    with ingot.load(gpu, threads=1, device_map=text) as m:
        mapping = m._team.mapping  # None: all on GPU 0, the plain whole-step path
        runs = [r.device for r in mapping.runs] if mapping else ["cuda"]
        # "0:1;cpu:*" keeps the head on the main device (mistral.rs): GPU, CPU, GPU.
        assert runs == {"cpu:*": ["cpu"], "0:1;cpu:*": ["cuda", "cpu", "cuda"],
                        "cpu:1;0:*": ["cpu", "cuda"], "0:*": ["cuda"]}[text]
        assert (m._team.backend is None) == (text == "cpu:*")  # no GPU needed at all
        _compare(reference, _greedy(m), ATOL[None])


def test_boundary_copies_on_a_simulated_libcuda(cuda_pair, reference, monkeypatch):
    """A discrete GPU: each boundary copies the live tensors (the residual stream) over."""
    from test_cuda_driver import FakeCuda

    import ingot.runtime.cuda.driver as drv
    _, gpu, sim = cuda_pair()
    lib = ctypes.CDLL(str(sim))
    u3 = ctypes.c_uint * 3

    def execute(kernel, grid, block, shared, a, d):
        assert lib.ingot_sim_launch(kernel.encode(), u3(*grid), u3(*block),
                                    ctypes.c_uint(shared), ctypes.c_void_p(a),
                                    ctypes.c_void_p(d)) == 0, kernel

    fake = FakeCuda(execute=execute)
    monkeypatch.setattr(drv, "load_libcuda", lambda: fake)
    monkeypatch.delenv("INGOT_CUDA_SIM", raising=False)
    with ingot.load(gpu, threads=1, device_map="0:1;cpu:*") as m:
        mapping = m._team.mapping
        hidden = m.plan["hidden"]
        # Into layer 1 (CPU): the residual stream and layer 0's MLP output, which layer 1's
        # fused add+norm sums; into the tail (GPU): the final residual. n x hidden floats each.
        assert [r.copy_bytes(1) for r in mapping.runs] == [0, 8 * hidden, 4 * hidden]
        assert mapping.boundary_bytes(1) == 12 * hidden
        # The GPU holds the units its layers read: embed, layer 0, head; not layer 1's.
        assert m._team.backend._res.resident == [True, True, False, True]
        # ... and only layer 0's half of the KV cache (the two layers' caches are equal).
        assert m._team.backend.kv_device_bytes == m.plan["state_bytes"] // 2
        assert m.streamed_units == []
        start = len(fake.calls)
        _compare(reference, _greedy(m), ATOL[None])
    names = [c[0] for c in fake.calls[start:]]
    # Per step (2 prefill chunks, then STEPS decodes): d[] and tokens in, layer 0's launches,
    # its two live tensors out (then a wait), layer 1 on the CPU, its output in, the head's
    # launches, the logits out.
    steps = 2 + STEPS
    assert names.count("cuMemcpyDtoHAsync_v2") == 3 * steps
    # ... plus the launch words, uploaded once per (step, n): prefill at 4 and 3, decode.
    assert names.count("cuMemcpyHtoDAsync_v2") == 3 * steps + 3
    assert names.count("cuStreamSynchronize") == 2 * steps
    assert names.count("cuStreamBeginCapture_v2") == 2  # one decode graph per GPU range


def test_bad_maps_are_one_line_errors(cuda_pair, monkeypatch):
    host, gpu, sim = cuda_pair()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))
    with pytest.raises(IngotError, match="compiled for the CPU; layers mapped to a GPU"):
        ingot.load(host, device_map="0:*")
    with pytest.raises(IngotError, match="the model has 2"):
        ingot.load(gpu, device_map="0:5")
    with pytest.raises(IngotError, match="one GPU and the CPU"):
        ingot.load(gpu, device_map="0:1;1:*")
    q8 = cuda_pair("q8_0")[1]  # compiled with --cpu-target none
    with pytest.raises(IngotError, match="no CPU code"):
        ingot.load(q8, device_map="cpu:*")
    from ingot.runtime.device_map import usable_devices
    assert usable_devices() == ["cpu", "cuda:0"]  # the simulator stands for a GPU


def test_run_takes_a_map_on_the_command_line(cuda_pair, monkeypatch, capsys):
    from ingot.cli import main
    host, gpu, sim = cuda_pair()
    monkeypatch.setenv("INGOT_CUDA_SIM", str(sim))
    args = ["-p", "hello world", "--raw", "--max-tokens", "4", "--temperature", "0",
            "--threads", "1"]
    assert main(["run", str(host), *args]) == 0
    want = capsys.readouterr().out
    assert main(["run", str(gpu), "-n", "cpu:1;0:*", *args]) == 0
    assert capsys.readouterr().out == want
    assert main(["run", str(gpu), "-n", "0:1;1:*", *args]) == 1  # cuda:1 is not here
    assert "mapped to cuda:1 but this host has only cuda:0" in capsys.readouterr().err
