"""The native build cache (targets/build_cache.py): a hit gives the bytes a fresh build gives and
skips the build; corrupted, torn or disabled entries never answer; the folder stays bounded."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from ingot.targets import build_cache


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("INGOT_NATIVE_CACHE_DIR", str(tmp_path / "native"))
    monkeypatch.delenv("INGOT_NATIVE_CACHE", raising=False)
    return tmp_path / "native"


def counting(data: bytes):
    calls = []

    def build():
        calls.append(1)
        return data
    return build, calls


def test_a_hit_skips_the_build_and_other_inputs_miss(cache):
    build, calls = counting(b"\x7fELF code")
    assert build_cache.cached("k", build, source="a", target="t") == b"\x7fELF code"
    assert build_cache.cached("k", build, source="a", target="t") == b"\x7fELF code"
    assert len(calls) == 1
    build_cache.cached("k", build, source="b", target="t")  # another source
    build_cache.cached("k", build, source="a", target="u")  # another target
    build_cache.cached("j", build, source="a", target="t")  # another kind of build
    assert len(calls) == 4
    assert not list(cache.glob("??/.tmp-*"))  # written whole, then renamed


def test_a_corrupted_or_torn_entry_is_rebuilt(cache):
    build, calls = counting(b"good bytes")
    build_cache.cached("k", build, source="a")
    (entry,) = cache.glob("??/*")
    blob = bytearray(entry.read_bytes())
    blob[-1] ^= 1
    entry.write_bytes(bytes(blob))
    assert build_cache.cached("k", build, source="a") == b"good bytes"
    entry.write_bytes(entry.read_bytes()[:10])
    assert build_cache.cached("k", build, source="a") == b"good bytes"
    assert len(calls) == 3
    assert build_cache.cached("k", build, source="a") == b"good bytes" and len(calls) == 3


def test_turned_off_it_neither_reads_nor_writes(cache, monkeypatch):
    build, calls = counting(b"x")
    monkeypatch.setenv("INGOT_NATIVE_CACHE", "0")
    build_cache.cached("k", build, source="a")
    build_cache.cached("k", build, source="a")
    assert len(calls) == 2 and not cache.exists()


def test_an_unwritable_folder_only_costs_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_bytes(b"")
    monkeypatch.setenv("INGOT_NATIVE_CACHE_DIR", str(blocker / "native"))
    build, calls = counting(b"x")
    assert build_cache.cached("k", build, source="a") == b"x"


def test_trim_keeps_the_most_recently_used(cache):
    for i in range(4):
        build_cache.cached("k", lambda: bytes(1000), source=str(i))
    entries = sorted(cache.glob("??/*"), key=lambda p: p.stat().st_mtime)
    for n, p in enumerate(entries):
        os.utime(p, (1000 + n, 1000 + n))
    build_cache.load(build_cache.key("k", source="0"))  # used now: newest
    build_cache.trim(limit=2 * 1032)
    left = {p.name for p in cache.glob("??/*")}
    assert build_cache.key("k", source="0") in left and len(left) == 2


def test_a_compile_from_the_cache_equals_a_fresh_one(model_dirs, tmp_path, cache):
    """A tiny model compiled with an empty cache, then in a fresh process where building
    native code raises: the second compile takes the library from the cache, and its artefact
    has the same bytes as the first, built (test_artefact checks that builds are
    deterministic)."""
    import ingot
    folder, _ = model_dirs("llama")
    assert not cache.exists()
    first = ingot.compile(folder, tmp_path / "a.ingot", max_seq_len=64)
    assert list(cache.glob("??/*"))
    code = textwrap.dedent(f"""
        import ingot
        from ingot.targets.cpu import build
        def refuse(*a, **k):
            raise SystemExit("built native code despite a cache entry")
        build.build_uncached = refuse
        ingot.compile({str(folder)!r}, {str(tmp_path / 'b.ingot')!r}, max_seq_len=64)
    """)
    subprocess.run([sys.executable, "-c", code], check=True)
    assert (tmp_path / "b.ingot").read_bytes() == first.read_bytes()
