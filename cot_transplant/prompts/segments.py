"""Prompts built from separately tokenized text segments, with exact token spans.

Each segment is tokenized on its own (`add_special_tokens=False`) and the ids are
concatenated, so a text gets identical ids in every prompt that holds it, and its span
is known exactly. The price: tokens never merge across a segment boundary, and
tokenizers that add a prefix space (SentencePiece/Metaspace "▁", BPE `add_prefix_space`)
add it at the start of every segment, so "a" + "b" is not the tokenization of "ab".
Put the separating space or newline inside the template segments on purpose.

A tokenizer that adds a BOS token by default (LLaMA-style, `add_bos_token=True`) gets
exactly one BOS at the start of every prompt, as its plain call would give, and every
span moves with it; one that adds none (SmolLM2, GPT-2) gets ids byte-identical to the
plain concatenation. A prompt whose template already starts with the BOS token (a chat
template that renders it) gets no second one.

Data texts (`special=False`) are tokenized with `split_special_tokens=True`: markup
such as "<|im_end|>" inside a data text becomes ordinary text tokens, never a special
token. Template segments (`special=True`) keep special tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch


class EmptySpan(ValueError):
    """A named segment whose text has no tokens (e.g. only control characters): it can have no span."""


@dataclass(frozen=True)
class Segment:
    """A piece of a prompt. `name` makes its span available; `special` lets the text hold special tokens."""

    text: str
    name: str | None = None
    special: bool = False


@dataclass(frozen=True)
class Encoded:
    """One prompt's token ids and the (start, end) token span of each named segment (end exclusive)."""

    ids: list[int]
    spans: dict[str, tuple[int, int]] = field(default_factory=dict)


def tokenize_segment(tokenizer, segment: Segment) -> list[int]:
    """The ids of one segment on its own: no BOS/EOS; special tokens parsed only when `segment.special`.

    Raises:
        ValueError: a data segment still produced a special token. `split_special_tokens` only
            skips the added-token matcher; a Unigram model (T5-style) that holds e.g. "</s>" as an
            ordinary piece can still emit it. The unknown token is allowed.
    """
    ids = list(tokenizer(segment.text, add_special_tokens=False, split_special_tokens=not segment.special)["input_ids"])
    if not segment.special:
        found = sorted(set(ids) & (set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}))
        if found:
            raise ValueError(f"segment {segment.name or segment.text[:40]!r}: data text produced special tokens "
                             f"{tokenizer.convert_ids_to_tokens(found)} although special-token parsing was off")
    return ids


def adds_bos(tokenizer) -> bool:
    """Whether the tokenizer's plain call puts its BOS token before the text (what `encode_segments` then does)."""
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    plain = list(tokenizer("a")["input_ids"])
    return plain[:1] == [bos] and list(tokenizer("a", add_special_tokens=False)["input_ids"])[:1] != [bos]


def encode_segments(tokenizer, segments: Iterable[Segment], shift: bool = True, bos: bool | None = None) -> Encoded:
    """Concatenate separately tokenized segments and return ids plus named spans.

    `bos` None (the default) starts the prompt with one BOS token when the tokenizer's plain call
    adds one (`adds_bos`); True/False force it. No BOS is added where the first segment already
    starts with it.

    With `shift=True` (the original study's alignment) every span moves one token earlier:
    position p is kept when it predicts a token of the segment (the state at p produced
    token p+1), so the span of tokens [s, e) becomes [s-1, e-1).

    Raises:
        ValueError: a repeated name, a named segment with no tokens, (with `shift`) a named
            segment at position 0, which has no token before it, or `bos=True` without a BOS token.
    """
    ids: list[int] = []
    spans: dict[str, tuple[int, int]] = {}
    if bos is None:
        bos = adds_bos(tokenizer)
    if bos and tokenizer.bos_token_id is None:
        raise ValueError("encode_segments: bos=True but the tokenizer has no BOS token")
    for seg in segments:
        tokens = tokenize_segment(tokenizer, seg)
        if bos and not ids and tokens and tokens[0] != tokenizer.bos_token_id:
            ids.append(tokenizer.bos_token_id)  # before the first token: every span moves with it
        start, end = len(ids), len(ids) + len(tokens)
        ids.extend(tokens)
        if seg.name is None:
            continue
        if seg.name in spans:
            raise ValueError(f"segment name '{seg.name}' is used twice")
        if start == end:
            raise EmptySpan(f"segment '{seg.name}' has no tokens (text {seg.text!r})")
        if shift and start == 0:
            raise ValueError(f"segment '{seg.name}' starts the prompt; shift=True needs a token before it")
        spans[seg.name] = (start - 1, end - 1) if shift else (start, end)
    return Encoded(ids, spans)


def pad_batch(encoded: Sequence[Encoded], pad_id: int, side: str = "left"
              ) -> tuple[torch.Tensor, torch.Tensor, list[dict[str, tuple[int, int]]]]:
    """Pad prompts to one (B, T) batch; spans are moved into the padded tensor.

    Returns:
        input_ids (B, T) long, attention_mask (B, T) long (1 = token, 0 = padding), and per
        row its spans as {name: (start, end)}. Left padding puts the last token of every row
        at T-1 (what `logits[:, -1]` reads); pass `position_ids(attention_mask)` to the model.
    Raises:
        ValueError: unknown `side` or an empty batch.
    """
    if side not in ("left", "right"):
        raise ValueError(f"pad_batch: side '{side}' is not 'left' or 'right'")
    if not encoded:
        raise ValueError("pad_batch: no prompts")
    width = max(len(e.ids) for e in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)  # (B, T)
    attention_mask = torch.zeros((len(encoded), width), dtype=torch.long)  # (B, T)
    spans = []
    for r, enc in enumerate(encoded):
        offset = width - len(enc.ids) if side == "left" else 0
        input_ids[r, offset:offset + len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.long)
        attention_mask[r, offset:offset + len(enc.ids)] = 1
        spans.append({name: (s + offset, e + offset) for name, (s, e) in enc.spans.items()})
    return input_ids, attention_mask, spans


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) positions counting real tokens only, so a left-padded row matches the row alone."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


def select_spans(row_spans: Sequence[dict[str, tuple[int, int]]], names: Sequence[str]
                 ) -> list[list[tuple[int, int]]]:
    """Per row, the spans of `names` in that order: the list-of-lists form `capture`/`inject` take."""
    return [[row[name] for name in names] for row in row_spans]
