"""Where a step's tensors live: the model's device for the passes, the host copy for span checks and plans.

A step takes a batch as collated, on the host or already on the model's device. It runs the passes on the
model's device (`on_model`) and reads span checks from the host copy, so no step reads a value back from
the device except the finite-loss check (`finite`); a meta model (`cot-transplant plan`'s shape trace)
passes through every step without a value read.
"""

from __future__ import annotations

import torch

from cot_transplant.train.batches import Batch


def model_device(model) -> torch.device:
    """Where `model` (plain or peft-wrapped) computes: the device of its input embeddings."""
    return model.get_input_embeddings().weight.device


def host_copy(batch: Batch) -> Batch:
    """`batch` on the host: the copy it was collated from where it kept one (`Batch.host`: no read back from
    the device), itself when it is on the host, else one copy back (a sync on an accelerator).

    A meta batch made without a host copy has no values: it is its own host copy (span checks then check
    bounds only).
    """
    if batch.host is not None:
        return batch.host
    return batch if batch.arguer_ids.device.type in ("cpu", "meta") else batch.to("cpu")


def on_model(batch: Batch, model, host: Batch | None = None) -> tuple[Batch, Batch]:
    """(`batch` on the host, `batch` on `model`'s device): span checks read the first, the passes run the second.

    `host`: the host copy where the caller has one (else `host_copy`).
    """
    return host_copy(batch) if host is None else host, batch.to(model_device(model))


def finite(t: torch.Tensor) -> bool:
    """Whether every value of `t` is finite: a host read (a sync on an accelerator) that decides the backward.

    A meta tensor holds no values (a shape trace): it counts as finite, so the trace runs the backward too.
    """
    return t.device.type == "meta" or bool(torch.isfinite(t).all())
