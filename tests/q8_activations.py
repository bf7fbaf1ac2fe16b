"""Make a transformers model quantize the inputs of its block-quantized matrices to 8 bits as
Ingot's integer-dot kernels (and llama.cpp's) do: blocks of 32 along the input dimension,
dx = amax / 127, codes rint(x / dx), in float32. With the weights also holding what the artefact
stores, the reference then does the artefact's arithmetic up to summation order."""
from __future__ import annotations

from ingot.compiler.pipeline import FLOAT_TYPES  # noqa: F401  (types multiplied as floats)

# Against a reference doing the artefact's arithmetic (its weights and 8-bit activations),
# what is left is f32 summation order and the activation codes it tips over a rounding edge:
# one tipped code moves the tiny random models' logits by up to ~1e-2 (measured by changing
# only the reference's tie rule), hence 3e-2 of the logit scale.
EXACT_Q8_BOUND = 3e-2


def quantize_like_kernel(x):
    """(dequantized codes, dx per 32-block) of float32 rows (numpy), as the kernels' 8-bit
    activation quantizer (the CPU's q8_kernels.quantize_row, CUDA's ingot_quantize_q8)."""
    import numpy as np
    n, k = x.shape
    b = x.reshape(n, k // 32, 32).astype(np.float32)
    amax = np.abs(b).max(axis=2, keepdims=True)
    with np.errstate(divide="ignore"):
        inv = np.where(amax > 0, np.float32(127) / amax, np.float32(0)).astype(np.float32)
    q = np.rint(b * inv)
    d = (amax / np.float32(127)).astype(np.float32)
    return (q.astype(np.float64) * d).reshape(n, k), d.reshape(n, k // 32).astype(np.float64)


def quantize_blocks(x):
    import torch
    shape = x.shape
    b = x.float().reshape(*shape[:-1], shape[-1] // 32, 32)
    amax = b.abs().amax(dim=-1, keepdim=True)
    inv = torch.where(amax > 0, torch.tensor(127.0) / amax, torch.zeros_like(amax))
    q = torch.round(b * inv)  # half to even, as the kernels' rint
    return (q * (amax / torch.tensor(127.0))).reshape(shape).to(x.dtype)


def quantize_linear_inputs(model, is_quantized) -> list:
    """Hook every nn.Linear whose (module name) `is_quantized`; returns the hook handles."""
    import torch
    handles = []
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and is_quantized(name):
            handles.append(mod.register_forward_pre_hook(
                lambda m, args: (quantize_blocks(args[0]),) + tuple(args[1:])))
    return handles
