"""The tiny random Qwen 3 of the README's benchmark rows, written as a Q4_0 GGUF by Ingot.

    python tools/make_tiny_qwen3.py /tmp/qwen3-tiny        # -> /tmp/qwen3-tiny/qwen3-q4_0.gguf
    ingot bench /tmp/qwen3-tiny/qwen3-q4_0.gguf --threads 1,2

Hidden 512, 8 layers, 8 query / 4 key-value heads of 64, MLP 1536, a 32000-row vocabulary
(random weights, seed 0; the test suite's BPE tokenizer, padded to the rows by convert). The
matrices are Q4_0, the embedding Q8_0 and the head Q6_K (Ingot's ISQ policy), so the run shows
a model that is neither Gemma nor quantized by llama.cpp.
"""
from __future__ import annotations

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests"))

SHAPE = dict(vocab_size=32000, hidden_size=512, intermediate_size=1536, num_hidden_layers=8,
             num_attention_heads=8, num_key_value_heads=4, head_dim=64,
             tie_word_embeddings=False, max_position_embeddings=4096)


def main(argv) -> int:
    from tiny_models import build_model, save_model

    from ingot.compiler.gguf_convert import convert
    out = pathlib.Path(argv[0] if argv else "qwen3-tiny")
    folder = save_model(build_model("qwen3", **SHAPE), out / "hf")
    path = convert(folder, out / "qwen3-q4_0.gguf", isq="Q4_0")
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
