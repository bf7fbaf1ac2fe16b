"""Compiling in bounded memory (issue 8): the compiler streams weights a run of rows at a time.

`ingot compile --isq Q4K` of a generated f16 Llama whose float32 weights (335 MiB) are ten times
the bound must peak no higher than compiling the same layer with a 512-token vocabulary (26 MiB
of float32) the same way, plus COMPILE_BOUND. The small compile measures what does not depend on
the model's size: the interpreter, numba and llvmlite, and the native code generation, whose
memory depends on the layer's widths (LLVM's loop decisions: 304 MiB at hidden 512, 329 MiB at
2048), so both models have the same layer (one, hidden 1024, heads of 128, GQA 4) and the same
storage types; only the token table and the output head grow (40000 rows: 156 MiB of float32
each). Peak RSS is read from the kernel: ru_maxrss of the compile, the only child of a fresh
wrapper process.

The bound: weights are read, widened to float32 and encoded in runs of whole rows of at most
weights.CHUNK_BYTES (512 KiB) of float32; the quantizers keep up to ~11 temporaries of a run's
size (q4_k's scale search), ~6 MiB; the file reads and the encoded bytes add a few runs more.
32 MiB leaves room for the allocator's retained free blocks and for run-to-run differences of
the code generation (measured: +-3 MiB). Compiling whole tensors, the large model peaked at
1762 MiB against the small one's 399 MiB: each tensor was widened whole to float32 and the
encoders keep 5-11 temporaries of its size (q6_k's output head: ~8 x 156 MiB).

The row runs must not change a byte: each storage format quantizes every row on its own, and
the tests below check it for every format, run size and source kind.
"""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

MiB = 2**20
COMPILE_BOUND = 32 * MiB

# ru_maxrss of the children of a fresh process: the compile's own peak, nothing of pytest's.
WRAPPER = ("import resource, subprocess, sys\n"
           "r = subprocess.run(sys.argv[1:])\n"
           "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)\n"
           "sys.exit(r.returncode)")


def f16_llama(folder, *, hidden, heads, inter, vocab):
    """A random one-layer Llama saved in float16 (GQA ratio 4, heads of 128)."""
    import torch
    import transformers
    cfg = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, intermediate_size=inter, num_hidden_layers=1,
        num_attention_heads=heads, num_key_value_heads=heads // 4, head_dim=hidden // heads,
        tie_word_embeddings=False, max_position_embeddings=256, torch_dtype="float16")
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(cfg).to(torch.float16)
    model.save_pretrained(folder)
    return folder, sum(p.numel() for p in model.parameters())


def compile_peaks(*jobs) -> list:
    """Peak RSS of `ingot compile --isq Q4K` of each (folder, output), each in a fresh process
    (run side by side: each process's peak is its own, and the wall time is the longer one)."""
    procs = [subprocess.Popen([sys.executable, "-c", WRAPPER, sys.executable, "-m", "ingot.cli",
                               "compile", "-m", str(folder), "--isq", "Q4K", "-o", str(out),
                               "--max-seq-len", "64"],
                              env=dict(os.environ, INGOT_NATIVE_CACHE="0"),  # build, always
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for folder, out in jobs]
    peaks = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=900)
            assert p.returncode == 0, err[-3000:]
            peaks.append(int(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    return peaks


@pytest.mark.xdist_group("compile_memory")  # two compiles side by side: one worker to itself
def test_compile_peak_does_not_grow_with_the_model(tmp_path):
    # The same layer (the same code to generate); the large model's tables are 78x the small's.
    small, _ = f16_llama(tmp_path / "small", hidden=1024, heads=8, inter=1024, vocab=512)
    big, n = f16_llama(tmp_path / "big", hidden=1024, heads=8, inter=1024, vocab=40000)
    assert 4 * n > 10 * COMPILE_BOUND  # float32 weights 10x the bound (each table ~5x)
    base, peak = compile_peaks((small, tmp_path / "small.ingot"), (big, tmp_path / "big.ingot"))
    from ingot.runtime.artefact import Artefact
    from ingot.quant.registry import base_type
    types = Artefact(tmp_path / "big.ingot").json("plan")["weight_types"]
    assert {"q4_k", "q6_k", "q8_0"} <= {base_type(t) for t in types}  # every encoder ran
    assert peak <= base + COMPILE_BOUND, (
        f"compile peak {peak / MiB:.0f} MiB: over the small model's {base / MiB:.0f} MiB + "
        f"{COMPILE_BOUND / MiB:.0f} MiB (float32 weights {4 * n / MiB:.0f} MiB)")
    print(f"small {base / MiB:.1f} MiB, big {peak / MiB:.1f} MiB")


# ---- row runs give the same bytes -------------------------------------------------------------

def _formats():
    from ingot.quant.registry import FORMATS, _load_all
    _load_all()
    return sorted(n for n, f in FORMATS.items() if f.quantize is not None)


@pytest.mark.parametrize("name", _formats())
def test_every_format_encodes_rows_independently(name):
    """Any split into runs of rows encodes to the bytes of the whole matrix (including runs of
    one row, a last short run, and flat and constant blocks)."""
    from ingot.quant.registry import get_format
    fmt = get_format(name)
    k = 512 if fmt.block_size <= 256 and 512 % fmt.block_size == 0 else fmt.block_size * 2
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((37, k)) * 0.05).astype(np.float32)
    x[3, :256] = 0
    x[5, :64] = 0.5
    x[9] = -x[9] * 40
    whole = np.ascontiguousarray(fmt.quantize(x)).tobytes()
    for step in (1, 4, 17):
        parts = [np.ascontiguousarray(fmt.quantize(x[r:r + step])).tobytes()
                 for r in range(0, len(x), step)]
        assert b"".join(parts) == whole, f"{name}: runs of {step} rows differ"


def _hf_folder(tmp_path, dtype):
    import torch
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=300, hidden_size=256, intermediate_size=512,
                                   num_hidden_layers=1, num_attention_heads=4,
                                   num_key_value_heads=2, tie_word_embeddings=False,
                                   max_position_embeddings=64, attention_bias=True)
    torch.manual_seed(1)
    m = transformers.LlamaForCausalLM(cfg)
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0.0, 0.2)
    folder = tmp_path / f"hf-{dtype}"
    m.to(getattr(torch, dtype)).save_pretrained(folder)
    return folder


def _weights(src, isq=None, dtype=None, cpu_layouts=False):
    from ingot.compiler.passes import run_passes
    from ingot.compiler.trace import trace
    from ingot.quant.policy import Policy, load_policy, parse_isq
    policy = Policy(dtype or src.default_float, parse_isq(isq), load_policy(None))
    graph = run_passes(trace(src, policy, max_seq=64, chunk=16), None)
    if cpu_layouts:  # as a CPU build stores them (regrouped and interleaved rows)
        from ingot.compiler.cpu_layouts import regroup_for_cpu
        regroup_for_cpu(graph)
    return graph.weights()


def _same_bytes_in_any_runs(weights, monkeypatch, runs=(1, 3000)):
    """Every weight's stored bytes are the same in runs of one row, of a few rows, and whole;
    each run holds whole rows, and the decoded values are the whole bytes' (verify_passes)."""
    from ingot.compiler import weights as W
    from ingot.quant.registry import get_format
    for w in weights:
        monkeypatch.setattr(W, "CHUNK_BYTES", 1 << 40)
        whole = b"".join(c.tobytes() for c in W.weight_raw_chunks(w))
        assert len(whole) == W.weight_nbytes(w)
        fmt = get_format(w.dtype)
        rb = fmt.row_bytes(w.shape[-1])
        for run in runs:
            monkeypatch.setattr(W, "CHUNK_BYTES", run)
            chunks = list(W.weight_raw_chunks(w))
            assert all(c.nbytes % rb == 0 for c in chunks), (w.name, run)
            assert b"".join(c.tobytes() for c in chunks) == whole, (w.name, w.dtype, run)
        want = fmt.dequantize(np.frombuffer(whole, np.uint8).reshape(-1, rb))
        np.testing.assert_array_equal(W.weight_stored(w), want.reshape(w.shape))


@pytest.mark.parametrize("dtype,isq", [("float32", None), ("float16", None), ("bfloat16", None),
                                       ("float16", "q4k"), ("bfloat16", "q8_0"),
                                       ("float32", "q4_0")])
def test_hf_weights_in_row_runs(tmp_path, monkeypatch, dtype, isq):
    from ingot.compiler.source import open_source
    src = open_source(_hf_folder(tmp_path, dtype))
    ws = _weights(src, isq)
    # fused qkv (with its bias) and gate_up are covered
    assert {w.name for w in ws if w.source[0] == "concat"} >= {
        "blk.0.attn_qkv.weight", "blk.0.attn_qkv.bias", "blk.0.ffn_gate_up.weight"}
    # (runs of one row through the K-quant encoders: test_every_format_encodes_rows_...)
    _same_bytes_in_any_runs(ws, monkeypatch, runs=(20_000, 300_000) if isq == "q4k" else (1, 3000))


@pytest.mark.parametrize("isq", [None, "q8_0"])
def test_gguf_weights_in_row_runs(gemma_gguf, monkeypatch, isq):
    """Blocks copied as they are (read from the file, not the map) and blocks requantized."""
    from ingot.compiler.source import open_source
    src = open_source(gemma_gguf)
    ws = _weights(src, isq, cpu_layouts=True)
    if isq is None:  # the file's Q5_0 matrices in groups of eight interleaved rows
        assert any(w.dtype == "q5_0x8" for w in ws if w.name.startswith("blk.0."))
    _same_bytes_in_any_runs([w for w in ws if w.name.startswith("blk.0.")], monkeypatch)
    _same_bytes_in_any_runs([w for w in ws if w.shape[0] < 4096], monkeypatch, runs=(50_000,))
    from ingot.compiler import weights as W
    table = next(w for w in ws if w.name == "token_embd.weight")  # 262k rows
    monkeypatch.setattr(W, "CHUNK_BYTES", 1 << 40)
    whole = b"".join(c.tobytes() for c in W.weight_raw_chunks(table))
    monkeypatch.undo()
    assert b"".join(c.tobytes() for c in W.weight_raw_chunks(table)) == whole


def test_passthrough_reads_leave_no_mapped_pages(gemma_gguf):
    """Copying a GGUF's blocks reads the file a run at a time: the memory map's pages are never
    touched, so they do not pile up in the compiler's resident set."""
    from ingot.compiler import weights as W
    from ingot.compiler.source import open_source
    src = open_source(gemma_gguf)
    table = next(w for w in _weights(src) if w.name == "token_embd.weight")
    ref = table.source[1]
    assert ref.qtype == table.dtype  # copied as stored
    mapped = ref.raw()
    n = 0
    for c in W.weight_raw_chunks(table):
        assert c.nbytes <= max(W.CHUNK_BYTES, ref.fmt.row_bytes(table.shape[-1]))
        assert not np.shares_memory(c, mapped)
        n += c.nbytes
    assert n == W.weight_nbytes(table)


@pytest.mark.parametrize("qtype,isq", [("q4_0", None), ("q8_0", "q4k"), ("f16", "q8_0")])
def test_ggml_weights_in_row_runs(tmp_path, monkeypatch, qtype, isq):
    from ggml_writer import LEGACY, encode, write_ggjt
    from ingot.compiler.source import open_source
    rng = np.random.default_rng(2)
    hidden, inter, vocab = 256, 512, 300
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,),
              "lm_head.weight": (vocab, hidden)}
    for role, shape in (("self_attn.q_proj", (hidden, hidden)), ("self_attn.k_proj", (128, hidden)),
                        ("self_attn.v_proj", (128, hidden)), ("self_attn.o_proj", (hidden, hidden)),
                        ("mlp.gate_proj", (inter, hidden)), ("mlp.up_proj", (inter, hidden)),
                        ("mlp.down_proj", (hidden, inter))):
        shapes[f"model.layers.{{i}}.{role}.weight"] = shape
    shapes["model.layers.{i}.input_layernorm.weight"] = (hidden,)
    shapes["model.layers.{i}.post_attention_layernorm.weight"] = (hidden,)
    tensors = []
    for name, shape in shapes.items():
        x = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        t = qtype if len(shape) == 2 else "f32"
        tensors.append((LEGACY[name].format(i=0), list(shape), t, encode(x, t)))
    path = tmp_path / "m.bin"
    hp = dict(n_vocab=vocab, n_embd=hidden, n_mult=256, n_head=4, n_layer=1, n_rot=64,
              ftype={"f16": 1, "q4_0": 2, "q8_0": 7}[qtype])
    write_ggjt(path, hp, [(b"<unk>", 0.0), (b"<s>", 0.0), (b"</s>", 0.0)] +
               [(bytes([i % 256]) if i < 259 else f"t{i}".encode(), 0.0) for i in range(3, vocab)],
               tensors)
    src = open_source(path, fmt="ggml", file=path)
    _same_bytes_in_any_runs(_weights(src, isq), monkeypatch,
                            runs=(20_000,) if isq == "q4k" else (1, 3000))


def test_artefact_tensor_rows_come_from_the_file(tmp_path):
    """--from-uqff: rows of a stored weight read from the file equal those of the map."""
    from ingot.compiler.source_artefact import ArtefactTensor
    from ingot.runtime.artefact import Artefact, ArtefactWriter
    data = np.random.default_rng(3).integers(0, 256, 4096 + 12 * 144, dtype=np.uint8)
    with ArtefactWriter(tmp_path / "a.ingot") as aw:
        aw.add("plan", b"{}")
        aw.add("weights", data.tobytes(), align=4096)
    art = Artefact(tmp_path / "a.ingot")
    base = next(s["offset"] for s in art.section_info() if s["name"] == "weights")
    entry = {"dtype": "q4_k", "shape": [12, 256], "offset": 4096}
    t = ArtefactTensor(art.section("weights"), entry, "w", 2, 10, tmp_path / "a.ingot", base)
    assert t.shape == (10, 256)
    for r0, r1 in ((0, 10), (3, 4), (7, 10)):
        assert t.raw_rows(r0, r1).tobytes() == t.raw()[r0 * 144:r1 * 144].tobytes()
        np.testing.assert_array_equal(t.read_rows(r0, r1), t.read_f32()[r0:r1])


def test_interleaved_rows_come_from_the_file_in_any_run(tmp_path):
    """--from-uqff on rows stored eight interleaved (quant/interleave.py): any run of rows,
    aligned to the groups or not, reads back as the base type's bytes of those rows; a
    tensor part that does not start on a group is refused by name."""
    from ingot.compiler.source_artefact import ArtefactTensor
    from ingot.errors import IngotError
    from ingot.quant.interleave import INTERLEAVED, pack
    from ingot.runtime.artefact import Artefact, ArtefactWriter
    rng = np.random.default_rng(5)
    raw = rng.integers(0, 256, (24, 3 * 22), dtype=np.uint8)  # 24 rows of q5_0, K = 96
    with ArtefactWriter(tmp_path / "a.ingot") as aw:
        aw.add("plan", b"{}")
        aw.add("weights", pack(INTERLEAVED["q5_0x8"], raw).tobytes(), align=4096)
    art = Artefact(tmp_path / "a.ingot")
    base = next(s["offset"] for s in art.section_info() if s["name"] == "weights")
    entry = {"dtype": "q5_0x8", "shape": [24, 96], "offset": 0}
    for path in (None, tmp_path / "a.ingot"):  # from the map, and read from the file
        t = ArtefactTensor(art.section("weights"), entry, "w", 8, 16, path,
                           None if path is None else base)
        assert t.qtype == "q5_0" and t.raw().tobytes() == raw[8:24].tobytes()
        for r0, r1 in ((0, 16), (3, 5), (7, 9), (5, 16), (8, 16)):
            assert t.raw_rows(r0, r1).tobytes() == raw[8 + r0:8 + r1].tobytes(), (r0, r1)
    with pytest.raises(IngotError, match="^artefact: tensor w is stored in q5_0x8 groups of 8"):
        ArtefactTensor(art.section("weights"), entry, "w", 4, 8)
