"""Shared fixtures: tiny models and their compiled artefacts, built once per session."""
from __future__ import annotations

import os

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # 2-core CI: no BLAS thread storms
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _native_cache_for_this_run() -> str:
    """One native build cache per test run, shared by the xdist workers and the CLI
    subprocesses they start (a fresh machine starts empty too; a user's own cache is left
    alone)."""
    import tempfile
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID") or f"solo-{os.getpid()}"
    return os.path.join(tempfile.gettempdir(), f"ingot-native-cache-{run}")


os.environ.setdefault("INGOT_NATIVE_CACHE_DIR", _native_cache_for_this_run())


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory):
    """name -> (folder, torch model); built lazily, once."""
    from tiny_models import build_model, save_model
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            m = build_model(name)
            cache[name] = (save_model(m, tmp_path_factory.mktemp(name)), m)
        return cache[name]
    return get


@pytest.fixture(scope="session")
def artefacts(model_dirs, tmp_path_factory):
    """(name, dtype) -> compiled artefact path; compiled once per session."""
    import ingot
    cache: dict = {}
    out = tmp_path_factory.mktemp("artefacts")

    def get(name: str, dtype: str = "f32", max_seq_len: int = 128, max_batch: int = 1):
        key = (name, dtype, max_seq_len, max_batch)
        if key not in cache:
            folder, _ = model_dirs(name)
            cache[key] = ingot.compile(
                folder, out / f"{name}-{dtype}-{max_seq_len}-b{max_batch}.ingot", dtype=dtype,
                max_seq_len=max_seq_len, max_batch=max_batch, verify_passes=True)
        return cache[key]
    return get


@pytest.fixture(scope="session")
def gemma_gguf():
    """The real Gemma 3 270M Q4_K_M GGUF, assembled once into the user cache from its registry
    package (a test dependency: a missing package is an error, not a skip), as `ingot run` with
    no model does."""
    from ingot.default_model import default_model_path
    return default_model_path()


@pytest.fixture(scope="session")
def gemma_artefact(gemma_gguf, tmp_path_factory):
    """Gemma 3 270M compiled once per session (1024-token context)."""
    import ingot
    return ingot.compile(gemma_gguf, tmp_path_factory.mktemp("gemma-art") / "gemma.ingot",
                         max_seq_len=1024)


@pytest.fixture(scope="session")
def libingot(tmp_path_factory):
    """libingot.so built once per worker and loaded through tests/capi_ctypes.py."""
    import capi_ctypes
    from ingot.errors import IngotError
    from ingot.runtime.capi_build import build_capi, find_cc
    try:
        find_cc()
    except IngotError as e:
        pytest.skip(f"NO C COMPILER: libingot is NOT tested ({e})")
    return capi_ctypes.load(build_capi(tmp_path_factory.mktemp("libingot")))


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    """A test's own xdist_group mark overrides its module's: xdist would otherwise join both
    names into a group of their own, and that group's worker would compile the shared model
    (e.g. Gemma, group "gemma") a second time."""
    for item in items:
        own = [m for m in item.own_markers if m.name == "xdist_group"]
        if own:
            def iter_markers(name=None, _orig=item.iter_markers, _own=own):
                return iter(_own) if name == "xdist_group" else _orig(name)
            item.iter_markers = iter_markers
