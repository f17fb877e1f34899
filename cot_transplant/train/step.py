"""The reference step: arguer capture -> chooser inject -> last-position logits -> loss -> backward.

Backward runs in two phases so that it stays exact with gradient checkpointing on one
base with two adapters (../shared/DESIGN.md): (1) with the chooser active and its
inject hooks alive, gradients of the loss w.r.t. the chooser's parameters and the
captured K/V; (2) with the arguer active and its capture hooks alive, backward from
the captured K/V. Without checkpointing it gives the same gradients as one backward.
`model` is one peft model with both adapters, or a `ModelPair` of two bases (one
adapter each); `role_model` picks the model that plays each role. Which step trains a
sub-batch (this one, the fast path or the adversarial step) is `select.py`'s choice.

Devices: a step takes a batch as collated, on the host or already on the model's device. It runs the
passes on the model's device (`on_model`) and reads span checks from the host copy, so no step reads a
value back from the device except the finite-loss check (`finite`); a meta model (`cot-transplant plan`'s
shape trace) passes through every step without a value read.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import torch

from cot_transplant.train.adapters import adapter_params, role_model, roles, trainable
from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.transplant import (SpanStates, TransplantSpec, active_adapter, backward_from_states,
                                       backward_to_states, capture_kv, inject_kv)


_NO_STATES = SpanStates(TransplantSpec(), (), {})


@dataclass(frozen=True)
class StepSettings:
    variant: str
    choice_ids: tuple[int, int]  # token ids of "1" and "2"
    spec: TransplantSpec
    choice_only: bool = False  # loss over the two choice logits instead of the full vocabulary
    fast_path: str = "off"  # auto: `select.py` runs the fast path where it is exact (train.fast_path); off: this step
    fast_block: int = 64  # fast path: queries per attention block (train.fast_path_block); 0: one call
    fast_gap: int = 16  # fast path: unseen keys up to which a block's key ranges merge (train.fast_path_gap)
    # Fast path: a `state_cache.StateCache` for the arguer's states (train.arguer_cache_gib); state, not a setting.
    state_cache: object = field(default=None, compare=False)

    @property
    def transplants(self) -> bool:
        return self.variant != "text-only"


def model_device(model) -> torch.device:
    """Where `model` (plain or peft-wrapped) computes: the device of its input embeddings."""
    return model.get_input_embeddings().weight.device


def host_copy(batch: Batch) -> Batch:
    """`batch` on the host: the copy it was collated from where it kept one (`Batch.host`: no read back from
    the device), itself when it is on the host, else one copy back (a sync on an accelerator).

    A meta batch made without a host copy has no values: it is its own host copy (span checks then check
    bounds only).
    """
    if batch.host is not None:
        return batch.host
    return batch if batch.arguer_ids.device.type in ("cpu", "meta") else batch.to("cpu")


def on_model(batch: Batch, model, host: Batch | None = None) -> tuple[Batch, Batch]:
    """(`batch` on the host, `batch` on `model`'s device): span checks read the first, the passes run the second.

    `host`: the host copy where the caller has one (else `host_copy`).
    """
    return host_copy(batch) if host is None else host, batch.to(model_device(model))


def finite(t: torch.Tensor) -> bool:
    """Whether every value of `t` is finite: a host read (a sync on an accelerator) that decides the backward.

    A meta tensor holds no values (a shape trace): it counts as finite, so the trace runs the backward too.
    """
    return t.device.type == "meta" or bool(torch.isfinite(t).all())


def leaves(kv: SpanStates) -> SpanStates:
    """`kv` cut from the arguer's graph, still taking gradients: phase 1 of the backward stops there.

    Without the cut, phase 1 runs on into the arguer's graph when one adapter plays both roles
    (`shared`: its parameters are reached through the states) and frees it before phase 2.
    """
    return SpanStates(kv.spec, kv.lengths, {k: t.detach().requires_grad_(t.requires_grad)
                                            for k, t in kv.tensors.items()})


def _last_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Logits at the last position (every row's last real token under left padding): (B, V)."""
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                use_cache=False)
    return out.logits[:, -1, :].float()


def _arguer_pass(model, batch: Batch, s: StepSettings, host: Batch | None = None):
    """Run the arguer over both candidates of every row; return the capture (K/V not detached).

    `host`: the batch's host copy where the caller has it (`on_model`).
    """
    arguer_name = roles(s.variant)[0]
    model = role_model(model, arguer_name)
    host, batch = on_model(batch, model, host)
    grad = arguer_name in trainable(s.variant) and torch.is_grad_enabled()
    with active_adapter(model, arguer_name), torch.set_grad_enabled(grad):
        with capture_kv(model, batch.arguer_spans, attention_mask=host.arguer_mask, spec=s.spec) as cap:
            base = model.get_base_model()
            # Only the layers' K/V are needed: run the decoder body, skip the LM head.
            inner = getattr(base, "model", base)
            inner(input_ids=batch.arguer_ids, attention_mask=batch.arguer_mask,
                  position_ids=position_ids(batch.arguer_mask), use_cache=False)
    return cap


def chooser_logits(model, batch: Batch, s: StepSettings, kv=None, host: Batch | None = None) -> torch.Tensor:
    """The chooser's last-position logits (B, V), with `kv` injected unless text-only."""
    chooser_name = roles(s.variant)[1]
    model = role_model(model, chooser_name)
    host, batch = on_model(batch, model, host)
    with active_adapter(model, chooser_name):
        if kv is None:
            return _last_logits(model, batch.chooser_ids, batch.chooser_mask)
        with inject_kv(model, batch.chooser_spans, kv, attention_mask=host.chooser_mask, spec=s.spec):
            return _last_logits(model, batch.chooser_ids, batch.chooser_mask)


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


def forward(model, batch: Batch, s: StepSettings):
    """Loss per row, P1, P2, and the capture (None for text-only). No backward."""
    host = host_copy(batch)
    cap = _arguer_pass(model, batch, s, host) if s.transplants else None
    logits = chooser_logits(model, batch, s, cap.kv if cap is not None else None, host)
    loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
    return loss, p1, p2, cap


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float):
    """One sub-batch: forward, then the two-phase backward of `scale * sum(loss)` into .grad.

    Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    Raises ValueError for the adversarial variant, whose objective is `adversarial.py`'s.
    """
    if s.variant == "adversarial":
        raise ValueError("the adversarial variant trains with adversarial.adversarial_forward_backward "
                         "(select.forward_backward picks it)")
    arguer_name, chooser_name = roles(s.variant)
    arguer_model, model = role_model(model, arguer_name), role_model(model, chooser_name)
    host, batch = on_model(batch, model)
    cap = _arguer_pass(arguer_model, batch, s, host) if s.transplants else None
    kv = cap.kv if cap is not None else None
    leaf = leaves(kv) if kv is not None else None
    chooser = [p for _, p in adapter_params(model, chooser_name)]
    with active_adapter(model, chooser_name):
        ctx = (inject_kv(model, batch.chooser_spans, leaf, attention_mask=host.chooser_mask, spec=s.spec)
               if kv is not None else contextlib.nullcontext())
        with ctx:
            logits = _last_logits(model, batch.chooser_ids, batch.chooser_mask)
            loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
            total = loss.sum() * scale
            if not finite(loss):  # a loss scale may overflow `total`: the scaler sees that
                return loss.detach(), p1, p2
            if kv is None:
                backward_to_states(total, _NO_STATES, chooser)
                return loss.detach(), p1, p2
            kv_grads = backward_to_states(total, leaf, chooser)
    arguer_backward(arguer_model, arguer_name, batch.arguer_spans, host.arguer_mask, s.spec, kv, kv_grads)
    return loss.detach(), p1, p2


def arguer_backward(model, name: str, spans, mask, spec, kv, kv_grads) -> None:
    """Phase 2: backpropagate the captured states' gradients into the arguer adapter `name`.

    `mask`: the arguer rows' (B, T) attention mask, read only to check the spans (give the host copy).
    """
    with active_adapter(model, name):
        # Capture hooks alive again so a checkpointed arguer layer recomputes the same graph.
        with capture_kv(model, spans, attention_mask=mask, spec=spec):
            backward_from_states(kv, kv_grads)
