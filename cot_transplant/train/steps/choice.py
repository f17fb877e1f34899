"""Which step trains a run: the reference (`reference.py`), the exact fast path (`fast/`) or the adversarial
step (`adversarial.py`), chosen once at set-up (`choose`; the session keeps it as `Session.step`), and the
one rule by which a batch falls back from it (`path_for`).

The fast path runs only for the variants in `FAST_VARIANTS`, each compared with the reference
(loss, log P1 - log P2, every LoRA gradient) in `tests/train/steps/test_fast.py`; a new variant takes
the reference until it is added there and here. `announce` prints the choice once per run.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

from cot_transplant.train.adapters import role_adapters, role_model
from cot_transplant.train.batches import Batch
from cot_transplant.train.steps import adversarial, fast, reference
from cot_transplant.train.steps.backward import SubBatchResult
from cot_transplant.train.steps.settings import StepSettings

REFERENCE, FAST, ADVERSARIAL = "reference", "fast", "adversarial"
# The variants whose fast-path step equals the reference step (tests/train/steps/test_fast.py, one case each).
FAST_VARIANTS = ("joint", "frozen-arguer", "shared", "shuffled-kv", "swapped-kv", "no-argument")


@dataclass(frozen=True)
class Choice:
    path: str  # REFERENCE | FAST | ADVERSARIAL
    reason: str  # one line: why this path
    window: int | None = None  # FAST on a model with a sliding window: longer batches take the reference


def choose(model, s: StepSettings) -> Choice:
    """The step for `model` under `s`, before any batch is seen (`path_for` decides per batch)."""
    if s.variant == "adversarial":
        return Choice(ADVERSARIAL, "the adversarial variant has its own objective and backward")
    if s.fast_path == "off":
        return Choice(REFERENCE, "train.fast_path=off")
    if s.variant == "text-only":
        return Choice(REFERENCE, "text-only: no transplant, nothing for the fast path to skip")
    if s.variant not in FAST_VARIANTS:
        return Choice(REFERENCE, f"variant {s.variant}: the fast path is not proven for it "
                                 f"(proven: {', '.join(FAST_VARIANTS)})")
    reason = fast.blocker(model, s)
    if reason is not None:
        return Choice(REFERENCE, f"fast path off: {reason}")
    windows = [w for w in (fast.sliding_window(role_model(model, n)) for n in dict.fromkeys(role_adapters(s.variant)))
               if w is not None]
    return Choice(FAST, "the exact fast path", min(windows) if windows else None)


def announce(step: Choice) -> None:
    """Print the chosen step (once per run: the loop calls this at its start)."""
    window = (f"; a batch longer than the sliding window ({step.window} tokens) takes the reference step"
              if step.window is not None else "")
    print(f"cot-transplant: note: step {step.path} ({step.reason}){window}", file=sys.stderr, flush=True)


def path_for(step: Choice, batch: Batch) -> str:
    """The step that runs `batch`: the chosen one, except that on the fast path a sequence longer than the
    model's sliding window takes the reference (the fast path's attention ignores the window)."""
    if step.path == FAST and step.window is not None and max(batch.arguer_ids.shape[1],
                                                            batch.chooser_ids.shape[1]) > step.window:
        return REFERENCE
    return step.path


def forward_backward(model, batch: Batch, s: StepSettings, step: Choice, scale: float,
                     cache: fast.StateCache | None = None) -> SubBatchResult:
    """One sub-batch through `step` (`path_for`): forward, then backward of `scale * sum(loss)` into .grad.

    `cache`: the session's arguer state cache (the fast path reads it), or None. A non-finite loss leaves
    .grad untouched.
    """
    path = path_for(step, batch)
    if path == ADVERSARIAL:
        return SubBatchResult(*adversarial.adversarial_forward_backward(model, batch, s, scale))
    if path == FAST:
        return SubBatchResult(*fast.train_forward_backward(model, batch, s, scale, cache))
    return SubBatchResult(*reference.train_forward_backward(model, batch, s, scale))


def forward(model, batch: Batch, s: StepSettings, step: Choice, cache: fast.StateCache | None = None):
    """The eval forward (no backward) through `step`: loss per row, P1, P2 and the capture."""
    if path_for(step, batch) == FAST:
        return fast.forward(model, batch, s, cache)
    return reference.forward(model, batch, s)
