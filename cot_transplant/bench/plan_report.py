"""The text of `cot-transplant plan`: tables of the figures `bench.plan.plan` returns (bytes shown in GiB)."""

from __future__ import annotations

GIB = 2 ** 30
TERA = 1e12


def gib(n: int | None) -> str:
    return "n/a" if n is None else f"{n / GIB:.2f}"


def tera(n: int | float | None) -> str:
    return "n/a" if n is None else f"{n / TERA:,.1f}"


def duration(seconds: float | None) -> str:
    """Seconds as '42 s', '12.5 min' or '3.4 h'."""
    if seconds is None:
        return "n/a"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def _inputs(p: dict) -> list[str]:
    m, d = p["model"], p["data"]
    attention = m["attn_implementation"] or "transformers' default (sdpa)"
    kernel = ", as CUDA's memory-efficient kernel" if m["traced_attention"] == "sdpa" else ""
    lines = [f"cot-transplant plan: {p['config']} {' '.join(p['overrides'])}".rstrip()
             + " (one process; no weights loaded, nothing run on a GPU)",
             f"model      {m['model_type']}: {m['layers']} layers, hidden {m['hidden']}, vocab {m['vocab']} "
             f"({', '.join(m['config_json'])})",
             f"           {m['dtype']}, base {m['storage']}, attention {attention} (traced: {m['traced_attention']}"
             f"{kernel}), gradient checkpointing {'on' if m['gradient_checkpointing'] else 'off'}",
             f"tokenizer  {p['tokenizer']['name']}"]
    if p["tokenizer"]["note"]:
        lines.append(f"           note: {p['tokenizer']['note']}")
    evaluated = ", ".join(f"{n:,} {k}" for k, n in d["evaluated_rows"].items())
    skipped = sum(d["skipped_for_length"].values())
    lines.append(f"rows       {d['train_rows']:,} train{', ' + evaluated if evaluated else ''} "
                 f"({skipped} skipped for length)")
    for label, what, b in (("sub-batch", "train", d["train_batch"]), ("eval batch", "evaluated", d["eval_batch"])):
        if b:
            lines.append(f"{label:<10} the longest {b['rows']} {what} rows: chooser {b['rows']} x "
                         f"{b['chooser_tokens']} tokens, arguer {b['arguer_rows']} x {b['arguer_tokens']}; "
                         f"fast path: arguer {b['rows']} packed x "
                         f"{b['packed_arguer_tokens']}, chooser keeps {b['rows']} x {b['kept_chooser_tokens']} "
                         f"and reads up to {b['transplanted_tokens']} transplanted per row")
    lines.append(f"step       {p['step']['path']} ({p['step']['reason']}); traced on meta: "
                 f"{', '.join(p['step']['traced'])}")
    return lines


def _memory(p: dict) -> list[str]:
    mem, par = p["memory_bytes"], p["parameters"]
    run = p["step"]["path"]
    ckpt = p["model"]["gradient_checkpointing"]
    traces = mem["activations"][run]
    train = next(t for t in traces if t["train"] and t["checkpointing"] == ckpt)
    evaluation = next((t for t in traces if not t["train"]), None)
    peak = max(train["peak_bytes"], evaluation["peak_bytes"] if evaluation else 0)
    adapters = sum(mem["adapters"].values())
    lines = ["", f"{'parameters':<44}{'count':>16}",
             f"  {'base':<42}{par['base']:>16,}  ({par['linear_quantizable']:,} in quantizable linear layers)"]
    lines += [f"  {'adapter ' + k:<42}{v:>16,}" for k, v in par["adapters"].items()]
    lines += [f"  {'trainable':<42}{par['trainable']:>16,}", "",
              f"{'memory, one process':<44}{'GiB':>16}",
              "  base weights by storage: " + " | ".join(f"{k} {gib(v)}" for k, v in mem["base"].items()),
              f"  {'base (' + p['model']['storage'] + ', as configured)':<42}{gib(mem['base_config']):>16}",
              f"  {'adapters (' + str(mem['adapter_dtype']) + ')':<42}{gib(adapters):>16}",
              f"  {'adapter gradients':<42}{gib(mem['adapter_grads']):>16}",
              f"  {'AdamW states (2 per trainable parameter)':<42}{gib(mem['adamw_states']):>16}",
              f"  {'activations: the larger traced peak':<42}{gib(peak):>16}",
              f"  {'reserve: CUDA context, allocator (assumed)':<42}{gib(mem['reserve']):>16}",
              f"  {'total':<42}{gib(mem['total_config']):>16}", "",
              f"{'activations (traced on meta), GiB':<44}{'held at backward':>18}{'peak':>8}{'saved':>8}"]
    for path, traces in mem["activations"].items():
        for t in traces:
            what = (f"train {t['rows']} rows, checkpointing {'on' if t['checkpointing'] else 'off'}" if t["train"]
                    else f"eval {t['rows']} rows")
            held = gib(t["held_bytes"]) if t["train"] else "-"
            saved = gib(t["saved_bytes"]) if t["train"] else "-"
            lines.append(f"  {path + ', ' + what:<42}{held:>18}{gib(t['peak_bytes']):>8}{saved:>8}")
    lines.append(f"  transplanted K/V of the longest sub-batch: {gib(mem['transplanted_states'])} GiB "
                 "(within the above)")
    return lines


def _flops(p: dict) -> list[str]:
    f = p["flops"]
    recompute = " (with checkpointing's recompute)" if p["model"]["gradient_checkpointing"] else ""
    lines = ["", "FLOPs (traced: torch's flop-counter formulas over the meta trace; analytic: bench/flops.py)",
             f"  training step, longest sub-batch ({f['train_step_rows']} rows): {tera(f['train_step'])} TFLOP traced"
             f"{recompute}, "
             f"{tera(f['train_step_no_checkpointing'])} without checkpointing, "
             f"{tera(f['analytic_train_step'])} analytic",
             f"  per training sample: {tera(f['per_sample_longest'])} TFLOP at the longest rows"
             + (f", {tera(f['per_sample_mean'])} on average over an epoch" if f.get("per_sample_mean") else "")]
    if f.get("epoch") is None:
        return lines + ["  epoch: n/a (no analytic count for this model family)"]
    lines.append(f"  epoch ({p['data']['train_rows']:,} rows): {tera(f['epoch'])} TFLOP (analytic over the run's "
                 f"sub-batches, x {f['traced_over_analytic']:.2f} traced/analytic)")
    if f.get("eval_pass") is not None:
        lines.append(f"  one evaluation ({sum(p['data']['evaluated_rows'].values()):,} rows): {tera(f['eval_pass'])} "
                     f"TFLOP; {f['evals_per_epoch']} in the first epoch (eval.at or eval.every)")
    lines += [f"wall time at {f['tflops']:g} TFLOP/s achieved (--tflops; 100 is about 32% of an A100's 312 bf16 "
              "TFLOP/s; bitsandbytes 8-/4-bit matmuls run slower)",
              f"  training epoch {duration(f['epoch_seconds'])}"
              + (f", one evaluation {duration(f['eval_pass_seconds'])}, epoch with its evaluations "
                 f"{duration(f['epoch_with_evals_seconds'])}" if f.get("eval_pass") is not None else "")
              + "; n processes (accelerate launch) divide it by about n"]
    return lines


def _verdict(p: dict) -> list[str]:
    lines = ["fits one GPU? (weights + the larger of the training and evaluation peaks + reserve)"]
    for v in p["verdict"]:
        head = f"  {v['gpu_gib']} GiB: "
        if v["fits"]:
            lines.append(head + f"yes, needs {gib(v['needs_bytes'])} GiB")
        elif v["change_fits"]:
            lines.append(head + f"no ({gib(v['needs_bytes'])} GiB): set {v['change']} "
                                f"({gib(v['needs_after_change'])} GiB)")
        else:
            lines.append(head + f"no ({gib(v['needs_bytes'])} GiB), not even with {v['change']} "
                                f"({gib(v['needs_after_change'])} GiB)")
    return lines


def format_plan(p: dict) -> str:
    """The plan as the command prints it."""
    return "\n".join(_inputs(p) + _memory(p) + _flops(p) + _verdict(p))
