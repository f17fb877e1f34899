"""Capture and inject context managers: forward hooks borrowed for one `with` block.

Each manager registers its own handles on the sites of a `TransplantSpec` (the
k_proj/v_proj outputs or the decoder layer outputs of chosen layers) and removes
exactly those on exit, also when the forward raises. Nothing is stored on the model.
Hooks are keyed by (site, layer), not by call order, so they stay correct when
non-reentrant gradient checkpointing re-runs a layer during backward.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Iterator, Mapping, Sequence

import torch
from torch import nn

from cot_transplant.transplant.arch import Site, resolve_sites
from cot_transplant.transplant.spans import (Spans, check_bounds, check_lengths, check_no_overlap,
                                             check_not_padding, flat_index, normalize_spans, span_lengths)
from cot_transplant.transplant.spec import TransplantSpec

StateKey = tuple[str, int]  # (site key "k" | "v" | "residual", layer)


@dataclass(frozen=True)
class SpanStates:
    """States captured at span tokens, as an ordered collection of span entries (row-major).

    `tensors[(key, layer)]` is (N, D): every entry's tokens back to back, N = sum(lengths).
    `states[i]` gives entry i as {(key, layer): (lengths[i], D)}. Captured tensors are not
    detached, so gradients flow back into the model that produced them.
    """

    spec: TransplantSpec
    lengths: tuple[int, ...]
    tensors: Mapping[StateKey, torch.Tensor]

    def __post_init__(self) -> None:
        n = sum(self.lengths)
        bad = {k: tuple(t.shape) for k, t in self.tensors.items() if t.ndim != 2 or t.shape[0] != n}
        if bad:
            raise ValueError(f"SpanStates: tensors must be (N={n}, D); got {bad}")
        object.__setattr__(self, "lengths", tuple(self.lengths))
        object.__setattr__(self, "tensors", MappingProxyType(dict(self.tensors)))

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> dict[StateKey, torch.Tensor]:
        i = range(len(self))[i]
        start = sum(self.lengths[:i])
        return {k: t[start:start + self.lengths[i]] for k, t in self.tensors.items()}

    def __iter__(self) -> Iterator[dict[StateKey, torch.Tensor]]:
        return (self[i] for i in range(len(self)))

    def detach(self) -> "SpanStates":
        """The same states cut from the graph (e.g. to store them or to inject without training the source)."""
        return SpanStates(self.spec, self.lengths, {k: t.detach() for k, t in self.tensors.items()})


def _hidden(output) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


def _with_hidden(output, hidden: torch.Tensor):
    return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


class _SpanHooks:
    """Shared machinery: register one forward hook per site on enter, remove exactly those on exit."""

    def __init__(self, sites: list[Site], spans: Spans):
        self._sites = sites
        self._spans = spans
        self._handles: list = []
        self._entered = False
        self._index: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __enter__(self):
        if self._entered:
            raise RuntimeError(f"{type(self).__name__} is single-use; make a new one for another forward")
        self._entered = True
        try:
            for site in self._sites:
                self._handles.append(site.module.register_forward_hook(partial(self._hook, site)))
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self._remove()

    def _remove(self) -> None:
        while self._handles:
            self._handles.pop().remove()

    def _flat_index(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(N,) row and position indices of the span tokens, checked against `hidden` (B, T, D)."""
        check_bounds(self._spans, hidden.shape[0], hidden.shape[1])
        if hidden.device not in self._index:
            self._index[hidden.device] = flat_index(self._spans, hidden.device)
        return self._index[hidden.device]

    def _hook(self, site: Site, module: nn.Module, args, output):
        raise NotImplementedError


class Capture(_SpanHooks):
    """Records `spec`'s sites at `spans` during one forward; read them from `.kv` (or `.states`)."""

    def __init__(self, model: nn.Module, spans, spec: TransplantSpec, attention_mask: torch.Tensor | None = None):
        spans = normalize_spans(spans)
        if attention_mask is not None:
            check_not_padding(spans, attention_mask)
        super().__init__(resolve_sites(model, spec), spans)
        self.spec = spec
        self._outputs: dict[StateKey, torch.Tensor] = {}
        self._taken: set[StateKey] = set()  # sites whose `_outputs` entry is already the (N, D) span tokens
        self._states: SpanStates | None = None

    def _hook(self, site: Site, module: nn.Module, args, output) -> None:
        key = (site.key, site.layer)
        if key in self._outputs or self._states is not None:  # checkpoint recomputation: keep the first forward's
            return
        if torch._C._current_graph_task_id() != -1:
            # A checkpointed layer recomputed inside a backward: the states come from the forward. Holding this
            # output would keep the recomputed layer's graph, and all it saved, alive until the block ends.
            return
        hidden = _hidden(output)  # (B, T, D)
        check_bounds(self._spans, hidden.shape[0], hidden.shape[1])
        if not torch.is_grad_enabled():
            # No graph to keep as the recomputation makes it: take the span tokens now, not every layer's
            # whole (B, T, D) output until the block ends (an evaluation's largest tensors).
            rows, pos = self._flat_index(hidden)
            self._outputs[key] = hidden[rows, pos]  # (N, D)
            self._taken.add(key)
            return
        # Keep a reference and gather later: an indexing op here would save tensors inside a checkpointed
        # layer that its recomputation (hooks gone) does not save, which torch's checkpoint rejects.
        self._outputs[key] = hidden

    def __exit__(self, *exc) -> None:
        super().__exit__(*exc)
        if exc[0] is None and len(self._outputs) == len(self._sites):
            self._states = self._gather()  # now, to free the full (B, T, D) outputs early

    @property
    def states(self) -> SpanStates:
        """The captured states. Raises RuntimeError if no forward reached every site."""
        if self._states is None:
            self._states = self._gather()
        return self._states

    def _gather(self) -> SpanStates:
        keys = [(s.key, s.layer) for s in self._sites]
        missing = [k for k in keys if k not in self._outputs]
        if missing:
            raise RuntimeError(f"capture: no forward reached sites {missing}; run the model inside the `with` block")
        tensors = {}
        with torch.enable_grad():  # the gather joins the forward's graph whatever the grad mode is now
            for k in keys:
                if k in self._taken:
                    tensors[k] = self._outputs[k]
                    continue
                rows, pos = self._flat_index(self._outputs[k])
                tensors[k] = self._outputs[k][rows, pos]  # (N, D)
        self._outputs.clear()
        return SpanStates(self.spec, span_lengths(self._spans), tensors)

    kv = states


class Inject(_SpanHooks):
    """Overwrites `spec`'s sites at `spans` with `states` during every forward in the block."""

    def __init__(self, model: nn.Module, spans, states: SpanStates, spec: TransplantSpec | None = None,
                 attention_mask: torch.Tensor | None = None):
        spec = states.spec if spec is None else spec
        sites = resolve_sites(model, spec)
        missing = [(s.key, s.layer) for s in sites if (s.key, s.layer) not in states.tensors]
        if missing:
            raise ValueError(f"inject: the states hold no {missing} (captured with {states.spec}, "
                             f"injecting {spec})")
        spans = normalize_spans(spans)
        check_lengths(spans, states.lengths)
        check_no_overlap(spans)
        if attention_mask is not None:
            check_not_padding(spans, attention_mask)
        super().__init__(sites, spans)
        self.spec = spec
        self.states = states

    def _hook(self, site: Site, module: nn.Module, args, output):
        hidden = _hidden(output)  # (B, T, D)
        values = self.states.tensors[(site.key, site.layer)]  # (N, D)
        if values.shape[-1] != hidden.shape[-1]:
            raise ValueError(f"inject: layer {site.layer} '{site.key}': states are {values.shape[-1]} wide, "
                             f"the target's are {hidden.shape[-1]}")
        rows, pos = self._flat_index(hidden)
        return _with_hidden(output, hidden.index_put((rows, pos), values.to(hidden)))


def capture(model: nn.Module, spans: Sequence[Sequence[tuple[int, int]]], spec: TransplantSpec,
            attention_mask: torch.Tensor | None = None) -> Capture:
    """Context manager recording `spec`'s sites at `spans` during one forward.

    Args:
        model: a supported transformers decoder, plain or peft-wrapped.
        spans: per batch row, a list of (start, end) indices into the padded input_ids (end exclusive).
        spec: site and layers.
        attention_mask: (B, T); when given, a span over padding is an error.
    Returns:
        The manager; after the forward, `.kv` holds a `SpanStates` (entries row-major, not detached).
        Later calls of an already recorded site (checkpoint recomputation) are ignored.
    Raises:
        ValueError: malformed span, span outside the sequence or over padding, unsupported model.
    """
    return Capture(model, spans, spec, attention_mask)


def capture_kv(model: nn.Module, spans: Sequence[Sequence[tuple[int, int]]],
               attention_mask: torch.Tensor | None = None, *, spec: TransplantSpec | None = None) -> Capture:
    """`capture` with the default spec: k_proj and v_proj outputs (before RoPE) of every layer."""
    return Capture(model, spans, TransplantSpec() if spec is None else spec, attention_mask)


def inject(model: nn.Module, spans: Sequence[Sequence[tuple[int, int]]], states: SpanStates,
           spec: TransplantSpec | None = None, attention_mask: torch.Tensor | None = None) -> Inject:
    """Context manager overwriting `spec`'s sites at `spans` with `states` in every forward in the block.

    Entries are consumed in the row-major order of `spans`, so source and target batches may
    differ in shape as long as the span lengths match one for one. States are cast to the
    target's dtype and device. Run `backward()` inside the block when gradient checkpointing is
    on: the recomputation needs the hooks.

    Args:
        spec: which sites to overwrite; default `states.spec`. Must be covered by `states`.
    Raises:
        ValueError: (naming row, span and lengths) a different number of entries, a length
            mismatch, a span outside the sequence or over padding, overlapping spans in a row,
            a width mismatch, or sites missing from `states`.
    """
    return Inject(model, spans, states, spec, attention_mask)


def inject_kv(model: nn.Module, spans: Sequence[Sequence[tuple[int, int]]], kv: SpanStates,
              attention_mask: torch.Tensor | None = None, *, spec: TransplantSpec | None = None) -> Inject:
    """`inject` with `capture_kv`'s argument order; `spec` defaults to the one `kv` was captured with."""
    return Inject(model, spans, kv, spec, attention_mask)
