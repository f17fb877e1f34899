"""The arguer's span states per row, computed once and reused while nothing they depend on changes.

With `variant: frozen-arguer`, and in every evaluation of a fixed checkpoint, the arguer's states for
a row are a function of the base model, the arguer adapter's weights, the row's arguer tokens and
spans, and the transplant spec. The cache holds them in (CPU) memory under that key:

- the version (base model object, the adapter's weights by content hash, the spec): a new version
  drops every entry, so a changed adapter (an optimizer step, a loaded checkpoint, an edit through
  `.data`) or spec never reads an old state. The hash reads every adapter weight on each lookup (about
  5 ms for SmolLM2's r=16 adapter);
- the row: its two arguer token sequences and spans, without padding, except where each candidate's last
  span ends. The states of a span's first tokens do not depend on the tokens after them (causal
  attention, and the fast path's arguer stops at the span's end), so a row stored with whole spans also
  serves that row with cut spans (`transplant.fraction`, the truncation study's fractions): `lookup` hands
  out each candidate's first tokens. Those equal recomputing the cut spans up to float rounding (a
  shorter packed row, as any change of batching); a lookup of the stored lengths is bit for bit. A row
  stored cut is replaced when it is met with longer spans.

It applies only where the arguer's pass is deterministic and takes no gradient (`applies`). A batch is
served from the cache only when every row is in it; the states are then the ones an earlier pass
computed for those rows (equal to recomputing them in the same batch bit for bit; in another batch
composition, up to float rounding, as any change of batching). Once `max_bytes` is reached nothing new
is stored (for epochs that visit rows in a cycle, keeping the first rows beats evicting).

A cache is state, not a setting: the session owns one (`Session.arguer_cache`, switched on or off by
`train/setup.py`'s `arguer_cache` alone) and hands it to the fast path's step with each batch.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch

from cot_transplant.train.adapters import adapter_params, lora_dropout_sites, role_adapters, role_model, trainable
from cot_transplant.train.batches import Batch
from cot_transplant.transplant import SpanStates, TransplantSpec
from cot_transplant.transplant.arch import unwrap


@dataclass
class CacheStats:
    hits: int = 0  # batches served from the cache
    prefix_hits: int = 0  # of those, batches with a row served as the first tokens of longer stored spans
    misses: int = 0  # batches computed
    stored_rows: int = 0  # rows stored (a row replaced by its longer spans counts again)
    full: int = 0  # rows not stored because the cache was full
    bytes: int = 0

    def line(self) -> str:
        """One line for a run's log."""
        served = self.hits + self.misses
        rate = f"{100 * self.hits / served:.0f}%" if served else "n/a"
        return (f"arguer state cache: {self.hits} of {served} batches served ({rate}; {self.prefix_hits} as prefixes "
                f"of longer spans), {self.stored_rows} rows stored, {self.full} not stored (full), "
                f"{self.bytes / 2 ** 20:.0f} MiB")


def _lora_dropouts(model, name: str) -> list[float]:
    return [float(getattr(d[name], "p", 0.0)) for d, n in lora_dropout_sites(model) if n == name and name in d]


def applies(model, variant: str) -> bool:
    """Whether the arguer's states for a row cannot change during this pass: no gradient reaches the arguer
    (frozen, or no grad mode), and its pass is deterministic (eval mode, no LoRA dropout, or B still zero)."""
    arguer = role_adapters(variant)[0]
    if variant in ("text-only", "adversarial") or (arguer in trainable(variant) and torch.is_grad_enabled()):
        return False
    m = role_model(model, arguer)
    if not m.training or not any(p > 0 for p in _lora_dropouts(m, arguer)):
        return True
    # Dropout acts on lora_A's input; with every lora_B zero the adapter adds exactly zero either way.
    return all(not bool(p.any()) for n, p in adapter_params(m, arguer) if "lora_B" in n)


def _unpadded(batch: Batch, r: int) -> tuple[int, list[tuple[int, int]]]:
    offset = int(batch.arguer_mask.shape[1] - batch.arguer_mask[r].sum())
    return offset, [(s - offset, e - offset) for s, e in batch.arguer_spans[r]]


def row_keys(batch: Batch) -> list[bytes]:
    """One key per row: both candidates' arguer tokens and spans, padding stripped, each candidate's last span
    without its end (`span_lengths` has the lengths)."""
    keys = []
    for b in range(batch.chooser_ids.shape[0]):
        h = hashlib.blake2b(digest_size=16)
        for r in (2 * b, 2 * b + 1):
            offset, spans = _unpadded(batch, r)
            h.update(batch.arguer_ids[r, offset:].cpu().numpy().tobytes())
            h.update(repr(spans[:-1] + [spans[-1][0]] if spans else []).encode())
        keys.append(h.digest())
    return keys


def span_lengths(batch: Batch) -> list[tuple[int, int]]:
    """Per row, each candidate's span tokens (the length of its capture entry)."""
    per_candidate = [sum(e - s for s, e in spans) for spans in batch.arguer_spans]
    return [(per_candidate[2 * b], per_candidate[2 * b + 1]) for b in range(batch.chooser_ids.shape[0])]


class StateCache:
    """Per-row arguer span states for the current (base, adapter weights, spec) version."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.stats = CacheStats()
        self._version: tuple | None = None
        self._rows: dict[bytes, dict] = {}

    @staticmethod
    def _adapter_hash(model, name: str) -> str:
        h = hashlib.sha1()
        for n, p in adapter_params(model, name):
            h.update(n.encode())
            h.update(memoryview(p.detach().cpu().contiguous().view(torch.uint8).numpy()))
        return h.hexdigest()

    def _bind(self, model, name: str, spec: TransplantSpec) -> None:
        m = role_model(model, name)
        version = (id(unwrap(m)), self._adapter_hash(m, name), repr(spec))
        if version != self._version:
            self._version, self._rows = version, {}
            self.stats.bytes = 0

    def lookup(self, model, name: str, batch: Batch, spec: TransplantSpec) -> SpanStates | None:
        """The batch's states in the capture's order (row 0 candidate 1, row 0 candidate 2, ...), or None
        unless every row is cached with spans at least as long as the batch's."""
        self._bind(model, name, spec)
        rows = [self._rows.get(k) for k in row_keys(batch)]
        wanted = span_lengths(batch)
        if not rows or any(r is None or any(n < w for n, w in zip(r["lengths"], want))
                           for r, want in zip(rows, wanted)):
            self.stats.misses += 1
            return None
        self.stats.hits += 1
        device = batch.arguer_ids.device
        if any(r["lengths"] != want for r, want in zip(rows, wanted)):
            self.stats.prefix_hits += 1
            rows = [_prefix(r, want) for r, want in zip(rows, wanted)]
        lengths = tuple(n for r in rows for n in r["lengths"])
        tensors = {key: torch.cat([r["tensors"][key] for r in rows]).to(device) for key in rows[0]["tensors"]}
        return SpanStates(rows[0]["spec"], lengths, tensors)

    def store(self, batch: Batch, states: SpanStates) -> None:
        """Keep each row's states (detached, on the CPU) while they fit in `max_bytes`, unless the row is stored
        with spans at least as long. Call it right after the `lookup` that missed (which checked the version)."""
        states = states.detach()
        for b, key in enumerate(row_keys(batch)):
            lengths = states.lengths[2 * b: 2 * b + 2]
            old = self._rows.get(key)
            if old is not None and all(n >= w for n, w in zip(old["lengths"], lengths)):
                continue
            start = sum(states.lengths[: 2 * b])
            tensors = {k: t[start: start + sum(lengths)].to("cpu", copy=True) for k, t in states.tensors.items()}
            size, freed = _size(tensors), 0 if old is None else _size(old["tensors"])
            if self.stats.bytes - freed + size > self.max_bytes:
                self.stats.full += 1
                continue
            self._rows[key] = {"spec": states.spec, "lengths": lengths, "tensors": tensors}
            self.stats.bytes += size - freed
            self.stats.stored_rows += 1

    def __len__(self) -> int:
        return len(self._rows)


def _size(tensors: dict[tuple, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors.values())


def _prefix(row: dict, lengths: tuple[int, int]) -> dict:
    """A stored row cut to each candidate's first `lengths` tokens."""
    (n1, _), (w1, w2) = row["lengths"], lengths
    tensors = {k: torch.cat([t[:w1], t[n1: n1 + w2]]) for k, t in row["tensors"].items()}
    return {"spec": row["spec"], "lengths": lengths, "tensors": tensors}
