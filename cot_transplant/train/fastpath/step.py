"""The fast path's step: when it is exact, its two passes, and its forward and two-phase backward.

Devices: the index plans are built on the host from the batch as collated (`plans`) and moved once to
each pass's model; the passes then create nothing on another device and read nothing back, except the
finite-loss check (`train.step.finite`).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from cot_transplant.train import state_cache
from cot_transplant.train.adapters import adapter_params, role_model, roles, trainable
from cot_transplant.train.batches import Batch
from cot_transplant.train.fastpath.attention import (ATTENTION, CHUNKED, ExtraKV, attention_function,
                                                     attention_mask_4d, attention_on, implementation)
from cot_transplant.train.fastpath.dropout import uniform_lora_dropout
from cot_transplant.train.fastpath.layers import arguer_to_last_kv, body, chooser_last_logits
from cot_transplant.train.fastpath.plan import (ArguerPack, ChooserPlan, Chunk, attention_chunks, pack_arguer,
                                                plan_chooser)
from cot_transplant.train.step import (StepSettings, arguer_backward, finite, host_copy, leaves, loss_and_probs,
                                       model_device)
from cot_transplant.transplant import SpanStates, active_adapter, backward_to_states, capture_kv
from cot_transplant.transplant.arch import decoder_layers, model_type

FAMILIES = ("llama", "mistral", "qwen2")  # the attention code this path reproduces (RoPE on k_proj outputs)
IMPLEMENTATIONS = ("eager", "sdpa")  # the ones that take a custom 4D mask


# --- when it applies ------------------------------------------------------------------------------------


def _config(model):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _sliding_window(model) -> int | None:
    config = _config(model)
    types = getattr(config, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None
    return getattr(config, "sliding_window", None)


def blocker(model, s: StepSettings, batch: Batch | None = None) -> str | None:
    """Why the fast path cannot run this step exactly (a short reason), or None when it can."""
    if not s.transplants:
        return "text-only: no transplant, nothing to skip"
    if s.spec.site != "kv":
        return f"transplant.site={s.spec.site}: the chooser's own K or V is still read at the candidate positions"
    for name in dict.fromkeys(roles(s.variant)):
        m = role_model(model, name)
        kind, impl = model_type(m), implementation(m)
        if kind not in FAMILIES:
            return f"model type {kind!r} (supported: {', '.join(FAMILIES)})"
        if impl not in IMPLEMENTATIONS:
            return f"attn_implementation={impl} takes no custom mask (use {' or '.join(IMPLEMENTATIONS)})"
        if s.spec.layers is not None and set(s.spec.layers) != set(range(len(decoder_layers(m)[1]))):
            return "transplant.layers: the untransplanted layers still read the candidate positions"
        window = _sliding_window(m)
        if window is not None and batch is not None and max(batch.arguer_ids.shape[1],
                                                            batch.chooser_ids.shape[1]) > window:
            return f"a sequence is longer than the sliding window ({window} tokens)"
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
    return [c.to(device) for c in attention_chunks(allowed, s.fast_block, s.fast_gap)] if s.fast_block else None


def plans(model, host: Batch, s: StepSettings) -> Plans:
    """The plans of `host` (a batch on the host) on the devices of the arguer and chooser models of `model`."""
    arguer_name, chooser_name = roles(s.variant)
    arguer_device = model_device(role_model(model, arguer_name))
    chooser_device = model_device(role_model(model, chooser_name))
    pack, plan = pack_arguer(host), plan_chooser(host)
    return Plans(pack.to(arguer_device), pack.mask, _blocks(pack.allowed, s, arguer_device),
                 plan.to(chooser_device), _blocks(plan.allowed, s, chooser_device))


# --- the two passes -------------------------------------------------------------------------------------


def arguer_pass(model, p: Plans, s: StepSettings):
    """Run the packed arguer rows with the arguer adapter; return the capture (K/V not detached).

    Entries come out in the reference's order (row 0 cand 1, row 0 cand 2, ...).
    """
    arguer_name = roles(s.variant)[0]
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


def arguer_states(model, host: Batch, p: Plans, s: StepSettings):
    """The arguer pass's capture, or the cached states (`s.state_cache`) where they cannot have changed.

    The cache keys rows by the host batch's tokens; states it serves move to the arguer's device.
    """
    cache, name = s.state_cache, roles(s.variant)[0]
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
    return attention_on(model, CHUNKED) if s.fast_block else nullcontext()


def chooser_logits(model, p: Plans, kv: SpanStates, impl: str) -> torch.Tensor:
    """Last-position logits (B, V) of the kept chooser tokens with `kv` as extra keys/values.

    Run it inside `attention_on(model, ATTENTION)` (which yields `impl`), with the chooser adapter active.
    """
    plan = p.chooser
    dtype = _compute_dtype(model)
    rotary = body(model).rotary_emb
    # One rotary call over the full positions: what the reference's rotation of these keys used.
    cos, sin = rotary(torch.empty(0, dtype=dtype, device=plan.positions.device), plan.positions)  # (B, Tc, hd)
    rows, cols = plan.extra_rows, plan.extra_cols
    extra = ExtraKV.build(kv, plan, cos[rows, cols], sin[rows, cols], model, attention_function(model, impl),
                          p.chooser_chunks)
    return chooser_last_logits(model, plan.ids, attention_mask_4d(plan.allowed, impl, dtype),
                               attention_mask_4d(plan.allowed[:, -1:], impl, dtype), plan.position_ids, extra)


# --- the step -------------------------------------------------------------------------------------------


def forward(model, batch: Batch, s: StepSettings):
    """As `train.step.forward`: loss per row, P1, P2, and the capture (its entries in the reference's order)."""
    host = host_copy(batch)
    p = plans(model, host, s)
    chooser_name = roles(s.variant)[1]
    chooser_model = role_model(model, chooser_name)
    with uniform_lora_dropout(model):
        cap = arguer_states(model, host, p, s)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, p, cap.kv, impl)
    loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
    return loss, p1, p2, cap


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float):
    """As `train.step.train_forward_backward`: forward, then the two-phase backward of `scale * sum(loss)` into .grad.

    Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    """
    arguer_name, chooser_name = roles(s.variant)
    arguer_model, chooser_model = role_model(model, arguer_name), role_model(model, chooser_name)
    host = host_copy(batch)
    p = plans(model, host, s)
    chooser = [param for _, param in adapter_params(chooser_model, chooser_name)]
    # The dropout swap spans the backward: a checkpointed layer recomputes with the same modules.
    with uniform_lora_dropout(model):
        kv = arguer_states(model, host, p, s).kv
        leaf = leaves(kv)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, p, leaf, impl)
            loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
            total = loss.sum() * scale
            if not finite(loss):  # a loss scale may overflow `total`: the scaler sees that
                return loss.detach(), p1, p2
            # Inside the block: a checkpointed chooser layer recomputes through the same attention.
            kv_grads = backward_to_states(total, leaf, chooser)
        with arguer_attention(arguer_model, s):  # a checkpointed arguer layer recomputes through the same attention
            arguer_backward(arguer_model, arguer_name, p.pack.spans, p.pack_mask, s.spec, kv, kv_grads)
    return loss.detach(), p1, p2
