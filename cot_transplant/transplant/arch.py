"""The one table mapping model families to the modules a transplant hooks, and site lookup.

Every family listed keeps its decoder layers at `model.layers` of the `*ForCausalLM`
model and its key/value projections at `self_attn.k_proj` / `self_attn.v_proj`.
The k/v site is the projection *output*: before rotary embedding everywhere, and
for Qwen3, OLMo2 and Gemma3, which normalize keys (`self_attn.k_norm`) after
`k_proj`, also before that norm, so the target applies its own `k_norm` to the
transplanted keys. Grouped-query attention needs no entry: the k/v width is read
from the tensors (num_key_value_heads * head_dim).

Two capability columns say which families the code beyond the hooks reproduces: `fast_path`
(`train/steps/fast/` runs the decoder layer by layer and rotates keys itself: RoPE on the
k_proj outputs, no k_norm) and `residual_dtype` (`residual64.py`'s hooks: an input and a
post-attention norm per layer and a final `norm`, residual adds between them).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

from torch import nn

from cot_transplant.transplant.spec import TransplantSpec


@dataclass(frozen=True)
class Architecture:
    """Module paths of one family: the decoder-layer list, and k/v projections inside one layer."""

    layers: str = "model.layers"
    k_proj: str = "self_attn.k_proj"
    v_proj: str = "self_attn.v_proj"
    note: str = ""
    fast_path: bool = False  # the fast path's layer-by-layer passes reproduce this family's forward
    residual_dtype: bool = False  # model.residual_dtype's hooks fit this family's layers


_PRE_NORM = "keys are normalized by self_attn.k_norm after k_proj; the k site is before k_norm"
ARCHITECTURES: Mapping[str, Architecture] = MappingProxyType({
    "llama": Architecture(fast_path=True, residual_dtype=True),
    "mistral": Architecture(fast_path=True, residual_dtype=True),
    "qwen2": Architecture(fast_path=True, residual_dtype=True),
    "qwen3": Architecture(note=_PRE_NORM),
    "olmo2": Architecture(note=_PRE_NORM),
    "gemma": Architecture(),
    "gemma2": Architecture(),
    "gemma3_text": Architecture(note=_PRE_NORM),
})


def families(capability: str) -> tuple[str, ...]:
    """The model types whose table entry has `capability` ("fast_path" or "residual_dtype"), in table order."""
    return tuple(kind for kind, arch in ARCHITECTURES.items() if getattr(arch, capability))


def supports(model: nn.Module, capability: str) -> bool:
    """Whether `model`'s family (plain or peft-wrapped) is in the table with `capability`."""
    arch = ARCHITECTURES.get(model_type(model))
    return arch is not None and getattr(arch, capability)


def unwrap(model: nn.Module) -> nn.Module:
    """The transformers model under a peft wrapper (`model` itself when it is plain)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_body(model: nn.Module) -> nn.Module:
    """The decoder body of a plain or peft-wrapped causal LM (`embed_tokens`, `rotary_emb`, `layers`, `norm`):
    its `.model`, without the LM head."""
    base = unwrap(model)
    return getattr(base, "model", base)


@dataclass(frozen=True)
class Site:
    """One hooked module: `key` ("k", "v" or "residual") of decoder layer `layer`."""

    key: str
    layer: int
    module: nn.Module


def model_type(model: nn.Module) -> str | None:
    """`config.model_type` of a transformers model, also through a peft wrapper."""
    config = getattr(model, "config", None)
    if config is None:
        config = getattr(unwrap(model), "config", None)
    return getattr(config, "model_type", None)


def decoder_layers(model: nn.Module) -> tuple[Architecture, nn.ModuleList]:
    """The family's table entry and its decoder layers, found by walking named modules.

    Walking (rather than fixed attribute access) finds `model.layers` under any wrapper
    prefix, e.g. peft's `base_model.model.model.layers`.

    Raises:
        ValueError: the family is not in the table, or its modules are missing; the message
            names the modules looked for.
    """
    kind = model_type(model)
    arch = ARCHITECTURES.get(kind) if kind else None
    looked_for = f"'<prefix>.{Architecture().layers}.<i>.{{{Architecture().k_proj}, {Architecture().v_proj}}}'"
    if arch is None:
        raise ValueError(f"transplant: model type {kind!r} is not in the architecture table "
                         f"(supported: {sorted(ARCHITECTURES)}); for those it looks for {looked_for}")
    path = _LAYER_PATHS.get(model)
    if path is not None:  # the walk takes milliseconds and a step asks many times: check the path found before
        try:
            layers = model.get_submodule(path)
        except AttributeError:
            layers = None
        if isinstance(layers, nn.ModuleList):
            return arch, layers
    found = [(name, m) for name, m in model.named_modules()
             if (name == arch.layers or name.endswith("." + arch.layers)) and isinstance(m, nn.ModuleList)]
    if len(found) != 1:
        raise ValueError(f"transplant: model type {kind!r}: expected one decoder-layer list named "
                         f"'<prefix>.{arch.layers}', found {len(found)}")
    _LAYER_PATHS[model] = found[0][0]
    return arch, found[0][1]


_LAYER_PATHS: "weakref.WeakKeyDictionary[nn.Module, str]" = weakref.WeakKeyDictionary()  # model -> layers' path


def resolve_sites(model: nn.Module, spec: TransplantSpec) -> list[Site]:
    """The modules to hook for `spec`, one per (key, layer), ordered by layer then key.

    On a peft model the k/v modules are peft's wrappers (whose output includes the
    LoRA delta), never their `base_layer`.

    Raises:
        ValueError: unsupported family, missing module, or a layer index out of range.
    """
    arch, layers = decoder_layers(model)
    indices = range(len(layers)) if spec.layers is None else spec.layers
    out_of_range = [i for i in indices if i >= len(layers)]
    if out_of_range:
        raise ValueError(f"transplant: layers {out_of_range} out of range; the model has {len(layers)} layers")
    paths = {"k": arch.k_proj, "v": arch.v_proj}
    sites = []
    for i in indices:
        for key in spec.keys:
            if key == "residual":
                sites.append(Site(key, i, layers[i]))
                continue
            try:
                module = layers[i].get_submodule(paths[key])
            except AttributeError:
                raise ValueError(f"transplant: layer {i} has no module '{paths[key]}' "
                                 f"(looked for {arch.layers}.{i}.{paths[key]})") from None
            sites.append(Site(key, i, module))
    return sites
