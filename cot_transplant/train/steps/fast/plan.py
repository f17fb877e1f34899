"""Index plans of the fast path: which tokens each pass runs, at which positions, seeing which keys.

Pure functions of a `Batch` (no model): the arguer's packed rows and the chooser's kept
positions with their extra keys, each with the boolean attention pattern (B, Tq, Tk) of
the reference's full passes restricted to what runs. Padding is on the left, as in
`collate`; a padding query sees only itself, so no softmax row is empty.

They read token ids and masks as Python values: give them the batch on the host (as collated),
then move the plans to the model's device once (`.to(device)`); the step does. A batch on an
accelerator is copied to the host once per plan; a meta batch has no values and is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.train.steps.append import layout, sees_appended
from cot_transplant.train.steps.devices import host_copy


@dataclass
class ArguerPack:
    """One row per example: [shared prefix | candidate 1 | candidate 2], left-padded."""

    ids: torch.Tensor  # (B, T)
    mask: torch.Tensor  # (B, T) 1 = token
    position_ids: torch.Tensor  # (B, T) each candidate continues the prefix at the prefix's length
    allowed: torch.Tensor  # (B, T, T) bool: query t sees key u
    spans: list[list[tuple[int, int]]]  # B rows x [candidate 1's span, candidate 2's span]

    def to(self, device: torch.device) -> "ArguerPack":
        """The same pack with its tensors on `device`."""
        return dataclasses.replace(self, ids=self.ids.to(device), mask=self.mask.to(device),
                                   position_ids=self.position_ids.to(device), allowed=self.allowed.to(device))


@dataclass
class ChooserPlan:
    """The chooser's non-candidate tokens, left-padded, and the candidate slots that enter as extra keys."""

    ids: torch.Tensor  # (B, Tk)
    mask: torch.Tensor  # (B, Tk)
    position_ids: torch.Tensor  # (B, Tk) the original position of every kept token
    allowed: torch.Tensor  # (B, Tk, Nc + Tk) bool: extra keys first, then the kept tokens' own
    state_index: torch.Tensor  # (B * Nc,) flat state token of each extra key slot (0 in padding slots)
    extra_rows: torch.Tensor  # (B, Nc) row and column in the padded chooser batch of each extra key,
    extra_cols: torch.Tensor  # (B, Nc)   to read its rotary embedding there
    extra_keys: int  # Nc
    # (B, Tc) the full chooser rows' positions: the extra keys rotate at theirs (`extra_cols` index it);
    # append: (B, Nc) the appended entries' own positions
    positions: torch.Tensor

    def to(self, device: torch.device) -> "ChooserPlan":
        """The same plan with its tensors on `device`."""
        return dataclasses.replace(self, **{f.name: getattr(self, f.name).to(device) for f in dataclasses.fields(self)
                                            if isinstance(getattr(self, f.name), torch.Tensor)})


def _host(t: torch.Tensor) -> torch.Tensor:
    """`t` on the host (itself on the CPU); a meta tensor, which has no values to plan from, is refused."""
    if t.device.type == "meta":
        raise ValueError("fast path: the index plans read the batch's token ids and masks, which a meta batch "
                         "does not hold; give the batch as collated on the host (the step moves it to the model)")
    return t.cpu()


def _real(ids: torch.Tensor, mask: torch.Tensor, spans: list[tuple[int, int]]
          ) -> tuple[list[int], list[tuple[int, int]]]:
    """One left-padded row as its real ids and its spans in unpadded coordinates."""
    offset = int(mask.shape[0] - mask.sum())
    return ids[offset:].tolist(), [(s - offset, e - offset) for s, e in spans]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _left_pad(rows: list[list[int]], fill: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), fill, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, width - len(r):] = torch.tensor(r, dtype=torch.long)
    return out


def pack_arguer(batch: Batch, pad_id: int = 0) -> ArguerPack:
    """The arguer rows of `batch` packed two candidates to a row.

    Candidate j's prompt is ids_j[:P] + ids_j[P:e_j] with P the longest common prefix of
    the two prompts before their spans (template + question; with `shift`, the span starts
    on the prefix's last token, which then belongs to the candidates). Tokens after a span
    end are dropped: no span token reads them. Each candidate's tokens keep their positions
    and see the prefix and their own earlier tokens, never the other candidate's: the same
    attention as two separate rows, with the prefix computed once.
    """
    rows, positions, segments, spans = [], [], [], []
    arguer_ids, arguer_mask = _host(batch.arguer_ids), _host(batch.arguer_mask)
    for b in range(batch.chooser_ids.shape[0]):
        (ids1, ((s1, e1),)), (ids2, ((s2, e2),)) = (
            _real(arguer_ids[r], arguer_mask[r], batch.arguer_spans[r]) for r in (2 * b, 2 * b + 1))
        p = _common_prefix(ids1[:s1], ids2[:s2])
        rows.append(ids1[:e1] + ids2[p:e2])
        positions.append(list(range(e1)) + list(range(p, e2)))
        segments.append([0] * p + [1] * (e1 - p) + [2] * (e2 - p))
        spans.append([(s1, e1), (e1 + s2 - p, e1 + e2 - p)])
    ids = _left_pad(rows, pad_id)  # (B, T)
    width = ids.shape[1]
    offsets = [width - len(r) for r in rows]
    mask = _left_pad([[1] * len(r) for r in rows], 0)
    pos = _left_pad(positions, 0)
    seg = _left_pad(segments, -1)  # (B, T); -1 = padding
    causal = torch.ones(width, width, dtype=torch.bool).tril()  # (T, T)
    same = (seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None])  # key in the prefix or in the query's part
    allowed = causal & same & (seg[:, None, :] >= 0) & (seg[:, :, None] >= 0)
    allowed |= torch.eye(width, dtype=torch.bool) & (seg[:, :, None] < 0)  # padding sees itself
    spans = [[(s + o, e + o) for s, e in row] for row, o in zip(spans, offsets)]
    device = batch.arguer_ids.device
    return ArguerPack(ids.to(device), mask.to(device), pos.to(device), allowed.to(device), spans)


def plan_chooser(batch: Batch, pad_id: int = 0, append: bool = False) -> ChooserPlan:
    """The chooser's kept tokens (every real token outside the transplant spans) and its extra keys.

    Extra key j of row b is that row's j-th transplanted token (its spans in order, which
    is the order of the captured states), at its original column; a kept query sees it when
    its position is lower, and sees the kept keys causally, as in the full sequence.
    With `append` (`transplant.mode: append`) every real token is kept and the extra keys are the
    appended entries (`steps.append.layout`): a query sees one iff `steps.append.sees_appended`.
    """
    n_rows, width = batch.chooser_ids.shape
    chooser_ids, chooser_mask = _host(batch.chooser_ids), _host(batch.chooser_mask)
    full_pos = position_ids(chooser_mask)  # (B, Tc)
    entries = layout(batch) if append else None
    kept_rows, kept_pos, kept_cols, extra_cols, state_index = [], [], [], [], []
    flat = 0
    for b in range(n_rows):
        cols = [c for s, e in batch.chooser_spans[b] for c in range(s, e)]
        taken = set() if append else set(cols)
        real = chooser_mask[b].bool().tolist()
        kept = [c for c in range(width) if real[c] and c not in taken]
        kept_rows.append(chooser_ids[b][kept].tolist())
        kept_pos.append(full_pos[b, kept].tolist())
        kept_cols.append(kept)
        n_entries = len(entries[b][0]) if append else len(cols)
        extra_cols.append(list(range(n_entries)) if append else cols)  # append: columns of `positions` below
        state_index.append(list(range(flat, flat + n_entries)))
        flat += n_entries
    ids = _left_pad(kept_rows, pad_id)  # (B, Tk)
    mask = _left_pad([[1] * len(r) for r in kept_rows], 0)
    pos = _left_pad(kept_pos, 0)
    n_keep, n_extra = ids.shape[1], max(len(c) for c in extra_cols)
    pad = lambda rows: torch.tensor([r + [0] * (n_extra - len(r)) for r in rows], dtype=torch.long)  # noqa: E731
    cols = pad(extra_cols)  # (B, Nc)
    valid = pad([[1] * len(c) for c in extra_cols]).bool()
    index = pad(state_index).reshape(-1)
    extra_rows = torch.arange(n_rows)[:, None].expand(n_rows, n_extra)
    real_q = mask.bool()[:, :, None]  # (B, Tk, 1)
    if append:
        positions = pad([p for p, _ in entries])  # (B, Nc) each entry's position: its keys rotate there
        q_cols = _left_pad(kept_cols, -1)  # (B, Tk) each kept token's column in the chooser batch
        span_end = pad([e for _, e in entries])  # (B, Nc)
        sees_extra = valid[:, None, :] & sees_appended(q_cols[:, :, None], span_end[:, None, :]) & real_q
    else:
        positions = full_pos
        extra_pos = full_pos[extra_rows, cols]  # (B, Nc)
        sees_extra = valid[:, None, :] & (extra_pos[:, None, :] < pos[:, :, None]) & real_q  # (B, Tk, Nc)
    causal = torch.ones(n_keep, n_keep, dtype=torch.bool).tril()
    sees_own = causal & mask.bool()[:, None, :] & real_q
    sees_own |= torch.eye(n_keep, dtype=torch.bool) & ~real_q  # padding sees itself
    device = batch.chooser_ids.device
    return ChooserPlan(ids.to(device), mask.to(device), pos.to(device),
                       torch.cat([sees_extra, sees_own], dim=2).to(device), index.to(device),
                       extra_rows.to(device), cols.to(device), n_extra, positions.to(device))


def fast_shapes(batch: Batch, chunk: int = 0, gap: int = 0, append: bool = False) -> tuple[int, int, int, int, int]:
    """(packed arguer length, kept chooser length, extra keys, arguer and chooser query-key pairs) of `batch` on
    the fast path (bench FLOPs). Pairs are summed over rows: what blocks of `chunk` queries compute
    (`attention_chunks`), or with `chunk` 0 every pair of the padded square (one call over the whole pattern).
    Planned on the host, whatever the batch's device; `append`: under `transplant.mode: append`."""
    host = host_copy(batch)
    pack, plan = pack_arguer(host), plan_chooser(host, append=append)
    return (pack.ids.shape[1], plan.ids.shape[1], plan.extra_keys, attention_pairs(pack.allowed, chunk, gap),
            attention_pairs(plan.allowed, chunk, gap))


def attention_pairs(allowed: torch.Tensor, chunk: int, gap: int) -> int:
    """Query-key pairs that attention over the (B, Tq, Tk) pattern `allowed` computes, in blocks or in one call."""
    if not chunk:
        return allowed.numel()
    return sum((c.queries[1] - c.queries[0]) * sum(e - s for s, e in c.keys)
               for c in attention_chunks(allowed, chunk, gap))

@dataclass
class Chunk:
    """A block of one row's queries and the keys any of them sees: contiguous key ranges, gaps under a limit merged."""

    row: int
    queries: tuple[int, int]  # [start, end) of the row's queries
    keys: tuple[tuple[int, int], ...]  # [start, end) ranges of the row's keys, in order
    allowed: torch.Tensor | None  # (end - start, keys in the ranges) bool; None when every pair is allowed

    def to(self, device: torch.device) -> "Chunk":
        """The same block with its pattern on `device`."""
        return self if self.allowed is None else dataclasses.replace(self, allowed=self.allowed.to(device))


def _runs(columns: list[int], gap: int) -> list[tuple[int, int]]:
    """Sorted column indices as [start, end) runs; runs that `gap` or fewer columns separate are merged."""
    runs: list[tuple[int, int]] = []
    for c in columns:
        if runs and c - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], c + 1)
        else:
            runs.append((c, c + 1))
    return runs


def attention_chunks(allowed: torch.Tensor, size: int = 64, gap: int = 16) -> list[Chunk]:
    """Split a (B, Tq, Tk) attention pattern into per-row blocks of `size` queries and the keys they see.

    Attention over only those keys, with the block's slice of the pattern, is the same attention
    (a key no query of the block sees adds exactly nothing to its softmax), and skips the pairs
    the pattern rules out wholesale: the other candidate of a packed arguer row, the upper triangle
    of a causal one, the extra keys that the chooser's tokens before the candidates never see.
    Every query must see at least one key. Chunks come row by row, queries in order.
    """
    rows, n_queries, _ = allowed.shape
    device, allowed = allowed.device, allowed.cpu()
    chunks = []
    for b in range(rows):
        for start in range(0, n_queries, size):
            block = allowed[b, start: start + size]  # (q, Tk)
            live = block.any(0).nonzero().flatten().tolist()
            if len(live) == 0 or not bool(block.any(1).all()):
                raise ValueError(f"attention_chunks: row {b} has a query in [{start}, {start + size}) that sees no key")
            keys = _runs(live, gap)
            sub = torch.cat([block[:, s:e] for s, e in keys], dim=1)
            chunks.append(Chunk(b, (start, start + block.shape[0]), tuple(keys),
                                None if bool(sub.all()) else sub.to(device)))
    return chunks
