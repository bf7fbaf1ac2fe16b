"""Tiny random Hugging Face models, built by the tests (nothing is downloaded).

Each config exercises odd sizes and the family's options; `save_model` writes a folder with
config.json, safetensors and a small trained tokenizer with a chat template.
"""
from __future__ import annotations

import json
import pathlib

# name -> (transformers config class name, kwargs). Sizes are deliberately not multiples of 32.
CONFIGS = {
    # GQA ratio 2, untied, head_dim given explicitly.
    "llama": ("LlamaConfig", dict(vocab_size=300, hidden_size=40, intermediate_size=72,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, head_dim=10, tie_word_embeddings=False,
                                  max_position_embeddings=256)),
    # GQA ratio 4, tied embeddings, llama3 RoPE scaling.
    "llama_tied_llama3rope": ("LlamaConfig", dict(
        vocab_size=300, hidden_size=48, intermediate_size=100, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0,
                         "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 32})),
    # yarn scaling with attention biases and an MLP bias.
    "llama_yarn_bias": ("LlamaConfig", dict(
        vocab_size=300, hidden_size=36, intermediate_size=60, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=3, attention_bias=True, mlp_bias=True,
        max_position_embeddings=256,
        rope_parameters={"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0,
                         "original_max_position_embeddings": 64})),
    # GQA ratio 1, sliding window shorter than the test prompts.
    "mistral": ("MistralConfig", dict(vocab_size=300, hidden_size=36, intermediate_size=60,
                                      num_hidden_layers=2, num_attention_heads=3,
                                      num_key_value_heads=3, head_dim=12, sliding_window=7,
                                      tie_word_embeddings=False, max_position_embeddings=256)),
    # q/k/v biases, tied, GQA ratio 2.
    "qwen2": ("Qwen2Config", dict(vocab_size=300, hidden_size=56, intermediate_size=88,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=2, tie_word_embeddings=True,
                                  max_position_embeddings=256)),
    # qk-norm, head_dim larger than hidden/heads, GQA ratio 4, untied.
    "qwen3": ("Qwen3Config", dict(vocab_size=300, hidden_size=40, intermediate_size=64,
                                  num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=16, tie_word_embeddings=False,
                                  max_position_embeddings=256)),
    # Gemma 3: (1 + w) norms, sandwich norms, qk-norm, GELU-tanh, 5 local : 1 global layers
    # with their own RoPE bases, query_pre_attn_scalar != head_dim, tied, soft-capping on.
    "gemma3": ("Gemma3TextConfig", dict(
        vocab_size=300, hidden_size=40, intermediate_size=72, num_hidden_layers=7,
        num_attention_heads=4, num_key_value_heads=1, head_dim=16, sliding_window=6,
        query_pre_attn_scalar=20, final_logit_softcapping=30.0, attn_logit_softcapping=50.0,
        max_position_embeddings=256,
        rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0,
                                            "rope_theta": 1e6},
                         "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}})),
    # Gemma: (1 + w) norms, sqrt(hidden) embedding scale, GELU-tanh, tied, MQA, head_dim given
    # and unlike hidden / heads.
    "gemma": ("GemmaConfig", dict(vocab_size=300, hidden_size=44, intermediate_size=76,
                                  num_hidden_layers=2, num_attention_heads=4,
                                  num_key_value_heads=1, head_dim=14,
                                  max_position_embeddings=256)),
    # Gemma 2: sandwich norms, soft-capping low enough to bite, window 5 on layers 0 and 2,
    # query_pre_attn_scalar != head_dim, GQA ratio 3.
    "gemma2": ("Gemma2Config", dict(
        vocab_size=300, hidden_size=36, intermediate_size=68, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, head_dim=10, sliding_window=5,
        query_pre_attn_scalar=18, attn_logit_softcapping=8.0, final_logit_softcapping=6.0,
        max_position_embeddings=256)),
    # Phi 2: parallel attention/MLP from one LayerNorm, biases everywhere, partial rotary
    # (half of head_dim 12), GQA ratio 2, untied output head with a bias.
    "phi2": ("PhiConfig", dict(vocab_size=300, hidden_size=48, intermediate_size=76,
                               num_hidden_layers=2, num_attention_heads=4,
                               num_key_value_heads=2, partial_rotary_factor=0.5,
                               max_position_embeddings=256)),
    # Phi 3: fused qkv and gate_up, long-RoPE factors (short ones in use below 128 tokens),
    # sliding window 7, MQA.
    "phi3": ("Phi3Config", dict(
        vocab_size=300, hidden_size=36, intermediate_size=60, num_hidden_layers=2,
        num_attention_heads=3, num_key_value_heads=1, sliding_window=7,
        tie_word_embeddings=False, max_position_embeddings=256,
        original_max_position_embeddings=128,
        rope_parameters={"rope_type": "longrope", "rope_theta": 10000.0,
                         "short_factor": [1.0, 1.1, 1.3, 1.6, 2.0, 2.5],
                         "long_factor": [1.0, 1.5, 2.5, 4.0, 6.0, 8.0],
                         "original_max_position_embeddings": 128})),
    # Starcoder 2: LayerNorm with bias, biases on every projection, GELU MLP, window 6, tied.
    "starcoder2": ("Starcoder2Config", dict(vocab_size=300, hidden_size=40,
                                            intermediate_size=76, num_hidden_layers=2,
                                            num_attention_heads=4, num_key_value_heads=2,
                                            sliding_window=6, use_bias=True,
                                            max_position_embeddings=256)),
    # GLM 4: sandwich norms, fused gate_up, q/k/v biases, interleaved partial rotary.
    "glm4": ("Glm4Config", dict(vocab_size=300, hidden_size=40, intermediate_size=72,
                                num_hidden_layers=2, num_attention_heads=4,
                                num_key_value_heads=2, head_dim=12, attention_bias=True,
                                tie_word_embeddings=False, max_position_embeddings=256)),
    # SmolLM 3: every 2nd layer without RoPE, tied, MQA.
    "smollm3": ("SmolLM3Config", dict(vocab_size=300, hidden_size=36, intermediate_size=60,
                                      num_hidden_layers=4, num_attention_heads=3,
                                      num_key_value_heads=1, no_rope_layer_interval=2,
                                      tie_word_embeddings=True, max_position_embeddings=256)),
    # Granite: embedding, attention, residual and logit multipliers all away from 1.
    "granite": ("GraniteConfig", dict(vocab_size=300, hidden_size=40, intermediate_size=68,
                                      num_hidden_layers=2, num_attention_heads=4,
                                      num_key_value_heads=2, embedding_multiplier=3.0,
                                      attention_multiplier=0.2, residual_multiplier=0.5,
                                      logits_scaling=4.0, tie_word_embeddings=False,
                                      max_position_embeddings=256)),
}

CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")

_CORPUS = ("The quick brown fox jumps over the lazy dog. Ingot compiles language models "
           "ahead of time for small hosts: laptops, Jetson boards and appliances. "
           "héllo wörld, 日本語のテキスト, emoji 🙂 and numbers 12345 67890. ") * 20


def make_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "</s>", "<|im_start|>", "<|im_end|>"]
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator([_CORPUS], trainer)
    return tok


def build_model(name: str, seed: int = 0, **overrides):
    import torch
    import transformers
    cls_name, kw = CONFIGS[name]
    kw = dict(kw, **overrides)
    cfg = getattr(transformers, cls_name)(**{"pad_token_id": 2, **kw}, bos_token_id=0,
                                         eos_token_id=1)
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(cfg).eval()
    # Larger than the default 0.02 init so that logits differ visibly between tokens.
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim >= 2:
                p.normal_(0.0, 0.2)
            else:
                p.add_(torch.randn_like(p) * 0.1)
    return model.float()


def save_model(model, folder: pathlib.Path, *, tokenizer=True) -> pathlib.Path:
    folder = pathlib.Path(folder)
    model.save_pretrained(folder)
    if tokenizer:
        tok = make_tokenizer(model.config.vocab_size)
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({
            "bos_token": "<s>", "eos_token": "</s>", "add_bos_token": True,
            "chat_template": CHATML}))
    return folder
