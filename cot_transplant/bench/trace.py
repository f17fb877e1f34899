"""Shape traces of the step on the meta device: a model from its config.json, no weights, no GPU.

`build_meta_model` builds the run's model (base(s) and LoRA adapters, as `train/setup.py` attaches them)
with every tensor on the meta device: a shape and a dtype, no storage. `trace_step` runs one real
training step or evaluation forward there, through `train/steps/`'s entry points. A device, dtype or
shape error of the step raises as it would on a GPU: a CPU tensor meeting a meta one raises, and so does a
read of a value on the host. It measures:

- memory: the bytes of every storage the step creates, while it is alive (`LiveBytes`): held when the
  backward starts (what the forward keeps for it: tensors saved for backward, checkpointed layers' inputs,
  the transplanted states) and at the peak (checkpointed layers recomputed, gradients, temporaries);
- saved for backward: `saved_tensors_hooks`, unique storages, parameters aside (nothing inside a
  checkpointed layer: it keeps only its inputs);
- FLOPs: the formulas of torch's flop counter (`torch.utils.flop_counter.flop_registry`: matrix products
  and attention, as `bench/flops.py` counts them), applied op by op (`FlopCounterMode` itself tracks modules
  with hooks that keep tensors alive, which would show in the memory).

Two stand-ins make the trace a GPU's (`gpu_kernels`): scaled-dot-product attention runs the meta kernel of
CUDA's memory-efficient attention, which PyTorch picks on a GPU for a masked call (on meta it would take the
math kernel, which keeps every score matrix); and transformers' check of the padding mask for a chance to
drop it (a host read, which meta cannot answer) is answered "no", as under compilation: the mask is built,
as it is for every padded batch.
"""

from __future__ import annotations

import dataclasses
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from cot_transplant.config import Config
from cot_transplant.train import steps
from cot_transplant.train.adapters import ModelPair, attach_adapters
from cot_transplant.train.batches import Batch

META = torch.device("meta")


class TraceError(RuntimeError):
    """The step failed on the meta device: it would fail the same way on a GPU."""


# --- the model -----------------------------------------------------------------------------------------


def build_meta_base(config, dtype: torch.dtype, attn_implementation: str, checkpointing: bool,
                    residual_dtype: str | None = None):
    """A causal LM of `config` on the meta device in `dtype`, as `train/setup.py` prepares a loaded base."""
    from transformers import AutoModelForCausalLM

    with META:
        base = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=attn_implementation)
    set_checkpointing(base, checkpointing)
    if residual_dtype:
        from cot_transplant.transplant.residual64 import ResidualDtype

        ResidualDtype(base, getattr(torch, residual_dtype)).install()
    return base


def set_checkpointing(base, on: bool) -> None:
    """Gradient checkpointing of one base on or off (non-reentrant, as `setup_model` turns it on)."""
    if on:
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    else:
        base.gradient_checkpointing_disable()


def attach_meta_adapters(bases: list, cfg: Config):
    """The variant's adapters on `bases` ([chooser] or [arguer, chooser]), everything on the meta device.

    `lora.init_adapter` is not read (no weights). peft puts an adapter added to a meta base on the CPU;
    the whole model moves to meta after.
    """
    lora = dataclasses.replace(cfg.lora, init_adapter=None)
    if len(bases) == 1:
        return attach_adapters(bases[0], lora, cfg.variant, cfg.seed).to(META)
    return ModelPair(attach_adapters(bases[0], lora, cfg.variant, cfg.seed, names=("arguer",)),
                     attach_adapters(bases[1], lora, cfg.variant, cfg.seed + 1, names=("chooser",))).to(META)


# --- GPU kernels on meta -------------------------------------------------------------------------------


def efficient_attention(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None,
                        enable_gqa=False):
    """`scaled_dot_product_attention` as CUDA's memory-efficient kernel runs it: (B, H, Tq, hd).

    A boolean mask becomes an additive bias in the query's dtype (as PyTorch converts it on a GPU); grouped
    key/value heads are expanded to every query head.
    """
    heads = query.shape[1]
    if key.shape[1] != heads:
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    bias = None
    if attn_mask is not None:
        bias = (torch.zeros(attn_mask.shape, dtype=query.dtype, device=query.device).masked_fill(~attn_mask, -torch.inf)
                if attn_mask.dtype == torch.bool else attn_mask.to(query.dtype))
        bias = bias.expand(query.shape[0], heads, query.shape[2], key.shape[2])
    return torch.ops.aten._scaled_dot_product_efficient_attention(query, key, value, bias, True, dropout_p,
                                                                  is_causal, scale=scale)[0]


@contextmanager
def gpu_kernels() -> Iterator[None]:
    """For the block, attention on meta tensors runs `efficient_attention`, and transformers builds the padding
    mask of meta inputs without reading it (see the module docstring)."""
    import transformers.masking_utils as masking

    sdpa, is_tracing = torch.nn.functional.scaled_dot_product_attention, masking.is_tracing

    def attention(query, *args, **kwargs):
        return (efficient_attention if query.device.type == "meta" else sdpa)(query, *args, **kwargs)

    def tracing(tensor=None) -> bool:
        return is_tracing(tensor) or (isinstance(tensor, torch.Tensor) and tensor.device.type == "meta")

    # Patched by name: the checkpointed layers' recomputation runs inside the backward, where no mode stays on.
    torch.nn.functional.scaled_dot_product_attention, masking.is_tracing = attention, tracing
    try:
        yield
    finally:
        torch.nn.functional.scaled_dot_product_attention, masking.is_tracing = sdpa, is_tracing


# --- measuring -----------------------------------------------------------------------------------------


def _storage(t: torch.Tensor):
    return t.untyped_storage()


class StepMeter(TorchDispatchMode):
    """The ops under the mode: the bytes of the storages they create while those are alive, and their FLOPs.

    Only storages on `device` count (the host's index plans and span checks are not the device's memory). A
    storage is counted once, when an op first returns it, unless it is one of `existing` (the model's
    parameters and buffers, which views such as a weight's transpose share). Everything else a step touches
    is made inside it. `peak`: the most bytes alive at once; `at_backward`: alive when the first backward op
    ran (what the forward left for the backward), None if no backward ran; `flops`: by torch's flop counter's
    formulas, on any device.
    """

    def __init__(self, existing: set[int], device: torch.device):
        super().__init__()
        self.device = device
        from torch.utils.flop_counter import flop_registry

        self.now = self.peak = self.flops = 0
        self.at_backward: int | None = None
        self._alive: dict[int, tuple[int, weakref.ref]] = {}
        self._existing = existing
        self._formulas = flop_registry

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.at_backward is None and torch._C._current_graph_task_id() != -1:
            self.at_backward = self.now
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self._formulas.get(func._overloadpacket)
        if formula is not None:
            self.flops += formula(*args, **kwargs, out_val=out)
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device == self.device:
                self._add(_storage(t))
        return out

    def _add(self, storage) -> None:
        key = storage._cdata
        if key in self._alive or key in self._existing or storage.nbytes() == 0:
            return
        self._alive[key] = (storage.nbytes(), weakref.ref(storage, partial(self._free, key)))
        self.now += storage.nbytes()
        self.peak = max(self.peak, self.now)

    def _free(self, key: int, _ref) -> None:
        size, _ = self._alive.pop(key, (0, None))
        self.now -= size


class SavedBytes:
    """Bytes of the tensors on `device` that autograd saves for backward in a block: each storage once while it
    lives, `existing` ones (the parameters) aside."""

    def __init__(self, existing: set[int], device: torch.device):
        self.bytes = 0
        self.device = device
        self._existing = existing
        self._seen: dict[int, weakref.ref] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = _storage(t)
        key = storage._cdata
        if t.device == self.device and key not in self._seen and key not in self._existing:
            self._seen[key] = weakref.ref(storage, partial(self._forget, key))
            self.bytes += storage.nbytes()
        return t

    def _forget(self, key: int, _ref) -> None:
        self._seen.pop(key, None)

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)


def _where(exc: BaseException) -> str:
    """' at <file>:<line>' of the innermost frame of this package (this file's measuring aside) in `exc`'s
    traceback, or ''."""
    import traceback

    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if "cot_transplant" in f.filename and f.filename != __file__]
    if not frames:
        return ""
    path = frames[-1].filename
    return f" at {path[path.rindex('cot_transplant'):]}:{frames[-1].lineno}"


@dataclass(frozen=True)
class StepTrace:
    """One traced step: what it ran on, its FLOPs and the memory its own tensors took (bytes)."""

    path: str  # the step it ran (`steps.choice`): fast | reference | adversarial
    train: bool  # a training step (forward + two-phase backward); else an evaluation forward
    checkpointing: bool
    rows: int
    flops: int
    held_bytes: int  # alive when the backward started (the forward's peak for an evaluation)
    peak_bytes: int
    saved_bytes: int  # saved for backward, unique storages (0 for an evaluation)
    seconds: float  # the trace's own time on this CPU (not a GPU's)


def trace_step(model, batch: Batch, settings, *, train: bool, path: str, checkpointing: bool) -> StepTrace:
    """Run one training step (`train`) or evaluation forward of `model` (on meta) on `batch` under `settings`,
    through `steps.forward_backward` / `steps.forward` on the step `path`, and measure it.

    Raises:
        TraceError: the step raised; the message names the step and the error.
    """
    params = {_storage(p)._cdata for p in model.parameters()} | {_storage(b)._cdata for b in model.buffers()}
    device = next(model.parameters()).device
    meter, saved = StepMeter(params, device), SavedBytes(params, device)
    step = steps.Choice(path, "traced")
    model.zero_grad(set_to_none=True)
    model.train(train)
    start = time.perf_counter()
    try:
        with gpu_kernels(), meter, saved.hooks():
            if train:
                steps.forward_backward(model, batch, settings, step, 1.0)
            else:
                with torch.no_grad():
                    steps.forward(model, batch, settings, step)
    except Exception as exc:
        what = "training step" if train else "evaluation forward"
        first = (str(exc).strip().splitlines() or [""])[0]
        raise TraceError(f"the {path} {what} failed on the meta device ({type(exc).__name__}: {first}){_where(exc)}; "
                         "it would fail the same way on a GPU: a tensor made on another device than its model's, a "
                         "value read on the host, or a shape or dtype mismatch in the step") from exc
    finally:
        model.zero_grad(set_to_none=True)
        model.train()
    held = meter.at_backward if meter.at_backward is not None else meter.peak
    return StepTrace(path, train, checkpointing, len(batch.row_ids), int(meter.flops), held, meter.peak,
                     saved.bytes, time.perf_counter() - start)
