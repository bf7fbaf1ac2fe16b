"""Qwen 3: Llama's layout with per-head RMSNorm on q and k before RoPE (qk-norm)."""
from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec, layer_windows
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register


def _spec(cfg):
    s = decoder_spec(cfg, "qwen3", windows=layer_windows(cfg, int(cfg.get("num_hidden_layers", 0))))
    s.qk_norm = True
    return s


FAMILY = register(Family(name="qwen3", model_types=("qwen3",), spec=_spec,
                         tensors=LLAMA_TENSORS, build=pre_norm_decoder,
                         gguf_archs=("qwen3",), chat_template="chatml",
                         gguf_spec=lambda meta, names: gguf_decoder_spec(meta, "qwen3", names,
                                                                         neox=True)))
