"""`cot-transplant results`: the tables of docs/results.md, computed from run directories alone.

A results directory holds runs named `<study>-<variant>-s<seed>` (e.g. `original-joint-s0`),
eval-only controls inside the joint runs (`eval RUN --control ...` files), and probe directories
(`probe-<name>/probe.json`). Each table is rebuilt from the per-row prediction files with this
package's statistics (ties 1/2, Wilson intervals for one split, seed intervals across seeds, the
row-means paired permutation test with Holm's correction), so no figure is copied by hand. The
document keeps its prose; only the blocks between `<!-- results:NAME -->` and
`<!-- /results:NAME -->` are rewritten.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from cot_transplant.analysis.stats import FRACTION, holm, paired_permutation_test, seed_interval
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir
from cot_transplant.runs.metrics import wilson, auroc, row_scores

RUN_NAME = re.compile(r"^(?P<study>[a-z0-9]+)-(?P<variant>[a-z-]+)-s(?P<seed>\d+)$")
CONTROLS = ("shuffled-kv", "swapped-kv")
BLOCK = re.compile(r"(<!-- results:(?P<name>[a-z0-9-]+) -->\n)(.*?)(<!-- /results:(?P=name) -->)", re.S)


# --- reading -----------------------------------------------------------------------------------------


def study_runs(root: Path, study: str) -> dict[str, list[tuple[int, Path]]]:
    """{variant: [(seed, run dir), ...]} of the finished runs (summary.json) of one study, seeds sorted."""
    out: dict[str, list[tuple[int, Path]]] = {}
    for path in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        m = RUN_NAME.match(path.name)
        if m and m["study"] == study and (path / "summary.json").is_file():
            out.setdefault(m["variant"], []).append((int(m["seed"]), path))
    return {v: sorted(runs) for v, runs in out.items()}


def scored(path: Path) -> dict:
    """A predictions file as {"row_id": array, "score": 1/0.5/0 per row, "p1", "p2", "label"}."""
    p = rundir.read_predictions(path)
    order = np.argsort(p["row_id"], kind="stable")
    take = lambda k: np.asarray(p[k])[order]  # noqa: E731
    return {"row_id": take("row_id"), "score": row_scores(take("p_cand1"), take("p_cand2"), take("label")),
            "p1": take("p_cand1"), "p2": take("p_cand2"), "label": take("label"),
            "argument_choice": take("argument_choice")}


def split_figures(pred: dict) -> dict:
    """f_c (ties 1/2) with its 95% Wilson interval, AUROC and n of one split's predictions."""
    n = len(pred["score"])
    low, high = wilson(float(pred["score"].sum()), n)
    return {"f_c": float(pred["score"].mean()) if n else None, "ci_low": low, "ci_high": high,
            "auroc": auroc(pred["p1"], pred["p2"], pred["label"]), "n": n}


def run_figures(run: Path) -> dict:
    """The run's test figures at the validation-chosen checkpoint and at the end, from its predictions."""
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    out = {"run": run.name, "chosen_by": summary.get("chosen_by"), "wall_s": summary.get("wall_s"),
           "samples_trained": summary.get("samples_trained"), "git": run_git(run),
           "baselines": summary.get("baselines")}
    for key in ("test_at_chosen", "test_at_end"):
        at = summary.get(key)
        if at is None:
            out[key] = None
            continue
        pred = scored(run / "predictions" / f"test-{at['samples']}.csv")
        out[key] = {"samples": at["samples"], **split_figures(pred), "pred": pred}
    return out


def run_git(run: Path) -> str | None:
    """The git hash the run was made at (from its config.yaml's provenance)."""
    import yaml

    values = yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) or {}
    return (values.get("_provenance") or {}).get("git")


def control_figures(run: Path, control: str, samples: int) -> dict | None:
    """The eval-only `control` on the test split at the checkpoint of `samples` train samples, if run."""
    for path in sorted(run.glob(f"eval-step-*-control-{control}.json")):
        for rec in json.loads(path.read_text(encoding="utf-8")):
            if rec.get("split") == "test" and rec.get("samples") == samples and rec.get("predictions"):
                pred = scored(run / rec["predictions"])
                return {"samples": samples, **split_figures(pred), "pred": pred, "wall_s": rec.get("eval_wall_s")}
    return None


# --- tables ------------------------------------------------------------------------------------------


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def with_ci(f: dict | None) -> str:
    if f is None or f.get("f_c") is None:
        return "n/a"
    return f"{pct(f['f_c'])} [{pct(f['ci_low'])}, {pct(f['ci_high'])}]"


def num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def row_means(preds: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """(row ids, mean score per row across runs); every run must cover the same rows."""
    ids = preds[0]["row_id"]
    for p in preds[1:]:
        if not np.array_equal(p["row_id"], ids):
            raise UserError("results: runs compared row by row do not share their test rows; "
                            "give runs of one split")
    return ids, np.mean([p["score"] for p in preds], axis=0)


def comparisons(pairs: list[tuple[str, list[dict], list[dict]]], n_perm: int = 10_000) -> list[dict]:
    """The primary test for each (label, runs of A, runs of B): row-means paired permutation, Holm-adjusted."""
    out = []
    for label, a, b in pairs:
        _, ma = row_means(a)
        _, mb = row_means(b)
        out.append({"label": label, "a": float(ma.mean()), "b": float(mb.mean()), "n": len(ma),
                    "p": paired_permutation_test(ma, mb, n_perm=n_perm)})
    for c, adjusted in zip(out, holm([c["p"] for c in out]) if out else []):
        c["p_holm"] = adjusted
    return out


def variant_section(root: Path, study: str, base: str = "text-only") -> str:
    """Per-run figures, seed intervals, baselines on the same rows, eval-only controls and the tests."""
    runs = study_runs(root, study)
    if not runs:
        return f"_Not run: no finished `{study}-<variant>-s<seed>` runs under the results directory._"
    figs = {v: [(seed, run_figures(run)) for seed, run in rs] for v, rs in runs.items()}
    order = sorted(figs, key=lambda v: (v != "joint", v != base, v))
    rows = []
    for v in order:
        for seed, f in figs[v]:
            chosen, end = f["test_at_chosen"], f["test_at_end"]
            rows.append([f"`{v}`", str(seed), str(chosen["samples"]) if chosen else "n/a", with_ci(chosen),
                         with_ci(end), num(chosen and chosen["auroc"]), str(chosen["n"]) if chosen else "n/a",
                         f"{f['wall_s']:.0f} s" if f.get("wall_s") else "n/a", f"`{(f['git'] or 'n/a')[:12]}`"])
    parts = ["Test split, each run at the checkpoint chosen on validation (and at the end); 95% Wilson intervals.",
             table(["variant", "seed", "chosen at (samples)", "test f_c at chosen", "test f_c at end", "AUROC",
                    "rows", "train+eval wall", "git"], rows)]
    seed_rows = []
    for v in order:
        values = [f["test_at_chosen"]["f_c"] for _, f in figs[v] if f["test_at_chosen"]]
        s = seed_interval(values, bounds=FRACTION)
        kind = {"t": "95% t interval", "range": "range (fewer than 3 seeds)"}.get(s["interval"], "n/a")
        seed_rows.append([f"`{v}`", str(s["n"]), pct(s["mean"]), f"[{pct(s['ci_low'])}, {pct(s['ci_high'])}] {kind}"])
    parts += ["Across seeds (test f_c at the chosen checkpoint):",
              table(["variant", "seeds", "mean", "interval"], seed_rows)]
    first = figs[order[0]][0][1]
    parts.append(baselines_table(first))
    joint = figs.get("joint", [])
    control_rows, control_preds = [], {}
    for c in CONTROLS:
        for seed, f in joint:
            at = f["test_at_chosen"]
            cf = control_figures(root / f["run"], c, at["samples"]) if at else None
            if cf is None:
                continue
            control_preds.setdefault(c, []).append((seed, cf["pred"], at["pred"]))
            control_rows.append([f"`{c}` (eval-only)", str(seed), str(cf["samples"]), with_ci(cf), with_ci(at),
                                 num(cf["auroc"]), f"{cf['wall_s']:.0f} s" if cf.get("wall_s") else "n/a"])
    if control_rows:
        parts += ["Eval-only controls on each joint run's chosen checkpoint (same test rows):",
                  table(["control", "seed", "checkpoint (samples)", "test f_c with the control", "joint, plain",
                         "AUROC", "eval wall"], control_rows)]
    pairs = []
    at_chosen = lambda v: [f["test_at_chosen"]["pred"] for _, f in figs.get(v, []) if f["test_at_chosen"]]  # noqa: E731
    for v in order:
        if v != "joint" and at_chosen(v) and at_chosen("joint"):
            pairs.append((f"`joint` vs `{v}`", at_chosen("joint"), at_chosen(v)))
    for c, items in control_preds.items():
        pairs.append((f"`joint` vs `{c}` (eval-only, same checkpoints)", [j for _, _, j in items],
                      [p for _, p, _ in items]))
    if pairs:
        tests = comparisons(pairs)
        parts += ["Primary test: paired permutation test on per-row mean correctness across seeds (ties 1/2), "
                  "two-sided, 10,000 sign flips or exact; Holm-adjusted across the comparisons of this table.",
                  table(["comparison", "A (row mean)", "B (row mean)", "rows", "p", "p (Holm)"],
                        [[t["label"], pct(t["a"]), pct(t["b"]), str(t["n"]), num(t["p"], 4), num(t["p_holm"], 4)]
                         for t in tests])]
    return "\n\n".join(parts)


def baselines_table(f: dict) -> str:
    """The text-free baselines a run's summary computed on its test rows."""
    b = f.get("baselines")
    if not isinstance(b, dict):
        return "_Baselines: not in this run's summary.json (made before they were added)._"
    ci = lambda r: f"{pct(r.get('f_c'))} [{pct(r.get('ci_low'))}, {pct(r.get('ci_high'))}]"  # noqa: E731
    rows = [["argument's own pick (base rate)", f"{pct(b['argument']['base_rate'])} "
             f"[{pct(b['argument']['ci_low'])}, {pct(b['argument']['ci_high'])}]", "", ""]]
    lo = b.get("length_only") or {}
    rows.append([f"length-only (pick the {lo.get('fit', '?')} argument, sign fit on {b.get('n_train')} train rows)",
                 ci(lo), num(lo.get("auroc")), ""])
    if b.get("pick_longer"):
        rows.append(["pick the longer argument", ci(b["pick_longer"]), "", ""])
    ck = b.get("last_step_checker") or {}
    if ck:
        rows.append(["last-step checker (recomputes each last equation)", ci(ck), "",
                     f"decides {ck.get('decided')} of {ck.get('n')}"])
    return (f"Baselines on the same {b.get('n')} test rows (no model):\n\n"
            + table(["baseline", "f_c [95% Wilson]", "AUROC", "note"], rows))


def probe_section(root: Path, name: str) -> str:
    """The probe of `root`/probe-<name>: nested-CV figures and permutation nulls per feature set, then the
    layer-0, length and TF-IDF baselines on the same folds (`probe_report.probe_markdown`)."""
    from cot_transplant.analysis.probe_report import probe_markdown

    path = Path(root) / f"probe-{name}" / "probe.json"
    if not path.is_file():
        return f"_Not run: no {path.name} under `probe-{name}/`._"
    return probe_markdown(json.loads(path.read_text(encoding="utf-8")))


SECTIONS = {
    "positive": lambda root: variant_section(root, "positive"),
    "probe-original": lambda root: probe_section(root, "original"),
    "probe-gsm8k": lambda root: probe_section(root, "gsm8k"),
    "probe-csv": lambda root: probe_section(root, "csv"),
    "original": lambda root: variant_section(root, "original"),
}


def fill(doc: str, root: Path) -> tuple[str, list[str]]:
    """`doc` with every known results block rewritten from `root`; the names filled."""
    filled = []

    from cot_transplant.analysis import campaign  # it reads runs with this module's functions

    sections = {**SECTIONS, **campaign.SECTIONS}

    def replace(m: re.Match) -> str:
        make = sections.get(m["name"])
        if make is None:
            return m.group(0)
        filled.append(m["name"])
        return m.group(1) + make(root).rstrip() + "\n" + m.group(4)

    return BLOCK.sub(replace, doc), filled
