"""Named x86-64 targets pick their int8 dot instruction from the target's features, not the
build host's: an `x86_64-avx512` library uses VNNI's `vpdpbusd`, `x86_64-avx2` `vpmaddubsw`.
(Neither runs here unless the host has the features; the AArch64 code runs under qemu in
tests/test_aarch64.py.)"""
from __future__ import annotations

import shutil
import subprocess

import pytest

# One quantized matrix call: the smallest step that reaches the int8 dot.
STEP = ("def s_part0(wb, ab, kb, sb, n, pos, tid, nth, sync):\n"
        "    LINEAR_q8_0(ab, 64, n, 64, wb, 32, 0, ab + 4096, sb, tid, nth)\n"
        "    return 0\n")


@pytest.mark.parametrize("target, instr, absent", [("x86_64-avx512", "vpdpbusd", "vpmaddubsw"),
                                                   ("x86_64-avx2", "vpmaddubsw", "vpdpbusd")])
def test_x86_targets_use_their_dot_instruction(target, instr, absent, tmp_path):
    from ingot.targets.cpu.cross import build_in_subprocess
    from ingot.targets.registry import resolve_target
    if not shutil.which("objdump"):
        pytest.skip("objdump (binutils) missing")
    so = tmp_path / "step.so"
    so.write_bytes(build_in_subprocess({"s": STEP}, resolve_target(target), tmp_path))
    asm = subprocess.run(["objdump", "-d", str(so)], capture_output=True, text=True,
                         check=True).stdout
    assert instr in asm and absent not in asm
