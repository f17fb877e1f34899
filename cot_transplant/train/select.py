"""Which step trains a sub-batch: the reference (`step.py`), the exact fast path (`fastpath/`) or the
adversarial step (`adversarial.py`), picked from the settings and the model.

The fast path runs only for the variants in `FAST_VARIANTS`, each compared with the reference
(loss, log P1 - log P2, every LoRA gradient) in `tests/train/test_fastpath.py`; a new variant takes
the reference until it is added there and here. `announce` prints the choice once per run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch

from cot_transplant.train import adversarial, fastpath, step
from cot_transplant.train.batches import Batch
from cot_transplant.train.step import StepSettings

REFERENCE, FAST, ADVERSARIAL = "reference", "fast", "adversarial"
# The variants whose fast-path step equals the reference step (tests/train/test_fastpath.py, one case each).
FAST_VARIANTS = ("joint", "frozen-arguer", "shared", "shuffled-kv", "swapped-kv", "no-argument")
_NOTED: set[str] = set()  # batch-level fallbacks already reported (once per reason and process)


@dataclass(frozen=True)
class Choice:
    path: str  # REFERENCE | FAST | ADVERSARIAL
    reason: str  # one line: why this path


@dataclass
class SubBatchResult:
    """A trained sub-batch's per-row figures, detached."""

    loss: torch.Tensor  # (B,)
    p1: torch.Tensor  # (B,) full-vocabulary P("1")
    p2: torch.Tensor  # (B,)
    arguer_loss: torch.Tensor | None = None  # (B,) adversarial only: the arguer's loss


def choose(model, s: StepSettings) -> Choice:
    """The step for `model` under `s`, before any batch is seen (see `forward_backward` for the batch check)."""
    if s.variant == "adversarial":
        return Choice(ADVERSARIAL, "the adversarial variant has its own objective and backward")
    if s.fast_path == "off":
        return Choice(REFERENCE, "train.fast_path=off")
    if s.variant == "text-only":
        return Choice(REFERENCE, "text-only: no transplant, nothing for the fast path to skip")
    if s.variant not in FAST_VARIANTS:
        return Choice(REFERENCE, f"variant {s.variant}: the fast path is not proven for it "
                                 f"(proven: {', '.join(FAST_VARIANTS)})")
    reason = fastpath.blocker(model, s)
    if reason is not None:
        return Choice(REFERENCE, f"fast path off: {reason}")
    return Choice(FAST, "the exact fast path")


def announce(model, s: StepSettings) -> Choice:
    """Print the step `choose` picks (once per run: the loop calls this at its start); return it."""
    choice = choose(model, s)
    print(f"cot-transplant: note: step {choice.path} ({choice.reason})", file=sys.stderr, flush=True)
    return choice


def _fast_here(model, s: StepSettings, batch: Batch) -> bool:
    """Whether the fast path runs this batch; a batch-level fallback (sliding window) is noted once per reason."""
    if choose(model, s).path != FAST:
        return False
    reason = fastpath.blocker(model, s, batch)
    if reason is not None and reason not in _NOTED:
        _NOTED.add(reason)
        print(f"cot-transplant: note: fast path off ({reason}); using the reference step", file=sys.stderr,
              flush=True)
    return reason is None


def forward_backward(model, batch: Batch, s: StepSettings, scale: float) -> SubBatchResult:
    """One sub-batch through the chosen step: forward, then backward of `scale * sum(loss)` into .grad.

    A non-finite loss leaves .grad untouched.
    """
    if s.variant == "adversarial":
        return SubBatchResult(*adversarial.adversarial_forward_backward(model, batch, s, scale))
    if _fast_here(model, s, batch):
        return SubBatchResult(*fastpath.train_forward_backward(model, batch, s, scale))
    return SubBatchResult(*step.train_forward_backward(model, batch, s, scale))


def forward(model, batch: Batch, s: StepSettings):
    """The eval forward (no backward): loss per row, P1, P2 and the capture, on the fast path where it runs."""
    if _fast_here(model, s, batch):
        return fastpath.forward(model, batch, s)
    return step.forward(model, batch, s)
