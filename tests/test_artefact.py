"""Artefact determinism, format round trip, and the runtime's import rule."""
from __future__ import annotations

import subprocess
import sys
import textwrap

import ingot
from ingot.runtime.artefact import FORMAT_VERSION, MAGIC, Artefact


def test_same_inputs_same_bytes(model_dirs, artefacts, tmp_path, monkeypatch):
    """Compiled twice (in this process and in a fresh one), native code built each time (no
    build cache): byte-identical."""
    monkeypatch.setenv("INGOT_NATIVE_CACHE", "0")
    folder, _ = model_dirs("qwen2")
    ref = artefacts("qwen2", "f16").read_bytes()
    again = ingot.compile(folder, tmp_path / "a.ingot", dtype="f16", max_seq_len=128)
    assert again.read_bytes() == ref
    code = (f"import ingot; ingot.compile({str(folder)!r}, {str(tmp_path / 'b.ingot')!r}, "
            f"dtype='f16', max_seq_len=128)")
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "b.ingot").read_bytes() == ref


def test_sections_and_header(artefacts):
    art = Artefact(artefacts("llama"))
    data = art.path.read_bytes()
    assert data[:8] == MAGIC and art.header["format_version"] == FORMAT_VERSION
    names = [s["name"] for s in art.section_info()]
    for required in ("plan", "code", "weights", "tokenizer", "tokenizer_config",
                     "generation_config"):
        assert required in names
    w = next(s for s in art.section_info() if s["name"] == "weights")
    assert w["offset"] % 4096 == 0  # mappable in place
    assert art.header["target"]["machine"]
    assert art.json("plan")["arena_bytes"] > 0


def test_runtime_imports_no_compiler(artefacts):
    """Loading and generating imports neither torch, numba, llvmlite nor the compiler."""
    code = textwrap.dedent(f"""
        import sys
        import ingot
        m = ingot.load({str(artefacts("llama"))!r}, threads=2)
        text = m.generate("hello", max_tokens=4)
        m.prefill([1, 2, 3]); m.decode(4)
        banned = [k for k in sys.modules if k.split(".")[0] in ("torch", "numba", "llvmlite",
                  "transformers") or k.startswith(("ingot.compiler", "ingot.arch",
                  "ingot.targets", "ingot.quant"))]
        assert not banned, banned
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_runtime_sources_import_rule():
    """Static form of the same rule, over every runtime file."""
    import pathlib
    import re

    import ingot.runtime
    root = pathlib.Path(ingot.runtime.__file__).parent
    pat = re.compile(r"^\s*(from|import)\s+(torch|numba|llvmlite|transformers)\b|"
                     r"^\s*from\s+(ingot\.)?(compiler|arch|targets)\b|"
                     r"^\s*from\s+\.\.(compiler|arch|targets)\b", re.M)
    offenders = [p.name for p in root.glob("*.py") if pat.search(p.read_text())]
    assert not offenders
