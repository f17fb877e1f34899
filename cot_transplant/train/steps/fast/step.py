"""The fast path's step: when it is exact (`blocker`), its two passes (`FastPasses`), and its forward and
training step, which hand those passes to `backward.py`'s forward and two-phase backward.

Devices: the index plans are built on the host from the batch as collated (`plans`) and moved once to
each pass's model; the passes then create nothing on another device and read nothing back, except the
finite-loss check (`steps.devices.finite`).
"""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Iterator

import torch

from cot_transplant.train.adapters import role_adapters, role_model, trainable
from cot_transplant.train.batches import Batch
from cot_transplant.train.steps import backward
from cot_transplant.train.steps.devices import host_copy, model_device
from cot_transplant.train.steps.fast import state_cache
from cot_transplant.train.steps.fast.attention import (ATTENTION, CHUNKED, ExtraKV, attention_function,
                                                       attention_mask_4d, attention_on, implementation)
from cot_transplant.train.steps.fast.dropout import uniform_lora_dropout
from cot_transplant.train.steps.fast.layers import arguer_to_last_kv, chooser_last_logits
from cot_transplant.train.steps.fast.plan import (ArguerPack, ChooserPlan, Chunk, attention_chunks, pack_arguer,
                                                  plan_chooser)
from cot_transplant.train.steps.settings import StepSettings
from cot_transplant.transplant import SpanStates, active_adapter, capture_kv
from cot_transplant.transplant.arch import decoder_body, decoder_layers, families, model_type, supports, unwrap

IMPLEMENTATIONS = ("eager", "sdpa")  # the ones that take a custom 4D mask


# --- when it applies ------------------------------------------------------------------------------------


def sliding_window(model) -> int | None:
    """The model's sliding attention window in tokens, or None when no layer slides."""
    config = unwrap(model).config
    types = getattr(config, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return getattr(config, "sliding_window", None)


def blocker(model, s: StepSettings) -> str | None:
    """Why the fast path cannot run this step exactly (a short reason), or None when it can.

    A sliding window is not a blocker: `choice.choose` records it, and a batch longer than it takes the
    reference step (`choice.path_for`).
    """
    if not s.transplants:
        return "text-only: no transplant, nothing to skip"
    if s.spec.site != "kv":
        return f"transplant.site={s.spec.site}: the chooser's own K or V is still read at the candidate positions"
    for name in dict.fromkeys(role_adapters(s.variant)):
        m = role_model(model, name)
        impl = implementation(m)
        if not supports(m, "fast_path"):
            return f"model type {model_type(m)!r} (supported: {', '.join(families('fast_path'))})"
        if impl not in IMPLEMENTATIONS:
            return f"attn_implementation={impl} takes no custom mask (use {' or '.join(IMPLEMENTATIONS)})"
        if s.spec.layers is not None and set(s.spec.layers) != set(range(len(decoder_layers(m)[1]))):
            return "transplant.layers: the untransplanted layers still read the candidate positions"
    return None


def _compute_dtype(model) -> torch.dtype:
    return model.get_input_embeddings().weight.dtype


# --- the index plans -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plans:
    """One batch's index plans, built on the host and moved once to the device of the model that reads them."""

    pack: ArguerPack  # on the arguer's device
    pack_mask: torch.Tensor  # (B, T) `pack.mask` on the host: the captures check their spans against it
    arguer_chunks: list[Chunk] | None  # the arguer's attention blocks (train.fast_path_block; None: one call)
    chooser: ChooserPlan  # on the chooser's device
    chooser_chunks: list[Chunk] | None


def _blocks(allowed: torch.Tensor, s: StepSettings, device: torch.device) -> list[Chunk] | None:
    """`attention_chunks` of a host pattern, moved to `device`; None when attention runs in one call."""
    if not s.fast_path_block:
        return None
    return [c.to(device) for c in attention_chunks(allowed, s.fast_path_block, s.fast_path_gap)]


def plans(model, host: Batch, s: StepSettings) -> Plans:
    """The plans of `host` (a batch on the host) on the devices of the arguer and chooser models of `model`."""
    arguer_name, chooser_name = role_adapters(s.variant)
    arguer_device = model_device(role_model(model, arguer_name))
    chooser_device = model_device(role_model(model, chooser_name))
    pack, plan = pack_arguer(host), (plan_chooser(host, append=True) if s.mode == "append" else plan_chooser(host))
    return Plans(pack.to(arguer_device), pack.mask, _blocks(pack.allowed, s, arguer_device),
                 plan.to(chooser_device), _blocks(plan.allowed, s, chooser_device))


# --- the two passes -------------------------------------------------------------------------------------


def arguer_pass(model, p: Plans, s: StepSettings):
    """Run the packed arguer rows with the arguer adapter; return the capture (K/V not detached).

    Entries come out in the reference's order (row 0 cand 1, row 0 cand 2, ...).
    """
    arguer_name = role_adapters(s.variant)[0]
    model = role_model(model, arguer_name)
    pack = p.pack
    grad = arguer_name in trainable(s.variant) and torch.is_grad_enabled()
    mask = attention_mask_4d(pack.allowed, implementation(model), _compute_dtype(model))
    extra = {"attention_chunks": p.arguer_chunks} if p.arguer_chunks is not None else {}
    with active_adapter(model, arguer_name), torch.set_grad_enabled(grad), arguer_attention(model, s):
        with capture_kv(model, pack.spans, attention_mask=p.pack_mask, spec=s.spec) as cap:
            arguer_to_last_kv(model, pack.ids, mask, pack.position_ids, **extra)  # stops at the last K/V
    return cap


@dataclass(frozen=True)
class Cached:
    """States served by the state cache, in a capture's place (`.kv`)."""

    kv: SpanStates


def arguer_states(model, host: Batch, p: Plans, s: StepSettings, cache: state_cache.StateCache | None = None):
    """The arguer pass's capture, or the states `cache` (the session's) holds where they cannot have changed.

    The cache keys rows by the host batch's tokens; states it serves move to the arguer's device.
    """
    name = role_adapters(s.variant)[0]
    if cache is None or not state_cache.applies(model, s.variant):
        return arguer_pass(model, p, s)
    hit = cache.lookup(model, name, host, s.spec)
    if hit is not None:
        device = p.pack.ids.device
        return Cached(SpanStates(hit.spec, hit.lengths, {k: t.to(device) for k, t in hit.tensors.items()}))
    cap = arguer_pass(model, p, s)
    cache.store(host, cap.kv)
    return cap


def arguer_attention(model, s: StepSettings):
    """The arguer's attention for a block: block by block (`chunked_attention`), or the model's own."""
    return attention_on(model, CHUNKED) if s.fast_path_block else nullcontext()


def chooser_logits(model, p: Plans, kv: SpanStates, impl: str) -> torch.Tensor:
    """Last-position logits (B, V) of the kept chooser tokens with `kv` as extra keys/values.

    Run it inside `attention_on(model, ATTENTION)` (which yields `impl`), with the chooser adapter active.
    """
    plan = p.chooser
    dtype = _compute_dtype(model)
    rotary = decoder_body(model).rotary_emb
    # One rotary call over the full positions: what the reference's rotation of these keys used.
    cos, sin = rotary(torch.empty(0, dtype=dtype, device=plan.positions.device), plan.positions)  # (B, Tc, hd)
    rows, cols = plan.extra_rows, plan.extra_cols
    extra = ExtraKV.build(kv, plan, cos[rows, cols], sin[rows, cols], model, attention_function(model, impl),
                          p.chooser_chunks)
    return chooser_last_logits(model, plan.ids, attention_mask_4d(plan.allowed, impl, dtype),
                               attention_mask_4d(plan.allowed[:, -1:], impl, dtype), plan.position_ids, extra)


# --- the step -------------------------------------------------------------------------------------------


class FastPasses:
    """The fast path's passes over `batch` (`backward.Passes`), planned once on its host copy.

    Run them inside `uniform_lora_dropout`: across the backward too, so a checkpointed layer recomputes
    with the same dropout modules.
    """

    def __init__(self, model, batch: Batch, s: StepSettings, cache: state_cache.StateCache | None = None):
        self.model, self.s, self.cache = model, s, cache
        self.arguer_name, self.chooser_name = role_adapters(s.variant)
        self.arguer_model = role_model(model, self.arguer_name)
        self.chooser_model = role_model(model, self.chooser_name)
        self.host = host_copy(batch)
        self.plans = plans(model, self.host, s)

    def arguer(self):
        return arguer_states(self.model, self.host, self.plans, self.s, self.cache)

    @contextmanager
    def chooser(self, states: SpanStates) -> Iterator[torch.Tensor]:
        # The block spans phase 1: a checkpointed chooser layer recomputes through the same attention.
        with active_adapter(self.chooser_model, self.chooser_name), \
                attention_on(self.chooser_model, ATTENTION) as impl:
            yield chooser_logits(self.chooser_model, self.plans, states, impl)

    @contextmanager
    def arguer_again(self) -> Iterator[None]:
        # A checkpointed arguer layer recomputes through the same attention, with the capture hooks alive.
        with arguer_attention(self.arguer_model, self.s), \
                backward.arguer_hooks(self.arguer_model, self.arguer_name, self.plans.pack.spans,
                                      self.plans.pack_mask, self.s.spec):
            yield


def forward(model, batch: Batch, s: StepSettings, cache: state_cache.StateCache | None = None):
    """As `reference.forward`: loss per row, P1, P2, and the capture (its entries in the reference's order).

    `cache`: the session's arguer state cache, or None.
    """
    passes = FastPasses(model, batch, s, cache)
    with uniform_lora_dropout(model):
        return backward.forward(passes, batch.labels, s)


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float,
                           cache: state_cache.StateCache | None = None):
    """As `reference.train_forward_backward`: forward, then the two-phase backward of `scale * sum(loss)` into
    .grad. Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    """
    passes = FastPasses(model, batch, s, cache)
    with uniform_lora_dropout(model):  # spans the backward: a checkpointed layer recomputes with the same modules
        out = backward.two_phase(model, passes, batch.labels, s, scale)
    return out.loss, out.p1, out.p2
