"""Backward for one base model with two peft adapters: adapter switching and the two-phase recipe.

With gradient checkpointing, `backward()` recomputes every checkpointed layer with
whatever adapter is active *then*, and with whatever hooks are registered then. One
`backward()` after the chooser pass would recompute the arguer's layers under the
chooser adapter (and the chooser's inject hooks, which sit on the same modules):
wrong arguer gradients, silently. The recipe splits it:

1. inside the inject block, chooser active: `backward_to_states` takes the gradients
   of the loss w.r.t. the chooser's parameters (accumulated into `.grad`) and w.r.t.
   the captured states, without running any of the arguer's graph;
2. outside the inject block, arguer active: `backward_from_states` sends those
   gradients into the arguer.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable, Iterator

import torch
from torch import nn

from cot_transplant.transplant.hooks import SpanStates


@contextmanager
def active_adapter(model: nn.Module, name: str) -> Iterator[None]:
    """Make peft adapter `name` the active one for the block, then restore the previous one.

    peft's `set_adapter` also sets `requires_grad=False` on every other adapter, and
    autograd skips leaves that do not require grad at backward time even in a graph built
    while they did: the arguer's gradients come out as exactly 0. This keeps every
    parameter's `requires_grad` as it was.
    """
    previous = model.active_adapter
    if previous == name:  # already active: switching would walk the whole model (tens of ms) to change nothing
        yield
        return
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        model.set_adapter(name)
        _restore(flags)
        yield
    finally:
        model.set_adapter(previous)
        _restore(flags)


def _restore(flags: list[tuple[nn.Parameter, bool]]) -> None:
    for param, requires_grad in flags:
        param.requires_grad_(requires_grad)


def backward_to_states(loss: torch.Tensor, states: SpanStates,
                       params: Iterable[nn.Parameter]) -> tuple[torch.Tensor | None, ...]:
    """Phase 1: accumulate d loss / d `params` into their `.grad`; return d loss / d `states.tensors`.

    Run it inside the inject block with the target's adapter active. Only the part of the
    graph between the loss and `params`/states runs, so the source's layers are not
    recomputed here. Returns one gradient per `states.tensors` value (None where a tensor
    does not require grad or does not reach the loss).
    """
    params = [p for p in params if p.requires_grad]
    tensors = list(states.tensors.values())
    wrt = params + [t for t in tensors if t.requires_grad]
    if not wrt:
        return tuple(None for _ in tensors)
    grads = list(torch.autograd.grad(loss, wrt, allow_unused=True))
    for param, grad in zip(params, grads):
        if grad is not None:
            param.grad = grad if param.grad is None else param.grad + grad
    state_grads = iter(grads[len(params):])
    return tuple(next(state_grads) if t.requires_grad else None for t in tensors)


def backward_from_states(states: SpanStates, grads: Iterable[torch.Tensor | None]) -> None:
    """Phase 2: backpropagate `grads` (from `backward_to_states`) through the captured states.

    Run it outside the inject block with the source's adapter active.
    """
    pairs = [(t, g) for t, g in zip(states.tensors.values(), grads) if g is not None]
    if pairs:
        torch.autograd.backward([t for t, _ in pairs], [g for _, g in pairs])
