"""The fast path's passes run layer by layer, with the work at the two ends that the step never reads left out.

Llama, Mistral and Qwen2 bodies are embed -> rotary -> decoder layers -> norm; these functions call the
same modules in that order (so LoRA, hooks and gradient checkpointing act as in the model's own forward)
and stop where the step's reads end:

- the arguer: its states are the K/V projections' outputs, so its last layer runs only its input norm and
  K/V projections (no attention, no MLP, no final norm);
- the chooser: only the final position's logits are read, so its last layer runs attention and MLP for that
  query alone, the earlier tokens' keys and values of that layer (their norm and K/V projections, rotated as
  the layer rotates them) entering its attention as extra keys after the transplanted ones.

Both leave every value the step reads as the full passes compute it (up to float rounding).
"""

from __future__ import annotations

import dataclasses

import torch

from cot_transplant.transplant.arch import decoder_body, unwrap


def _layers(b) -> list:
    return list(b.layers[: b.config.num_hidden_layers])


def _run(layers, hidden: torch.Tensor, mask, position_ids: torch.Tensor, rotary, **kwargs) -> torch.Tensor:
    for layer in layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=position_ids, position_embeddings=rotary,
                       use_cache=False, **kwargs)
    return hidden


def arguer_to_last_kv(model, ids: torch.Tensor, mask, position_ids: torch.Tensor, **kwargs) -> None:
    """Run the arguer body up to its last layer's K/V projections (a `capture` block records them).

    `mask` is the 4D mask the layers' attention reads; `kwargs` go to every layer's attention.
    """
    b = decoder_body(model)
    layers = _layers(b)
    hidden = b.embed_tokens(ids)
    rotary = b.rotary_emb(hidden, position_ids)
    hidden = _run(layers[:-1], hidden, mask, position_ids, rotary, **kwargs)
    last = layers[-1]
    x = last.input_layernorm(hidden)
    last.self_attn.k_proj(x)
    last.self_attn.v_proj(x)


def _tail_kv(layer, hidden: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
             rotate_half) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer `layer`'s keys (rotated with the family's `rotate_half`) and values of the tokens `hidden` (B, T, D):
    (B, kv_heads, T, hd) each."""
    attn = layer.self_attn
    x = layer.input_layernorm(hidden)
    rows, n = x.shape[:2]
    k = attn.k_proj(x).view(rows, n, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(x).view(rows, n, -1, attn.head_dim).transpose(1, 2)
    cos, sin = cos[:, None], sin[:, None]
    return k * cos + rotate_half(k) * sin, v


def chooser_last_logits(model, ids: torch.Tensor, mask, last_mask, position_ids: torch.Tensor,
                        extra) -> torch.Tensor:
    """The chooser's logits (B, V), float32, at the last position of `ids` (left-padded: every row's last token).

    `mask` (B, 1, T, Nc + T) is what the layers' attention reads with `extra` (an `attention.ExtraKV`) as
    extra keys; `last_mask` (B, 1, 1, Nc + T) is its last query's row, for the last layer, whose extra keys
    are `extra`'s followed by the earlier tokens' own.
    """
    b = decoder_body(model)
    layers = _layers(b)
    hidden = b.embed_tokens(ids)
    cos, sin = b.rotary_emb(hidden, position_ids)  # (B, T, hd)
    hidden = _run(layers[:-1], hidden, mask, position_ids, (cos, sin), transplant_kv=extra)
    last = layers[-1]
    tail = dataclasses.replace(extra, chunks=None, tail=_tail_kv(last, hidden[:, :-1], cos[:, :-1], sin[:, :-1],
                                                                   extra.rotate_half))
    hidden = last(hidden[:, -1:], attention_mask=last_mask, position_ids=position_ids[:, -1:],
                  position_embeddings=(cos[:, -1:], sin[:, -1:]), use_cache=False, transplant_kv=tail)
    return unwrap(model).get_output_embeddings()(b.norm(hidden))[:, -1, :].float()
