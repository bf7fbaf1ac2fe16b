"""Qwen 2: Llama's layout with biases on q/k/v (not on o) and optional sliding layers."""
from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec, layer_windows
from .gguf_meta import gguf_decoder_spec
from .registry import Family, register


def _spec(cfg):
    s = decoder_spec(cfg, "qwen2", windows=layer_windows(cfg, int(cfg.get("num_hidden_layers", 0))))
    s.qkv_bias, s.o_bias = True, False
    return s


FAMILY = register(Family(name="qwen2", model_types=("qwen2",), spec=_spec,
                         tensors=LLAMA_TENSORS, build=pre_norm_decoder,
                         gguf_archs=("qwen2",), chat_template="chatml",
                         gguf_spec=lambda meta, names: gguf_decoder_spec(meta, "qwen2", names,
                                                                         neox=True)))
