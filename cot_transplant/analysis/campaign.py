"""The pre-registered campaign's tables and decision (docs/results.md), from its committed run outputs.

`results/campaign/` holds one directory per finished run, named `<study>-<variant>-s<seed>` as
`scripts/campaign.sh` makes them: studies `noarg` (primary: the original CSV without the argument),
`gsm8k`, `arg` (secondary), `plantNN` (the positive control with NN% of rows planted) and
`plantfullce` (full strength, full-vocabulary loss). Each holds the small outputs: config, splits,
metrics, per-row predictions (`predictions/<split>-<samples>.csv`), summary and the eval-only controls'
predictions (`eval-step-N-control-<label>-test.csv`). Every figure here is recomputed from those rows.

Effects are differences in test `f_c` averaged over seeds, with the seeds-and-rows bootstrap interval
(`stats.seeds_rows_bootstrap`); p-values are the paired permutation test on per-row means across seeds,
Holm-adjusted across each table's comparisons. The decision applies the rule pre-registered in
docs/results.md; `DECISION_RULE` below is that rule, word for word in code.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cot_transplant.analysis.results import (baselines_table, control_figures, num, pct, run_figures, run_git, scored,
                                             study_runs, table)
from cot_transplant.analysis.stats import holm, min_detectable_effect, paired_permutation_test, seeds_rows_bootstrap
from cot_transplant.errors import UserError

VARIANTS = ("joint", "frozen-arguer", "text-only")
CONTROLS = ("base-arguer", "shuffled-kv-length-matched", "swapped-kv")
SEEDS = (0, 1, 2)
LEVELS = (("plant100", 1.0), ("plant50", 0.5), ("plant25", 0.25), ("plant10", 0.1))
ALPHA = 0.05
N_PERM = 10_000
N_BOOT = 10_000
N_COMPARISONS = 4  # the pre-registered comparisons of each study table (Holm across them)


# --- reading -----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One finished run: its figures (`results.run_figures`) and where it lives."""

    study: str
    variant: str
    seed: int
    path: Path
    figures: dict

    @property
    def chosen(self) -> dict | None:
        return self.figures["test_at_chosen"]


def load_study(root: Path, study: str) -> dict[str, dict[int, Run]]:
    """{variant: {seed: Run}} of one study's finished runs."""
    return {v: {seed: Run(study, v, seed, path, run_figures(path)) for seed, path in runs}
            for v, runs in study_runs(root, study).items()}


def test_curve(run: Run) -> dict[int, dict]:
    """{samples: scored test predictions} at every evaluation of the run."""
    out = {}
    for path in (run.path / "predictions").glob("test-*.csv"):
        out[int(path.stem.split("-")[1])] = scored(path)
    return dict(sorted(out.items()))


def control_scores(run: Run, control: str) -> dict | None:
    """The eval-only `control`'s test predictions at the run's validation-chosen checkpoint, if it was run."""
    found = control_figures(run.path, control, run.chosen["samples"]) if run.chosen else None
    return found and found["pred"]


def planted_row_ids(run: Run) -> set[int] | None:
    """The row ids whose verdict the arguer read in a planted run (`data.planted_fraction`), recomputed from its
    config and splits.json (`data.plant.planted_positions`; row ids are positions in a file read whole)."""
    import yaml

    from cot_transplant.data.plant import planted_positions

    data = (yaml.safe_load((run.path / "config.yaml").read_text(encoding="utf-8")) or {}).get("data") or {}
    fraction = data.get("planted_fraction") or 0
    splits_file = run.path / "splits.json"
    if not fraction or not splits_file.is_file() or data.get("skip_invalid"):
        return None
    splits = json.loads(splits_file.read_text(encoding="utf-8"))
    n = sum(len(splits.get(k, [])) for k in ("train", "val", "test")) + (splits.get("dropped") or {}).get("count", 0)
    return planted_positions(n, fraction, data.get("planted_seed", 0))


def on_rows(preds: list[dict], ids: set[int], keep: bool) -> float | None:
    """Mean score over the seeds' predictions on the rows in `ids` (keep) or not in them."""
    scores = [p["score"][np.isin(p["row_id"], list(ids)) == keep] for p in preds]
    return float(np.mean(np.concatenate(scores))) if scores and sum(map(len, scores)) else None


def wall_s(path: Path) -> float | None:
    """The run's wall time in seconds: the sum of its log's `wall_s N` lines, one per attempt of
    scripts/campaign.sh (an attempt cut off by the end of a session writes `wall_s N interrupted`)."""
    log = path / "log.txt"
    if not log.is_file():
        return None
    found = re.findall(r"^wall_s (\d+)", log.read_text(encoding="utf-8", errors="replace"), re.M)
    return float(sum(map(int, found))) if found else None


# --- comparisons -------------------------------------------------------------------------------------


def matrix(preds: list[dict]) -> np.ndarray:
    """(seeds, rows) per-row scores of predictions on the same rows, rows in row-id order."""
    ids = preds[0]["row_id"]
    for p in preds[1:]:
        if not np.array_equal(p["row_id"], ids):
            raise UserError("results: runs compared row by row cover different test rows; give runs of one split "
                            "(one config's data keys)")
    return np.stack([p["score"] for p in preds])


def compare(label: str, a: list[dict], b: list[dict], comparisons: int = 1) -> dict:
    """Effect a - b (mean over seeds and rows), its seeds-and-rows interval, the permutation p, and the
    minimum detectable effect at the rows' observed disagreement (`observed_mde`)."""
    x, y = matrix(a), matrix(b)
    boot = seeds_rows_bootstrap(x, y, n_boot=N_BOOT)
    d = x.mean(axis=0) - y.mean(axis=0)
    return {"label": label, "a": float(x.mean()), "b": float(y.mean()), "effect": boot["mean"],
            "ci_low": boot["ci_low"], "ci_high": boot["ci_high"], "seeds": x.shape[0], "rows": x.shape[1],
            "p": paired_permutation_test(x.mean(axis=0), y.mean(axis=0), n_perm=N_PERM),
            "disagreement": float(np.mean(d ** 2)), "mde": observed_mde(d, comparisons)}


def observed_mde(d: np.ndarray, comparisons: int = 1) -> float | None:
    """`stats.min_detectable_effect` with the per-row differences' mean square in place of the discordance
    assumed before the runs: the same for one seed (d in {-1, 0, 1}), an upper bound on var(d) for seed means.
    None when the two sides agree on every row (no variance to test against)."""
    mean_square = float(np.mean(np.square(d)))
    return min_detectable_effect(len(d), mean_square, comparisons=comparisons) if mean_square > 0 else None


def with_holm(results: list[dict]) -> list[dict]:
    for r, adjusted in zip(results, holm([r["p"] for r in results]) if results else []):
        r["p_holm"] = adjusted
    return results


def paired(a: dict[int, Run], b: dict[int, Run]) -> list[int]:
    """The seeds both sides finished."""
    return sorted(s for s in a if s in b and a[s].chosen and b[s].chosen)


def study_comparisons(study: dict[str, dict[int, Run]]) -> list[dict]:
    """The four pre-registered comparisons, each on the seeds both of its sides have, Holm across them (their
    minimum detectable effects at Holm's strictest step of four, as pre-registered)."""
    joint, frozen, text = study.get("joint", {}), study.get("frozen-arguer", {}), study.get("text-only", {})
    out = []
    seeds = paired(joint, text)
    if seeds:
        out.append(compare("`joint` − `text-only`", [joint[s].chosen["pred"] for s in seeds],
                           [text[s].chosen["pred"] for s in seeds], N_COMPARISONS))
    for control, what in (("base-arguer", "`joint` with `base-arguer` states"),
                          ("shuffled-kv-length-matched", "`joint` with length-matched `shuffled-kv` states")):
        pairs = [(joint[s].chosen["pred"], c) for s in sorted(joint) if joint[s].chosen
                 and (c := control_scores(joint[s], control)) is not None]
        if pairs:
            out.append(compare(f"`joint` − {what}", [p for p, _ in pairs], [c for _, c in pairs], N_COMPARISONS))
    seeds = paired(frozen, text)
    if seeds:
        out.append(compare("`frozen-arguer` − `text-only`", [frozen[s].chosen["pred"] for s in seeds],
                           [text[s].chosen["pred"] for s in seeds], N_COMPARISONS))
    return with_holm(out)


# --- tables ------------------------------------------------------------------------------------------


def level_interval(scores: np.ndarray) -> dict:
    """Mean f_c of (seeds, rows) scores with the wider of the seeds-and-rows bootstrap and the Wilson interval of
    the row means: a percentile bootstrap is too narrow near 0 and 1, where one run's rows support less."""
    from cot_transplant.runs.metrics import wilson

    boot = seeds_rows_bootstrap(scores, n_boot=N_BOOT)
    low, high = wilson(float(scores.mean(axis=0).sum()), scores.shape[1])
    return {**boot, "ci_low": min(boot["ci_low"], low), "ci_high": max(boot["ci_high"], high)}


def mean_or_none(values: list) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else None


def effect_cell(r: dict) -> str:
    return f"{100 * r['effect']:+.1f} [{100 * r['ci_low']:+.1f}, {100 * r['ci_high']:+.1f}]"


def comparisons_table(results: list[dict], holm_note: bool = True) -> str:
    header = ["comparison", "A", "B", "effect A − B, points [95% CI]", "seeds", "rows", "p"]
    if holm_note:
        header.append("p (Holm)")
    header.append("disagreement; MDE, points")
    rows = []
    for r in results:
        row = [r["label"], pct(r["a"]), pct(r["b"]), effect_cell(r), str(r["seeds"]), str(r["rows"]), num(r["p"], 4)]
        if holm_note:
            row.append(num(r["p_holm"], 4))
        mde = "n/a" if r.get("mde") is None else f"{100 * r['mde']:.1f}"
        row.append(f"{pct(r.get('disagreement'))}; {mde}")
        rows.append(row)
    return table(header, rows)


MDE_NOTE = ("Disagreement: the mean square of the per-row differences in `f_c` (for one seed, the share of rows "
            "where the two sides differ). MDE: the smallest effect the comparison detects with 80% power at that "
            "disagreement (`stats.min_detectable_effect`, alpha 0.05 at Holm's strictest step of four), the "
            "pre-registration's calculation with the observed disagreement in place of the assumed 0.2 to 0.4.")


def curve_table(study: dict[str, dict[int, Run]]) -> str:
    """Test f_c per variant at each evaluation point (mean over seeds) and at the validation-chosen checkpoint."""
    points = sorted({n for runs in study.values() for run in runs.values() for n in test_curve(run)})
    rows = []
    for v in [v for v in VARIANTS if v in study] + sorted(set(study) - set(VARIANTS)):
        runs = study[v]
        curves = [test_curve(r) for r in runs.values()]
        cells = []
        for n in points:
            values = [float(c[n]["score"].mean()) for c in curves if n in c]
            cells.append(f"{pct(np.mean(values))} ({len(values)})" if values else "")
        chosen = [r.chosen["pred"] for r in runs.values() if r.chosen]
        at = level_interval(matrix(chosen)) if chosen else None
        where = ", ".join(str(r.chosen["samples"]) for r in runs.values() if r.chosen)
        rows.append([f"`{v}`", ", ".join(str(s) for s in sorted(runs)), *cells,
                     f"{pct(at['mean'])} [{pct(at['ci_low'])}, {pct(at['ci_high'])}]" if at else "n/a", where,
                     num(mean_or_none([r.chosen["auroc"] for r in runs.values() if r.chosen]))])
    header = ["variant", "seeds", *[f"test f_c at {n}" for n in points], "at chosen [95% CI]",
              "chosen at (samples)", "AUROC at chosen"]
    return table(header, rows)


def controls_table(study: dict[str, dict[int, Run]]) -> str | None:
    joint = study.get("joint", {})
    rows = []
    for control in CONTROLS:
        got = [(s, control_scores(r, control), r.chosen["pred"]) for s, r in sorted(joint.items()) if r.chosen]
        got = [(s, c, p) for s, c, p in got if c is not None]
        if not got:
            continue
        c = level_interval(matrix([c for _, c, _ in got]))
        rows.append([f"`{control}` (eval-only)", ", ".join(str(s) for s, _, _ in got),
                     f"{pct(c['mean'])} [{pct(c['ci_low'])}, {pct(c['ci_high'])}]",
                     pct(float(matrix([p for _, _, p in got]).mean()))])
    if not rows:
        return None
    return ("Eval-only controls on each `joint` run's validation-chosen checkpoint, same test rows:\n\n"
            + table(["control", "seeds", "test f_c [95% CI]", "`joint`, plain"], rows))


def pairs_sources(root: Path) -> str | None:
    """Where each side of the GSM8K pairs came from (`data from-solutions`' counts file, kept with the results)."""
    found = sorted((Path(root) / "gsm8k-pairs").glob("*.counts.json"))
    if not found:
        return None
    c = json.loads(found[0].read_text(encoding="utf-8"))
    models = sorted(set(c.get("correct_from", {})) | set(c.get("incorrect_from", {})))
    rows = [[f"`{m}`", str(c.get("correct_from", {}).get(m, 0)), str(c.get("incorrect_from", {}).get(m, 0))]
            for m in models]
    return (f"{c.get('pairs')} pairs (`--correct {c.get('correct')}`: both sides model-written); the model behind "
            "each side:\n\n" + table(["model", "correct side", "incorrect side"], rows))


def study_section(root: Path, study_name: str) -> str:
    study = load_study(root, study_name)
    sources = pairs_sources(root) if study_name == "gsm8k" else None
    if sources and not study:
        return sources + "\n\n_Not run yet: no finished `gsm8k-<variant>-s<seed>` runs under the results directory._"
    if not study:
        return f"_Not run yet: no finished `{study_name}-<variant>-s<seed>` runs under the results directory._"
    parts = [sources] if sources else []
    parts += ["Test `f_c` (ties 1/2) per variant, mean over seeds (number of seeds in brackets) at each evaluation; "
             "at the validation-chosen checkpoint with a 95% interval: the wider of a bootstrap over seeds and "
             "rows and the Wilson interval of the row means.",
             curve_table(study)]
    controls = controls_table(study)
    if controls:
        parts.append(controls)
    results = study_comparisons(study)
    if results:
        parts += ["The pre-registered comparisons (paired by test row; effect in points of `f_c`, 95% bootstrap "
                  "interval over seeds and rows; two-sided paired permutation test on per-row means across seeds, "
                  f"{N_PERM:,} sign flips; Holm across this table):", comparisons_table(results), MDE_NOTE]
    first = next(r for runs in study.values() for r in runs.values())
    parts.append(baselines_table(first.figures))
    if first.path.joinpath("config.yaml").is_file() and "argument: none" in first.path.joinpath(
            "config.yaml").read_text(encoding="utf-8"):
        parts.append("In this condition the chooser never sees the choice argument, so its base rate is chance "
                     "(50%); the argument's-pick row says what the hidden argument would have scored.")
    return "\n\n".join(parts)


def positive_levels(root: Path) -> list[dict]:
    """Each planted level's `joint` against `plant100`'s `text-only` on the same seeds (text-only's input does
    not depend on the level), unadjusted per level, and whether the level is detected."""
    text = load_study(root, "plant100").get("text-only", {})
    out = []
    for name, fraction in LEVELS:
        joint = load_study(root, name).get("joint", {})
        seeds = paired(joint, text)
        if not seeds:
            continue
        joint_preds, text_preds = [joint[s].chosen["pred"] for s in seeds], [text[s].chosen["pred"] for s in seeds]
        r = compare(f"{fraction:.0%} of rows planted", joint_preds, text_preds)
        r.update(fraction=fraction, detected=r["effect"] > 0 and r["p"] < ALPHA and r["ci_low"] > 0)
        planted = planted_row_ids(joint[seeds[0]])
        if planted is not None:
            n_planted = int(np.isin(joint_preds[0]["row_id"], list(planted)).sum())
            r.update(n_planted=n_planted, joint_planted=on_rows(joint_preds, planted, True),
                     joint_other=on_rows(joint_preds, planted, False), text_planted=on_rows(text_preds, planted, True))
        out.append(r)
    full = load_study(root, "plantfullce")
    seeds = paired(full.get("joint", {}), full.get("text-only", {}))
    if seeds:
        r = compare("100%, full-vocabulary loss", [full["joint"][s].chosen["pred"] for s in seeds],
                    [full["text-only"][s].chosen["pred"] for s in seeds])
        r.update(fraction=None, detected=r["effect"] > 0 and r["p"] < ALPHA and r["ci_low"] > 0)
        out.append(r)
    return out


def detection_limit(levels: list[dict]) -> dict | None:
    """The weakest pre-registered level (LEVELS) detected with every stronger one run and detected (the two-token
    loss's series): a level not run yet ends the chain as a missed one does."""
    by_fraction = {r["fraction"]: r for r in levels if r["fraction"] is not None}
    limit = None
    for fraction in sorted((f for _, f in LEVELS), reverse=True):
        r = by_fraction.get(fraction)
        if r is None or not r["detected"]:
            break
        limit = r
    return limit


def beyond_limit(levels: list[dict], limit: dict | None) -> list[str]:
    """Levels weaker than the limit that are detected all the same (a stronger level in between not run or
    missed): they say where the limit may move, not where it is."""
    floor = limit["fraction"] if limit else 2.0
    return [f"{r['fraction']:.0%}" for r in sorted(levels, key=lambda r: -(r["fraction"] or 0))
            if r["fraction"] is not None and r["fraction"] < floor and r["detected"]]


def positive_section(root: Path) -> str:
    levels = positive_levels(root)
    runs = positive_runs_section(root)
    if not levels:
        none = ("_No level compared yet: no finished `plant100-text-only` run and `plantNN-joint` run of one seed "
                "under the results directory._")
        return "\n\n".join([none, *([runs] if runs else [])])
    rows = [[r["label"], str(r["seeds"]), str(r["rows"]), pct(r["a"]), pct(r["b"]), effect_cell(r), num(r["p"], 4),
             "yes" if r["detected"] else "no",
             f"{pct(r['joint_planted'])} / {pct(r['text_planted'])} ({r['n_planted']})" if "n_planted" in r else "",
             pct(r.get("joint_other")) if "n_planted" in r else ""] for r in levels]
    limit = detection_limit(levels)
    missing = [f"{f:.0%}" for _, f in LEVELS if f not in {r["fraction"] for r in levels}]
    text = ("`joint` at each planted share against `text-only` (whose input is the same at every share) on the same "
            "test rows and seeds; effect in points [95% bootstrap over seeds and rows], two-sided paired permutation "
            "test per level (unadjusted). Detected: effect > 0, p < 0.05 and the interval above 0.\n\n"
            + table(["planted signal", "seeds", "rows", "`joint` f_c", "`text-only` f_c", "effect, points [95% CI]",
                     "p", "detected", "planted test rows: `joint` / `text-only` (rows)", "`joint` on the other rows"],
                    rows))
    beyond = beyond_limit(levels, limit)
    text += ("\n\n**Detection limit at these settings:** " + (
        f"{limit['fraction']:.0%} of rows planted, effect {effect_cell(limit)} points." if limit
        else "none: not even the full-strength verdict is detected.")
        + (f" Levels not run yet: {', '.join(missing)}." if missing else "")
        + (f" Detected beyond the limit: {', '.join(beyond)} (the limit counts a level only when every stronger "
           "one is run and detected)." if beyond else ""))
    return text + ("\n\n" + runs if runs else "")


def positive_runs_section(root: Path) -> str | None:
    """Each planted study's learning curve and, on its `joint` runs, the eval-only controls."""
    parts = []
    for name in [n for n, _ in LEVELS] + ["plantfullce"]:
        study = load_study(root, name)
        if not study:
            continue
        parts += [f"`{name}` (test `f_c` per evaluation, mean over seeds):", curve_table(study)]
        controls = controls_table(study)
        if controls:
            parts.append(controls)
    return "\n\n".join(parts) if parts else None


def primary_complete(root: Path) -> tuple[bool, list[str]]:
    """Whether every run the decision needs is finished, and the missing ones."""
    missing = []
    study = load_study(root, "noarg")
    for v in VARIANTS:
        for s in SEEDS:
            run = study.get(v, {}).get(s)
            if run is None:
                missing.append(f"noarg-{v}-s{s}")
            elif v == "joint":
                missing += [f"noarg-joint-s{s} control {c}" for c in CONTROLS[:2] if control_scores(run, c) is None]
    for name, _ in LEVELS:
        if 0 not in load_study(root, name).get("joint", {}):
            missing.append(f"{name}-joint-s0")
    if 0 not in load_study(root, "plant100").get("text-only", {}):
        missing.append("plant100-text-only-s0")
    return not missing, missing


DECISION_RULE = ("reads: comparison 1 and comparison 3 positive with Holm p < 0.05; does not: otherwise, with the "
                 "positive control detected at 100% and comparison 1's upper bound below the detection limit's "
                 "effect; undecided: anything else, including an unfinished campaign")


def decide(root: Path) -> tuple[str, list[str]]:
    """The pre-registered decision and the reasons, from the committed outputs."""
    complete, missing = primary_complete(root)
    results = {r["label"]: r for r in study_comparisons(load_study(root, "noarg"))}
    c1 = results.get("`joint` − `text-only`")
    c3 = results.get("`joint` − `joint` with length-matched `shuffled-kv` states")
    levels = positive_levels(root)
    full = next((r for r in levels if r["fraction"] == 1.0), None)
    limit = detection_limit(levels)
    reasons = []
    if not complete:
        reasons.append(f"{len(missing)} of the runs the decision needs are not finished: " + ", ".join(missing[:8])
                       + (", ..." if len(missing) > 8 else ""))
    if c1:
        reasons.append(f"comparison 1 (`joint` − `text-only`): {effect_cell(c1)} points, "
                       f"Holm p {num(c1['p_holm'], 4)}")
    if c3:
        reasons.append(f"comparison 3 (`joint` − length-matched `shuffled-kv`): {effect_cell(c3)} points, Holm p "
                       f"{num(c3['p_holm'], 4)}")
    if full:
        reasons.append(f"positive control at 100%: {effect_cell(full)} points, "
                       f"{'detected' if full['detected'] else 'not detected'}")
    if limit:
        run = {r["fraction"] for r in levels}
        missing = [f"{f:.0%}" for _, f in LEVELS if f not in run]
        beyond = beyond_limit(levels, limit)
        reasons.append(f"detection limit: {limit['fraction']:.0%} planted, effect {100 * limit['effect']:+.1f} points"
                       + (f" (levels not run yet: {', '.join(missing)})" if missing else "")
                       + (f"; detected beyond it: {', '.join(beyond)}" if beyond else ""))
    if not complete:
        return "undecided on this hardware (the campaign is not finished)", reasons
    reads = (c1 and c3 and c1["effect"] > 0 and c1["p_holm"] < ALPHA and c3["effect"] > 0 and c3["p_holm"] < ALPHA)
    if reads:
        return "the chooser reads correctness from the transplanted states", reasons
    if full and full["detected"] and limit and c1 and c1["ci_high"] < limit["effect"]:
        return "it does not, at this budget and model", reasons
    return "undecided on this hardware", reasons


def decision_section(root: Path) -> str:
    verdict, reasons = decide(root)
    return (f"**Decision under the pre-registered rule: {verdict}.**\n\n" + "\n".join(f"- {r}" for r in reasons)
            + f"\n\nRule, as applied by `analysis/campaign.py`: {DECISION_RULE}.")


def status_section(root: Path) -> str:
    """Every finished run and probe with its wall time, and the compute used so far."""
    rows, total, walls = [], 0.0, {}
    for path in sorted(p for p in Path(root).iterdir() if p.is_dir()) if Path(root).is_dir() else []:
        if not ((path / "summary.json").is_file() or (path / "done").is_file()):
            continue
        w = wall_s(path)
        total += w or 0
        if w and (variant := run_variant(path.name)):
            walls.setdefault(variant, []).append(w)
        git = (run_git(path) or "") if (path / "config.yaml").is_file() else ""
        rows.append([f"`{path.name}`", f"{w / 60:.1f} min" if w else "n/a", f"`{git[:12]}`" if git else ""])
    complete, missing = primary_complete(root)
    head = (f"{len(rows)} finished run{'s' if len(rows) != 1 else ''} and probes under `{Path(root).as_posix()}`, "
            f"{total / 3600:.2f} h of wall time in "
            "all (2 CPU cores; each run's own log). The decision needs "
            + ("every run it names: all finished." if complete else f"{len(missing)} more (listed in the decision)"
               + remaining_estimate(missing, walls) + "."))
    return head + "\n\n" + (table(["run", "wall", "git"], rows) if rows else "_Nothing finished yet._")


def run_variant(name: str) -> str | None:
    """The variant of a campaign run's name (`<study>-<variant>-s<seed>`), or None for anything else."""
    m = re.fullmatch(rf"[a-z0-9]+-({'|'.join(VARIANTS)})-s\d+", name)
    return m.group(1) if m else None


def remaining_estimate(missing: list[str], walls: dict[str, list[float]]) -> str:
    """", about N h at the finished runs' mean wall time per variant" for the missing runs, when every missing run's
    variant has a finished run to go by (a missing control alone costs part of a run and is not counted)."""
    variants = [run_variant(m) for m in missing if " " not in m]
    if not variants or any(v not in walls for v in variants):
        return ""
    hours = sum(np.mean(walls[v]) for v in variants) / 3600
    return f", about {hours:.1f} h at the finished runs' mean wall time per variant"


SECTIONS = {
    "campaign-status": status_section,
    "decision": decision_section,
    "positive-series": positive_section,
    "primary": lambda root: study_section(root, "noarg"),
    "gsm8k": lambda root: study_section(root, "gsm8k"),
    "arg": lambda root: study_section(root, "arg"),
}
