"""The end-of-run summary: test figures at the validation-chosen eval and at the end; never the best test value."""

from __future__ import annotations

import json
from pathlib import Path

from cot_transplant.config import Config
from cot_transplant.provenance import stamp
from cot_transplant.train import rundir

KEYS = ("f_c", "f_c_ci_low", "f_c_ci_high", "base_rate", "auroc", "f_c_oc", "f_c_oi", "agree", "loss")


def summarize(run: Path, metrics: list[dict] | None = None) -> dict:
    """Summary figures computed from metrics.jsonl alone."""
    from cot_transplant.analysis.stats import select_checkpoint

    metrics = rundir.read_metrics(run) if metrics is None else metrics
    evals = [m for m in metrics if m.get("kind") == "eval"]
    test = {m["samples"]: m for m in evals if m.get("split") == "test"}
    val = [m for m in evals if m.get("split") == "val"]
    try:
        chosen = select_checkpoint(val, metric="val/f_c")
        how = "best val/f_c"
    except ValueError:
        chosen, how = (max(test) if test else None), "final (no validation split)"
    final = max(test) if test else None

    def pick(samples):
        if samples is None or samples not in test:
            return None
        return {"samples": samples, **{k: test[samples].get(f"test/{k}") for k in KEYS}}

    train = [m for m in metrics if m.get("kind") == "train"]
    return {"run": str(run), "chosen_by": how, "test_at_chosen": pick(chosen), "test_at_end": pick(final),
            "samples_trained": train[-1]["samples"] if train else 0,
            "wall_s": train[-1].get("wall_s") if train else None}


def fmt_pct(x) -> str:
    return "  n/a" if x is None else f"{100 * x:5.1f}%"


def format_summary(summary: dict, name: str) -> str:
    lines = [f"== {name}: {summary['samples_trained']} train samples"]
    for label, key in (("test f_c at the checkpoint chosen on validation", "test_at_chosen"),
                       ("test f_c at the end", "test_at_end")):
        r = summary.get(key)
        if r is None:
            lines.append(f"   {label}: no test evaluation")
            continue
        lines.append(f"   {label} (samples {r['samples']}): {fmt_pct(r['f_c'])} "
                     f"[95% CI {fmt_pct(r['f_c_ci_low']).strip()}, {fmt_pct(r['f_c_ci_high']).strip()}]"
                     f"  base rate {fmt_pct(r['base_rate']).strip()}  AUROC "
                     f"{'n/a' if r['auroc'] is None else format(r['auroc'], '.3f')}  f_c_oc {fmt_pct(r['f_c_oc']).strip()}"
                     f"  f_c_oi {fmt_pct(r['f_c_oi']).strip()}")
    return "\n".join(lines)


def finish_run(run: Path, cfg: Config, wall: float, interrupted: bool = False, counters: dict | None = None) -> dict:
    """Write curves.png and summary.json, print the summary; returns it."""
    from cot_transplant.analysis.plots import plot_curves

    summary = summarize(run)
    summary.update(wall_s=wall, interrupted=interrupted, variant=cfg.variant,
                   counters={k: v for k, v in (counters or {}).items() if k in ("nonfinite_total", "oom")},
                   outputs={"config": str(run / "config.yaml"), "metrics": str(run / "metrics.jsonl"),
                            "predictions": str(run / "predictions"), "checkpoints": str(run / "checkpoints"),
                            "curves": str(run / "curves.png")},
                   _provenance=stamp())
    try:
        plot_curves([run], run / "curves.png")
    except Exception as exc:  # a figure must never cost the run's results
        summary["outputs"]["curves"] = f"not written: {exc}"
    rundir.atomic_write_text(run / "summary.json", json.dumps(summary, indent=1))
    text = format_summary(summary, f"{cfg.variant} ({run.name})")
    print(text + f"\n   wall time {wall:.0f} s{' (interrupted)' if interrupted else ''}; outputs in {run}/ "
          "(config.yaml, metrics.jsonl, predictions/, checkpoints/, curves.png, summary.json)")
    return summary
