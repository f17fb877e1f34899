"""The adversarial step: the chooser learns to pick the correct candidate, the arguer argues for each one.

The original study proposed adversarial training of the arguer as its next step. Here
the two players share one forward (arguer capture -> chooser inject -> last logits) and
differ in their objectives:

- chooser: the usual cross-entropy towards the correct candidate, with gradients only
  into the chooser's adapter (exactly the `joint` step's chooser gradient);
- arguer: for candidate c (1 or 2), the cross-entropy towards c's token, sent only
  through c's own transplanted states. The states of candidate 1 receive
  d(loss towards 1)/d(states 1), those of candidate 2 d(loss towards 2)/d(states 2): on
  the correct candidate the arguer cooperates with the chooser, on the incorrect one it
  argues for it. Its parameter gradient is the sum of the two.

Its passes are the reference's (`reference.ReferencePasses`) and its backward `backward.two_phase`;
only the objective differs (`adversarial_objective`): phase 1 takes every gradient above from the
chooser's graph with the inject hooks alive, phase 2 sends the combined state gradients into the arguer.
"""

from __future__ import annotations

import torch

from cot_transplant.train.batches import Batch
from cot_transplant.train.steps import backward
from cot_transplant.train.steps.backward import SubBatchResult, loss_and_probs
from cot_transplant.train.steps.devices import finite
from cot_transplant.train.steps.reference import ReferencePasses
from cot_transplant.train.steps.settings import StepSettings
from cot_transplant.transplant import SpanStates


def towards_losses(logits: torch.Tensor, s: StepSettings) -> torch.Tensor:
    """(B, 2): per row, the loss (as the chooser's: full vocabulary or choice-only) towards "1" and towards "2"."""
    rows = logits.shape[0]
    return torch.stack([loss_and_probs(logits, torch.full((rows,), c, dtype=torch.long, device=logits.device), s)[0]
                        for c in (1, 2)], 1)


def candidate_of_tokens(states: SpanStates) -> torch.Tensor:
    """(N,) candidate index (0 or 1) of every state token: entries are row-major (row 0 cand 1, row 0 cand 2, ...).

    Built on the host from the entry lengths (move it once to where it is used).
    """
    entry = torch.arange(len(states.lengths)) % 2
    return torch.repeat_interleave(entry, torch.tensor(states.lengths, dtype=torch.long))


def arguer_state_grads(towards: torch.Tensor, states: SpanStates) -> tuple[torch.Tensor | None, ...]:
    """Per `states.tensors` value: candidate 1's tokens get d towards[:, 0].sum() / d states, candidate 2's
    d towards[:, 1].sum() / d states (rows are independent, so each row's states see only their row's loss).

    Keeps the graph (the chooser's gradient is taken afterwards); None where a tensor needs no gradient.
    """
    tensors = list(states.tensors.values())
    wrt = [t for t in tensors if t.requires_grad]
    if not wrt:
        return tuple(None for _ in tensors)
    first = torch.autograd.grad(towards[:, 0].sum(), wrt, retain_graph=True, allow_unused=True)
    second = torch.autograd.grad(towards[:, 1].sum(), wrt, retain_graph=True, allow_unused=True)
    cand = candidate_of_tokens(states).to(wrt[0].device)[:, None]  # (N, 1)
    combined = iter([None if g1 is None and g2 is None
                     else torch.where(cand == 0, _or_zero(g1, t), _or_zero(g2, t))
                     for g1, g2, t in zip(first, second, wrt)])
    return tuple(next(combined) if t.requires_grad else None for t in tensors)


def _or_zero(grad: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(like) if grad is None else grad


def adversarial_objective(logits: torch.Tensor, labels: torch.Tensor, s: StepSettings, states: SpanStates,
                          chooser: list, scale: float) -> tuple[SubBatchResult, tuple | None]:
    """Phase 1 of both players (`backward.Objective`): the chooser's loss into its .grad, and per candidate the
    towards-loss gradient of its own states (`arguer_state_grads`), both times `scale`.

    A non-finite loss leaves .grad untouched and skips phase 2.
    """
    loss, p1, p2 = loss_and_probs(logits, labels, s)
    towards = towards_losses(logits, s)  # (B, 2)
    figures = SubBatchResult(loss.detach(), p1, p2, towards.mean(1).detach())
    if not (finite(loss) and finite(towards)):
        return figures, None
    kv_grads = arguer_state_grads(towards * scale, states)
    for param, grad in zip(chooser, torch.autograd.grad(loss.sum() * scale, chooser, allow_unused=True)):
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad
    return figures, kv_grads


def adversarial_forward_backward(model, batch: Batch, s: StepSettings, scale: float):
    """One adversarial sub-batch: forward, chooser gradient, per-candidate arguer gradient, into .grad.

    Both objectives are summed over rows and multiplied by `scale`, as in the joint step.
    Returns (chooser loss per row, P1, P2, arguer loss per row = mean of its two towards-losses),
    all detached; a non-finite loss leaves .grad untouched.
    """
    out = backward.two_phase(model, ReferencePasses(model, batch, s), batch.labels, s, scale,
                             adversarial_objective)
    return out.loss, out.p1, out.p2, out.arguer_loss
