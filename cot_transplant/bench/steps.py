"""The step paths the benchmark compares, as a registry keyed by name.

Each path is one way to run the same joint step on the same batch:
- `original-style`: a model of the seed's step. Full passes with logits at every
  position of both passes (the arguer's included), the arguer's whole k/v outputs kept
  per layer, then copied into the chooser's k/v row by row and candidate by candidate
  in Python, one backward.
- `reference`: the reference step, `cot_transplant.train.steps.reference.train_forward_backward`
  (span capture, span inject, last-position logits, two-phase backward).
- `plain-lora`: no transplant; the arguer rows and chooser rows as ordinary LoRA passes
  (last-position logits, loss on each), one backward: the cost floor of these tokens.
- `fast`: the exact fast path, `cot_transplant.train.steps.fast.train_forward_backward`
  (shared arguer prefix, chooser without the candidate positions, the arguer's last layer only
  up to its K/V, the chooser's last layer for the final query only).

A new path (e.g. a fast path) is one more `StepPath` in `STEP_PATHS`, with its FLOP
plan; the runner and the table pick it up. Order matters: ratios read "later vs earlier".
"""

from __future__ import annotations

import dataclasses
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Callable, Iterator

import torch

from cot_transplant.bench.flops import (PROJ_SHAPES, BatchShape, ModelDims, StepFlops, attention_flops, head_params,
                                        passes_flops, projection_params)
from cot_transplant.train.steps import fast
from cot_transplant.train.adapters import role_adapters, role_model
from cot_transplant.train.batches import Batch, position_ids
from cot_transplant.train.steps import StepSettings, loss_and_probs
from cot_transplant.train.steps.fast import StateCache, fast_shapes
from cot_transplant.train.steps.reference import forward, train_forward_backward
from cot_transplant.transplant import active_adapter
from cot_transplant.transplant.arch import resolve_sites


@dataclass(frozen=True)
class StepPath:
    """One benchmarked path: a train step (forward + backward into .grad), an eval forward, its FLOPs.

    `train` and `evaluate` take (model, batch, settings, arguer state cache or None).
    """

    name: str
    description: str
    train: Callable[[torch.nn.Module, Batch, StepSettings, StateCache | None], None]
    evaluate: Callable[[torch.nn.Module, Batch, StepSettings, StateCache | None], None]  # under torch.no_grad()
    flops: Callable[[BatchShape, ModelDims, bool], StepFlops]  # (shape, dims, train) -> FLOPs
    rows_per_forward: int | None = None  # rows per train/eval batch; None: train.batch_size / eval.batch_size
    adapt: Callable[[StepSettings], StepSettings] | None = None  # its settings from the harness's (another variant)
    cached: bool = False  # it reads the arguer's states from its own state cache (filled in its warm-up round)

    def setup(self, base: StepSettings) -> tuple[StepSettings, StateCache | None]:
        """The settings it runs under and its own arguer state cache (a fresh one, or None): made once per row
        source."""
        return (base if self.adapt is None else self.adapt(base)), (StateCache(8 * 2 ** 30) if self.cached else None)


def shape_of(batch: Batch, s: StepSettings) -> BatchShape:
    """The batch's shapes, the fast path's under the block sizes of `s` (train.fast_path_block/_gap)."""
    packed, kept, extra, arguer_pairs, chooser_pairs = fast_shapes(batch, s.fast_path_block, s.fast_path_gap,
                                                                           s.mode == "append")
    return BatchShape(rows=batch.chooser_ids.shape[0], arguer_len=batch.arguer_ids.shape[1],
                      chooser_len=batch.chooser_ids.shape[1], packed_arguer_len=packed, kept_chooser_len=kept,
                      extra_keys=extra, arguer_pairs=arguer_pairs, chooser_pairs=chooser_pairs)


# --- reference ------------------------------------------------------------------------------------------


def _reference_train(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    train_forward_backward(model, batch, s, scale=1.0)


def _reference_eval(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    forward(model, batch, s)


def _reference_flops(shape: BatchShape, dims: ModelDims, train: bool) -> StepFlops:
    # Arguer: decoder body only (no LM head); chooser: logits at the last position.
    return passes_flops(shape, dims, arguer_logits=0, chooser_logits=1, arguer_grad_logits=0,
                        chooser_grad_logits=1, backward=train)


# --- original-style -------------------------------------------------------------------------------------


@contextmanager
def _forward_hooks(model, spec, hook) -> Iterator[None]:
    """Register `hook(site, module, args, output)` on every k/v site of `spec`; remove exactly those."""
    handles = []
    try:
        for site in resolve_sites(model, spec):
            handles.append(site.module.register_forward_hook(partial(hook, site)))
        yield
    finally:
        for h in handles:
            h.remove()


def original_forward(model, batch: Batch, s: StepSettings):
    """The seed's forward, modelled: per-row loss (B,), P1, P2; the graph reaches both adapters."""
    arguer_name, chooser_name = role_adapters(s.variant)
    kept: dict[tuple[str, int], torch.Tensor] = {}

    def keep(site, module, args, output):
        kept[(site.key, site.layer)] = output  # (2B, Ta, D): every position, every layer

    def overwrite(site, module, args, output):
        source = kept[(site.key, site.layer)]
        out = output.clone()
        for b in range(out.shape[0]):  # per row, per candidate, in Python
            for j, (start, end) in enumerate(batch.chooser_spans[b]):
                a_start, a_end = batch.arguer_spans[2 * b + j][0]
                out[b, start:end] = source[2 * b + j, a_start:a_end]
        return out

    arguer, chooser = role_model(model, arguer_name), role_model(model, chooser_name)
    with active_adapter(arguer, arguer_name), _forward_hooks(arguer, s.spec, keep):
        arguer(input_ids=batch.arguer_ids, attention_mask=batch.arguer_mask,
               position_ids=position_ids(batch.arguer_mask), use_cache=False)  # logits (2B, Ta, V), unused
    with active_adapter(chooser, chooser_name), _forward_hooks(chooser, s.spec, overwrite):
        logits = chooser(input_ids=batch.chooser_ids, attention_mask=batch.chooser_mask,
                         position_ids=position_ids(batch.chooser_mask), use_cache=False).logits  # (B, Tc, V)
    return loss_and_probs(logits[:, -1, :].float(), batch.labels, s)


def _original_train(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    loss, _, _ = original_forward(model, batch, s)
    loss.sum().backward()  # one backward through both passes (exact only without gradient checkpointing)


def _original_eval(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    original_forward(model, batch, s)


def _original_flops(shape: BatchShape, dims: ModelDims, train: bool) -> StepFlops:
    # Logits at every position of both passes; only the chooser's reach the loss, but the slice's
    # gradient is dense, so the LM head's backward runs over every chooser position.
    return passes_flops(shape, dims, arguer_logits=shape.arguer_len, chooser_logits=shape.chooser_len,
                        arguer_grad_logits=0, chooser_grad_logits=shape.chooser_len, backward=train)


# --- plain LoRA -----------------------------------------------------------------------------------------


def _last_logits(model, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    out = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1,
                use_cache=False)
    return out.logits[:, -1, :].float()  # (rows, V)


def plain_forward(model, batch: Batch, s: StepSettings) -> torch.Tensor:
    """Both token sets as ordinary passes, no hooks: the summed last-position loss of every sequence."""
    arguer_name, chooser_name = role_adapters(s.variant)
    arguer, chooser = role_model(model, arguer_name), role_model(model, chooser_name)
    with active_adapter(arguer, arguer_name):
        arguer_loss, _, _ = loss_and_probs(_last_logits(arguer, batch.arguer_ids, batch.arguer_mask),
                                           batch.labels.repeat_interleave(2), s)
    with active_adapter(chooser, chooser_name):
        chooser_loss, _, _ = loss_and_probs(_last_logits(chooser, batch.chooser_ids, batch.chooser_mask),
                                            batch.labels, s)
    return arguer_loss.sum() + chooser_loss.sum()


def _plain_train(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    plain_forward(model, batch, s).backward()


def _plain_eval(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    plain_forward(model, batch, s)


def _plain_flops(shape: BatchShape, dims: ModelDims, train: bool) -> StepFlops:
    return passes_flops(shape, dims, arguer_logits=1, chooser_logits=1, arguer_grad_logits=1,
                        chooser_grad_logits=1, backward=train)


# --- fast path ------------------------------------------------------------------------------------------


def _fast_train(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    fast.train_forward_backward(model, batch, s, 1.0, cache)


def _fast_eval(model, batch: Batch, s: StepSettings, cache: StateCache | None = None) -> None:
    fast.forward(model, batch, s, cache)


def _fast_flops(shape: BatchShape, dims: ModelDims, train: bool, arguer: bool = True) -> StepFlops:
    # Arguer: one packed row per example, no LM head; its last layer only the K/V projections. Chooser: the kept
    # tokens through every layer but the last; the last layer's K/V projections over them all, its other
    # projections, attention and MLP for the final query, and logits there. Attention: the query-key pairs it
    # computes (blocks skip the pairs the pattern rules out); when unknown, the full squares.
    kv, rest = ("k_proj", "v_proj"), tuple(n for n in PROJ_SHAPES if n not in ("k_proj", "v_proj"))
    (w_kv, l_kv), (w_rest, l_rest) = projection_params(dims, kv), projection_params(dims, rest)
    lower = dims.layers - 1
    packed = shape.packed_arguer_len if arguer else 0  # without the arguer: its states come from the cache
    arguer_pairs = (shape.arguer_pairs or shape.rows * shape.packed_arguer_len ** 2) if arguer else 0
    chooser_pairs = shape.chooser_pairs or shape.rows * shape.kept_chooser_len * (shape.extra_keys
                                                                                  + shape.kept_chooser_len)
    last_pairs = shape.rows * (shape.extra_keys + shape.kept_chooser_len)  # the final query over every key
    per_pair = attention_flops(1, dims) // dims.layers  # one layer: 4 * heads * head_dim
    attention = per_pair * (lower * (arguer_pairs + chooser_pairs) + last_pairs)
    # Tokens through all of a layer's projections (the chooser's final query in its last layer too), and
    # through the last layer's K/V only (the arguer's tokens, the chooser's earlier ones).
    full_tokens = lower * (packed + shape.kept_chooser_len) + 1
    kv_tokens = packed + shape.kept_chooser_len - 1
    weights = full_tokens * (w_kv + w_rest) + kv_tokens * w_kv
    lora = full_tokens * (l_kv + l_rest) + kv_tokens * l_kv
    fwd = shape.rows * (2 * (weights + lora) + 2 * head_params(dims)) + attention
    if not train:
        return StepFlops(fwd, 0)
    # Input gradients (one product per linear product), the adapters' weight gradients, attention twice.
    bwd = shape.rows * (2 * (weights + lora) + 2 * head_params(dims) + 2 * lora) + 2 * attention
    return StepFlops(fwd, bwd)


# --- frozen arguer, states cached ----------------------------------------------------------------------


def _frozen(s: StepSettings) -> StepSettings:
    """`frozen-arguer` (its states then come from the path's state cache, which a warm-up round fills)."""
    return dataclasses.replace(s, variant="frozen-arguer")


def _cached_flops(shape: BatchShape, dims: ModelDims, train: bool) -> StepFlops:
    # From the second pass over a row: the chooser's part of the fast path only (no arguer pass, no arguer backward).
    return _fast_flops(shape, dims, train, arguer=False)


# --- registry -------------------------------------------------------------------------------------------


def registry(*paths: StepPath) -> tuple[StepPath, ...]:
    """An ordered, immutable registry; a duplicate name is an error."""
    names = [p.name for p in paths]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"bench: step path name(s) registered twice: {dupes}")
    return tuple(paths)


STEP_PATHS: tuple[StepPath, ...] = registry(
    StepPath("original-style", "seed-style: full logits everywhere, whole K/V kept, per-row Python copy, "
             "one backward", _original_train, _original_eval, _original_flops),
    StepPath("reference", "current step: span capture/inject hooks, last-position logits, two-phase backward",
             _reference_train, _reference_eval, _reference_flops),
    StepPath("plain-lora", "no transplant: arguer and chooser rows as ordinary LoRA passes, last-position loss",
             _plain_train, _plain_eval, _plain_flops),
    StepPath("fast", "exact fast path: arguer prefix shared by both candidates, chooser skips the candidate "
             "positions (transplanted K/V as extra keys), last-position logits", _fast_train, _fast_eval, _fast_flops),
    StepPath("frozen-cached", "frozen-arguer on the fast path, the arguer's states from the state cache (filled in "
             "the warm-up round: a second epoch, or a second evaluation)", _fast_train, _fast_eval, _cached_flops,
             adapt=_frozen, cached=True),
    StepPath("original-style@2", "original-style at two rows per forward", _original_train, _original_eval,
             _original_flops, rows_per_forward=2),
    StepPath("fast@2", "the fast path at two rows per forward", _fast_train, _fast_eval, _fast_flops,
             rows_per_forward=2),
)


def select(names: list[str] | None, paths: tuple[StepPath, ...] = STEP_PATHS) -> tuple[StepPath, ...]:
    """The registered paths named in `names` (registry order), or all of them.

    Raises:
        ValueError: an unknown name (the message lists the known ones).
    """
    if not names:
        return paths
    known = [p.name for p in paths]
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"bench: unknown step path(s) {unknown}; known: {', '.join(known)}")
    return tuple(p for p in paths if p.name in names)
