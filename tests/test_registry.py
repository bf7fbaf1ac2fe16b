"""The architecture registry is the one list of families: every family has a tiny config that
test_equivalence runs (so a family added later is tested by adding its config), and the
README's table is the one generated from it."""
from __future__ import annotations

import importlib.util
import pathlib

import transformers

from ingot.arch.registry import families, family_for
from tiny_models import CONFIGS

ROOT = pathlib.Path(__file__).resolve().parent.parent


def test_every_family_has_a_tiny_config():
    covered = {family_for(getattr(transformers, cls).model_type).name
               for cls, _ in CONFIGS.values()}
    assert covered == {f.name for f in families()}


def test_readme_table_is_generated_from_the_registry():
    spec = importlib.util.spec_from_file_location("supported_table",
                                                  ROOT / "tools" / "supported_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.table() in (ROOT / "README.md").read_text(encoding="utf-8"), \
        "README's architecture table is stale: python tools/supported_table.py"
