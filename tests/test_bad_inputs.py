"""Broken model folders and artefacts: one clear line on stderr, a non-zero exit, no traceback,
and no partial artefact (nor a leftover temporary file) in the output folder."""
from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import pytest

from ingot.runtime.artefact import Artefact, ArtefactWriter
from test_cli import run_cli

WEIGHTS = "model.safetensors"


def assert_one_error(r, fragment: str) -> None:
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert r.returncode == 1 and len(lines) == 1, r.stderr
    assert lines[0].startswith("ingot: error: ") and fragment in lines[0], lines[0]


# -- model folders ---------------------------------------------------------------------------
def _edit_config(folder, change) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    change(cfg)
    path.write_text(json.dumps(cfg))


def _edit_tensors(folder, change) -> None:
    from safetensors.numpy import load_file, save_file
    tensors = load_file(folder / WEIGHTS)
    change(tensors)
    save_file(tensors, folder / WEIGHTS)


def _index_with_missing_shard(folder) -> None:
    from safetensors.numpy import load_file
    names = sorted(load_file(folder / WEIGHTS))
    weight_map = {n: WEIGHTS for n in names}
    weight_map["lm_head.weight"] = "model-00002-of-00002.safetensors"
    (folder / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": weight_map}))


def _truncate(path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


BROKEN_MODELS = {
    "missing config": (lambda d: (d / "config.json").unlink(), "missing config.json"),
    "malformed config": (lambda d: (d / "config.json").write_text("{\"model_type\": "),
                         "malformed JSON"),
    "no model_type": (lambda d: _edit_config(d, lambda c: c.pop("model_type")),
                      "no 'model_type' field"),
    "unknown model_type": (lambda d: _edit_config(d, lambda c: c.update(model_type="gpt9000")),
                           "unknown model_type 'gpt9000'"),
    "missing field": (lambda d: _edit_config(d, lambda c: c.pop("hidden_size")),
                      "no 'hidden_size'"),
    "no safetensors": (lambda d: (d / WEIGHTS).unlink(), "no *.safetensors files"),
    "missing shard": (_index_with_missing_shard,
                      "missing safetensors shard 'model-00002-of-00002.safetensors'"),
    "truncated safetensors": (lambda d: _truncate(d / WEIGHTS), "is truncated"),
    "wrong shape": (lambda d: _edit_tensors(d, lambda t: t.update(
        {"model.layers.0.mlp.up_proj.weight": np.zeros((71, 40), np.float32)})),
        "'model.layers.0.mlp.up_proj.weight' has shape [71, 40], expected [72, 40]"),
    "missing tensor": (lambda d: _edit_tensors(d, lambda t: t.pop(
        "model.layers.1.self_attn.o_proj.weight")),
        "missing tensor 'model.layers.1.self_attn.o_proj.weight'"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_MODELS))
def test_broken_model_folder(case, model_dirs, tmp_path):
    folder, _ = model_dirs("llama")
    broken = shutil.copytree(folder, tmp_path / "model")
    breaker, fragment = BROKEN_MODELS[case]
    breaker(broken)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("compile", "-m", broken, "-o", out / "model.ingot", "--max-seq-len", 64)
    assert_one_error(r, fragment)
    assert list(out.iterdir()) == []  # neither the artefact nor a .tmp file


def test_missing_model_folder(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("compile", "-m", tmp_path / "nowhere", "-o", out / "model.ingot")
    assert_one_error(r, "does not exist")
    assert list(out.iterdir()) == []


# -- artefacts -------------------------------------------------------------------------------
def _retarget(src, dst, machine: str) -> None:
    """A copy of the artefact whose header claims another machine."""
    art = Artefact(src)
    with ArtefactWriter(dst) as w:
        w.header = {k: v for k, v in art.header.items()
                    if k not in ("sections", "format_version")}
        w.header["target"] = dict(art.header["target"], machine=machine)
        for s in art.section_info():
            w.add(s["name"], bytes(art.section(s["name"])), align=s["align"])
    art.close()


def _corrupt_code(src, dst) -> None:
    art = Artefact(src)
    code = next(s for s in art.section_info() if s["name"] == "code")
    art.close()
    data = bytearray(src.read_bytes())
    mid = code["offset"] + code["size"] // 2
    data[mid:mid + 8] = bytes(b ^ 0xFF for b in data[mid:mid + 8])
    dst.write_bytes(bytes(data))


def _newer_version(src, dst) -> None:
    data = bytearray(src.read_bytes())
    struct.pack_into("<I", data, 8, 99)
    dst.write_bytes(bytes(data))


BROKEN_ARTEFACTS = {
    "not an artefact": (lambda src, dst: dst.write_bytes(b"GGUF" + bytes(200)),
                        "not an Ingot artefact (bad magic number)"),
    "newer format": (_newer_version, "format version 99 is newer"),
    "other machine": (lambda src, dst: _retarget(src, dst, "aarch64"),
                      "built for aarch64"),
    "truncated": (lambda src, dst: dst.write_bytes(src.read_bytes()[:src.stat().st_size // 2]),
                  "artefact is truncated"),
    "corrupt code": (_corrupt_code, "section 'code' is corrupt (checksum mismatch)"),
}


@pytest.mark.parametrize("case", sorted(BROKEN_ARTEFACTS))
def test_broken_artefact(case, artefacts, tmp_path):
    make, fragment = BROKEN_ARTEFACTS[case]
    bad = tmp_path / "bad.ingot"
    make(artefacts("llama"), bad)
    r = run_cli("run", bad, "-p", "hello", "--max-tokens", 2)
    assert_one_error(r, fragment)
    assert r.stdout == ""


def test_missing_artefact(tmp_path):
    assert_one_error(run_cli("inspect", tmp_path / "none.ingot"), "cannot open artefact")


def test_usage_error_exits_2():
    r = run_cli("run", "--max-tokens", "lots")
    assert r.returncode == 2 and "Traceback" not in r.stderr
