"""Print the README's "Supported architectures" table, generated from the architecture registry.

    python tools/supported_table.py

tests/test_registry.py checks that the README holds exactly this table.
"""
from __future__ import annotations

import importlib
import re


def title_and_summary(module) -> tuple[str, str]:
    """A family module's docstring opens "Title: what differs from the shared blocks."."""
    doc = " ".join((module.__doc__ or "").split())
    m = re.match(r"(.+?\.)(\s|$)", doc)
    sentence = (m.group(1) if m else doc).rstrip(".")
    title, _, summary = sentence.partition(": ")
    return title, summary


def table() -> str:
    from ingot.arch.registry import families
    rows = ["| family | Hugging Face `model_type` | GGUF `general.architecture` | ISQ | "
            "what differs |", "|---|---|---|---|---|"]
    for f in families():
        mod = importlib.import_module(f"ingot.arch.{f.name}")
        gguf = ", ".join(f"`{a}`" for a in f.gguf_archs) or "—"
        if f.name == "llama":
            gguf += " (and GGML ggjt v3)"
        title, summary = title_and_summary(mod)
        rows.append(f"| {title} | {', '.join(f'`{t}`' for t in f.model_types)} | {gguf} | "
                    f"yes | {summary} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    print(table(), end="")
