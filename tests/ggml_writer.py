"""Writing legacy GGML (ggjt) Llama files for the tests, the way llama.cpp's last GGML converter
laid them out: original-checkpoint tensor names, Q/K rows permuted for interleaved RoPE,
SentencePiece pieces with '▁' as spaces and bytes as raw bytes.
"""
from __future__ import annotations

import struct

import numpy as np

GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}
# transformers' LlamaForCausalLM names -> the original checkpoint's ({i} = layer).
LEGACY = {
    "model.embed_tokens.weight": "tok_embeddings.weight",
    "model.norm.weight": "norm.weight",
    "lm_head.weight": "output.weight",
    "model.layers.{i}.self_attn.q_proj.weight": "layers.{i}.attention.wq.weight",
    "model.layers.{i}.self_attn.k_proj.weight": "layers.{i}.attention.wk.weight",
    "model.layers.{i}.self_attn.v_proj.weight": "layers.{i}.attention.wv.weight",
    "model.layers.{i}.self_attn.o_proj.weight": "layers.{i}.attention.wo.weight",
    "model.layers.{i}.input_layernorm.weight": "layers.{i}.attention_norm.weight",
    "model.layers.{i}.post_attention_layernorm.weight": "layers.{i}.ffn_norm.weight",
    "model.layers.{i}.mlp.gate_proj.weight": "layers.{i}.feed_forward.w1.weight",
    "model.layers.{i}.mlp.down_proj.weight": "layers.{i}.feed_forward.w2.weight",
    "model.layers.{i}.mlp.up_proj.weight": "layers.{i}.feed_forward.w3.weight",
}


def legacy_name(hf_name: str) -> str:
    parts = hf_name.split(".")
    if parts[:2] == ["model", "layers"]:
        key = ".".join(parts[:2] + ["{i}"] + parts[3:])
        return LEGACY[key].format(i=parts[2])
    return LEGACY[hf_name]


def interleave_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    """HF's rotate-half rows -> interleaved pairs: in each head, rows (2j, 2j+1) are HF's
    (j, j + d/2)."""
    d = w.shape[0] // n_heads
    order = np.arange(d).reshape(2, d // 2).T.reshape(-1)
    idx = (np.arange(n_heads)[:, None] * d + order[None, :]).reshape(-1)
    return w[idx]


def deinterleave_rows(w: np.ndarray, n_heads: int) -> np.ndarray:
    d = w.shape[0] // n_heads
    order = np.arange(d).reshape(2, d // 2).T.reshape(-1)
    idx = (np.arange(n_heads)[:, None] * d + order[None, :]).reshape(-1)
    out = np.empty_like(w)
    out[idx] = w
    return out


def sentencepiece_vocab(sp) -> list:
    """(bytes, score) per id as the GGML converter wrote a SentencePiece vocabulary."""
    out = []
    for i in range(sp.get_piece_size()):
        piece = sp.id_to_piece(i)
        if sp.is_unknown(i):
            text = " \u2047 ".encode()
        elif sp.is_control(i):
            text = b""
        elif sp.is_byte(i):
            text = bytes([int(piece[3:-1], 16)])
        else:
            text = piece.replace("\u2581", " ").encode()
        out.append((text, sp.get_score(i)))
    return out


def encode(x: np.ndarray, qtype: str) -> bytes:
    """[rows, K] float32 -> stored bytes (gguf's quantizers for block types)."""
    x = np.ascontiguousarray(x, np.float32)
    if qtype == "f32":
        return x.tobytes()
    if qtype == "f16":
        return x.astype("<f2").tobytes()
    import gguf
    return gguf.quants.quantize(x, gguf.GGMLQuantizationType[qtype.upper()]).tobytes()


def decode(raw: bytes, shape, qtype: str) -> np.ndarray:
    if qtype in ("f32", "f16"):
        return np.frombuffer(raw, "<f4" if qtype == "f32" else "<f2").astype(np.float32) \
            .reshape(shape)
    import gguf
    data = np.frombuffer(raw, np.uint8).reshape(shape[0], -1)
    return gguf.quants.dequantize(data, gguf.GGMLQuantizationType[qtype.upper()]) \
        .astype(np.float32).reshape(shape)


def write_ggjt(path, hparams: dict, vocab: list, tensors: list, *, magic=b"tjgg",
               version=3) -> None:
    """`hparams`: n_vocab, n_embd, n_mult, n_head, n_layer, n_rot, ftype; `vocab`: (bytes,
    score) per id; `tensors`: (name, [rows, K] shape, type name, raw bytes)."""
    keys = ("n_vocab", "n_embd", "n_mult", "n_head", "n_layer", "n_rot", "ftype")
    with open(path, "wb") as f:
        f.write(magic + struct.pack("<I", version))
        f.write(struct.pack("<7i", *(hparams[k] for k in keys)))
        for text, score in vocab:
            f.write(struct.pack("<I", len(text)) + text + struct.pack("<f", score))
        for name, shape, qtype, raw in tensors:
            dims = list(reversed(shape))  # innermost first
            nb = name.encode()
            f.write(struct.pack(f"<3i{len(dims)}i", len(dims), len(nb), GGML_TYPES[qtype], *dims))
            f.write(nb)
            f.write(b"\0" * (-f.tell() % 32))
            f.write(raw)


def model_to_ggjt(model, sp, path, qtype: str = "f32") -> dict:
    """Write `model` (a transformers LlamaForCausalLM) as a ggjt v3 file with 2-D weights in
    `qtype`; returns the HF state dict of the values the file holds (dequantized), for a
    reference."""
    import torch
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    tensors, stored = [], {}
    for name, p in model.state_dict().items():
        w = p.detach().float().numpy()
        t = qtype if w.ndim == 2 else "f32"
        perm = heads if "q_proj" in name else kv if "k_proj" in name else None
        if perm:
            w = interleave_rows(w, perm)
        raw = encode(w, t)
        back = decode(raw, w.shape, t)
        stored[name] = torch.from_numpy(deinterleave_rows(back, perm) if perm else back)
        tensors.append((legacy_name(name), list(w.shape), t, raw))
    hp = dict(n_vocab=cfg.vocab_size, n_embd=cfg.hidden_size, n_mult=256, n_head=heads,
              n_layer=cfg.num_hidden_layers, n_rot=cfg.hidden_size // heads,
              ftype={"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7}[qtype])
    write_ggjt(path, hp, sentencepiece_vocab(sp), tensors)
    return stored
