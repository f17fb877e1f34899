"""A sweep's aggregate, from its run directories alone (the sweep itself is planned and trained by
`train.sweep_runner`).

Written into the sweep directory:
  sweep.json         the aggregate, rewritten at the end of every invocation (see `aggregate`)
  band-<combo>.png   val and test f_c at each eval point: mean and 95% t band across 3+ seeds
                     (clipped to [0, 1]), or the seeds' min-max with fewer
  bands.png          test f_c bands of every combination in one figure
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

from cot_transplant.errors import UserError
from cot_transplant.provenance import stamp
from cot_transplant.train.sweep_runner import read_plan, run_status

RESULT = "sweep.json"


# --- aggregation ------------------------------------------------------------------------------------


def _clean(x: Any) -> Any:
    """JSON-safe: NaN becomes None, numpy scalars become Python numbers."""
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (str, bytes)):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return None
    return x


def _interval(values: list) -> dict:
    """A fraction metric across seeds: `stats.seed_interval` (t clipped to [0, 1] with 3+ seeds, else the
    range) and the per-seed `values`."""
    from cot_transplant.analysis.stats import FRACTION, seed_interval

    return {**seed_interval(values, bounds=FRACTION), "values": values}


def interval_text(d: dict, fmt: Callable[[float], str]) -> str:
    """An `_interval` as text: "mean [95% t low, high]" with 3+ seeds, else "mean (seeds v1, v2; range low to high)".

    Aggregates written before `interval` existed read as "t".
    """
    if d.get("mean") is None:
        return "n/a"
    mean, low, high = fmt(d["mean"]), d["ci_low"], d["ci_high"]
    if d.get("interval", "t") == "t":
        return mean if low is None else f"{mean} [95% t {fmt(low)}, {fmt(high)}]"
    seeds = ", ".join(fmt(v) for v in d.get("values", []) if v is not None)
    return f"{mean} (seeds {seeds}; range {fmt(low)} to {fmt(high)})"


def _above(runs: list[dict], key: str) -> dict:
    known = [r for r in runs if r[key] is not None and r["base_rate"] is not None]
    above = sum(r[key] > r["base_rate"] for r in known)
    return {"runs": above, "of": len(known), "share": above / len(known) if known else None}


def _band(curves: list) -> list[dict]:
    from cot_transplant.analysis.stats import FRACTION, ci_band

    if not any(curves):
        return []
    b = ci_band(curves, bounds=FRACTION)
    return [{"samples": int(s) if s.is_integer() else s, "mean": m, "ci_low": lo, "ci_high": hi, "n": n,
             "interval": kind}
            for s, m, lo, hi, n, kind in zip(b.samples.tolist(), b.mean.tolist(), b.low.tolist(), b.high.tolist(),
                                             b.n.tolist(), b.interval)]


def _run_record(run: dict, run_dir: Path, status: str) -> dict:
    """One run's figures from its metrics.jsonl (the checkpoint is chosen on val/ keys only)."""
    from cot_transplant.runs import rundir
    from cot_transplant.runs.summary import summarize

    out = {"name": run["name"], "seed": run["seed"], "status": status}
    if status != "complete":
        return out
    metrics = rundir.read_metrics(run_dir)
    s = summarize(run_dir, metrics)
    chosen, end = s["test_at_chosen"] or {}, s["test_at_end"] or {}
    out.update(chosen_by=s["chosen_by"], chosen_samples=chosen.get("samples"), end_samples=end.get("samples"),
               test_f_c_at_chosen=chosen.get("f_c"), test_f_c_at_end=end.get("f_c"),
               test_auroc_at_chosen=chosen.get("auroc"), test_auroc_at_end=end.get("auroc"),
               base_rate=chosen.get("base_rate", end.get("base_rate")), baselines=_baselines(run_dir))
    evals = [m for m in metrics if m.get("kind") == "eval"]
    out["_curves"] = {split: [(m["samples"], m.get(f"{split}/f_c")) for m in evals if m.get("split") == split]
                      for split in ("val", "test")}
    return out


def _baselines(run_dir: Path) -> dict | None:
    """The text-free baselines of the run's summary.json on its test rows: {name: f_c}, or None."""
    path = run_dir / "summary.json"
    b = json.loads(path.read_text(encoding="utf-8")).get("baselines") if path.is_file() else None
    if not isinstance(b, dict):
        return None
    return {"n": b.get("n"), "argument": (b.get("argument") or {}).get("base_rate"),
            "length_only": (b.get("length_only") or {}).get("f_c"),
            "last_step_checker": (b.get("last_step_checker") or {}).get("f_c")}


def _combination(combo: dict, runs: list[dict]) -> dict:
    done = [r for r in runs if r["status"] == "complete"]
    return {
        "label": combo["label"], "slug": combo["slug"], "values": combo["values"],
        "n_runs": len(runs), "n_complete": len(done),
        "runs": [{k: v for k, v in r.items() if k != "_curves"} for r in runs],
        "test_at_chosen": {"f_c": _interval([r["test_f_c_at_chosen"] for r in done]),
                           "auroc": _interval([r["test_auroc_at_chosen"] for r in done])},
        "test_at_end": {"f_c": _interval([r["test_f_c_at_end"] for r in done]),
                        "auroc": _interval([r["test_auroc_at_end"] for r in done])},
        "above_base_rate": {"at_chosen": _above(done, "test_f_c_at_chosen"), "at_end": _above(done, "test_f_c_at_end")},
        # the test rows depend on split_seed, not the training seed: the first run's stand for all
        "baselines": next((r["baselines"] for r in done if r.get("baselines")), None),
        "band": {f"{split}/f_c": _band([r["_curves"][split] for r in done]) for split in ("val", "test")},
    }


def _split_check(sweep_dir: Path, runs: list[dict]) -> dict:
    """Every started run's splits.json row ids, compared with the first run's."""
    splits = {}
    for run in runs:
        path = sweep_dir / run["name"] / "splits.json"
        if path.is_file():
            s = json.loads(path.read_text(encoding="utf-8"))
            splits[run["name"]] = {k: s.get(k) for k in ("train", "val", "test")}
    if not splits:
        return {"same_split": None, "reference": None, "differ": []}
    ref_name, ref = next(iter(splits.items()))
    differ = [name for name, s in splits.items() if s != ref]
    return {"same_split": not differ, "reference": ref_name, "differ": differ,
            "n_rows": {k: len(v or []) for k, v in ref.items()}}


def _correct_by_row(run_dir: Path, samples: int) -> dict[int, float]:
    """{row_id: the chooser's row score (1, 1/2 on a tie, 0; `metrics.row_scores`)} at one test evaluation."""
    from cot_transplant.runs import rundir
    from cot_transplant.runs.metrics import row_scores

    path = run_dir / "predictions" / f"test-{samples}.csv"
    if not path.is_file():
        raise UserError(f"{path}: missing; the run's test predictions at its chosen checkpoint are needed")
    p = rundir.read_predictions(path)
    return dict(zip(p["row_id"], row_scores(p["p_cand1"], p["p_cand2"], p["label"]).tolist()))


CONCATENATED_HOW = ("every (seed, test row) pair of a's and b's runs of equal seed, concatenated over seeds, "
                    "one sign-flip unit per pair; a row recurs once per seed, so these units are not independent "
                    "and the p-value is optimistic when rows differ in difficulty")
ROW_MEANS_HOW = ("per test row, correctness (1, 1/2 on a tie, 0) averaged over the seeds for a and for b; the "
                 "per-row differences are sign-flipped (rows are the independent units; seed noise is averaged in)")
PRIMARY_TEST = {
    "test": "row_means",
    "how": "paired permutation test (sign flips, two-sided) on per-row means over seeds: " + ROW_MEANS_HOW,
    "correction": "Holm across the comparisons, one per setting of the other grid keys: row_means.p_holm",
    "secondary": "per_seed and concatenated: descriptive, not corrected; read the primary test",
}


def _test(a: list[float], b: list[float], n_perm: int, role: str = "secondary") -> dict:
    from cot_transplant.analysis.stats import paired_permutation_test

    n = len(a)
    return {"role": role, "n": n, "f_c_a": sum(a) / n if n else None, "f_c_b": sum(b) / n if n else None,
            "diff": (sum(a) - sum(b)) / n if n else None,
            "p_value": paired_permutation_test(a, b, n_perm=n_perm, seed=0) if n else None}


def with_holm(comparisons: list[dict]) -> list[dict]:
    """`comparisons` with `row_means.p_holm`: the primary p-values Holm-adjusted across the comparisons
    that have one (a comparison without paired rows keeps None)."""
    from cot_transplant.analysis.stats import holm

    known = [i for i, c in enumerate(comparisons) if c["row_means"]["p_value"] is not None]
    adjusted = dict(zip(known, holm([comparisons[i]["row_means"]["p_value"] for i in known])))
    return [{**c, "row_means": {**c["row_means"], "p_holm": adjusted.get(i), "holm_over": len(known)}}
            for i, c in enumerate(comparisons)]


def _seed_pairs(plan: dict, records: dict[str, dict], ia: int, ib: int) -> list[tuple[int, dict, dict]]:
    """(seed, run record of combination ia, of ib) for every seed where both runs are complete."""
    by_seed: dict[int, dict[int, dict]] = {}
    for run in plan["runs"]:
        rec = records[run["name"]]
        if run["combination"] in (ia, ib) and rec["status"] == "complete" and rec["chosen_samples"] is not None:
            by_seed.setdefault(run["seed"], {})[run["combination"]] = rec
    return [(seed, pair[ia], pair[ib]) for seed, pair in sorted(by_seed.items()) if len(pair) == 2]


def _compare(sweep_dir: Path, plan: dict, records: dict[str, dict], a: str, b: str) -> list[dict]:
    """Paired permutation tests of variant `a` against `b`, once per setting of the other grid keys.

    The primary test is `row_means` (see PRIMARY_TEST), Holm-corrected across settings; the
    per-seed and concatenated tests are secondary.
    """
    combos = plan["combinations"]
    others = [{k: v for k, v in c["values"].items() if k != "variant"} for c in combos]
    out = []
    for ia, ca in enumerate(combos):
        if ca["values"].get("variant") != a:
            continue
        ib = next(i for i, c in enumerate(combos) if c["values"].get("variant") == b and others[i] == others[ia])
        per_seed, cat_a, cat_b, by_row = [], [], [], {}
        for seed, ra, rb in _seed_pairs(plan, records, ia, ib):
            right_a = _correct_by_row(sweep_dir / ra["name"], ra["chosen_samples"])
            right_b = _correct_by_row(sweep_dir / rb["name"], rb["chosen_samples"])
            common = sorted(set(right_a) & set(right_b))
            xa, xb = [right_a[r] for r in common], [right_b[r] for r in common]
            per_seed.append({"seed": seed, "a_run": ra["name"], "b_run": rb["name"], "a_samples": ra["chosen_samples"],
                             "b_samples": rb["chosen_samples"], "rows_unpaired": len(set(right_a) ^ set(right_b)),
                             **_test(xa, xb, plan["n_perm"])})
            cat_a, cat_b = cat_a + xa, cat_b + xb
            for r in common:
                by_row.setdefault(r, []).append((right_a[r], right_b[r]))
        rows = [pairs for pairs in by_row.values() if len(pairs) == len(per_seed)]  # paired in every seed
        mean_a = [sum(p[0] for p in pairs) / len(pairs) for pairs in rows]
        mean_b = [sum(p[1] for p in pairs) / len(pairs) for pairs in rows]
        out.append({"a": a, "b": b, "fixed": others[ia], "a_combination": ca["label"],
                    "b_combination": combos[ib]["label"], "at": "each run's validation-chosen checkpoint",
                    "per_seed": per_seed,
                    "concatenated": {"how": CONCATENATED_HOW, **_test(cat_a, cat_b, plan["n_perm"])},
                    "row_means": {"how": ROW_MEANS_HOW, **_test(mean_a, mean_b, plan["n_perm"], "primary")}})
    return with_holm(out)


def _plots(sweep_dir: Path, combos: list[dict], records: list[list[dict]]) -> dict[str, str]:
    from cot_transplant.analysis.plots import plot_ci_band
    from cot_transplant.analysis.stats import FRACTION

    written, all_test = {}, {}
    for combo, runs in zip(combos, records):
        done = [r for r in runs if r["status"] == "complete"]
        if not done:
            continue
        base = [r["base_rate"] for r in done if r["base_rate"] is not None]
        curves = {f"{split}/f_c": [r["_curves"][split] for r in done] for split in ("val", "test")}
        curves = {k: v for k, v in curves.items() if any(v)}
        all_test[combo["label"]] = curves.get("test/f_c", [])
        path = sweep_dir / f"band-{combo['slug']}.png"
        try:
            plot_ci_band(curves, path, ylabel="f_c", title=f"{combo['label']}: {len(done)} seeds",
                         base_rate=base[0] if base else None, bounds=FRACTION)
            written[combo["slug"]] = path.name
        except Exception as exc:  # a figure must never cost the sweep's numbers
            written[combo["slug"]] = f"not written: {exc}"
    if any(all_test.values()):
        try:
            plot_ci_band({k: v for k, v in all_test.items() if v}, sweep_dir / "bands.png", ylabel="test/f_c",
                         title=f"{sweep_dir.name}: test f_c", bounds=FRACTION)
            written["all"] = "bands.png"
        except Exception as exc:
            written["all"] = f"not written: {exc}"
    return written


def aggregate(sweep_dir: Path, plan: dict | None = None, failed: dict[str, str] | None = None,
              interrupted: bool = False) -> dict:
    """Write `sweep.json` (and the band figures) from the run directories alone; return it.

    Per combination: mean across seeds of test f_c (and AUROC) at the checkpoint chosen on
    validation and at the end, with a 95% t interval clipped to [0, 1] (3+ seeds) or the
    per-seed values and their range (`interval`: "t" | "range"); the share of runs above the
    argument's base rate; the same band of val and test f_c at each eval point. When the plan
    names two variants to compare, paired permutation tests on the test rows at each run's
    chosen checkpoint: the primary one over per-row means (Holm-corrected across grid settings,
    `primary_test`), and as secondary ones per seed and over all seeds' rows concatenated.
    """
    sweep_dir = Path(sweep_dir)
    plan = plan or read_plan(sweep_dir)
    records = {run["name"]: _run_record(run, sweep_dir / run["name"], run_status(sweep_dir / run["name"]))
               for run in plan["runs"]}
    by_combo = [[records[r["name"]] for r in plan["runs"] if r["combination"] == i]
                for i in range(len(plan["combinations"]))]
    result = {
        "sweep": str(sweep_dir), "config": plan["config"], "overrides": plan["overrides"], "seeds": plan["seeds"],
        "grid": plan["grid"], "compare": plan["compare"],
        "split": _split_check(sweep_dir, plan["runs"]),
        "combinations": [_combination(c, runs) for c, runs in zip(plan["combinations"], by_combo)],
        "primary_test": PRIMARY_TEST if plan["compare"] else None,
        "comparisons": _compare(sweep_dir, plan, records, *plan["compare"]) if plan["compare"] else [],
        "incomplete": [name for name, r in records.items() if r["status"] != "complete"],
        "failed": failed or {}, "interrupted": interrupted,
    }
    result["figures"] = _plots(sweep_dir, plan["combinations"], by_combo)
    result["_provenance"] = stamp()
    from cot_transplant.runs.rundir import atomic_write_text

    atomic_write_text(sweep_dir / RESULT, json.dumps(_clean(result), indent=1))
    return _clean(result)


def _p(test: dict, key: str = "p_value") -> str:
    return "n/a" if test.get(key) is None else f"{test[key]:.3g} (n={test['n']})"


def format_result(result: dict) -> str:
    """A short text table of sweep.json for the terminal: intervals as `interval_text`, the primary test (raw and
    Holm-adjusted p) before the secondary ones."""
    pct = lambda x: "n/a" if x is None else f"{100 * x:.1f}%"  # noqa: E731
    lines = [f"== sweep {result['sweep']}: seeds {result['seeds']}; same split in every run: "
             f"{result['split']['same_split']}"]
    for c in result["combinations"]:
        above = c["above_base_rate"]["at_chosen"]
        lines.append(f"   {c['label']}: {c['n_complete']}/{c['n_runs']} runs; test f_c at chosen "
                     f"{interval_text(c['test_at_chosen']['f_c'], pct)}, at end "
                     f"{interval_text(c['test_at_end']['f_c'], pct)}; above base rate {above['runs']}/{above['of']}")
        b = c.get("baselines")
        if b:
            lines.append(f"      baselines on the same {b['n']} test rows: argument {pct(b['argument'])}, length-only "
                         f"{pct(b['length_only'])}, last-step checker {pct(b['last_step_checker'])}")
    if result["comparisons"]:
        lines.append(f"   primary test: paired permutation test on per-row means over seeds, Holm-adjusted across "
                     f"{len(result['comparisons'])} comparison(s); the per-seed and concatenated tests are secondary")
    for cmp in result["comparisons"]:
        fixed = f" ({', '.join(f'{k}={v}' for k, v in cmp['fixed'].items())})" if cmp["fixed"] else ""
        primary = cmp["row_means"]
        secondary = [f"seed {s['seed']} p={_p(s)}" for s in cmp["per_seed"]]
        secondary.append(f"all seeds' rows concatenated p={_p(cmp['concatenated'])}")
        lines.append(f"   {cmp['a']} vs {cmp['b']}{fixed}: primary (per-row means over seeds) diff "
                     f"{pct(primary['diff'])}, p={_p(primary)}, Holm p={_p(primary, 'p_holm')}; "
                     f"secondary: " + "; ".join(secondary))
    if result["incomplete"]:
        lines.append(f"   incomplete: {', '.join(result['incomplete'])}")
    return "\n".join(lines)
