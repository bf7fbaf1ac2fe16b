"""Read a model's generation_config.json into stop ids and sampling defaults."""
from __future__ import annotations

# What transformers' generate() falls back to for fields the file leaves out.
_HF_FALLBACK = {"temperature": 1.0, "top_k": 50, "top_p": 1.0, "repetition_penalty": 1.0}


def _ids(value) -> list[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def merge_generation_config(gen_cfg: dict | None) -> dict:
    """{"eos_token_ids": [...], "bos_token_id": int | None, "defaults": {SamplingParams fields}}.

    Defaults reproduce what transformers would do with the same file: ``do_sample`` absent or
    false means greedy (temperature 0), and sampling without a ``top_k`` uses 50.
    """
    gen_cfg = gen_cfg or {}
    defaults = {}
    for key, fallback in _HF_FALLBACK.items():
        value = gen_cfg.get(key)
        defaults[key] = type(fallback)(fallback if value is None else value)
    if gen_cfg.get("min_p") is not None:
        defaults["min_p"] = float(gen_cfg["min_p"])
    if not gen_cfg.get("do_sample", False):
        defaults["temperature"] = 0.0
    bos = gen_cfg.get("bos_token_id")
    return {
        "eos_token_ids": list(dict.fromkeys(_ids(gen_cfg.get("eos_token_id")))),
        "bos_token_id": None if bos is None else int(bos),
        "defaults": defaults,
    }
