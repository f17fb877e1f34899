"""The reference step: arguer capture -> chooser inject -> last-position logits -> loss -> two-phase backward.

Full passes over both models, with hooks at the named sites (`transplant/hooks.py`): the arguer runs each
row's two candidates after the question prompt and the capture keeps its states over the argument spans;
the chooser runs the choice prompt with them injected at the candidate spans. `model` is one peft model
with both adapters, or a `ModelPair` of two bases (one adapter each); `role_model` picks the model that
plays each role. Its passes are `ReferencePasses`; the objective and the backward are `backward.py`'s.
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from typing import Iterator

import torch

from cot_transplant.train.adapters import role_adapters, role_model, trainable
from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.train.steps import append, backward
from cot_transplant.train.steps.devices import model_device, on_model
from cot_transplant.train.steps.fast.attention import attention_mask_4d, implementation
from cot_transplant.train.steps.settings import StepSettings
from cot_transplant.transplant import active_adapter, capture_kv, inject_kv
from cot_transplant.transplant.arch import decoder_body


def last_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the last position (every row's last real token under left padding): (B, V), float32."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                use_cache=False)
    return out.logits[:, -1, :].float()


def arguer_pass(model, batch: Batch, s: StepSettings, host: Batch | None = None):
    """Run the arguer over both candidates of every row; return the capture (K/V not detached).

    `host`: the batch's host copy where the caller has it (`on_model`).
    """
    arguer_name = role_adapters(s.variant)[0]
    model = role_model(model, arguer_name)
    host, batch = on_model(batch, model, host)
    grad = arguer_name in trainable(s.variant) and torch.is_grad_enabled()
    with active_adapter(model, arguer_name), torch.set_grad_enabled(grad):
        with capture_kv(model, batch.arguer_spans, attention_mask=host.arguer_mask, spec=s.spec) as cap:
            # Only the layers' K/V are needed: run the decoder body, skip the LM head.
            decoder_body(model)(input_ids=batch.arguer_ids, attention_mask=batch.arguer_mask,
                                position_ids=position_ids(batch.arguer_mask), use_cache=False)
    return cap


def chooser_logits(model, batch: Batch, s: StepSettings, kv=None, host: Batch | None = None) -> torch.Tensor:
    """The chooser's last-position logits (B, V), with `kv` injected unless it is None."""
    chooser_name = role_adapters(s.variant)[1]
    model = role_model(model, chooser_name)
    host, batch = on_model(batch, model, host)
    with active_adapter(model, chooser_name):
        if kv is None:
            return last_logits(model, batch.chooser_ids, batch.chooser_mask)
        with inject_kv(model, batch.chooser_spans, kv, attention_mask=host.chooser_mask, spec=s.spec):
            return last_logits(model, batch.chooser_ids, batch.chooser_mask)


@contextmanager
def appended_logits(model, host: Batch, kv, s: StepSettings) -> Iterator[torch.Tensor]:
    """A block receiving the chooser's last-position logits (B, V) with `kv` appended beside its own candidates
    (`append.extend`: the model's own forward over slots whose K/V the inject hooks overwrite), the hooks
    alive for the block (run phase 1 inside: gradient checkpointing recomputes through them).

    `host`: the batch on the host; run it with the chooser adapter active.
    """
    ext = append.extend(host)
    device = model_device(model)
    dtype = model.get_input_embeddings().weight.dtype
    mask = attention_mask_4d(ext.allowed.to(device), implementation(model), dtype)  # (B, 1, T, T)
    with inject_kv(model, ext.spans, kv, attention_mask=ext.mask, spec=s.spec):
        out = model(input_ids=ext.ids.to(device), attention_mask=mask, position_ids=ext.position_ids.to(device),
                    logits_to_keep=1, use_cache=False)
        yield out.logits[:, -1, :].float()


class ReferencePasses:
    """The reference's passes over `batch` (`backward.Passes`): full passes with capture and inject hooks."""

    def __init__(self, model, batch: Batch, s: StepSettings):
        self.s = s
        self.arguer_name, self.chooser_name = role_adapters(s.variant)
        self.arguer_model = role_model(model, self.arguer_name)
        self.chooser_model = role_model(model, self.chooser_name)
        self.host, self.batch = on_model(batch, self.chooser_model)

    def arguer(self):
        return arguer_pass(self.arguer_model, self.batch, self.s, self.host) if self.s.transplants else None

    @contextmanager
    def chooser(self, states) -> Iterator[torch.Tensor]:
        b = self.batch
        if states is not None and self.s.mode == append.APPEND:
            with active_adapter(self.chooser_model, self.chooser_name), \
                    appended_logits(self.chooser_model, self.host, states, self.s) as logits:
                yield logits
            return
        inject = (inject_kv(self.chooser_model, b.chooser_spans, states, attention_mask=self.host.chooser_mask,
                            spec=self.s.spec) if states is not None else nullcontext())
        with active_adapter(self.chooser_model, self.chooser_name), inject:
            yield last_logits(self.chooser_model, b.chooser_ids, b.chooser_mask)

    def arguer_again(self):
        return backward.arguer_hooks(self.arguer_model, self.arguer_name, self.batch.arguer_spans,
                                     self.host.arguer_mask, self.s.spec)


def forward(model, batch: Batch, s: StepSettings):
    """Loss per row, P1, P2, and the capture (None for text-only). No backward."""
    return backward.forward(ReferencePasses(model, batch, s), batch.labels, s)


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float):
    """One sub-batch: forward, then the two-phase backward of `scale * sum(loss)` into .grad.

    Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    Raises ValueError for the adversarial variant, whose objective is `adversarial.py`'s.
    """
    if s.variant == "adversarial":
        raise ValueError("the adversarial variant trains with steps.adversarial.adversarial_forward_backward "
                         "(steps.forward_backward picks it)")
    out = backward.two_phase(model, ReferencePasses(model, batch, s), batch.labels, s, scale)
    return out.loss, out.p1, out.p2
