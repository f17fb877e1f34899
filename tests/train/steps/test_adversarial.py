"""The adversarial variant on a tiny Llama: each player's gradient, its direction, and a logged run."""

import dataclasses
import json

import pytest
import torch

from cot_transplant.train.adapters import adapter_params, trainable
from cot_transplant.train.batches import collate
from cot_transplant.train.loop import train
from cot_transplant.train.setup import setup
from cot_transplant.train.steps import backward, choose, forward_backward
from cot_transplant.train.steps.adversarial import candidate_of_tokens, towards_losses
from cot_transplant.train.steps.reference import arguer_pass, chooser_logits
from cot_transplant.transplant import SpanStates
from train_helpers import tiny_cfg


def make_session(*overrides):
    session = setup(tiny_cfg("variant=adversarial", *overrides))
    # Nonzero LoRA B in both adapters, so every adapter matrix gets a gradient and moves the logits.
    torch.manual_seed(1)
    for name in ("arguer", "chooser"):
        for n, p in adapter_params(session.model, name):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    return session


@pytest.fixture
def session(tiny_rows):
    return make_session()


def batch_of(session, rows):
    return collate(session.examples["train"][rows], session.tokenizer.pad_token_id)


def grads(session, batch, settings=None, **kw):
    session.model.zero_grad(set_to_none=True)
    settings = settings or session.settings
    forward_backward(session.model, batch, settings, choose(session.model, settings), 1.0, **kw)
    return {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}


def only_candidate(states: SpanStates, c: int, new: SpanStates | None = None) -> SpanStates:
    """`states` with candidate c's tokens taken from `new` (default: kept attached) and the others' detached."""
    mask = (candidate_of_tokens(states) == c)[:, None]
    new = states if new is None else new
    return SpanStates(states.spec, states.lengths,
                      {k: torch.where(mask, new.tensors[k], t.detach()) for k, t in states.tensors.items()})


def per_candidate_arguer_grads(session, batch, c: int) -> dict:
    """Reference: d(sum of losses towards candidate c+1) / d(arguer), through candidate c's states alone."""
    model, s = session.model, session.settings
    model.zero_grad(set_to_none=True)
    kv = only_candidate(arguer_pass(model, batch, s).kv, c)
    towards_losses(chooser_logits(model, batch, s, kv), s)[:, c].sum().backward()
    # The last layer's q/o projections reach no transplanted K/V: no gradient.
    return {n: p.grad.clone() for n, p in adapter_params(model, "arguer") if p.grad is not None}


def towards_with(session, batch, kv) -> torch.Tensor:
    with torch.no_grad():
        return towards_losses(chooser_logits(session.model, batch, session.settings, kv.detach()), session.settings)


def test_adversarial_trains_both_players():
    assert trainable("adversarial") == ("arguer", "chooser")


def test_chooser_gradient_equals_the_joint_step_and_the_arguer_s_does_not(session):
    batch = batch_of(session, slice(0, 2))
    adv = grads(session, batch)
    joint = grads(session, batch, dataclasses.replace(session.settings, variant="joint", fast_path="off"))
    chooser = [k for k in adv if ".chooser." in k]
    assert chooser and chooser == [k for k in joint if ".chooser." in k]
    for k in chooser:
        torch.testing.assert_close(adv[k], joint[k], rtol=0, atol=0, msg=k)
    assert any(not torch.allclose(adv[k], joint[k]) for k in adv if ".arguer." in k)


def test_arguer_gradient_is_the_sum_of_the_per_candidate_objectives(session):
    batch = batch_of(session, slice(0, 2))
    adv = grads(session, batch)
    parts = [per_candidate_arguer_grads(session, batch, c) for c in (0, 1)]
    assert parts[0].keys() == parts[1].keys() == {k for k in adv if ".arguer." in k} != set()
    for k in parts[0]:
        torch.testing.assert_close(adv[k], parts[0][k] + parts[1][k], rtol=1e-4, atol=1e-7, msg=k)


def state_grads_of(session, batch, monkeypatch, settings=None):
    """The states and the gradients a step sends into them (phase 2's input), recorded from the one backward."""
    module = backward
    seen = {}
    original = module.backward_from_states
    monkeypatch.setattr(module, "backward_from_states",
                        lambda kv, g: (seen.update(kv=kv.detach(), grads=g), original(kv, g))[1])
    grads(session, batch, settings)
    monkeypatch.setattr(module, "backward_from_states", original)
    return seen["kv"], dict(zip(seen["kv"].tensors, seen["grads"]))


def step_states(kv: SpanStates, state_grads: dict, c: int, lr: float = 1e-2) -> SpanStates:
    mask = (candidate_of_tokens(kv) == c)[:, None]
    return SpanStates(kv.spec, kv.lengths, {k: t - lr * mask * state_grads[k] for k, t in kv.tensors.items()})


@pytest.mark.parametrize("choice_only", [False, True])
def test_state_gradients_raise_each_candidate_s_probability(tiny_rows, monkeypatch, choice_only):
    """A small step on candidate c's states alone, along the gradient they receive, raises P(c) in every row:
    on the incorrect candidate too, where the joint step's gradient (two-token loss) lowers it."""
    session = make_session(f"loss.choice_only={str(choice_only).lower()}")
    batch = batch_of(session, slice(0, 4))
    assert set(batch.labels.tolist()) == {1, 2}
    kv, adv = state_grads_of(session, batch, monkeypatch)
    before = towards_with(session, batch, kv)  # (B, 2): -log P("1"), -log P("2")
    for c in (0, 1):
        after = towards_with(session, batch, step_states(kv, adv, c))
        assert (after[:, c] < before[:, c]).all(), (c, before, after)  # P(candidate c+1) went up in every row
    if choice_only:
        _, joint = state_grads_of(session, batch, monkeypatch,
                                  dataclasses.replace(session.settings, variant="joint", fast_path="off"))
        for c in (0, 1):
            incorrect = batch.labels != c + 1
            after = towards_with(session, batch, step_states(kv, joint, c))
            assert (after[incorrect, c] > before[incorrect, c]).all()


def test_an_arguer_step_on_one_candidate_s_objective_raises_its_probability(session):
    """SGD on the arguer alone (chooser fixed) with candidate c's part of the adversarial gradient, then only
    candidate c's states recomputed: -log P(c) falls by about the first-order prediction lr * |g|^2."""
    batch = batch_of(session, slice(0, 1))
    model, s = session.model, session.settings
    start = {n: p.detach().clone() for n, p in adapter_params(model, "arguer")}
    for c in (0, 1):
        g = per_candidate_arguer_grads(session, batch, c)
        lr = 1e-3 / sum(float((v ** 2).sum()) for v in g.values())  # predicted decrease: 1e-3
        with torch.no_grad():
            old = arguer_pass(model, batch, s).kv.detach()
            before = towards_with(session, batch, old)
            for n, p in adapter_params(model, "arguer"):
                p.copy_(start[n] - lr * g[n] if n in g else start[n])
            new = arguer_pass(model, batch, s).kv.detach()
            after = towards_with(session, batch, only_candidate(old, c, new))
            for n, p in adapter_params(model, "arguer"):
                p.copy_(start[n])
        assert 0.5e-3 < float(before[0, c] - after[0, c]) < 1.5e-3, (c, before, after)


def test_a_whole_adversarial_arguer_step_raises_each_candidate_s_probability(session):
    """The full adversarial arguer gradient (both candidates' parts), one small SGD step on the arguer alone,
    then only candidate c's states recomputed: P(c) rises in every row, for c = 1 and 2.

    Not guaranteed in general (the two parts share parameters: a cross term), unlike the test above;
    measured here for 3 seeds and 1-4 rows, the decrease of -log P(c) is 40-60% of the total predicted.
    """
    batch = batch_of(session, slice(0, 4))
    model, s = session.model, session.settings
    g = {k: v for k, v in grads(session, batch).items() if ".arguer." in k}
    lr = 1e-3 / sum(float((v ** 2).sum()) for v in g.values())
    with torch.no_grad():
        old = arguer_pass(model, batch, s).kv.detach()
        before = towards_with(session, batch, old)
        for n, p in adapter_params(model, "arguer"):
            if n in g:
                p -= lr * g[n]
        new = arguer_pass(model, batch, s).kv.detach()
    for c in (0, 1):
        after = towards_with(session, batch, only_candidate(old, c, new))
        assert (after[:, c] < before[:, c]).all(), (c, before, after)


def test_gradient_checkpointing_gives_the_same_adversarial_gradients(tiny_rows):
    plain = setup(tiny_cfg("variant=adversarial"))
    ckpt = setup(tiny_cfg("variant=adversarial", "model.gradient_checkpointing=true"))
    for s in (plain, ckpt):
        torch.manual_seed(1)
        for n, p in adapter_params(s.model, "arguer"):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    batch = batch_of(plain, slice(0, 2))
    a, b = grads(plain, batch), grads(ckpt, batch)
    assert a.keys() == b.keys() and any(".arguer." in k for k in a)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6, msg=k)


def test_the_step_returns_the_arguer_loss_per_row(session):
    batch = batch_of(session, slice(0, 2))
    out = forward_backward(session.model, batch, session.settings, session.step, 1.0)
    with torch.no_grad():
        kv = arguer_pass(session.model, batch, session.settings).kv
        expected = towards_with(session, batch, kv).mean(1)
    assert out.arguer_loss.tolist() == pytest.approx(expected.tolist(), rel=1e-5)


def test_an_adversarial_run_logs_both_players_losses(tiny_rows, tmp_path):
    train(tiny_cfg("variant=adversarial", f"run.dir={tmp_path}", "run.name=r"))
    lines = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    logged = [x for x in lines if x["kind"] == "train"]
    assert logged and all(x["train/loss"] > 0 and x["train/arguer_loss"] > 0 for x in logged)
    assert all("val/arguer_loss" not in x for x in lines)
