"""Records -> tokenized examples -> padded batches, for every variant.

Each example holds the two arguer prompts (one per shown candidate, in the row's
order) and the chooser prompt, tokenized segment by segment so each candidate's
text has the same tokens, and so the same span length, in both passes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from cot_transplant.data.plant import shown_candidates
from cot_transplant.data.record import Record
from cot_transplant.prompts.segments import Segment, encode_segments, pad_batch, position_ids  # noqa: F401
from cot_transplant.prompts.templates import SPAN_SLOTS, Template, split_slots


@dataclass
class Example:
    row_id: int
    arguer: tuple  # (Encoded for candidate 1, Encoded for candidate 2); spans["argument"]
    chooser: object  # Encoded; spans["candidate_1"], spans["candidate_2"]
    label: int  # position (1/2) of the correct candidate
    argument_choice: int  # position (1/2) the choice argument picked

    @property
    def n_tokens(self) -> int:
        return len(self.arguer[0].ids) + len(self.arguer[1].ids) + len(self.chooser.ids)


def encode_template(tokenizer, text: str, values: dict[str, str], shift: bool):
    """Tokenize a template with its slots filled, segment by segment; spans for argument/candidate slots."""
    segments = []
    for literal, slot in split_slots(text):
        if slot is None:
            segments.append(Segment(literal, special=True))
        else:
            segments.append(Segment(values[slot], name=slot if slot in SPAN_SLOTS else None))
    return encode_segments(tokenizer, segments, shift=shift)


def build_example(rec: Record, template: Template, tokenizer, *, shift: bool = True,
                  variant: str = "joint", donor: Record | None = None, own_text: bool = False) -> Example:
    """One row as tokenized passes.

    `shuffled-kv` takes the arguer passes (and the chooser's candidate texts, which it
    never reads once their K/V are replaced) from `donor`; `swapped-kv` gives each
    candidate slot the other candidate; `no-argument` empties the choice argument (`data.argument: none`
    empties it in the rows themselves, `runs/records.py`, so every variant's chooser prompt reads as this
    one's). The chooser's candidate texts are the record's planted views where it has them
    (`data/plant.py`); the arguer always reads the arguments. `own_text` (`transplant.mode: append`, where the
    chooser reads its candidate texts) keeps the record's own texts in the chooser's slots whatever the
    controls do to the arguer's; its spans may then differ in length from the arguer's.
    """
    source = donor if variant == "shuffled-kv" and donor is not None else rec
    (_, arg1), (_, arg2) = source.candidates()
    shown1, shown2 = shown_candidates(source)  # the arguments themselves, except in planted rows
    if variant == "swapped-kv":
        arg1, arg2, shown1, shown2 = arg2, arg1, shown2, shown1
    arguer = tuple(encode_template(tokenizer, template.arguer, {"question": source.question, "argument": a}, shift)
                   for a in (arg1, arg2))
    choice_argument = "" if variant == "no-argument" else (rec.choice_argument or "")
    if own_text:
        shown1, shown2 = shown_candidates(rec)
    chooser = encode_template(tokenizer, template.chooser, {
        "question": rec.question, "candidate_1": shown1, "candidate_2": shown2, "choice_argument": choice_argument,
    }, shift)
    return Example(rec.row_id, arguer, chooser, rec.label, rec.argument_choice)


def donors(n: int, seed: int) -> list[int]:
    """A seeded derangement: donors[i] != i (the `shuffled-kv` control)."""
    if n < 2:
        return list(range(n))
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    # A cyclic shift of a random order has no fixed point.
    out = [0] * n
    for i in range(n):
        out[perm[i]] = int(perm[(i + 1) % n])
    return out


def length_matched_donors(lengths: list[tuple[int, int]]) -> list[int]:
    """A derangement whose donors have candidate lengths near each row's own (`transplant.donors: length-matched`).

    `lengths[i]`: the token counts of row i's candidate 1 and candidate 2. Rows are sorted by
    (len1 - len2, len1 + len2, i), then neighbours in that order give each other their states
    (0<->1, 2<->3, ...); with an odd count three neighbours near the middle of that order, at
    position 2 * ((n - 3) // 4), form a cycle (a->b->c->a), away from the extreme rows. The
    result depends on the lengths only, not on a seed. Returns donors[i] != i (for n >= 2).
    """
    n = len(lengths)
    if n < 2:
        return list(range(n))
    order = sorted(range(n), key=lambda i: (lengths[i][0] - lengths[i][1], lengths[i][0] + lengths[i][1], i))
    triple = 2 * ((n - 3) // 4) if n % 2 else None
    out = [0] * n
    j = 0
    while j < n:
        if j == triple:
            a, b, c = order[j: j + 3]
            out[a], out[b], out[c] = b, c, a
            j += 3
        else:
            a, b = order[j], order[j + 1]
            out[a], out[b] = b, a
            j += 2
    return out


def candidate_lengths(ex: Example) -> tuple[int, int]:
    """Token counts of an example's two arguer argument spans (candidate 1, candidate 2)."""
    (s1, e1), (s2, e2) = (enc.spans["argument"] for enc in ex.arguer)
    return e1 - s1, e2 - s2


def cut_span(span: tuple[int, int], fraction: float) -> tuple[int, int]:
    """The first `fraction` of a span (at least one token)."""
    start, end = span
    return start, start + max(1, math.ceil(fraction * (end - start)))


def by_length(indices: list[int], examples: list[Example]) -> list[int]:
    """`indices` in the order of their examples' token counts (stable), so neighbours batch with little padding."""
    return sorted(indices, key=lambda i: examples[i].n_tokens)


@dataclass
class Batch:
    row_ids: list[int]
    labels: torch.Tensor  # (B,) 1/2
    argument_choice: torch.Tensor  # (B,) 1/2
    chooser_ids: torch.Tensor  # (B, Tc)
    chooser_mask: torch.Tensor
    chooser_spans: list[list[tuple[int, int]]]  # B rows x [candidate_1, candidate_2]
    arguer_ids: torch.Tensor  # (2B, Ta): row 0 cand 1, row 0 cand 2, row 1 cand 1, ...
    arguer_mask: torch.Tensor
    arguer_spans: list[list[tuple[int, int]]]  # 2B rows x [argument]
    # The batch as collated on the host, kept when it moves to an accelerator: span checks read its masks
    # there, with no copy back from the device. None: this batch is on the host (or was made there as is).
    host: "Batch | None" = field(default=None, repr=False, compare=False)

    TENSORS = ("labels", "argument_choice", "chooser_ids", "chooser_mask", "arguer_ids", "arguer_mask")

    def to(self, device: torch.device | str | None) -> "Batch":
        """This batch with every tensor on `device` (itself where they are there already, or for None)."""
        if device is None or all(getattr(self, k).device == torch.device(device) for k in self.TENSORS):
            return self
        host = self.host if self.host is not None else (self if self.chooser_ids.device.type == "cpu" else None)
        moved = dataclasses.replace(self, **{k: getattr(self, k).to(device) for k in self.TENSORS})
        moved.host = None if torch.device(device).type == "cpu" else host
        return moved


def collate(examples: list[Example], pad_id: int, fraction: float = 1.0,
            device: torch.device | str | None = None) -> Batch:
    """Left-pad both passes (the chooser's last position is then every row's last real token), on `device`.

    This is where a batch meets its model's device: every entry point (train, eval, truncation, bench)
    passes the model's device here, and the steps create nothing on another one.
    """
    c_ids, c_mask, c_spans = pad_batch([e.chooser for e in examples], pad_id, side="left")
    arguer_enc = [enc for e in examples for enc in e.arguer]
    a_ids, a_mask, a_spans = pad_batch(arguer_enc, pad_id, side="left")
    return Batch(
        row_ids=[e.row_id for e in examples],
        labels=torch.tensor([e.label for e in examples]),
        argument_choice=torch.tensor([e.argument_choice for e in examples]),
        chooser_ids=c_ids, chooser_mask=c_mask,
        chooser_spans=[[cut_span(s["candidate_1"], fraction), cut_span(s["candidate_2"], fraction)] for s in c_spans],
        arguer_ids=a_ids, arguer_mask=a_mask,
        arguer_spans=[[cut_span(s["argument"], fraction)] for s in a_spans],
    ).to(device)
