"""A run's summary: test figures at the validation-chosen eval and at the end; never the best test value.

The figures come from metrics.jsonl alone (`summarize`, choosing with `select_checkpoint`); `finish_run` adds
the run's counters and outputs, lets the caller's report complete it (`analysis.end_of_run.report_run`: the
baselines, curves.png) and writes summary.json once.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from cot_transplant.config import Config
from cot_transplant.provenance import stamp
from cot_transplant.runs import rundir

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


def finish_run(run: Path, cfg: Config, wall: float, interrupted: bool = False, counters: dict | None = None,
               arguer_cache: dict | None = None, report: Callable[[dict], dict] | None = None) -> dict:
    """Write summary.json once: `summarize`, the wall time, counters, the arguer state cache's stats where a cache
    was on, outputs and provenance, then what `report` (given that summary, returning it completed) adds; returns
    it. The summary is written even when `report` raises."""
    summary = summarize(run)
    if arguer_cache is not None:
        summary["arguer_cache"] = arguer_cache
    summary.update(wall_s=wall, interrupted=interrupted, variant=cfg.variant,
                   counters={k: v for k, v in (counters or {}).items() if k in ("nonfinite_total", "oom")},
                   outputs={"config": str(run / "config.yaml"), "metrics": str(run / "metrics.jsonl"),
                            "predictions": str(run / "predictions"), "checkpoints": str(run / "checkpoints")},
                   _provenance=stamp())
    try:
        if report is not None:
            summary = report(summary)
    finally:
        write_summary(run, summary)
    return summary


def write_summary(run: Path, summary: dict) -> None:
    rundir.atomic_write_text(run / "summary.json", json.dumps(summary, indent=1))
