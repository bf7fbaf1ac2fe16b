"""The CUDA kernel library builds with nvcc: PTX and a cubin (ptxas) for Jetson Orin (sm_87)
and Hopper (sm_90), every kernel an entry point of both. The two architectures build in
parallel once per session (the whole library: about 14 s each alone, 25-40 s together on two
busy cores)."""
from __future__ import annotations

import re
import time

import pytest

from ingot.errors import IngotError
from ingot.targets.cuda import nvcc
from ingot.targets.cuda.kernel_table import KERNELS, kernel_source

pytestmark = pytest.mark.xdist_group("cuda_build")
ARCHS = ("sm_87", "sm_90")


@pytest.fixture(scope="session")
def built():
    try:
        nvcc.find_nvcc()
    except IngotError as e:
        pytest.skip(str(e))
    t0 = time.perf_counter()
    out = nvcc.build_all(kernel_source(), ARCHS)
    print(f"nvcc: {', '.join(ARCHS)} in {time.perf_counter() - t0:.1f} s")
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_every_kernel_is_in_the_ptx_and_the_cubin(built, arch):
    ptx, cubin = built[arch]
    text = ptx.decode()
    assert re.search(rf"^\.target {arch}\b", text, re.M), "PTX for another architecture"
    entries = set(re.findall(r"^\.visible \.entry (ingot_\w+)\(", text, re.M))
    assert entries == set(KERNELS)
    assert cubin[:4] == b"\x7fELF"
    for k in KERNELS:
        assert k.encode() + b"\0" in cubin, f"{k} missing from the {arch} cubin"


def test_the_source_holds_only_the_kernels_used():
    src = kernel_source({"ingot_rmsnorm", "ingot_linear_q8_q4_k"})
    assert "ingot_linear_q8_q4_k(KARGS)" in src and "ingot_linear_q6_k(KARGS)" not in src
    with pytest.raises(IngotError, match="no kernel named ingot_nope"):
        kernel_source({"ingot_nope"})


def test_nvcc_errors_are_one_line(monkeypatch, tmp_path):
    monkeypatch.delenv("NVCC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(nvcc.glob, "glob", lambda pattern: [])
    with pytest.raises(IngotError, match="need nvcc") as e:
        nvcc.compile_ptx("", "sm_87")
    assert "\n" not in str(e.value)
    monkeypatch.undo()
    with pytest.raises(IngotError, match="not a CUDA architecture"):
        nvcc.build("", "ampere")
    try:
        nvcc.find_nvcc()
    except IngotError:
        pytest.skip("no nvcc here")
    with pytest.raises(IngotError, match="nvcc failed for sm_87: .*error") as e:
        nvcc.compile_cubin('extern "C" __global__ void k() { undefined_thing; }', "sm_87")
    assert "\n" not in str(e.value)
