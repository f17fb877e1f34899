"""The training step on tiny random decoders: what changes, what does not, and exactness invariants.

Each test names the step it runs: `reference` (train/steps/reference.py) or `fast` (train/steps/fast/), through
`STEPS`.
"""

import dataclasses

import pytest
import torch

from cot_transplant.train.steps import fast, reference
from cot_transplant.train.adapters import adapter_params
from cot_transplant.train.batches import collate
from cot_transplant.train.loop import make_optimizer
from cot_transplant.train.setup import setup
from train_helpers import tiny_cfg

STEPS = {"reference": reference.train_forward_backward, "fast": fast.train_forward_backward}
both_paths = pytest.mark.parametrize("path", list(STEPS))


def snapshot(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def changed(before, model, key):
    return [n for n, p in model.named_parameters() if key(n) and not torch.equal(before[n], p.detach())]


def run_steps(session, path, steps=2):
    opt = make_optimizer(session)
    ex = session.examples["train"]
    losses = []
    for i in range(steps):
        batch = collate(ex[2 * i: 2 * i + 2], session.tokenizer.pad_token_id)
        opt.zero_grad()
        loss, _, _ = STEPS[path](session.model, batch, session.settings, scale=0.5)
        opt.step()
        losses.append(loss)
    return torch.cat(losses)


def is_base(n):
    return "lora_" not in n


@both_paths
@pytest.mark.parametrize("variant, arguer_changes", [("joint", True), ("frozen-arguer", False)])
def test_joint_trains_both_adapters_and_never_the_base(tiny_rows, variant, arguer_changes, path):
    session = setup(tiny_cfg(f"variant={variant}"))
    before = snapshot(session.model)
    losses = run_steps(session, path)
    assert torch.isfinite(losses).all()
    assert changed(before, session.model, lambda n: ".chooser." in n)
    assert bool(changed(before, session.model, lambda n: ".arguer." in n)) == arguer_changes
    assert not changed(before, session.model, is_base)


def test_text_only_registers_no_transplant_hook(tiny_rows, monkeypatch):
    """The reference step: the only one that runs text-only."""

    def fail(*a, **k):
        raise AssertionError("text-only must not transplant")

    monkeypatch.setattr(reference, "capture_kv", fail)
    monkeypatch.setattr(reference, "inject_kv", fail)
    session = setup(tiny_cfg("variant=text-only"))
    hooks_before = sum(len(m._forward_hooks) for m in session.model.modules())
    before = snapshot(session.model)
    assert torch.isfinite(run_steps(session, "reference")).all()
    assert sum(len(m._forward_hooks) for m in session.model.modules()) == hooks_before
    assert changed(before, session.model, lambda n: ".chooser." in n)


def grads_of(session, batches, scale, path):
    session.model.zero_grad(set_to_none=True)
    for b in batches:
        STEPS[path](session.model, b, session.settings, scale=scale)
    return {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}


def assert_same_grads(a, b, rtol=1e-4, atol=1e-6):
    assert a.keys() == b.keys() and any(".arguer." in k for k in a) and any(".chooser." in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=rtol, atol=atol, msg=k)


@both_paths
@pytest.mark.parametrize("family", ["tiny-llama", "tiny-qwen2"])
def test_gradient_checkpointing_gives_the_same_gradients(tiny_rows, family, path):
    plain = setup(tiny_cfg(f"model.name={family}"))
    ckpt = setup(tiny_cfg(f"model.name={family}", "model.gradient_checkpointing=true"))
    ckpt.model.load_state_dict(plain.model.state_dict())
    batch = collate(plain.examples["train"][:2], plain.tokenizer.pad_token_id)
    # Nonzero arguer LoRA B so the arguer's gradients carry its own adapter's effect.
    for s in (plain, ckpt):
        torch.manual_seed(1)
        for n, p in adapter_params(s.model, "arguer"):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    assert_same_grads(grads_of(plain, [batch], 1.0, path), grads_of(ckpt, [batch], 1.0, path))


@both_paths
def test_accumulation_of_four_sub_batches_equals_one_batch_of_eight(tiny_rows, path):
    session = setup(tiny_cfg())
    ex = session.examples["train"][:8]
    pad = session.tokenizer.pad_token_id
    whole = grads_of(session, [collate(ex, pad)], 1 / 8, path)
    parts = grads_of(session, [collate(ex[i:i + 2], pad) for i in range(0, 8, 2)], 1 / 8, path)
    assert_same_grads(whole, parts)


@both_paths
def test_joint_fits_eight_rows(tiny_rows, monkeypatch, path):
    """Joint training memorizes 8 rows through the transplant alone.

    Each correct argument ends "Verdict: sound." and each incorrect one "Verdict: broken.";
    the chooser's own K/V at the candidate tokens are replaced, so it can only learn the
    label from the arguer's transplanted states. A random 2-layer model with hidden 32 and
    0.02 init cannot move full-vocabulary logits far enough, so this uses hidden 64, 0.1 init,
    LoRA on every linear layer and the two-token loss (`loss.choice_only`).
    """
    import cot_transplant.models as models

    tiny = models.tiny_config
    monkeypatch.setattr(models, "tiny_config", lambda family, vocab, **o: tiny(
        family, vocab, hidden_size=64, intermediate_size=128, initializer_range=0.1, **o))
    tiny_rows["n"] = 20
    tiny_rows["transform"] = lambda rows: [dataclasses.replace(
        r, correct_argument=r.correct_argument + " Verdict: sound.",
        incorrect_argument=r.incorrect_argument + " Verdict: broken.") for r in rows]
    session = setup(tiny_cfg("data.val_fraction=0.3", "data.test_fraction=0.3", "train.optim.lr=1e-2",
                             "lora.r=8", "lora.alpha=16", "loss.choice_only=true",
                             "lora.target_modules=[q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj]"))
    ex = session.examples["train"]
    assert len(ex) == 8 and {e.label for e in ex} == {1, 2}
    opt = make_optimizer(session)
    batch = collate(ex, session.tokenizer.pad_token_id)
    for step in range(40):
        opt.zero_grad()
        loss, _, _ = STEPS[path](session.model, batch, session.settings, scale=1 / 8)
        opt.step()
        if loss.mean() < 0.05:
            break
    assert loss.mean() < 0.05, f"train loss {loss.mean():.3f} after {step + 1} steps"


@pytest.mark.parametrize("variant", ["joint", "adversarial"])
def test_train_step_returns_the_figures_of_every_row_and_the_optimizer_s_lr(tiny_rows, variant):
    """One optimizer step through the loop's `train_step` (the step the session chose: fast for joint)."""
    from cot_transplant.train.distributed import Dist
    from cot_transplant.train.loop import train_step

    session = setup(tiny_cfg(f"variant={variant}"))
    opt = make_optimizer(session)
    before = snapshot(session.model)
    out = train_step(session, opt, [0, 1, 2, 3], 5e-3, Dist())
    assert out["finite"] and out["oom_rows"] == 0 and out["lr"] == opt.param_groups[0]["lr"] == 5e-3
    assert len(out["loss"]) == len(out["p1"]) == len(out["label"]) == 4
    assert len(out["arguer_loss"]) == (4 if variant == "adversarial" else 0)
    assert changed(before, session.model, lambda n: ".chooser." in n)
