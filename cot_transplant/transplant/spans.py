"""Span arithmetic and checks: pure functions over `[[(start, end), ...] per row]`.

Spans index the padded `input_ids` and are used exactly as given (end exclusive).
Entries are counted in row-major order: row 0's spans, then row 1's, and so on.
"""

from __future__ import annotations

import operator
from typing import Sequence

import torch

Spans = tuple[tuple[tuple[int, int], ...], ...]


def _pair(span) -> tuple[int, int] | None:
    """(start, end) as Python ints, or None when `span` is not a pair of integers."""
    try:
        start, end = span
        if isinstance(start, bool) or isinstance(end, bool):
            return None
        return operator.index(start), operator.index(end)
    except (TypeError, ValueError):
        return None


def normalize_spans(spans: Sequence[Sequence[tuple[int, int]]]) -> Spans:
    """Check the structure and return spans as nested tuples of ints.

    Raises:
        ValueError: a span that is not an (int, int) pair with 0 <= start < end; the message names row and span.
    """
    rows = []
    for r, row in enumerate(spans):
        out = []
        for j, span in enumerate(row):
            pair = _pair(span)
            if pair is None:
                raise ValueError(f"row {r}, span {j} {span!r}: not a (start, end) pair of ints")
            if pair[0] < 0:
                raise ValueError(f"row {r}, span {j} {pair}: outside the sequence (negative start)")
            if pair[1] <= pair[0]:
                raise ValueError(f"row {r}, span {j} {pair}: empty or reversed (needs start < end)")
            out.append(pair)
        rows.append(tuple(out))
    return tuple(rows)


def span_lengths(spans: Spans) -> tuple[int, ...]:
    """Token count of every entry, row-major."""
    return tuple(e - s for row in spans for s, e in row)


def check_bounds(spans: Spans, batch: int, seq_len: int) -> None:
    """Raise ValueError unless there is one span list per row and every span ends within `seq_len`."""
    if len(spans) != batch:
        raise ValueError(f"spans give {len(spans)} rows but the batch has {batch}")
    for r, row in enumerate(spans):
        for j, (s, e) in enumerate(row):
            if e > seq_len:
                raise ValueError(f"row {r}, span {j} ({s}, {e}): outside the sequence of length {seq_len}")


def check_not_padding(spans: Spans, attention_mask: torch.Tensor) -> None:
    """Raise ValueError if a span leaves the (B, T) mask or covers a position where it is 0.

    The mask is read on the host in one copy (none for a CPU mask; give the host copy where there is one);
    a meta mask holds no values (a shape trace), so only the bounds are checked there.
    """
    check_bounds(spans, attention_mask.shape[0], attention_mask.shape[1])
    if attention_mask.device.type == "meta":
        return
    mask = attention_mask.cpu()
    for r, row in enumerate(spans):
        for j, (s, e) in enumerate(row):
            pads = (mask[r, s:e] == 0).nonzero().flatten()
            if len(pads):
                raise ValueError(f"row {r}, span {j} ({s}, {e}): covers padding at position {s + int(pads[0])}")


def check_no_overlap(spans: Spans) -> None:
    """Raise ValueError if two spans of one row share a position (an overwrite would be ambiguous)."""
    for r, row in enumerate(spans):
        ordered = sorted(row)
        for (s0, e0), (s1, e1) in zip(ordered, ordered[1:]):
            if s1 < e0:
                raise ValueError(f"row {r}: spans ({s0}, {e0}) and ({s1}, {e1}) overlap")


def check_lengths(spans: Spans, lengths: Sequence[int]) -> None:
    """Raise ValueError unless the row-major entries of `spans` have exactly `lengths` tokens, one for one."""
    entries = [(r, j, s, e) for r, row in enumerate(spans) for j, (s, e) in enumerate(row)]
    if len(entries) != len(lengths):
        raise ValueError(f"the states hold {len(lengths)} span entries but the target spans give {len(entries)}")
    for i, ((r, j, s, e), n) in enumerate(zip(entries, lengths)):
        if e - s != n:
            raise ValueError(f"row {r}, span {j} ({s}, {e}): {e - s} tokens, but states entry {i} has {n}")


def flat_index(spans: Spans, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and position indices of every span token, row-major: two (N,) LongTensors."""
    rows = [r for r, row in enumerate(spans) for s, e in row for _ in range(s, e)]
    pos = [p for row in spans for s, e in row for p in range(s, e)]
    return (torch.tensor(rows, dtype=torch.long, device=device),
            torch.tensor(pos, dtype=torch.long, device=device))
