"""Helpers of the step tests: a tiny session with nonzero adapters and varied lengths, a padded batch, and the
fast path == reference check (loss, log P1 - log P2, every LoRA gradient of both adapters)."""

import dataclasses

import torch

from cot_transplant.train.adapters import adapter_params, trainable
from cot_transplant.train.batches import collate
from cot_transplant.train.setup import setup
from cot_transplant.train.steps import fast, reference
from train_helpers import tiny_cfg


def _vary_lengths(rows):
    """Questions and arguments of clearly different lengths, so one batch holds a lot of padding."""
    out = []
    for i, r in enumerate(rows):
        k = i % 3
        out.append(dataclasses.replace(
            r, question=r.question + " Count carefully." * 4 * k,
            correct_argument=r.correct_argument + " Check: ok." * 3 * k,
            incorrect_argument=r.incorrect_argument + " Check: fine." * (3 - k)))
    return out


def _session(tiny_rows, *overrides):
    tiny_rows["transform"] = _vary_lengths
    session = setup(tiny_cfg(*overrides))
    # Nonzero LoRA B in both adapters (different draws), so each adapter changes what the other sees.
    torch.manual_seed(3)
    for name in ("arguer", "chooser", "shared"):
        for n, p in adapter_params(session.model, name):
            if "lora_B" in n:
                p.data.normal_(0, 0.05)
    return session


def _batch(session, n=3):
    ex = sorted(session.examples["train"], key=lambda e: e.n_tokens)
    rows = [ex[0], ex[-1], ex[len(ex) // 2]][:n]
    assert len({e.n_tokens for e in rows}) == len(rows)
    batch = collate(rows, session.tokenizer.pad_token_id, session.cfg.transplant.fraction)
    assert (batch.chooser_mask == 0).any() and (batch.arguer_mask == 0).any()
    return batch


def _run(fn, session, batch, settings):
    session.model.zero_grad(set_to_none=True)
    loss, p1, p2 = fn(session.model, batch, settings, 0.5)
    grads = {n: p.grad.clone() for n, p in session.model.named_parameters() if p.grad is not None}
    return loss, p1, p2, grads


def assert_same_forward(ref, fast, what=""):
    """Loss, log P1, log P2 and log P1 - log P2 at a tight tolerance.

    The tiny models' probabilities are ~2e-5, so a loose absolute tolerance on P1/P2 passes almost
    anything; their logs are O(10) and log P1 - log P2 is O(1): a wrong key rotation shows there.
    """
    loss_r, p1_r, p2_r = ref[:3]
    loss_f, p1_f, p2_f = fast[:3]
    torch.testing.assert_close(loss_f, loss_r, rtol=1e-5, atol=1e-5, msg=f"{what} loss")
    for a, b, name in ((p1_r, p1_f, "log P1"), (p2_r, p2_f, "log P2")):
        torch.testing.assert_close(b.log(), a.log(), rtol=1e-5, atol=1e-5, msg=f"{what} {name}")
    torch.testing.assert_close(p1_f.log() - p2_f.log(), p1_r.log() - p2_r.log(), rtol=1e-4, atol=1e-5,
                               msg=f"{what} log P1 - log P2")


def assert_fast_equals_reference(session, batch, settings=None):
    settings = settings or session.settings
    ref = _run(reference.train_forward_backward, session, batch, settings)
    fast_run = _run(fast.train_forward_backward, session, batch, settings)
    assert_same_forward(ref, fast_run, "train")
    assert ref[3].keys() == fast_run[3].keys()
    names = list(ref[3])
    assert all(any(f".{a}." in n for n in names) for a in trainable(session.cfg.variant))
    for n in names:
        assert ref[3][n].abs().max() > 0, n
        torch.testing.assert_close(fast_run[3][n], ref[3][n], rtol=1e-4, atol=1e-5 * ref[3][n].abs().max().item(),
                                   msg=n)
    # The eval forward too, without gradients.
    with torch.no_grad():
        ref_fwd = reference.forward(session.model, batch, settings)
        fast_fwd = fast.forward(session.model, batch, settings)
    assert_same_forward(ref_fwd, fast_fwd, "eval")
    for k, t in ref_fwd[3].kv.tensors.items():
        torch.testing.assert_close(fast_fwd[3].kv.tensors[k], t, rtol=1e-4, atol=1e-6)
