"""The end-of-run summary: test figures at the validation-chosen eval and at the end; never the best test value.

Beside them, `baselines`: what cheap rules (length-only, the last-step checker, the argument) score on the
same test rows (`analysis.baselines`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Mapping

from cot_transplant.config import Config
from cot_transplant.provenance import stamp
from cot_transplant.train import rundir

KEYS = ("f_c", "f_c_ci_low", "f_c_ci_high", "base_rate", "auroc", "f_c_oc", "f_c_oi", "agree", "loss")


def select_checkpoint(eval_records: Iterable[Mapping[str, Any]], metric: str = "val/f_c",
                      maximize: bool = True) -> int:
    """The `samples` count of the eval record with the best validation `metric`; ties -> earliest.

    Only `val/` keys are ever looked at: each record is first cut down to `samples`
    and its `val/...` entries, so test figures cannot leak into the choice. Pass
    `maximize=False` for a loss. Records without the metric (or with None/NaN) are
    skipped. Raises ValueError if `metric` is not a `val/` key or no record has it.
    """
    if not metric.startswith("val/"):
        raise ValueError(f"select_checkpoint chooses on validation only; got metric {metric!r} (want 'val/...')")
    best_samples, best_value = None, None
    visible = ({k: v for k, v in r.items() if k.startswith("val/")} | {"samples": r.get("samples")}
               for r in eval_records)
    candidates = [r for r in visible if r.get(metric) is not None and not math.isnan(r[metric])]
    for r in sorted(candidates, key=lambda r: r["samples"]):  # stable: earliest wins a tie
        value = r[metric] if maximize else -r[metric]
        if best_value is None or value > best_value:
            best_samples, best_value = r["samples"], value
    if best_samples is None:
        raise ValueError(f"no eval record has a value for {metric!r}")
    return int(best_samples)


def summarize(run: Path, metrics: list[dict] | None = None) -> dict:
    """Summary figures computed from metrics.jsonl alone."""
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


def run_baselines(run: Path, rows: list, records: list | None = None) -> dict:
    """`analysis.baselines.baselines` on `rows` (Records), the length rule fit on the run's train rows.

    `records`: the run's rows as training numbered them (default: rebuilt by `breakdown.run_records`);
    the train rows are those `splits.json` names.
    """
    from cot_transplant.analysis.baselines import baselines
    from cot_transplant.analysis.breakdown import run_records

    by_id = {r.row_id: r for r in (run_records(run) if records is None else records)}
    train_ids = json.loads((Path(run) / "splits.json").read_text(encoding="utf-8"))["train"]
    return baselines([by_id[i] for i in train_ids], rows)


def prediction_baselines(run: Path, name: str, records: list | None = None) -> dict:
    """The baselines on the rows of the predictions file `name` (relative to the run: predictions/test-8.csv)."""
    from cot_transplant.analysis.breakdown import run_records

    records = run_records(run) if records is None else records
    by_id = {r.row_id: r for r in records}
    rows = [by_id[i] for i in rundir.read_predictions(Path(run) / name)["row_id"]]
    return {"predictions": name, **run_baselines(run, rows, records)}


def summary_baselines(run: Path, summary: dict) -> dict | None:
    """The baselines on the test rows of the summary's chosen (else final) evaluation; None without one."""
    at = summary.get("test_at_chosen") or summary.get("test_at_end")
    if at is None:
        return None
    return {"split": "test", **prediction_baselines(run, f"predictions/test-{at['samples']}.csv")}


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
    if isinstance(summary.get("baselines"), dict):
        from cot_transplant.analysis.baselines import format_baselines

        lines.append(f"   test {format_baselines(summary['baselines'])}")
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
        summary["baselines"] = summary_baselines(run, summary)
    except Exception as exc:  # a reference figure must never cost the run's results
        summary["baselines"] = f"not computed: {exc}"
    try:
        plot_curves([run], run / "curves.png")
    except Exception as exc:  # a figure must never cost the run's results
        summary["outputs"]["curves"] = f"not written: {exc}"
    rundir.atomic_write_text(run / "summary.json", json.dumps(summary, indent=1))
    text = format_summary(summary, f"{cfg.variant} ({run.name})")
    print(text + f"\n   wall time {wall:.0f} s{' (interrupted)' if interrupted else ''}; outputs in {run}/ "
          "(config.yaml, metrics.jsonl, predictions/, checkpoints/, curves.png, summary.json)")
    return summary
