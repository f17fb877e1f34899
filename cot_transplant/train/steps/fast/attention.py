"""The fast path's attention: blocks of queries over only the keys they see, and extra (transplanted) keys/values.

Both are attention functions that `register_attention` registers in transformers' `AttentionInterface`
(nothing is registered at import); `attention_on` registers them, then routes a model's layers through
one of them for a block and puts the model's own attention back on leaving it.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from transformers import AttentionInterface
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from cot_transplant.train.steps.fast.plan import ChooserPlan, Chunk
from cot_transplant.transplant import SpanStates
from cot_transplant.transplant.arch import decoder_layers, unwrap

ATTENTION = "cot_transplant_extra_kv"
CHUNKED = "cot_transplant_chunked"


def implementation(model) -> str:
    """The model's attention implementation (eager unless its config names one)."""
    return unwrap(model).config._attn_implementation or "eager"


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
    queries in order (`plan.attention_chunks`). `attention_mask` is not read: the
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
    # The layer's own keys (rotated) and values of earlier tokens, after the transplanted ones: (B, Hkv, n, hd)
    # each. Set for a chooser's last layer that runs its final query alone (`layers.chooser_last_logits`).
    tail: tuple[torch.Tensor, torch.Tensor] | None = None

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
        k = k * self.cos + self.rotate_half(k) * self.sin
        return k if self.tail is None else torch.cat([k, self.tail[0].to(k.dtype)], dim=2)

    def values(self, layer: int) -> torch.Tensor:
        v = self._slots("v", layer)
        return v if self.tail is None else torch.cat([v, self.tail[1].to(v.dtype)], dim=2)


def extra_kv_attention(module, query, key, value, attention_mask, *, transplant_kv: ExtraKV | None = None,
                       **kwargs):
    """The model's attention over [extra keys | own keys]; `attention_mask` is (B, 1, Tq, extra + Tq): the plan's,
    or its last query's row for a last layer that runs that query alone (extra keys then include `tail`)."""
    if transplant_kv is None:
        raise RuntimeError(f"attention '{ATTENTION}' needs the transplant_kv argument (fast path only)")
    i = module.layer_idx
    key = torch.cat([transplant_kv.keys(i).to(key.dtype), key], dim=2)  # (B, Hkv, Nc + Tq, hd)
    value = torch.cat([transplant_kv.values(i).to(value.dtype), value], dim=2)
    if transplant_kv.chunks is not None:
        return chunked_attention(module, query, key, value, attention_mask, attention_chunks=transplant_kv.chunks,
                                 **kwargs)
    return transplant_kv.attention(module, query, key, value, attention_mask, **kwargs)


def register_attention() -> None:
    """Register `chunked_attention` as `CHUNKED` and `extra_kv_attention` as `ATTENTION` in transformers'
    `AttentionInterface` (a process-wide table); a name already holding our function is left as it is."""
    for name, function in ((CHUNKED, chunked_attention), (ATTENTION, extra_kv_attention)):
        if ALL_ATTENTION_FUNCTIONS.get(name) is not function:
            AttentionInterface.register(name, function)


def attention_function(model, impl: str) -> Callable:
    """The model's own attention function for `impl` (eager or sdpa)."""
    if impl == "sdpa":
        return ALL_ATTENTION_FUNCTIONS["sdpa"]
    attn = decoder_layers(model)[1][0].self_attn
    return sys.modules[type(attn).__module__].eager_attention_forward


@contextmanager
def attention_on(model, name: str) -> Iterator[str]:
    """Route `model`'s attention through our function `name` (`ATTENTION` or `CHUNKED`) for the block (the
    configs' `_attn_implementation` flipped, and put back on leaving it, also on an exception); yields the
    implementation it had."""
    register_attention()
    configs = list({id(layer.self_attn.config): layer.self_attn.config for layer in decoder_layers(model)[1]}.values())
    previous = [(c, c._attn_implementation) for c in configs]
    impl = implementation(model)
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


