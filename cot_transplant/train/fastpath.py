"""The exact fast path (issue 11): the reference step's loss and gradients without its wasted work.

The reference step (`step.py`) computes things no output reads:
- the arguer runs the shared prefix (template + question) once per candidate, and the
  tokens after each argument span (no span token reads them);
- the chooser runs every layer at the candidate positions, although their keys and values
  are overwritten in every layer, so no other position reads their hidden states.

Here (index plans in `fastpath_plan.py`):
- arguer: one packed row per example, [prefix | candidate 1 | candidate 2], the candidates
  at their own positions, with a 4D mask in which each candidate sees the prefix and
  itself, never the other candidate. Gradients reach the shared prefix from both.
- chooser: only the non-candidate tokens run, at their original position ids. In every
  layer the arguer's K/V (k_proj/v_proj outputs, before RoPE) enter the attention as extra
  keys/values, rotated at the candidate positions, under the full sequence's causal pattern
  (an attention function registered in transformers' `AttentionInterface`).
- attention in both passes block by block: each block of 64 queries over only the key ranges
  it sees (`chunked_attention`; one masked call computed every pair of the pattern);
- logits at the last position only, and the two-phase backward of the reference, so it
  stays exact with gradient checkpointing.

It applies when every layer's K and V are transplanted (`transplant.site: kv`, all layers;
any `transplant.fraction`), to Llama, Mistral and Qwen2 with eager or sdpa attention,
within a sliding window if the model has one, for every variant but text-only and
adversarial. Elsewhere the reference runs and a one-line note says why (once per reason).
With LoRA dropout > 0 the shared prefix draws one dropout mask for both candidates (the
reference draws two), and masks come from one float32 uniform per element (`UniformDropout`,
numpy's PCG64 seeded from torch's generator) instead of `bernoulli_`: the same distribution,
not the same random numbers.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from cot_transplant.train.adapters import adapter_params, role_model, roles, trainable
from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.train.fastpath_plan import (ArguerPack, ChooserPlan, Chunk, attention_chunks, pack_arguer,
                                                plan_chooser)
from cot_transplant.train.step import StepSettings, arguer_backward, leaves, loss_and_probs
from cot_transplant.transplant import SpanStates, active_adapter, backward_to_states, capture_kv
from cot_transplant.transplant.arch import decoder_layers, model_type

FAMILIES = ("llama", "mistral", "qwen2")  # the attention code this path reproduces (RoPE on k_proj outputs)
IMPLEMENTATIONS = ("eager", "sdpa")  # the ones that take a custom 4D mask
ATTENTION = "cot_transplant_extra_kv"
CHUNKED = "cot_transplant_chunked"
CHUNK = 64  # queries per attention block (`attention_chunks`); 0: one call of the model's own attention
GAP = 16  # unseen keys between two seen ranges up to which one block's key ranges are merged
_NOTED: set[str] = set()


# --- when it applies ------------------------------------------------------------------------------------


def _config(model):
    return model.get_base_model().config if hasattr(model, "get_base_model") else model.config


def _implementation(model) -> str:
    return _config(model)._attn_implementation or "eager"


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
    if s.variant == "adversarial":
        return "the adversarial step has its own backward"
    if s.spec.site != "kv":
        return f"transplant.site={s.spec.site}: the chooser's own K or V is still read at the candidate positions"
    for name in dict.fromkeys(roles(s.variant)):
        m = role_model(model, name)
        kind, impl = model_type(m), _implementation(m)
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


def applies(model, s: StepSettings, batch: Batch | None = None) -> bool:
    """True when `s.fast_path` is auto and the fast path is exact here; else prints why (once per reason)."""
    if s.fast_path == "off":
        return False
    reason = blocker(model, s, batch)
    if reason is not None and reason not in _NOTED:
        _NOTED.add(reason)
        print(f"cot-transplant: note: fast path off ({reason}); using the reference step", file=sys.stderr,
              flush=True)
    return reason is None


# --- attention over the keys each block of queries sees ------------------------------------------------


def _gather(x: torch.Tensor, row: int, ranges: tuple[tuple[int, int], ...]) -> torch.Tensor:
    parts = [x[row: row + 1, :, s:e] for s, e in ranges]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


class _Pieces(torch.autograd.Function):
    """(B, H, T, hd) -> one (1, H, n, hd) piece per (row, token ranges); backward adds into one gradient buffer.

    Slicing the same tensor once per block would allocate, zero and sum a full-size gradient per
    block in backward (autograd's slice backward); here there is one buffer per call.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, pieces: tuple) -> tuple[torch.Tensor, ...]:
        ctx.pieces, ctx.shape, ctx.dtype = pieces, x.shape, x.dtype
        ctx.set_materialize_grads(False)
        return tuple(_gather(x, row, ranges) for row, ranges in pieces)

    @staticmethod
    def backward(ctx, *grads):
        out = None
        for (row, ranges), grad in zip(ctx.pieces, grads):
            if grad is None:
                continue
            if out is None:
                out = torch.zeros(ctx.shape, dtype=ctx.dtype, device=grad.device)
            at = 0
            for s, e in ranges:
                out[row, :, s:e] += grad[0, :, at: at + e - s]
                at += e - s
        return out, None


def chunked_attention(module, query, key, value, attention_mask, *, attention_chunks: list[Chunk] | None = None,
                      dropout: float = 0.0, scaling: float | None = None, **kwargs):
    """Scaled dot-product attention block by block, each block of queries over only the keys it sees.

    `query` (B, H, Tq, hd), `key`/`value` (B, Hkv, Tk, hd); `attention_chunks` cover every row's
    queries in order (`attention_chunks` in fastpath_plan). `attention_mask` is not read: the
    chunks carry the pattern. Returns ((B, Tq, H, hd), None), as transformers' attention functions.
    """
    if attention_chunks is None:
        raise RuntimeError(f"attention '{CHUNKED}' needs the attention_chunks argument (fast path only)")
    queries = _Pieces.apply(query, tuple((c.row, (c.queries,)) for c in attention_chunks))
    keys = tuple((c.row, c.keys) for c in attention_chunks)
    rows: list[list[torch.Tensor]] = [[] for _ in range(query.shape[0])]
    for c, q, k, v in zip(attention_chunks, queries, _Pieces.apply(key, keys), _Pieces.apply(value, keys)):
        rows[c.row].append(torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=c.allowed, dropout_p=dropout, scale=scaling, enable_gqa=True))
    out = torch.cat([torch.cat(r, dim=2) for r in rows], dim=0)  # (B, H, Tq, hd)
    return out.transpose(1, 2).contiguous(), None


AttentionInterface.register(CHUNKED, chunked_attention)


# --- attention with extra keys/values -------------------------------------------------------------------


@dataclass
class ExtraKV:
    """The transplanted states as every layer's extra keys (rotated) and values, made when that layer's
    attention asks for them: (B, kv_heads, Nc, hd) each.

    Per layer and on demand, not all layers at once: no stacked (layers, ...) copies of megabytes
    each, and each piece is used as soon as it is made. (Step time measured the same either way
    in an A/B here; the per-layer pieces hold less memory at once.)
    """

    states: SpanStates
    index: torch.Tensor  # (B * Nc,) the state token in each slot (`ChooserPlan.state_index`)
    cos: torch.Tensor  # (B, 1, Nc, hd) rotary embedding at each slot's chooser position
    sin: torch.Tensor
    rotate_half: Callable  # the family's own
    attention: Callable  # the model's own attention function (eager or sdpa)
    chunks: list[Chunk] | None = None  # when set, attention runs block by block (`chunked_attention`)

    @classmethod
    def build(cls, states: SpanStates, plan: ChooserPlan, cos: torch.Tensor, sin: torch.Tensor, model,
              attention: Callable, chunks: list[Chunk] | None = None) -> "ExtraKV":
        """`cos`, `sin`: (B, Nc, head_dim) at the slots' chooser positions."""
        attn = decoder_layers(model)[1][0].self_attn
        rotate_half = sys.modules[type(attn).__module__].rotate_half
        return cls(states, plan.state_index, cos[:, None], sin[:, None], rotate_half, attention, chunks)

    def _slots(self, key: str, layer: int) -> torch.Tensor:
        rows, _, slots, head_dim = self.cos.shape
        flat = self.states.tensors[(key, layer)].index_select(0, self.index).to(self.cos.dtype)  # (B * Nc, D)
        return flat.view(rows, slots, -1, head_dim).transpose(1, 2)  # (B, Hkv, Nc, hd)

    def keys(self, layer: int) -> torch.Tensor:
        """Layer `layer`'s extra keys, rotated as apply_rotary_pos_emb rotates keys."""
        k = self._slots("k", layer)
        return k * self.cos + self.rotate_half(k) * self.sin

    def values(self, layer: int) -> torch.Tensor:
        return self._slots("v", layer)


def extra_kv_attention(module, query, key, value, attention_mask, *, transplant_kv: ExtraKV | None = None,
                       **kwargs):
    """The model's attention over [extra keys | own keys]; `attention_mask` is the plan's (B, 1, Tq, Nc + Tq)."""
    if transplant_kv is None:
        raise RuntimeError(f"attention '{ATTENTION}' needs the transplant_kv argument (fast path only)")
    i = module.layer_idx
    key = torch.cat([transplant_kv.keys(i).to(key.dtype), key], dim=2)  # (B, Hkv, Nc + Tq, hd)
    value = torch.cat([transplant_kv.values(i).to(value.dtype), value], dim=2)
    if transplant_kv.chunks is not None:
        return chunked_attention(module, query, key, value, attention_mask, attention_chunks=transplant_kv.chunks,
                                 **kwargs)
    return transplant_kv.attention(module, query, key, value, attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, extra_kv_attention)


def _attention_function(model, impl: str) -> Callable:
    if impl == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    attn = decoder_layers(model)[1][0].self_attn
    return sys.modules[type(attn).__module__].eager_attention_forward


@contextmanager
def attention_on(model, name: str) -> Iterator[str]:
    """Route `model`'s attention through the registered function `name` (`ATTENTION` or `CHUNKED`) for the
    block; yields the implementation it had."""
    configs = list({id(layer.self_attn.config): layer.self_attn.config for layer in decoder_layers(model)[1]}.values())
    previous = [(c, c._attn_implementation) for c in configs]
    impl = _implementation(model)
    try:
        for c in configs:
            c._attn_implementation = name
        yield impl
    finally:
        for c, value in previous:
            c._attn_implementation = value


def attention_mask_4d(allowed: torch.Tensor, impl: str, dtype: torch.dtype) -> torch.Tensor:
    """(B, Tq, Tk) bool -> (B, 1, Tq, Tk): bool for sdpa, additive (0 / dtype min) for eager."""
    allowed = allowed[:, None]
    if impl == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed,
                                                                                      torch.finfo(dtype).min)


def _body(model):
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "model", base)


def _compute_dtype(model) -> torch.dtype:
    return model.get_input_embeddings().weight.dtype


# --- LoRA dropout from one uniform draw per element ---------------------------------------------------


def uniform(shape: torch.Size, device: torch.device) -> torch.Tensor:
    """float32 uniforms on [0, 1) in steps of 2^-24, as `torch.rand`; on CPU from numpy's PCG64.

    torch's CPU generator (mt19937, one thread) measured 3.5-5 ns an element here, numpy's PCG64
    1.9: dropout masks took 6-7% of a fast step with `torch.rand`, and the step ran 1.08x faster
    with this. The PCG64 seed is drawn from torch's default generator, so `torch.manual_seed`,
    the RNG state that checkpoints save, and the state that gradient checkpointing restores for
    its recompute all govern the draws, as they govern `torch.rand`'s.
    """
    if device.type != "cpu":
        return torch.rand(shape, device=device)
    seed = int(torch.randint(0, 2 ** 63 - 1, (), dtype=torch.int64))
    draws = np.random.Generator(np.random.PCG64(seed)).random(math.prod(shape), dtype=np.float32)
    return torch.from_numpy(draws).view(shape)


class UniformDropout(torch.nn.Module):
    """Dropout whose mask is `uniform >= p`: one float32 draw per element (`uniform`).

    The same distribution as `nn.Dropout` (up to float32's 2^-24 resolution of p), and cheaper
    on CPU: `bernoulli_` took 0.6-1.2 ms a call on a (1, 230, 576) input, a call that SmolLM2's
    30 layers with four adapted projections make 240 times a step. Not the same random numbers.
    """

    def __init__(self, p: float):
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return x
        # float32 draws whatever x's dtype (a bf16 uniform would round p); in place: 1/(1-p) or 0.
        keep = uniform(x.shape, x.device).ge_(self.p).to(x.dtype).mul_(1.0 / (1.0 - self.p))
        return x * keep


@contextmanager
def uniform_lora_dropout(model) -> Iterator[None]:
    """Swap every LoRA layer's `nn.Dropout` for a `UniformDropout` of the same p for the block, then back."""
    swapped = []
    try:
        for module in model.modules() if model.training else ():  # in eval mode every dropout is off
            dropouts = getattr(module, "lora_dropout", None)
            if not isinstance(dropouts, torch.nn.ModuleDict):
                continue
            for name, old in list(dropouts.items()):
                if type(old) is torch.nn.Dropout and old.p > 0:
                    new = UniformDropout(old.p)
                    new.train(old.training)
                    dropouts[name] = new
                    swapped.append((dropouts, name, old))
        yield
    finally:
        for dropouts, name, old in swapped:
            old.train(dropouts[name].training)
            dropouts[name] = old


# --- the two passes -------------------------------------------------------------------------------------


def arguer_pass(model, pack: ArguerPack, s: StepSettings):
    """Run the packed arguer rows with the arguer adapter; return the capture (K/V not detached).

    Entries come out in the reference's order (row 0 cand 1, row 0 cand 2, ...).
    """
    arguer_name = roles(s.variant)[0]
    model = role_model(model, arguer_name)
    grad = arguer_name in trainable(s.variant) and torch.is_grad_enabled()
    mask = attention_mask_4d(pack.allowed, _implementation(model), _compute_dtype(model))
    extra = {"attention_chunks": attention_chunks(pack.allowed, CHUNK, GAP)} if CHUNK else {}
    with active_adapter(model, arguer_name), torch.set_grad_enabled(grad), arguer_attention(model):
        with capture_kv(model, pack.spans, attention_mask=pack.mask, spec=s.spec) as cap:
            _body(model)(input_ids=pack.ids, attention_mask=mask, position_ids=pack.position_ids, use_cache=False,
                         **extra)
    return cap


def arguer_attention(model):
    """The arguer's attention for a block: block by block (`chunked_attention`), or the model's own."""
    return attention_on(model, CHUNKED) if CHUNK else nullcontext()


def chooser_logits(model, plan: ChooserPlan, full_positions: torch.Tensor, kv: SpanStates, impl: str) -> torch.Tensor:
    """Last-position logits (B, V) of the kept chooser tokens with `kv` as extra keys/values.

    Run it inside `attention_on(model, ATTENTION)` (which yields `impl`), with the chooser adapter active.
    """
    dtype = _compute_dtype(model)
    rotary = _body(model).rotary_emb
    # One rotary call over the full positions: what the reference's rotation of these keys used.
    cos, sin = rotary(torch.empty(0, dtype=dtype, device=full_positions.device), full_positions)  # (B, Tc, hd)
    rows, cols = plan.extra_rows, plan.extra_cols
    extra = ExtraKV.build(kv, plan, cos[rows, cols], sin[rows, cols], model, _attention_function(model, impl),
                          attention_chunks(plan.allowed, CHUNK, GAP) if CHUNK else None)
    out = model(input_ids=plan.ids, attention_mask=attention_mask_4d(plan.allowed, impl, dtype),
                position_ids=plan.position_ids, logits_to_keep=1, use_cache=False, transplant_kv=extra)
    return out.logits[:, -1, :].float()


# --- the step -------------------------------------------------------------------------------------------


def forward(model, batch: Batch, s: StepSettings):
    """As `step.forward`: loss per row, P1, P2, and the capture (its entries in the reference's order)."""
    pack, plan = pack_arguer(batch), plan_chooser(batch)
    chooser_name = roles(s.variant)[1]
    chooser_model = role_model(model, chooser_name)
    with uniform_lora_dropout(model):
        cap = arguer_pass(model, pack, s)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, plan, position_ids(batch.chooser_mask), cap.kv, impl)
    loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
    return loss, p1, p2, cap


def train_forward_backward(model, batch: Batch, s: StepSettings, scale: float, extra: dict | None = None):
    """As `step.train_forward_backward`: forward, then the two-phase backward of `scale * sum(loss)` into .grad.

    Returns (per-row loss, P1, P2) detached; a non-finite loss leaves .grad untouched.
    `extra` is accepted for the signature (only the adversarial step fills it; it runs the reference).
    """
    arguer_name, chooser_name = roles(s.variant)
    arguer_model, chooser_model = role_model(model, arguer_name), role_model(model, chooser_name)
    pack, plan = pack_arguer(batch), plan_chooser(batch)
    chooser = [p for _, p in adapter_params(chooser_model, chooser_name)]
    # The dropout swap spans the backward: a checkpointed layer recomputes with the same modules.
    with uniform_lora_dropout(model):
        kv = arguer_pass(arguer_model, pack, s).kv
        leaf = leaves(kv)
        with active_adapter(chooser_model, chooser_name), attention_on(chooser_model, ATTENTION) as impl:
            logits = chooser_logits(chooser_model, plan, position_ids(batch.chooser_mask), leaf, impl)
            loss, p1, p2 = loss_and_probs(logits, batch.labels, s)
            total = loss.sum() * scale
            if not torch.isfinite(total):
                return loss.detach(), p1, p2
            # Inside the block: a checkpointed chooser layer recomputes through the same attention.
            kv_grads = backward_to_states(total, leaf, chooser)
        with arguer_attention(arguer_model):  # a checkpointed arguer layer recomputes through the same attention
            arguer_backward(arguer_model, arguer_name, pack.spans, pack.mask, s.spec, kv, kv_grads)
    return loss.detach(), p1, p2
