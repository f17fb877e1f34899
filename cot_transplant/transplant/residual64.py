"""A float64 residual stream (the original study's setting) by forward pre-hooks, no forked model file.

In Llama, Mistral and Qwen2 decoder layers the residual stream is the `hidden_states`
passed from layer to layer; each layer adds its attention and MLP outputs to it
(`residual + hidden_states`). Three kinds of pre-hooks keep it in float64:

- every decoder layer casts its incoming `hidden_states` to float64 (only the first
  layer's input changes: the adds then promote to float64 on their own);
- every `input_layernorm` / `post_attention_layernorm` and the final `norm` casts its
  input down to the compute dtype, so the sublayers and the LM head run as before.

The embedding output is not touched: the rotary embedding takes its dtype from it.
RMSNorm computes in float32 internally whatever its input dtype (even in a float64
model), so with fp32 compute only the residual adds change precision.
"""

from __future__ import annotations

import torch
from torch import nn

from cot_transplant.transplant.arch import decoder_layers, families, model_type, supports

LAYER_NORMS = ("input_layernorm", "post_attention_layernorm")


class ResidualDtype:
    """Hooks that keep `model`'s residual stream in `dtype`; a context manager, or `install()`/`remove()`.

    Args:
        model: a Llama, Mistral or Qwen2 causal LM, plain or peft-wrapped.
        dtype: the residual stream's dtype (float64 for the original's setting).
        compute_dtype: what norms feed the sublayers; default the input embedding's dtype.
    Raises:
        ValueError: another family, or a layer without the expected norms.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float64, compute_dtype: torch.dtype | None = None):
        if not supports(model, "residual_dtype"):
            raise ValueError(f"a {dtype} residual stream is supported for {', '.join(families('residual_dtype'))}; "
                             f"this model is {model_type(model)!r}")
        _, layers = decoder_layers(model)
        body = next((m for m in model.modules() if getattr(m, "layers", None) is layers), None)
        norm = getattr(body, "norm", None)
        missing = [f"layers.{i}.{n}" for i, layer in enumerate(layers) for n in LAYER_NORMS
                   if not isinstance(getattr(layer, n, None), nn.Module)]
        if not isinstance(norm, nn.Module) or missing:
            raise ValueError(f"residual dtype: expected {LAYER_NORMS} in every decoder layer and a final `norm`; "
                             f"missing {missing or ['norm']}")
        self.dtype = dtype
        self.compute_dtype = compute_dtype or model.get_input_embeddings().weight.dtype
        self._layers = list(layers)
        self._norms = [getattr(layer, n) for layer in layers for n in LAYER_NORMS] + [norm]
        self._handles: list = []

    def install(self) -> "ResidualDtype":
        """Register the hooks (once); returns self."""
        if self._handles:
            raise RuntimeError("ResidualDtype: already installed")
        try:
            for layer in self._layers:
                self._handles.append(layer.register_forward_pre_hook(self._to_residual, with_kwargs=True))
            for norm in self._norms:
                self._handles.append(norm.register_forward_pre_hook(self._to_compute))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove exactly the hooks this object registered."""
        while self._handles:
            self._handles.pop().remove()

    def __enter__(self) -> "ResidualDtype":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.remove()

    def _to_residual(self, module: nn.Module, args: tuple, kwargs: dict):
        if args:
            return (args[0].to(self.dtype), *args[1:]), kwargs
        return args, {**kwargs, "hidden_states": kwargs["hidden_states"].to(self.dtype)}

    def _to_compute(self, module: nn.Module, args: tuple):
        return (args[0].to(self.compute_dtype), *args[1:])
