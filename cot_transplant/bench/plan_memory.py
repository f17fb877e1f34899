"""Parameters and bytes of a planned run's weights: the base by dtype or quantization, the adapters, their
gradients and AdamW's states. Counts come from the model's own (meta) tensors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DTYPE_BYTES = {"fp32": 4, "float32": 4, "bf16": 2, "bfloat16": 2, "fp16": 2, "float16": 2, "fp64": 8, "float64": 8}
SCHEMES = ("fp32", "bf16", "fp16", "8-bit", "4-bit")  # how a base's weights can be stored


@dataclass(frozen=True)
class BaseShape:
    """A base model's parameters as quantization sees them (counts, not bytes)."""

    params: int  # every parameter, a tied one once
    linear: int  # weights of the nn.Linear layers bitsandbytes quantizes (every one but the LM head)
    linear_rows: int  # their output features, summed: 8-bit keeps one fp32 scale per row
    linear_blocks: int  # their 64-weight blocks: 4-bit keeps one fp32 absmax per block


def base_shape(base) -> BaseShape:
    """`BaseShape` of a transformers causal LM (before adapters are attached)."""
    head = base.get_output_embeddings()
    linears = [m for m in base.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    return BaseShape(params=sum(p.numel() for p in base.parameters()),
                     linear=sum(m.weight.numel() for m in linears),
                     linear_rows=sum(m.out_features for m in linears),
                     linear_blocks=sum(math.ceil(m.weight.numel() / 64) for m in linears))


def base_bytes(shape: BaseShape, scheme: str, rest_bytes: int) -> int:
    """Bytes of the base's weights under `scheme` (a dtype in `SCHEMES`, or 8-bit / 4-bit).

    8-bit (bitsandbytes LLM.int8): 1 byte per linear weight and a 4-byte scale per output row; 4-bit (nf4 or
    fp4, no double quantization): half a byte per weight and a 4-byte absmax per 64 weights. What is not
    quantized (embeddings, norms, the LM head) takes `rest_bytes` per parameter (the model's dtype).
    """
    rest = shape.params - shape.linear
    if scheme == "8-bit":
        return shape.linear + 4 * shape.linear_rows + rest * rest_bytes
    if scheme == "4-bit":
        return shape.linear // 2 + 4 * shape.linear_blocks + rest * rest_bytes
    return shape.params * DTYPE_BYTES[scheme]


def config_scheme(cfg) -> str:
    """The base's storage under `cfg`: 8-bit, 4-bit or the dtype."""
    return "8-bit" if cfg.model.load_in_8bit else "4-bit" if cfg.model.load_in_4bit else cfg.model.dtype


def adapter_figures(model, variant: str) -> dict:
    """Parameters and bytes of each adapter, and of the trainable ones' gradients and AdamW's two states."""
    from cot_transplant.train.adapters import adapter_params, role_adapters, role_model, trainable

    adapters, trainable_bytes, trainable_params = {}, 0, 0
    for name in dict.fromkeys(role_adapters(variant)):
        params = [p for _, p in adapter_params(role_model(model, name), name)]
        size = sum(p.numel() * p.element_size() for p in params)
        adapters[name] = {"params": sum(p.numel() for p in params), "bytes": size,
                          "dtype": str(params[0].dtype).replace("torch.", "") if params else None}
        if name in trainable(variant):
            trainable_params += adapters[name]["params"]
            trainable_bytes += size
    # AdamW keeps exp_avg and exp_avg_sq, each like its parameter (fp32 for peft's adapters).
    return {"adapters": adapters, "trainable_params": trainable_params, "grad_bytes": trainable_bytes,
            "adamw_bytes": 2 * trainable_bytes}
