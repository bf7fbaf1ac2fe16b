"""Where a model comes from: a local folder or a Hugging Face id resolved offline in the cache."""
from __future__ import annotations

import json
import pathlib

from ..errors import IngotError


def resolve_model_dir(model) -> pathlib.Path:
    p = pathlib.Path(model).expanduser()
    if p.is_dir():
        return p.resolve()
    if p.exists():
        raise IngotError(f"{p}: expected a model folder (config.json + safetensors)")
    if "/" in str(model) and not str(model).startswith((".", "/")):
        try:
            from huggingface_hub import snapshot_download
            return pathlib.Path(snapshot_download(str(model), local_files_only=True))
        except Exception:  # noqa: BLE001 - any failure means "not in the cache"
            raise IngotError(f"model '{model}' is neither a folder nor in the Hugging Face cache "
                             f"(Ingot never downloads; fetch it with `huggingface-cli download`)"
                             ) from None
    raise IngotError(f"model folder '{model}' does not exist")


def read_json(path: pathlib.Path, *, required: bool) -> dict:
    if not path.exists():
        if required:
            raise IngotError(f"{path.parent}: missing {path.name}")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise IngotError(f"{path}: malformed JSON ({e})") from None
    if not isinstance(data, dict):
        raise IngotError(f"{path}: expected a JSON object")
    return data
