"""Different arguer and chooser bases (arguer.model / chooser.model): shape check, exact step, a whole run."""

import json

import pytest
import torch

from cot_transplant.cli import main
from cot_transplant.errors import UserError
from cot_transplant.models import build_tiny, load_tokenizer
from cot_transplant.runs import rundir
from cot_transplant.train.adapters import ModelPair, adapter_params, lora_dropout_sites
from cot_transplant.train.batches import collate
from cot_transplant.train.loop import make_optimizer, train
from cot_transplant.train.setup import setup
from cot_transplant.train.steps import loss_and_probs
from cot_transplant.train.steps.reference import arguer_pass, chooser_logits, train_forward_backward
from train_helpers import tiny_cfg


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny Llamas saved as model directories: seeds 1 and 2 (one shape), and two of other shapes."""
    vocab = len(load_tokenizer("smollm2"))
    root = tmp_path_factory.mktemp("models")
    out = {}
    for name, seed, overrides in [("a", 1, {}), ("b", 2, {}), ("kv4", 1, {"num_key_value_heads": 4}),
                                  ("layers3", 1, {"num_hidden_layers": 3})]:
        build_tiny("tiny-llama", vocab, seed=seed, **overrides).save_pretrained(root / name)
        out[name] = str(root / name)
    return out


def two(saved, *overrides):
    return tiny_cfg(f"arguer.model={saved['a']}", f"chooser.model={saved['b']}", *overrides)


def test_two_bases_each_hold_one_adapter(tiny_rows, saved):
    session = setup(two(saved))
    pair = session.model
    assert isinstance(pair, ModelPair)
    assert list(pair.arguer_model.peft_config) == ["arguer"] and list(pair.chooser_model.peft_config) == ["chooser"]
    a = pair.arguer_model.get_base_model().model.layers[0].self_attn.k_proj.base_layer.weight
    c = pair.chooser_model.get_base_model().model.layers[0].self_attn.k_proj.base_layer.weight
    assert not torch.equal(a, c)


def test_lora_dropout_sites_of_a_pair_are_found_again_when_either_model_gains_an_adapter(tiny_rows, saved):
    from peft import LoraConfig

    pair = setup(two(saved, "lora.dropout=0.3")).model
    sites = lora_dropout_sites(pair)
    assert {n for _, n in sites} == {"arguer", "chooser"} and lora_dropout_sites(pair) is sites
    pair.chooser_model.add_adapter("extra", LoraConfig(r=2, target_modules=["q_proj"], lora_dropout=0.1))
    assert {n for _, n in lora_dropout_sites(pair)} == {"arguer", "chooser", "extra"}


def test_one_name_for_both_roles_keeps_one_base(tiny_rows):
    session = setup(tiny_cfg("arguer.model=tiny-llama"))
    assert not isinstance(session.model, ModelPair)
    assert set(session.model.peft_config) == {"arguer", "chooser"}


@pytest.mark.parametrize("checkpointing", [False, True])
def test_two_phase_step_equals_one_backward_and_trains_both(tiny_rows, saved, checkpointing):
    """With two bases one plain backward is exact; the two-phase step must give the same gradients.
    Then two SGD steps move both adapters and neither base."""
    session = setup(two(saved, f"model.gradient_checkpointing={str(checkpointing).lower()}"))
    model, s = session.model, session.settings
    torch.manual_seed(1)
    for n, p in adapter_params(model, "arguer"):
        if "lora_B" in n:
            p.data.normal_(0, 0.05)
    batch = collate(session.examples["train"][:2], session.tokenizer.pad_token_id)
    model.zero_grad(set_to_none=True)
    train_forward_backward(model, batch, s, scale=1.0)
    step = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    if not checkpointing:
        model.zero_grad(set_to_none=True)
        logits = chooser_logits(model, batch, s, arguer_pass(model, batch, s).kv)
        loss_and_probs(logits, batch.labels, s)[0].sum().backward()
        plain = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        assert step.keys() == plain.keys()
        for k in step:
            torch.testing.assert_close(step[k], plain[k], rtol=1e-5, atol=1e-7, msg=k)
    assert any(k.startswith("arguer_model.") for k in step) and any(k.startswith("chooser_model.") for k in step)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = make_optimizer(session)
    for i in range(2):
        opt.zero_grad()
        train_forward_backward(model, collate(session.examples["train"][2 * i: 2 * i + 2],
                                              session.tokenizer.pad_token_id), s, scale=0.5)
        opt.step()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if not torch.equal(before[n], p.detach())}
    assert moved == {"arguer_model", "chooser_model"}
    assert all("lora_" in n for n, p in model.named_parameters() if not torch.equal(before[n], p.detach()))


def test_a_two_model_run_checkpoints_and_reevaluates(tiny_rows, saved, tmp_path):
    train(two(saved, f"run.dir={tmp_path}", "run.name=r", "train.max_samples=4"))
    run = tmp_path / "r"
    ckpt = rundir.latest_checkpoint(run)
    assert {"adapter-arguer.safetensors", "adapter-chooser.safetensors"} <= {p.name for p in ckpt.iterdir()}
    assert main(["eval", str(run), "--split", "test"]) == 0
    result = json.loads(next(run.glob("eval-step-*.json")).read_text())[0]
    last = [x for x in rundir.read_metrics(run) if x.get("split") == "test"][-1]
    assert result["test/loss"] == pytest.approx(last["test/loss"], rel=1e-6)


@pytest.mark.parametrize("other, message", [
    ("kv4", r"2 layers of K/V width \(num_key_value_heads \* head_dim\) 32, the chooser 2 layers of 16"),
    ("layers3", r"3 layers of K/V width \(num_key_value_heads \* head_dim\) 16, the chooser 2 layers of 16"),
])
def test_mismatched_shapes_are_one_clear_error(tiny_rows, saved, other, message):
    with pytest.raises(UserError, match=message) as info:
        setup(tiny_cfg(f"arguer.model={saved[other]}", f"chooser.model={saved['b']}"))
    assert saved[other] in str(info.value) and saved["b"] in str(info.value)


def test_shared_variant_needs_one_model(saved):
    with pytest.raises(UserError, match="'shared' plays both roles"):
        two(saved, "variant=shared")
