"""`cot-transplant plan`: what one process of a config's run needs, from its model's config.json alone.

No weights are loaded and nothing runs on a GPU. The model is built on the meta device (`trace.py`),
the rows as the run builds them (`plan_inputs.py`); then:

- parameters and the weights' bytes by dtype or quantization are counted from the model's own tensors
  (`plan_memory.py`);
- activations and FLOPs come from traces of the real step on the meta device, on the train split's longest
  sub-batch (`train.batch_size` rows) and on the evaluated splits' longest evaluation batch: a training step
  and an evaluation of the step the run takes and of the other one (fast path and reference), and the run's
  training step with gradient checkpointing switched the other way;
- an epoch's FLOPs are `bench/flops.py`'s analytic counts of the run's own sub-batches (an even sample),
  scaled by the trace's count over the analytic one on the longest sub-batch;
- the verdict per GPU adds the weights, the larger of the training and evaluation peaks and `RESERVE_BYTES`,
  and names the first setting that makes it fit.

`plan` returns every figure in bytes, FLOPs and seconds as a JSON-ready dict; `plan_report.format_plan`
prints it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from cot_transplant.bench.plan_inputs import (Rows, build_rows, eval_batches, evenly, longest, model_config,
                                              plan_tokenizer, sub_batches)
from cot_transplant.bench.plan_memory import (DTYPE_BYTES, SCHEMES, adapter_figures, base_bytes, base_shape,
                                              config_scheme)
from cot_transplant.bench.trace import StepTrace, attach_meta_adapters, build_meta_base, set_checkpointing, trace_step
from cot_transplant.config import Config, load_config
from cot_transplant.train import steps
from cot_transplant.train.batches import Batch, collate

GIB = 2 ** 30
# CUDA context, cuBLAS workspace and allocator slack: not traced, assumed (the low end of the README's 2-4 GB).
RESERVE_BYTES = 2 * GIB
GPUS_GIB = (24, 48, 80)  # one card: 24 GiB (RTX 3090/4090), 48 GiB (A6000, L40S), 80 GiB (A100/H100 80GB)
DEFAULT_TFLOPS = 100.0  # achieved, not peak: about 32% of an A100's 312 bf16 TFLOP/s
SAMPLE = 32  # sub-batches of an epoch (and batches of an evaluation) counted analytically, evenly spaced


@dataclass(frozen=True)
class PlanOptions:
    config: str
    overrides: tuple[str, ...] = ()
    model_config: str | None = None  # a config.json (or its directory) in place of model.name's
    tflops: float = DEFAULT_TFLOPS  # achieved TFLOP/s the wall times assume


# --- the meta model and its traces -----------------------------------------------------------------------


def trace_attention(impl: str | None) -> str:
    """The attention the trace runs for the configured one: eager as it is; sdpa (transformers' default) and
    flash_attention_2 as sdpa, which the trace runs with CUDA's memory-efficient kernel (no score matrices)."""
    return "eager" if impl == "eager" else "sdpa"


class Planner:
    """A config's model on the meta device with its rows; traces its steps on demand (each once)."""

    def __init__(self, cfg: Config, model, bases: list, settings, rows: Rows, pad_id: int):
        self.cfg, self.model, self.bases, self.settings, self.rows, self.pad_id = (
            cfg, model, bases, settings, rows, pad_id)
        self._traces: dict[tuple, StepTrace] = {}

    def batch(self, train: bool, rows: int) -> Batch:
        """The longest `rows` rows of the train split (or of the evaluated splits), collated on the host."""
        examples = self.rows.train if train else [e for v in self.rows.evaluated.values() for e in v]
        return collate(longest(examples, rows), self.pad_id, self.cfg.transplant.fraction)

    def trace(self, path: str, train: bool, checkpointing: bool, rows: int) -> StepTrace:
        key = (path, train, checkpointing, rows)
        if key not in self._traces:
            for base in self.bases:
                set_checkpointing(base, checkpointing)
            self._traces[key] = trace_step(self.model, self.batch(train, rows), self.settings, train=train,
                                           path=path, checkpointing=checkpointing)
        return self._traces[key]


def step_paths(planner: Planner, impl: str | None) -> tuple[steps.Choice, list[str]]:
    """(the step the run takes and why, the steps to trace: that one and the other of fast path and reference)."""
    from cot_transplant.train.steps.fast.step import IMPLEMENTATIONS

    model, s = planner.model, planner.settings
    batch = planner.batch(True, planner.cfg.train.batch_size)
    fast = steps.choose(model, dataclasses.replace(s, fast_path="auto"))
    fast_applies = fast.path == steps.FAST and steps.path_for(fast, batch) == steps.FAST
    run = steps.choose(model, s)
    if run.path == steps.FAST and (impl or "sdpa") not in IMPLEMENTATIONS:
        run = steps.Choice(steps.REFERENCE, f"fast path off: attn_implementation={impl} takes no custom mask")
    elif run.path == steps.FAST and not fast_applies:
        run = steps.Choice(steps.REFERENCE, f"fast path off: a sequence is longer than the sliding window "
                                            f"({run.window} tokens)")
    others = [p for p in (steps.FAST, steps.REFERENCE) if p != run.path and run.path != steps.ADVERSARIAL
              and (p != steps.FAST or fast_applies)]
    return run, [run.path, *others]


def build(cfg: Config, opts: PlanOptions) -> tuple[Planner, dict]:
    """The planner of `cfg` and what it was built from (model, tokenizer, rows), for the report."""
    from cot_transplant.models import DTYPES
    from cot_transplant.prompts.templates import choice_token_ids, get_template
    from cot_transplant.train.setup import role_bases

    tokenizer, tokenizer_name, tokenizer_note = plan_tokenizer(cfg.model.name)
    template = get_template(cfg.prompt.template, tokenizer, cfg.prompt.template_file)
    choice_ids = choice_token_ids(tokenizer, template)
    names = list(dict.fromkeys(role_bases(cfg)))  # [base] or [arguer's, chooser's]
    configs = [model_config(n, opts.model_config, len(tokenizer)) for n in names]
    contexts = [c for c in (getattr(config, "max_position_embeddings", None) for config, _ in configs) if c]
    rows = build_rows(cfg, template, tokenizer, cfg.prompt.max_tokens or (min(contexts) if contexts else None))
    dtype = getattr(torch, DTYPES[cfg.model.dtype])
    impl = trace_attention(cfg.model.attn_implementation)
    bases = [build_meta_base(config, dtype, impl, cfg.model.gradient_checkpointing, cfg.model.residual_dtype)
             for config, _ in configs]
    shapes = [base_shape(b) for b in bases]
    model = attach_meta_adapters(bases, cfg)
    # The traces run without an arguer state cache: it keeps states on the host, and a meta tensor has no values.
    settings = steps.step_settings(cfg, choice_ids)
    config = configs[-1][0].get_text_config() if hasattr(configs[-1][0], "get_text_config") else configs[-1][0]
    about = {"names": names, "sources": [source for _, source in configs], "shapes": shapes, "config": config,
             "tokenizer": tokenizer_name, "tokenizer_note": tokenizer_note, "traced_attention": impl}
    return Planner(cfg, model, bases, settings, rows, tokenizer.pad_token_id), about


# --- FLOPs ----------------------------------------------------------------------------------------------


def analytic_flops(batch: Batch, path: str, dims, s, train: bool) -> int:
    """`bench/flops.py`'s count of one batch on `path` (the reference's for the adversarial step)."""
    from cot_transplant.bench.flops import BatchShape
    from cot_transplant.bench.steps import STEP_PATHS, shape_of

    plans = {p.name: p for p in STEP_PATHS}
    if path == steps.FAST:
        return plans["fast"].flops(shape_of(batch, s), dims, train).total
    shape = BatchShape(rows=batch.chooser_ids.shape[0], arguer_len=batch.arguer_ids.shape[1],
                       chooser_len=batch.chooser_ids.shape[1])
    return plans["reference"].flops(shape, dims, train).total


def summed_flops(groups: list[list], traced: StepTrace, longest_batch: Batch, planner: Planner, dims,
                 train: bool) -> tuple[int, float]:
    """(FLOPs of all `groups` of examples, traced / analytic on `longest_batch`): an even sample of the groups
    counted analytically, scaled to their number and by that ratio (which includes checkpointing's recompute)."""
    s, pad, fraction = planner.settings, planner.pad_id, planner.cfg.transplant.fraction
    ratio = traced.flops / analytic_flops(longest_batch, traced.path, dims, s, train)
    sample = evenly(groups, SAMPLE)
    mean = sum(analytic_flops(collate(g, pad, fraction), traced.path, dims, s, train) for g in sample) / len(sample)
    return int(mean * len(groups) * ratio), ratio


def flop_figures(planner: Planner, run: str, about: dict, tflops: float) -> dict:
    """FLOPs per training step, sample, epoch and evaluation, and the wall times at `tflops` (1e12 FLOP/s)."""
    from cot_transplant.bench.flops import ModelDims

    cfg = planner.cfg
    rows, ckpt = cfg.train.batch_size, cfg.model.gradient_checkpointing
    step = planner.trace(run, True, ckpt, rows)
    plain = planner.trace(run, True, False, rows)
    out = {"train_step": step.flops, "train_step_rows": rows, "train_step_no_checkpointing": plain.flops,
           "per_sample_longest": step.flops // rows, "tflops": tflops}
    try:
        dims = ModelDims.from_config(about["config"], cfg.lora.r, cfg.lora.target_modules)
    except (AttributeError, ValueError, TypeError):
        return {**out, "analytic_train_step": None}
    longest_train = planner.batch(True, rows)
    out["analytic_train_step"] = analytic_flops(longest_train, run, dims, planner.settings, True)
    epoch, out["traced_over_analytic"] = summed_flops(sub_batches(planner.rows.train, cfg), step, longest_train,
                                                      planner, dims, True)
    out.update(epoch=epoch, per_sample_mean=epoch // len(planner.rows.train),
               epoch_seconds=epoch / (tflops * 1e12), evals_per_epoch=evals_per_epoch(cfg, len(planner.rows.train)))
    if planner.rows.evaluated:
        evaluation = planner.trace(run, False, ckpt, cfg.eval.batch_size)
        batches = eval_batches(planner.rows.evaluated, cfg.eval.batch_size)
        out["eval_pass"], _ = summed_flops(batches, evaluation, planner.batch(False, cfg.eval.batch_size), planner,
                                           dims, False)
        out["eval_pass_seconds"] = out["eval_pass"] / (tflops * 1e12)
        out["epoch_with_evals_seconds"] = out["epoch_seconds"] + out["evals_per_epoch"] * out["eval_pass_seconds"]
    return out


# --- memory and the verdict ------------------------------------------------------------------------------


def weight_bytes(shapes: list, scheme: str, cfg: Config, adapters: dict) -> int:
    """Bytes that stay for the whole run: base(s) under `scheme`, adapters, their gradients, AdamW's states."""
    rest = DTYPE_BYTES[cfg.model.dtype]
    base = sum(base_bytes(s, scheme, rest) for s in shapes)
    return base + sum(a["bytes"] for a in adapters["adapters"].values()) + adapters["grad_bytes"] + \
        adapters["adamw_bytes"]


def needed_bytes(planner: Planner, run: str, shapes: list, adapters: dict, *, scheme: str, checkpointing: bool,
                 train_rows: int, eval_rows: int) -> int:
    """One process's memory at its peak under these settings: weights, the larger step peak, `RESERVE_BYTES`."""
    peak = planner.trace(run, True, checkpointing, train_rows).peak_bytes
    if planner.rows.evaluated:
        peak = max(peak, planner.trace(run, False, planner.cfg.model.gradient_checkpointing, eval_rows).peak_bytes)
    return weight_bytes(shapes, scheme, planner.cfg, adapters) + peak + RESERVE_BYTES


def changes(cfg: Config) -> list[tuple[str, dict]]:
    """Settings to try, one at a time, when a GPU is too small: (the override to name, what it changes)."""
    out = []
    if not cfg.model.gradient_checkpointing:
        out.append(("model.gradient_checkpointing=true", {"checkpointing": True}))
    if cfg.train.batch_size > 1:
        out.append(("train.batch_size=1", {"train_rows": 1}))
    if cfg.eval.batch_size > 1:
        out.append(("eval.batch_size=1", {"eval_rows": 1}))
    scheme = config_scheme(cfg)
    if scheme not in ("8-bit", "4-bit"):
        out.append(("model.load_in_8bit=true", {"scheme": "8-bit"}))
    if scheme != "4-bit":
        off = "model.load_in_8bit=false " if scheme == "8-bit" else ""
        out.append((f"{off}model.load_in_4bit=true", {"scheme": "4-bit"}))
    return out


def verdict(planner: Planner, run: str, shapes: list, adapters: dict) -> list[dict]:
    """Per GPU size in `GPUS_GIB`: the bytes the config needs, whether they fit, else the change that fits."""
    cfg = planner.cfg
    current = {"scheme": config_scheme(cfg), "checkpointing": cfg.model.gradient_checkpointing,
               "train_rows": cfg.train.batch_size, "eval_rows": cfg.eval.batch_size}

    def need(settings: dict) -> int:
        return needed_bytes(planner, run, shapes, adapters, **settings)

    out = []
    for gib in GPUS_GIB:
        total = need(current)
        entry = {"gpu_gib": gib, "needs_bytes": total, "fits": total <= gib * GIB, "change": None,
                 "needs_after_change": None}
        if not entry["fits"]:
            label, after = first_fit(changes(cfg), current, need, gib * GIB)
            entry.update(change=label, needs_after_change=after, change_fits=after <= gib * GIB)
        out.append(entry)
    return out


def first_fit(options: list[tuple[str, dict]], current: dict, need, capacity: int) -> tuple[str, int]:
    """(the first of `options` under which `need` (settings -> bytes) fits `capacity`, its bytes), else all of them
    together. Options are tried in order and only until one fits: each may cost a trace."""
    for label, what in options:
        after = need({**current, **what})
        if after <= capacity:
            return label, after
    everything = {**current, **{k: v for _, what in options for k, v in what.items()}}
    return " ".join(label for label, _ in options), need(everything)


# --- the plan -------------------------------------------------------------------------------------------


def plan(opts: PlanOptions) -> dict:
    """Every figure of the plan of `opts.config`: bytes, FLOPs, seconds (see the module docstring).

    Raises:
        UserError: a missing or bad config, data file or model config (one line).
        TraceError: a step failed on the meta device.
    """
    cfg = load_config(opts.config, list(opts.overrides))
    planner, about = build(cfg, opts)
    run, paths = step_paths(planner, cfg.model.attn_implementation)
    adapters = adapter_figures(planner.model, cfg.variant)
    return {"config": opts.config, "overrides": list(opts.overrides), "model": model_section(cfg, about),
            "tokenizer": {"name": about["tokenizer"], "note": about["tokenizer_note"]},
            "data": data_section(planner), "step": {"path": run.path, "reason": run.reason, "traced": paths},
            "parameters": {"base": sum(s.params for s in about["shapes"]),
                           "linear_quantizable": sum(s.linear for s in about["shapes"]),
                           "adapters": {k: v["params"] for k, v in adapters["adapters"].items()},
                           "trainable": adapters["trainable_params"]},
            "memory_bytes": memory_section(planner, run.path, paths, about["shapes"], adapters),
            "flops": flop_figures(planner, run.path, about, opts.tflops),
            "verdict": verdict(planner, run.path, about["shapes"], adapters)}


def model_section(cfg: Config, about: dict) -> dict:
    config = about["config"]
    return {"names": about["names"], "config_json": about["sources"], "model_type": config.model_type,
            "layers": config.num_hidden_layers, "hidden": config.hidden_size, "vocab": config.vocab_size,
            "dtype": cfg.model.dtype, "storage": config_scheme(cfg),
            "attn_implementation": cfg.model.attn_implementation, "traced_attention": about["traced_attention"],
            "gradient_checkpointing": cfg.model.gradient_checkpointing}


def data_section(planner: Planner) -> dict:
    rows, cfg = planner.rows, planner.cfg
    return {"train_rows": len(rows.train), "evaluated_rows": {k: len(v) for k, v in rows.evaluated.items()},
            "skipped_for_length": rows.skipped, "train_batch": _batch_shape(planner.batch(True, cfg.train.batch_size)),
            "eval_batch": _batch_shape(planner.batch(False, cfg.eval.batch_size)) if rows.evaluated else None}


def memory_section(planner: Planner, run: str, paths: list[str], shapes: list, adapters: dict) -> dict:
    """Bytes of the weights by storage, of the adapters and their optimizer, and of the traced steps."""
    cfg = planner.cfg
    rest, ckpt, rows = DTYPE_BYTES[cfg.model.dtype], cfg.model.gradient_checkpointing, cfg.train.batch_size
    activations = {}
    for path in paths:  # the run's step with checkpointing both ways; the other with the config's
        traces = [planner.trace(path, True, c, rows) for c in ((True, False) if path == run else (ckpt,))]
        if planner.rows.evaluated:
            traces.append(planner.trace(path, False, ckpt, cfg.eval.batch_size))
        activations[path] = [dataclasses.asdict(t) for t in traces]
    return {"base": {scheme: sum(base_bytes(s, scheme, rest) for s in shapes) for scheme in SCHEMES},
            "base_config": sum(base_bytes(s, config_scheme(cfg), rest) for s in shapes),
            "adapters": {k: v["bytes"] for k, v in adapters["adapters"].items()},
            "adapter_dtype": next(iter(adapters["adapters"].values()))["dtype"],
            "adapter_grads": adapters["grad_bytes"], "adamw_states": adapters["adamw_bytes"],
            "transplanted_states": transplanted_bytes(planner.batch(True, rows), planner),
            "reserve": RESERVE_BYTES, "activations": activations,
            "total_config": needed_bytes(planner, run, shapes, adapters, scheme=config_scheme(cfg), checkpointing=ckpt,
                                         train_rows=rows, eval_rows=cfg.eval.batch_size)}


def _batch_shape(batch: Batch) -> dict:
    """Rows and padded lengths of a batch, with the fast path's packed lengths."""
    from cot_transplant.train.steps.fast.plan import fast_shapes

    packed, kept, extra, _, _ = fast_shapes(batch)
    return {"rows": batch.chooser_ids.shape[0], "chooser_tokens": batch.chooser_ids.shape[1],
            "arguer_rows": batch.arguer_ids.shape[0], "arguer_tokens": batch.arguer_ids.shape[1],
            "packed_arguer_tokens": packed, "kept_chooser_tokens": kept, "transplanted_tokens": extra}


def transplanted_bytes(batch: Batch, planner: Planner) -> int:
    """Bytes of the states one sub-batch transplants: every span token, every site, in the model's dtype."""
    from cot_transplant.train.setup import state_shape
    from cot_transplant.transplant import TransplantSpec

    spec: TransplantSpec = planner.settings.spec
    if not planner.settings.transplants:
        return 0
    n_layers, width = state_shape(planner.bases[-1], spec.site)
    layers = n_layers if spec.layers is None else len(spec.layers)
    tokens = sum(e - s for row in batch.arguer_spans for s, e in row)
    return tokens * layers * len(spec.keys) * width * DTYPE_BYTES[planner.cfg.model.dtype]


def evals_per_epoch(cfg, n_train: int) -> int:
    """Evaluations in the first epoch of `n_train` rows: the `eval.at` points within it, else one per `eval.every`."""
    if cfg.eval.at is not None:
        return sum(1 for point in cfg.eval.at if point <= n_train)
    return n_train // cfg.eval.every
