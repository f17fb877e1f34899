"""The fast path's step: when it is exact, its two passes, and its forward and two-phase backward."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch

from cot_transplant.train import state_cache
from cot_transplant.train.adapters import adapter_params, role_model, roles, trainable
from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.train.fastpath.attention import (ATTENTION, CHUNKED, ExtraKV, attention_function,
                                                     attention_mask_4d, attention_on, implementation)
from cot_transplant.train.fastpath.dropout import uniform_lora_dropout
from cot_transplant.train.fastpath.layers import arguer_to_last_kv, body, chooser_last_logits
from cot_transplant.train.fastpath.plan import ArguerPack, ChooserPlan, attention_chunks, pack_arguer, plan_chooser
from cot_transplant.train.step import StepSettings, arguer_backward, leaves, loss_and_probs
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


# --- the two passes -------------------------------------------------------------------------------------


def arguer_pass(model, pack: ArguerPack, s: StepSettings):
    """Run the packed arguer rows with the arguer adapter; return the capture (K/V not detached).

    Entries come out in the reference's order (row 0 cand 1, row 0 cand 2, ...).
    """
    arguer_name = roles(s.variant)[0]
    model = role_model(model, arguer_name)
    grad = arguer_name in trainable(s.variant) and torch.is_grad_enabled()
    mask = attention_mask_4d(pack.allowed, implementation(model), _compute_dtype(model))
    extra = {"attention_chunks": attention_chunks(pack.allowed, s.fast_block, s.fast_gap)} if s.fast_block else {}
    with active_adapter(model, arguer_name), torch.set_grad_enabled(grad), arguer_attention(model, s):
        with capture_kv(model, pack.spans, attention_mask=pack.mask, spec=s.spec) as cap:
            arguer_to_last_kv(model, pack.ids, mask, pack.position_ids, **extra)  # stops at the last K/V
    return cap


@dataclass(frozen=True)
class Cached:
    """States served by the state cache, in a capture's place (`.kv`)."""

    kv: SpanStates


def arguer_states(model, batch: Batch, pack: ArguerPack, s: StepSettings):
    """The arguer pass's capture, or the cached states (`s.state_cache`) where they cannot have changed."""
    cache, name = s.state_cache, roles(s.variant)[0]
    if cache is None or not state_cache.applies(model, s.variant):
        return arguer_pass(model, pack, s)
    hit = cache.lookup(model, name, batch, s.spec)
    if hit is not None:
        return Cached(hit)
    cap = arguer_pass(model, pack, s)
    cache.store(batch, cap.kv)
    return cap


def arguer_attention(model, s: StepSettings):
    """The arguer's attention for a block: block by block (`chunked_attention`), or the model's own."""
    return attention_on(model, CHUNKED) if s.fast_block else nullcontext()


def chooser_logits(model, plan: ChooserPlan, full_positions: torch.Tensor, kv: SpanStates, impl: str,
                   s: StepSettings) -> torch.Tensor:
    """Last-position logits (B, V) of the kept chooser tokens with `kv` as extra keys/values.

    Run it inside `attention_on(model, ATTENTION)` (which yields `impl`), with the chooser adapter active.
    """
    dtype = _compute_dtype(model)
    rotary = body(model).rotary_emb
    # One rotary call over the full positions: what the reference's rotation of these keys used.
    cos, sin = rotary(torch.empty(0, dtype=dtype, device=full_positions.device), full_positions)  # (B, Tc, hd)
    rows, cols = plan.extra_rows, plan.extra_cols
    extra = ExtraKV.build(kv, plan, cos[rows, cols], sin[rows, cols], model, attention_function(model, impl),
                          attention_chunks(plan.allowed, s.fast_block, s.fast_gap) if s.fast_block else None)
    return chooser_last_logits(model, plan.ids, attention_mask_4d(plan.allowed, impl, dtype),
                               attention_mask_4d(plan.allowed[:, -1:], impl, dtype), plan.position_ids, extra)


# --- the step -------------------------------------------------------------------------------------------


def forward(model, batch: Batch, s: StepSettings):
    """As `train.step.forward`: loss per row, P1, P2, and the capture (its entries in the reference's order)."""
    pack, plan = pack_arguer(batch), plan_chooser(batch)
    chooser_name = roles(s.variant)[1]
    chooser_model = role_model(model, chooser_name)
    with uniform_lora_dropout(model):
        cap = arguer_states(model, batch, pack, s)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, plan, position_ids(batch.chooser_mask), cap.kv, impl, s)
    loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
    return loss, p1, p2, cap


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float):
    """As `train.step.train_forward_backward`: forward, then the two-phase backward of `scale * sum(loss)` into .grad.

    Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    """
    arguer_name, chooser_name = roles(s.variant)
    arguer_model, chooser_model = role_model(model, arguer_name), role_model(model, chooser_name)
    pack, plan = pack_arguer(batch), plan_chooser(batch)
    chooser = [p for _, p in adapter_params(chooser_model, chooser_name)]
    # The dropout swap spans the backward: a checkpointed layer recomputes with the same modules.
    with uniform_lora_dropout(model):
        kv = arguer_states(model, batch, pack, s).kv
        leaf = leaves(kv)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, plan, position_ids(batch.chooser_mask), leaf, impl, s)
            loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
            total = loss.sum() * scale
            if not torch.isfinite(total):
                return loss.detach(), p1, p2
            # Inside the block: a checkpointed chooser layer recomputes through the same attention.
            kv_grads = backward_to_states(total, leaf, chooser)
        with arguer_attention(arguer_model, s):  # a checkpointed arguer layer recomputes through the same attention
            arguer_backward(arguer_model, arguer_name, pack.spans, pack.mask, s.spec, kv, kv_grads)
    return loss.detach(), p1, p2
