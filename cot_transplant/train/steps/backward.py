"""The objective and the two-phase backward, written once: every step (reference, fast path, adversarial)
calls `two_phase` with its own passes and differs from the others only there.

Backward runs in two phases so that it stays exact with gradient checkpointing on one base with two
adapters (../shared/DESIGN.md, `transplant/backward.py`):

1. with the chooser active and its inject hooks (or the fast path's attention) alive, the gradients of the
   loss w.r.t. the chooser's parameters, accumulated into .grad, and w.r.t. the transplanted states;
2. with the arguer active and its capture hooks alive, backward from the states into the arguer.

Without checkpointing it gives the same gradients as one backward. A step supplies its `Passes`; the
objective (`chooser_objective`, or the adversarial step's) turns the chooser's logits into phase 1.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Protocol

import torch

from cot_transplant.train.adapters import adapter_params, role_adapters, role_model
from cot_transplant.train.steps.devices import finite
from cot_transplant.train.steps.settings import StepSettings
from cot_transplant.transplant import (SpanStates, TransplantSpec, active_adapter, backward_from_states,
                                       backward_to_states, capture_kv)

_NO_STATES = SpanStates(TransplantSpec(), (), {})


@dataclass
class SubBatchResult:
    """A trained sub-batch's per-row figures, detached."""

    loss: torch.Tensor  # (B,)
    p1: torch.Tensor  # (B,) full-vocabulary P("1")
    p2: torch.Tensor  # (B,)
    arguer_loss: torch.Tensor | None = None  # (B,) adversarial only: the arguer's loss


class Passes(Protocol):
    """One step's passes over one batch: all that differs between the reference and the fast path."""

    def arguer(self):
        """The arguer's capture (`.kv`: the states, graph attached; or states a cache served), or None (text-only)."""

    def chooser(self, states: SpanStates | None) -> ContextManager[torch.Tensor]:
        """The chooser adapter active with `states` transplanted (None: none) for the block, which receives the
        last-position logits (B, V); phase 1 runs inside it, so a checkpointed chooser layer recomputes the same."""

    def arguer_again(self) -> ContextManager[None]:
        """The arguer adapter active with its capture hooks (and attention) as in `arguer`; phase 2 runs inside."""


# (logits, labels, settings, states or None, chooser parameters, scale)
#     -> (figures, the states' gradients; None: no phase 2)
Objective = Callable[[torch.Tensor, torch.Tensor, StepSettings, "SpanStates | None", list, float],
                     "tuple[SubBatchResult, tuple | None]"]


def loss_and_probs(logits: torch.Tensor, labels: torch.Tensor, s: StepSettings):
    """Per-row loss (B,) and the full-vocabulary probabilities of "1" and "2" (B,), (B,)."""
    logp = torch.log_softmax(logits, dim=-1)  # (B, V)
    ids = torch.tensor(s.choice_ids, device=logits.device)
    target = ids[labels.to(logits.device) - 1]  # (B,)
    if s.choice_only:
        pair = torch.log_softmax(logits[:, ids], dim=-1)  # (B, 2)
        loss = -pair.gather(1, (labels.to(logits.device) - 1)[:, None])[:, 0]
    else:
        loss = -logp.gather(1, target[:, None])[:, 0]
    probs = logp[:, ids].exp().detach()
    return loss, probs[:, 0], probs[:, 1]


def leaves(kv: SpanStates) -> SpanStates:
    """`kv` cut from the arguer's graph, still taking gradients: phase 1 of the backward stops there.

    Without the cut, phase 1 runs on into the arguer's graph when one adapter plays both roles
    (`shared`: its parameters are reached through the states) and frees it before phase 2.
    """
    return SpanStates(kv.spec, kv.lengths, {k: t.detach().requires_grad_(t.requires_grad)
                                            for k, t in kv.tensors.items()})


def chooser_objective(logits: torch.Tensor, labels: torch.Tensor, s: StepSettings, states: SpanStates | None,
                      chooser: list, scale: float) -> tuple[SubBatchResult, tuple | None]:
    """Phase 1 of the chooser's cross-entropy: d(`scale` * sum(loss)) into the chooser's .grad; returns the
    figures and d/d `states` (None without states, or for a non-finite loss, which leaves .grad untouched)."""
    loss, p1, p2 = loss_and_probs(logits, labels, s)
    figures = SubBatchResult(loss.detach(), p1, p2)
    if not finite(loss):  # a loss scale may overflow the total: the scaler sees that
        return figures, None
    grads = backward_to_states(loss.sum() * scale, _NO_STATES if states is None else states, chooser)
    return figures, None if states is None else grads


def two_phase(model, passes: Passes, labels: torch.Tensor, s: StepSettings, scale: float,
              objective: Objective = chooser_objective) -> SubBatchResult:
    """One sub-batch: `passes`' forward, then `objective`'s gradients into .grad in the two phases.

    `model`: the peft model or `ModelPair` whose chooser adapter takes phase 1's parameter gradients.
    Returns the per-row figures, detached.
    """
    chooser_name = role_adapters(s.variant)[1]
    chooser = [p for _, p in adapter_params(role_model(model, chooser_name), chooser_name) if p.requires_grad]
    cap = passes.arguer()
    kv = None if cap is None else cap.kv
    leaf = None if kv is None else leaves(kv)
    with passes.chooser(leaf) as logits:  # (B, V)
        figures, kv_grads = objective(logits, labels, s, leaf, chooser, scale)  # phase 1
    if kv_grads is not None:
        with passes.arguer_again():  # phase 2
            backward_from_states(kv, kv_grads)
    return figures


def forward(passes: Passes, labels: torch.Tensor, s: StepSettings):
    """`passes`' forward alone: loss per row, P1, P2, and the arguer's capture (None for text-only)."""
    cap = passes.arguer()
    with passes.chooser(None if cap is None else cap.kv) as logits:
        pass
    loss, p1, p2 = loss_and_probs(logits, labels, s)
    return loss, p1, p2, cap


@contextmanager
def arguer_hooks(model, name: str, spans, mask, spec) -> Iterator[None]:
    """Adapter `name` of `model` active with its capture hooks alive at `spans`: phase 2's block, in which a
    checkpointed arguer layer recomputes the graph the arguer pass built.

    `mask`: the arguer rows' (B, T) attention mask, read only to check the spans (give the host copy).
    """
    with active_adapter(model, name), capture_kv(model, spans, attention_mask=mask, spec=spec):
        yield
