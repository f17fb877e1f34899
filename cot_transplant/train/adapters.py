"""One frozen base with named LoRA adapters (`arguer`, `chooser`, or one `shared`), or two bases.

Switch between them with `cot_transplant.transplant.active_adapter`, which keeps every
`requires_grad` flag (peft's `set_adapter` alone freezes the other adapter). When the
arguer and the chooser use different base models, a `ModelPair` holds two peft models,
each with its one adapter (still named `arguer` / `chooser`); `role_model` picks the one
that plays a role, so the step code reads the same for both layouts.
"""

from __future__ import annotations

import copy
import json
import weakref
from pathlib import Path

import torch

from cot_transplant.config import LoraConfig
from cot_transplant.errors import UserError
from cot_transplant.transplant.arch import unwrap


def role_adapters(variant: str) -> tuple[str, str]:
    """The names of the arguer's and the chooser's adapters under `variant` (one `shared` adapter plays both)."""
    return ("shared", "shared") if variant == "shared" else ("arguer", "chooser")


class ModelPair(torch.nn.Module):
    """Two peft models, one per role, for different arguer and chooser bases.

    An `nn.Module`, so `named_parameters`, `train`/`eval`, `to` and `state_dict` cover both;
    parameter names start with `arguer_model.` / `chooser_model.`.
    """

    def __init__(self, arguer_model, chooser_model):
        super().__init__()
        self.arguer_model = arguer_model
        self.chooser_model = chooser_model


def role_model(model, name: str):
    """The peft model that holds adapter `name` (`model` itself unless it is a `ModelPair`)."""
    if isinstance(model, ModelPair):
        return model.arguer_model if name == "arguer" else model.chooser_model
    return model


def attach_adapters(base, cfg: LoraConfig, variant: str, seed: int, names: tuple[str, ...] | None = None):
    """Wrap `base` with the variant's adapters (or only `names`); the base is frozen, trainable adapters not."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    pcfg = PeftLoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout,
                          target_modules=list(cfg.target_modules), bias="none", task_type="CAUSAL_LM")
    names = sorted(set(role_adapters(variant) if names is None else names))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = get_peft_model(base, pcfg, adapter_name=names[0])
        for name in names[1:]:
            model.add_adapter(name, pcfg)
    if cfg.init_adapter:
        for name in names:
            load_adapter_weights(model, name, cfg.init_adapter)
    for p_name, param in model.named_parameters():
        param.requires_grad = "lora_" in p_name and any(f".{n}." in p_name for n in trainable(variant))
    return model


def trainable(variant: str) -> tuple[str, ...]:
    if variant == "shared":
        return ("shared",)
    if variant in ("frozen-arguer", "text-only"):
        return ("chooser",)
    return ("arguer", "chooser")  # joint, adversarial and the controls train both


def adapter_params(model, name: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The (name, parameter) pairs of one adapter, in a fixed order."""
    return [(n, p) for n, p in model.named_parameters() if "lora_" in n and f".{name}." in n]


def adapter_state(model, name: str) -> dict[str, torch.Tensor]:
    """Adapter `name`'s weights as peft saves them: CPU copies, never views of the live weights (`.cpu()` alone
    would alias them on a CPU model, so a later load would change a state taken before it)."""
    from peft import get_peft_model_state_dict

    state = get_peft_model_state_dict(role_model(model, name), adapter_name=name)
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def load_adapter_state(model, name: str, state: dict[str, torch.Tensor]) -> None:
    from peft import set_peft_model_state_dict

    result = set_peft_model_state_dict(role_model(model, name), state, adapter_name=name)
    unexpected = getattr(result, "unexpected_keys", [])
    if unexpected:
        raise UserError(f"adapter '{name}': checkpoint holds weights this model lacks ({unexpected[0]}, ...); "
                        "was it written for another model or lora config?")


def load_adapter_weights(model, name: str, path: str) -> None:
    """Load a saved peft adapter directory (adapter_model.safetensors, and adapter_config.json where there)
    into adapter `name`: one saved by peft's save_pretrained, or a run's (a checkpoint's `chooser/`).

    Raises:
        UserError: no weights file, or an adapter_config.json whose rank or alpha differ from this run's (the
            weights would not fit, or would act scaled).
    """
    from safetensors.torch import load_file

    file = Path(path) / "adapter_model.safetensors"
    if not file.is_file():
        raise UserError(f"lora.init_adapter: {file} not found; give a directory saved by peft's save_pretrained "
                        "or a run's (e.g. runs/<name>/chosen/chooser)")
    config = Path(path) / "adapter_config.json"
    if config.is_file():
        saved, ours = json.loads(config.read_text(encoding="utf-8")), role_model(model, name).peft_config[name]
        for key, ours_key in (("r", "r"), ("lora_alpha", "alpha")):
            if key in saved and saved[key] != getattr(ours, key):
                raise UserError(f"lora.init_adapter: {path} has {key}={saved[key]}, this run lora.{ours_key}="
                                f"{getattr(ours, key)}; set lora.{ours_key}={saved[key]}")
    load_adapter_state(model, name, load_file(str(file)))


def base_reference(model, name: str, fallback: str) -> str:
    """The base of adapter `name` as `from_pretrained` takes it: an absolute directory (a local model, the
    bundled model's cache entry) or a hub id; `fallback` (our model name) for a base built in code (tiny-*)."""
    path = unwrap(role_model(model, name)).name_or_path
    if not path:
        return fallback
    return str(Path(path).resolve()) if Path(path).is_dir() else path


def save_peft_config(model, name: str, out: Path, model_name: str, about: dict | None = None) -> None:
    """Adapter `name`'s adapter_config.json in `out`, as peft's save_pretrained writes it but with the base named
    as `base_reference` names it; beside it, cot-transplant.json: `model_name` (the config's name for the base,
    e.g. smollm2) and `about`. With adapter_model.safetensors (`adapter_state`), `PeftModel.from_pretrained(base,
    out)` loads the directory.
    """
    config = copy.deepcopy(role_model(model, name).peft_config[name])
    config.base_model_name_or_path = base_reference(model, name, model_name)
    config.inference_mode = True  # as peft's own save_pretrained writes it
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(out))
    (out / "cot-transplant.json").write_text(json.dumps({"adapter": name, "model": model_name, **(about or {})},
                                                        indent=1), encoding="utf-8")


# model -> ((adapter names), [(ModuleDict, name)]): the LoRA dropouts found by the last walk of that model.
_SITES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _adapters(model) -> tuple:
    """The adapter names of `model` and of its direct children (a `ModelPair`'s two peft models)."""
    return tuple(sorted((i, n) for i, m in enumerate((model, *model.children()))
                        for n in (getattr(m, "peft_config", None) or {})))


def lora_dropout_sites(model) -> list[tuple[torch.nn.ModuleDict, str]]:
    """Every LoRA layer's dropout as (its `lora_dropout` ModuleDict, adapter name).

    One walk of the model's modules (about 9 ms for SmolLM2 with its adapters), remembered per model
    until its set of adapters changes (peft's `peft_config`, its own or a `ModelPair`'s models').
    """
    known = _SITES.get(model)
    if known is not None and known[0] == _adapters(model):
        return known[1]
    sites = [(dropouts, name) for module in model.modules()
             if isinstance(dropouts := getattr(module, "lora_dropout", None), torch.nn.ModuleDict)
             for name in dropouts]
    _SITES[model] = (_adapters(model), sites)
    return sites
