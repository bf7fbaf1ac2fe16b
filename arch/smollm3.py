"""SmolLM 3: Llama's layout where some layers use no RoPE at all (`no_rope_layers`: 1 = rotate,
0 = not; by default every 4th layer is position-free), optional sliding layers."""
from __future__ import annotations

from .blocks import pre_norm_decoder
from .common import LLAMA_TENSORS, decoder_spec
from .registry import Family, register


def _spec(cfg: dict):
    n = int(cfg.get("num_hidden_layers", 0))
    uses = cfg.get("no_rope_layers")
    if uses is None:
        every = int(cfg.get("no_rope_layer_interval", 4))
        uses = [int((i + 1) % every != 0) for i in range(n)]
    window = cfg.get("sliding_window") or 0
    types = cfg.get("layer_types") or ["full_attention"] * n
    windows = [window if cfg.get("use_sliding_window") and t == "sliding_attention" else 0
               for t in types]
    s = decoder_spec(cfg, "smollm3", windows=windows)
    for layer, rotate in zip(s.layers, uses):
        layer.rope = "global" if rotate else ""
    return s


FAMILY = register(Family(name="smollm3", model_types=("smollm3",), spec=_spec,
                         tensors=LLAMA_TENSORS, build=pre_norm_decoder, chat_template="chatml"))
