"""The report's side-by-side table: each run beside its eval-only controls and the text-free baselines.

One row per run: what data it trained on (a planted positive control or not), its test f_c at the
validation-chosen checkpoint, the same checkpoint under each eval-only control (`eval --control`),
and the baselines its summary computed on the same test rows (argument base rate, length-only,
last-step checker). A reader sees at once whether a result beats what needs no model at all, and
whether it survives the controls.
"""

from __future__ import annotations

import json
from pathlib import Path

from cot_transplant.analysis.report_render import Para, Table
from cot_transplant.analysis.results import CONTROLS, control_figures, pct, run_figures, with_ci


def _data_kind(run: Path) -> str:
    import yaml

    values = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    data = values.get("data") or {}
    if data.get("path"):
        return f"`{Path(data['path']).name}`"
    return "planted (positive control)" if (data.get("synthetic") or {}).get("planted") else "synthetic"


def _baseline(b: dict | None, key: str) -> str:
    r = (b or {}).get(key) if isinstance(b, dict) else None
    return with_ci(r) if r else "n/a"


def controls_table(runs: list[tuple[str, Path]]) -> Table | Para:
    """The side-by-side table for `runs` [(label, run dir)] that have a summary.json."""
    rows = []
    for label, run in runs:
        path = run / "summary.json"
        if not path.is_file():
            continue
        summary = json.loads(path.read_text(encoding="utf-8"))
        at = summary.get("test_at_chosen") or {}
        chosen = run_figures(run)["test_at_chosen"] if at else None  # recomputed from its predictions
        controls = []
        for c in CONTROLS:
            cf = control_figures(run, c, at["samples"]) if at.get("samples") is not None else None
            controls.append(with_ci(cf) if cf else "not run")
        b = summary.get("baselines")
        argument = (b or {}).get("argument") if isinstance(b, dict) else None
        rows.append([label, _data_kind(run), with_ci(chosen), *controls,
                     pct(argument["base_rate"]) if argument else pct(at.get("base_rate")),
                     _baseline(b, "length_only"), _baseline(b, "last_step_checker")])
    if not rows:
        return Para("No run with a summary.json: nothing to set beside its controls.", missing=True)
    return Table(["run", "data", "test f_c at chosen [95% Wilson]",
                  *[f"{c} (eval-only, same checkpoint)" for c in CONTROLS], "argument base rate",
                  "length-only baseline", "last-step checker"], rows,
                 caption="each run beside its eval-only controls and the baselines on the same test rows")
