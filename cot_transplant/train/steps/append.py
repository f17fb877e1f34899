"""`transplant.mode: append`: the arguer's states beside the chooser's own reading of the candidates.

The chooser runs every one of its tokens, candidates included, as in `text-only`; in every layer the arguer's
keys and values of each candidate are extra attention entries at the candidate's positions (`layout`; rotated
as keys there). One rule says who reads them (`sees_appended`): a chooser token reads candidate c's appended
entries iff it comes after c's whole span (its column is at or past the span's end). So the choice argument
and the answer position read both candidates' entries, candidate 2's tokens read candidate 1's (they read
its text too), and no candidate token reads its own candidate's entries. With no entry read, the step is
`text-only`'s.

The reference realizes it with the model's own forward (`extend`): each row is prefixed with one slot per
appended entry, whose K/V the usual inject hooks overwrite in every layer, at the entry's position, under a
4D mask; a slot's query sees only itself (its output reaches nothing else). The fast path plans the same
entries as its extra keys (`plan.plan_chooser(..., append=True)`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from cot_transplant.train.batches import Batch, position_ids

REPLACE, APPEND = "replace", "append"


def sees_appended(query_cols: torch.Tensor, span_end: torch.Tensor) -> torch.Tensor:
    """Whether chooser tokens at `query_cols` read the appended entries of a candidate whose span ends
    (exclusive) at `span_end`, both in the same row's columns: only tokens after the whole span."""
    return query_cols >= span_end


@dataclass
class Extended:
    """The chooser rows with one slot per appended entry before the real tokens, left-padded."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) 1 = a real token or a slot (the inject hooks check their spans against it)
    position_ids: torch.Tensor  # (B, T) slots at their candidate's positions
    allowed: torch.Tensor  # (B, T, T) bool
    spans: list[list[tuple[int, int]]]  # per row, the slots of candidate 1 and of candidate 2


def layout(batch: Batch) -> list[tuple[list[int], list[int]]]:
    """Per chooser row, its appended entries in the states' order (candidate 1's, then candidate 2's): each
    entry's position and the column (in the padded chooser batch) where its candidate's span ends.

    Candidate c's i-th entry sits at the position of the span's first token plus i. The states have the span's
    length in `joint` and the other variants that transplant a row's own candidates, so the entries take the
    candidate's own positions; under `swapped-kv` / `shuffled-kv` they are the other candidate's or a donor's
    states, of their own length, from the same first position on.
    """
    full_pos = position_ids(batch.chooser_mask.cpu())  # (B, Tc)
    out = []
    for b, spans in enumerate(batch.chooser_spans):
        positions, ends = [], []
        for c, (s, e) in enumerate(spans):
            (a_s, a_e), = batch.arguer_spans[2 * b + c]
            first = int(full_pos[b, s])
            positions += range(first, first + a_e - a_s)
            ends += [e] * (a_e - a_s)
        out.append((positions, ends))
    return out


def extend(batch: Batch) -> Extended:
    """`batch`'s chooser rows (on the host) as the reference's append pass runs them.

    Row b becomes [padding | slots of candidate 1 | slots of candidate 2 | its real tokens]: the last column
    stays every row's last real token. Real tokens see each other causally and a slot iff `sees_appended`.
    A slot's token id is 0: every layer's K/V there is replaced, and its query reaches nothing.
    """
    mask_h = batch.chooser_mask.cpu()
    ids_h = batch.chooser_ids.cpu()
    n, width_in = ids_h.shape
    entries = layout(batch)
    offsets = [int(width_in - mask_h[b].sum()) for b in range(n)]
    width = max(width_in - o + len(p) for o, (p, _) in zip(offsets, entries))
    ids = torch.zeros(n, width, dtype=torch.long)
    mask = torch.zeros(n, width, dtype=torch.long)
    pos = torch.zeros(n, width, dtype=torch.long)
    allowed = torch.eye(width, dtype=torch.bool).repeat(n, 1, 1)  # (B, T, T) padding and slots see themselves
    out_spans = []
    for b, (offset, (slot_pos, slot_end)) in enumerate(zip(offsets, entries)):
        real = ids_h[b, offset:]
        n_slots, n_real = len(slot_pos), len(real)
        start = width - n_slots - n_real
        first = start + n_slots  # the first real column
        ids[b, first:] = real
        mask[b, start:] = 1
        pos[b, start:first], pos[b, first:] = torch.tensor(slot_pos, dtype=torch.long), torch.arange(n_real)
        cols = torch.arange(n_real)
        allowed[b, first:, first:] = cols[:, None] >= cols[None, :]
        ends = torch.tensor(slot_end, dtype=torch.long) - offset  # in the real tokens' columns
        allowed[b, first:, start:first] = sees_appended(cols[:, None], ends[None, :])
        (a1, b1), = batch.arguer_spans[2 * b]
        out_spans.append([(start, start + b1 - a1), (start + b1 - a1, first)])
    device = batch.chooser_ids.device
    return Extended(ids.to(device), mask.to(device), pos.to(device), allowed.to(device), out_spans)
