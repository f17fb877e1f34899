"""TransplantSpec as data, the architecture table, and site lookup through peft wrappers."""

from __future__ import annotations

import json

import pytest
import torch
from transplant_helpers import tiny, two_adapters

from cot_transplant.transplant import ARCHITECTURES, TransplantSpec
from cot_transplant.transplant.arch import decoder_layers, resolve_sites


@pytest.mark.parametrize("spec", [TransplantSpec(), TransplantSpec("k", (1,)), TransplantSpec("residual", (3, 0))])
def test_spec_round_trips_through_json(spec):
    assert TransplantSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_spec_normalizes_layers_and_is_frozen():
    spec = TransplantSpec("v", [2, 0])
    assert spec.layers == (0, 2) and spec.keys == ("v",)
    assert TransplantSpec().to_dict() == {"site": "kv", "layers": None}
    with pytest.raises(AttributeError):
        spec.site = "k"


@pytest.mark.parametrize("kwargs, message", [
    ({"site": "q"}, "site: 'q' is not one of"),
    ({"layers": ()}, "layers: empty"),
    ({"layers": (1, -1)}, r"layers: \[-1\] are not layer indices"),
    ({"layers": (1, 1)}, "repeats a layer"),
    ({"layers": (True,)}, "are not layer indices"),
])
def test_spec_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        TransplantSpec(**kwargs)


def test_spec_from_dict_rejects_unknown_keys():
    with pytest.raises(ValueError, match=r"unknown keys \['layer'\]"):
        TransplantSpec.from_dict({"site": "kv", "layer": [0]})


def test_table_covers_the_required_families_and_is_read_only():
    assert {"llama", "mistral", "qwen2", "qwen3", "olmo2", "gemma"} <= set(ARCHITECTURES)
    assert "k_norm" in ARCHITECTURES["qwen3"].note and "k_norm" in ARCHITECTURES["olmo2"].note
    with pytest.raises(TypeError):
        ARCHITECTURES["gpt2"] = ARCHITECTURES["llama"]


def test_sites_on_peft_model_are_the_lora_wrappers_not_base_layer():
    from peft.tuners.lora import LoraLayer

    model = two_adapters()
    sites = resolve_sites(model, TransplantSpec())
    assert [(s.key, s.layer) for s in sites] == [("k", 0), ("v", 0), ("k", 1), ("v", 1)]
    assert all(isinstance(s.module, LoraLayer) for s in sites)
    assert sites[0].module is model.get_base_model().model.layers[0].self_attn.k_proj
    residual = resolve_sites(model, TransplantSpec("residual", (1,)))
    assert residual[0].module is model.get_base_model().model.layers[1]


def test_sites_on_plain_model():
    model = tiny("tiny-mistral")
    sites = resolve_sites(model, TransplantSpec("k", (1,)))
    assert [(s.key, s.layer, s.module) for s in sites] == [("k", 1, model.model.layers[1].self_attn.k_proj)]


def test_decoder_layers_found_again_when_the_model_changes():
    model = tiny()
    first = decoder_layers(model)[1]
    assert decoder_layers(model)[1] is first  # remembered
    model.model.layers = torch.nn.ModuleList(list(first)[:1])  # a model edited after the first lookup
    assert decoder_layers(model)[1] is model.model.layers
    del model.model.layers
    with pytest.raises(ValueError, match="found 0"):
        decoder_layers(model)
