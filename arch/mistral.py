"""Mistral: Llama's layout with a sliding attention window on every layer."""
from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .registry import Family, register


def _spec(cfg):
    n = int(cfg.get("num_hidden_layers", 0))
    return decoder_spec(cfg, "mistral", windows=[cfg.get("sliding_window") or 0] * n)


FAMILY = register(Family(name="mistral", model_types=("mistral",), spec=_spec,
                         tensors=LLAMA_TENSORS, build=pre_norm_decoder))
