"""A finished run's summary completed: the baselines on its test rows, curves.png, and the printed summary; and
the lines `cot-transplant eval` prints for a checkpoint evaluated again, beside the same baselines.

`baselines`: what cheap rules (length-only, the last-step checker, the argument) score on the same test rows
as the run (`analysis.baselines`). `runs.summary.finish_run` makes the rest of summary.json and writes it.
"""

from __future__ import annotations

import json
from pathlib import Path

from cot_transplant.runs import rundir


def report_run(summary: dict) -> dict:
    """Add the baselines and curves.png to the run of `summary` (`runs.summary.finish_run`'s, which writes what this
    returns), print it; returns it. A baseline or figure that fails is noted, never fatal."""
    from cot_transplant.analysis.plots import plot_curves

    run = Path(summary["run"])
    summary["outputs"]["curves"] = str(run / "curves.png")
    try:
        summary["baselines"] = summary_baselines(run, summary)
    except Exception as exc:  # a reference figure must never cost the run's results
        summary["baselines"] = f"not computed: {exc}"
    try:
        plot_curves([run], run / "curves.png")
    except Exception as exc:  # a figure must never cost the run's results
        summary["outputs"]["curves"] = f"not written: {exc}"
    text = format_summary(summary, f"{summary['variant']} ({run.name})")
    wall, interrupted = summary["wall_s"], summary["interrupted"]
    print(text + f"\n   wall time {wall:.0f} s{' (interrupted)' if interrupted else ''}; outputs in {run}/ "
          "(config.yaml, metrics.jsonl, predictions/, checkpoints/, curves.png, summary.json)")
    return summary


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


def format_eval(run: Path, record: dict, rows: list, run_rows: list | None) -> str:
    """Two lines for one split of `train.evaluate_checkpoint.evaluate_checkpoint`: its metrics (`record`), then the
    baselines on its `rows` (the length rule fit on `run_rows`, the run's own rows; None: rebuilt from its config)."""
    from cot_transplant.analysis.baselines import format_baselines
    from cot_transplant.errors import UserError

    control = record.get("control")
    if control == "shuffled-kv" and record.get("donors", "random") != "random":
        control = f"{control}-{record['donors']}"
    shown = {k.split("/")[1]: v for k, v in record.items() if "/" in k}
    line = (f"{record['split']}{f' ({control})' if control else ''}: "
            + "  ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    try:
        return line + f"\n   {format_baselines(run_baselines(run, rows, run_rows))}"
    except (UserError, OSError, KeyError) as exc:
        return line + f"\n   baselines: not computed ({exc})"
