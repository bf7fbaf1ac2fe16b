"""Broken GGUF files: one clear line naming the problem, exit status 1, no traceback, and no
artefact left behind. Each case starts from a small valid Llama GGUF written here with
gguf.GGUFWriter and breaks one thing in it."""
from __future__ import annotations

import struct

import numpy as np
import pytest

from test_bad_inputs import assert_one_error
from test_cli import cli_in_process, run_cli

gguf = pytest.importorskip("gguf")

HIDDEN, FF, VOCAB, LAYERS = 32, 64, 40, 1


def write_llama_gguf(path, *, arch="llama", meta_override=None, qtype="F32"):
    """A random one-layer Llama in GGUF form (tensor names and keys as llama.cpp writes them)."""
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(path), arch=arch)
    keys = {"context_length": 64, "embedding_length": HIDDEN, "block_count": LAYERS,
            "feed_forward_length": FF, "attention.head_count": 4,
            "attention.head_count_kv": 2, "attention.layer_norm_rms_epsilon": 1e-5}
    keys.update(meta_override or {})
    for k, v in keys.items():
        full = f"{arch}.{k}"
        if v is None:  # left out
            continue
        if isinstance(v, str):
            w.add_string(full, v)
        elif isinstance(v, float):
            w.add_float32(full, v)
        else:
            w.add_uint32(full, v)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(VOCAB)])
    w.add_token_types([1] * VOCAB)
    w.add_token_merges([])

    def mat(name, rows, cols):
        x = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype != "F32" and rows > 1:
            t = gguf.GGMLQuantizationType[qtype]
            w.add_tensor(name, gguf.quants.quantize(x, t), raw_dtype=t)
        else:
            w.add_tensor(name, x)

    mat("token_embd.weight", VOCAB, HIDDEN)
    w.add_tensor("output_norm.weight", np.ones(HIDDEN, np.float32))
    for i in range(LAYERS):
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(HIDDEN, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(HIDDEN, np.float32))
        mat(f"blk.{i}.attn_q.weight", HIDDEN, HIDDEN)
        mat(f"blk.{i}.attn_k.weight", HIDDEN // 2, HIDDEN)
        mat(f"blk.{i}.attn_v.weight", HIDDEN // 2, HIDDEN)
        mat(f"blk.{i}.attn_output.weight", HIDDEN, HIDDEN)
        mat(f"blk.{i}.ffn_gate.weight", FF, HIDDEN)
        mat(f"blk.{i}.ffn_up.weight", FF, HIDDEN)
        mat(f"blk.{i}.ffn_down.weight", HIDDEN, FF)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _tensor_info_at(data: bytes, name: str) -> int:
    """Offset of the n_dims field of a tensor's info record (just after its name)."""
    key = struct.pack("<Q", len(name)) + name.encode()
    at = data.index(key)
    return at + len(key)


def _patch(path, name, change) -> None:
    data = bytearray(path.read_bytes())
    at = _tensor_info_at(bytes(data), name)
    n_dims = struct.unpack_from("<I", data, at)[0]
    change(data, at + 4, n_dims)  # dims start here; then u32 type, u64 offset
    path.write_bytes(bytes(data))


def _set_type(data, dims_at, n_dims, value=99):
    struct.pack_into("<I", data, dims_at + 8 * n_dims, value)


def _grow_rows(data, dims_at, n_dims):
    rows = struct.unpack_from("<Q", data, dims_at + 8)[0]
    struct.pack_into("<Q", data, dims_at + 8, rows + 3)


CASES = {
    "wrong magic": (lambda p: p.write_bytes(b"GGML" + p.read_bytes()[4:]), "not a GGUF file"),
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[:p.stat().st_size * 2 // 3]),
                  "truncated"),
    "unknown architecture": (lambda p: write_llama_gguf(p, arch="gpt9000"),
                             "unknown architecture 'gpt9000'"),
    "unknown tensor type": (lambda p: _patch(p, "blk.0.ffn_up.weight", _set_type),
                            "unknown tensor type"),
    "size does not match": (lambda p: _patch(p, "blk.0.attn_q.weight", _grow_rows),
                            "'blk.0.attn_q.weight'"),
    "metadata of the wrong type": (
        lambda p: write_llama_gguf(p, meta_override={"block_count": "two"}),
        "metadata 'llama.block_count' has the wrong type"),
    "missing metadata": (
        lambda p: write_llama_gguf(p, meta_override={"feed_forward_length": None}),
        "metadata 'llama.feed_forward_length' is missing"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_broken_gguf(case, tmp_path):
    path = write_llama_gguf(tmp_path / "m.gguf")
    breaker, fragment = CASES[case]
    breaker(path)
    out = tmp_path / "out"
    out.mkdir()
    r = run_cli("compile", "-m", str(path), "-o", str(out / "m.ingot"))
    assert_one_error(r, fragment)
    assert list(out.iterdir()) == []


def test_valid_gguf_compiles_through_both_flag_forms(tmp_path):
    """The unbroken file compiles, as `-m file.gguf` and as mistral.rs' `--format gguf -f`."""
    path = write_llama_gguf(tmp_path / "m.gguf", qtype="Q8_0")
    assert cli_in_process("compile", "-m", path, "-o", tmp_path / "a.ingot",
                          "--max-seq-len", "32") == 0
    assert cli_in_process("compile", "-m", tmp_path, "--format", "gguf", "-f", "m.gguf",
                          "-o", tmp_path / "b.ingot", "--max-seq-len", "32") == 0
    assert (tmp_path / "a.ingot").read_bytes() == (tmp_path / "b.ingot").read_bytes()
