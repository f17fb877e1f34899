"""The report's sections, one builder each, from run and sweep directories' files (see `analysis.report`).

A section whose inputs are missing still appears and says so in a plain note.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

from cot_transplant.analysis.report_controls import controls_table
from cot_transplant.analysis.report_render import Code, Figure, Para, Section, Table
from cot_transplant.errors import UserError


@dataclass
class ReportInput:
    """One input: a run directory, or a sweep directory with its complete runs."""

    kind: str  # "run" | "sweep"
    path: Path
    label: str
    runs: list[tuple[str, Path]] = field(default_factory=list)  # (column label, run dir), complete runs
    sweep: dict | None = None  # sweep.json


REFERENCE_CSV = Path("shared") / "seed-data" / "seed_test_curves.csv"


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _ci(mean, low, high) -> str:
    if mean is None:
        return "n/a"
    if low is None or high is None:
        return _pct(mean)
    return f"{_pct(mean)} [{100 * low:.1f}, {100 * high:.1f}]"


def _p(test: dict | None, key: str = "p_value") -> str:
    if not test or test.get(key) is None:
        return "n/a"
    return f"{test[key]:.3g} (n={test['n']})"


def _baselines_cell(b: dict | None) -> str:
    return "n/a" if not b else f"{_pct(b.get('length_only'))} / {_pct(b.get('last_step_checker'))}"


def _summary(run: Path) -> dict:
    from cot_transplant.runs.summary import summarize

    path = run / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else summarize(run)


# --- sections ---------------------------------------------------------------------------------------


def configuration_section(sources: list[ReportInput]) -> Section:
    s = Section("Configuration")
    for src in sources:
        if src.kind == "sweep":
            sw = src.sweep
            s.blocks.append(Table(["sweep", "config", "seeds", "grid", "compare", "runs complete"],
                                  [[src.label, str(sw["config"]), str(sw["seeds"]), json.dumps(sw["grid"]),
                                    str(sw["compare"]), str(len(src.runs))]], caption=f"sweep {src.label}"))
            plan = src.path / "sweep.yaml"
            if plan.is_file():
                s.blocks.append(Code(plan.read_text(encoding="utf-8"), f"{src.label}: sweep.yaml (the plan)"))
        else:
            s.blocks.append(Code((src.path / "config.yaml").read_text(encoding="utf-8"),
                                 f"{src.label}: config.yaml (resolved config and provenance)"))
    return s


def _records(run: Path, cache: dict) -> list:
    from cot_transplant.analysis.breakdown import run_records
    from cot_transplant.config import to_dict
    from cot_transplant.runs import rundir

    key = json.dumps(to_dict(rundir.read_run_config(run)[0])["data"], sort_keys=True, default=str)
    if key not in cache:
        cache[key] = run_records(run)
    return cache[key]


def data_section(sources: list[ReportInput], cache: dict) -> Section:
    from cot_transplant.data.stats import dataset_stats

    s = Section("Data")
    runs = [run for src in sources for _, run in src.runs]
    if not runs:
        s.blocks.append(Para("No complete run among the inputs: no data to describe.", missing=True))
        return s
    first = runs[0]
    try:
        records = _records(first, cache)
    except UserError as exc:
        s.blocks.append(Para(f"The rows of {first.name} could not be rebuilt: {exc}", missing=True))
        return s
    st = dataset_stats(records)
    s.blocks.append(Para(f"Rows of {first.name}'s data (every input using the same data config shares them)."))
    s.blocks.append(Table(["rows", "argument accuracy (base rate)", "candidate order swapped", "argument picks 1"],
                          [[str(st["rows"]), _pct(st.get("argument_accuracy")), _pct(st.get("swapped_fraction")),
                            _pct(st.get("picks_candidate_1"))]], caption="dataset"))
    if (first / "splits.json").is_file():
        splits = json.loads((first / "splits.json").read_text(encoding="utf-8"))
        skipped = splits.get("skipped") or {}
        s.blocks.append(Table(["split", "rows", "skipped for length"],
                              [[k, str(len(splits.get(k) or [])), str(skipped.get(k, 0))]
                               for k in ("train", "val", "test")], caption="splits (splits.json)"))
    for column, counts in st["histograms"].items():
        s.blocks.append(Table([column, "rows"], [[k or "(empty)", str(v)] for k, v in counts.items()],
                              caption=f"rows by {column}"))
    if len(cache) > 1:
        s.blocks.append(Para(f"The inputs use {len(cache)} different data configs; the figures above are "
                             f"{first.name}'s."))
    return s


def results_section(sources: list[ReportInput]) -> Section:
    from cot_transplant.analysis.sweep_aggregate import interval_text

    s = Section("Results")
    for src in [x for x in sources if x.kind == "sweep"]:
        rows = []
        for c in src.sweep["combinations"]:
            base = [r.get("base_rate") for r in c["runs"] if r.get("base_rate") is not None]
            chosen, end = c["test_at_chosen"], c["test_at_end"]
            above = c["above_base_rate"]["at_chosen"]
            rows.append([c["label"], f"{c['n_complete']}/{c['n_runs']}", interval_text(chosen["f_c"], _pct),
                         interval_text(end["f_c"], _pct),
                         interval_text(chosen["auroc"], lambda x: f"{x:.3f}"),
                         f"{above['runs']}/{above['of']}", _pct(sum(base) / len(base) if base else None),
                         _baselines_cell(c.get("baselines"))])
        s.blocks.append(Table(["variant", "runs", "test f_c at val-chosen checkpoint, mean [95% t CI, 3+ seeds] "
                               "or (seeds; range)", "test f_c at end", "test AUROC at chosen", "runs above base rate",
                               "base rate", "length-only / last-step checker (same test rows)"],
                              rows, caption=f"sweep {src.label}: across seeds {src.sweep['seeds']}"))
        cmp_rows = [[f"{c['a']} vs {c['b']}", json.dumps(c["fixed"]) if c["fixed"] else "",
                     f"{_pct(c['row_means']['diff'])}, p {_p(c['row_means'])}, Holm p {_p(c['row_means'], 'p_holm')}",
                     "; ".join(f"s{t['seed']}: {_p(t)}" for t in c["per_seed"]), _p(c["concatenated"])]
                    for c in src.sweep["comparisons"]]
        if cmp_rows:
            s.blocks.append(Table(["comparison", "other grid values", "primary: per-row means, f_c diff, p, Holm p",
                                   "secondary: per seed p", "secondary: seeds concatenated p"], cmp_rows,
                                  caption="paired permutation tests on test rows at each run's val-chosen checkpoint"))
            s.blocks.append(Para("The primary test treats test rows as the independent units (per-row correctness "
                                 "averaged over seeds, ties 1/2); its p is Holm-adjusted across the comparisons. "
                                 "The secondary tests are descriptive: the concatenated one repeats each row once "
                                 "per seed and is optimistic."))
        else:
            s.blocks.append(Para(f"sweep {src.label}: no comparison in its plan (grid without two variants to "
                                 "compare).", missing=True))
    run_srcs = [x for x in sources if x.kind == "run"]
    if run_srcs:
        rows = []
        for src in run_srcs:
            sm = _summary(src.path)
            ch, en = sm.get("test_at_chosen") or {}, sm.get("test_at_end") or {}
            rows.append([src.label, str(sm.get("variant", "")), sm.get("chosen_by", ""),
                         str(ch.get("samples", "n/a")),
                         _ci(ch.get("f_c"), ch.get("f_c_ci_low"), ch.get("f_c_ci_high")),
                         _ci(en.get("f_c"), en.get("f_c_ci_low"), en.get("f_c_ci_high")), _pct(ch.get("base_rate")),
                         "n/a" if ch.get("auroc") is None else f"{ch['auroc']:.3f}", _pct(ch.get("f_c_oc")),
                         _pct(ch.get("f_c_oi"))])
        s.blocks.append(Table(["run", "variant", "checkpoint chosen by", "samples",
                               "test f_c at chosen [95% Wilson CI]", "test f_c at end", "base rate", "AUROC",
                               "f_c_oc", "f_c_oi"], rows, caption="runs (summary.json): never the best test value"))
        if len(run_srcs) > 1:
            s.blocks.append(_run_tests(run_srcs))
        s.blocks.append(controls_table([(src.label, src.path) for src in run_srcs]))
    return s


def _correct(run: Path) -> dict[int, float]:
    """{row_id: row score (1, 1/2 on a tie, 0)} on the test rows at the run's val-chosen checkpoint."""
    from cot_transplant.runs import rundir
    from cot_transplant.runs.metrics import row_scores

    samples = (_summary(run).get("test_at_chosen") or {}).get("samples")
    path = run / "predictions" / f"test-{samples}.csv"
    if samples is None or not path.is_file():
        return {}
    p = rundir.read_predictions(path)
    return dict(zip(p["row_id"], row_scores(p["p_cand1"], p["p_cand2"], p["label"]).tolist()))


def _run_tests(run_srcs: list[ReportInput]) -> Table:
    """Each run against the first: a paired permutation test on the test rows both evaluated."""
    from cot_transplant.analysis.stats import paired_permutation_test

    first = _correct(run_srcs[0].path)
    rows = []
    for src in run_srcs[1:]:
        other = _correct(src.path)
        common = sorted(set(first) & set(other))
        a, b = [other[r] for r in common], [first[r] for r in common]
        p = paired_permutation_test(a, b, n_perm=10_000, seed=0) if common else None
        n = len(common)
        rows.append([src.label, run_srcs[0].label, str(n), _pct(sum(a) / n if n else None),
                     _pct(sum(b) / n if n else None), "n/a" if p is None else f"{p:.3g}"])
    return Table(["run", "against", "paired test rows", "f_c", "f_c (against)", "permutation p"], rows,
                 caption="paired permutation tests at each run's val-chosen checkpoint")


def curves_section(sources: list[ReportInput], reference: dict | None) -> Section:
    from cot_transplant.analysis.report_figures import curves_figure

    s = Section("Curves")
    bands, runs = [], []
    for src in sources:
        if src.kind == "sweep":
            for c in src.sweep["combinations"]:
                base = [r["base_rate"] for r in c["runs"] if r.get("base_rate") is not None]
                if c["band"].get("test/f_c"):
                    bands.append({"label": f"{src.label}: {c['label']}", "points": c["band"]["test/f_c"],
                                  "base_rate": base[0] if base else None})
        elif (src.path / "metrics.jsonl").is_file():
            runs.append((src.label, src.path))
    if not bands and not runs:
        s.blocks.append(Para("No evaluation curves in the inputs.", missing=True))
        return s
    caption = ("test f_c against samples trained: sweeps as mean and 95% t band across 3+ seeds (else the seeds' "
               "min-max), runs with the 95% Wilson band of each evaluation; dotted: the argument's base rate")
    caption += ("; right: with the original study's published test curves in grey" if reference
                else " (no reference curves found)")
    s.blocks.append(Figure(curves_figure(bands, runs, reference), caption, "curves"))
    return s


def truncation_section(sources: list[ReportInput]) -> Section:
    from cot_transplant.analysis.truncation import plot_truncation

    s = Section("Truncation")
    for run in dict.fromkeys(run for src in sources for _, run in src.runs):  # a run given twice shows once
        path = run / "truncation.json"
        if not path.is_file():
            continue
        t = json.loads(path.read_text(encoding="utf-8"))
        s.blocks.append(Table(["fraction", "f_c [95% CI]", "AUROC", "n", "f_c_oc", "f_c_oi", "base rate"],
                              [[f"{r['fraction']:g}", _ci(r["f_c"], r["f_c_ci_low"], r["f_c_ci_high"]),
                                "n/a" if r["auroc"] is None else f"{r['auroc']:.3f}", str(r["n"]),
                                _pct(r.get("f_c_oc")), _pct(r.get("f_c_oi")), _pct(r.get("base_rate"))]
                               for r in t["fractions"]],
                              caption=f"{run.name} ({t['variant']}): {t['split']} split, {t['checkpoint']}, "
                                      f"tail {t['tail']}"))
        png = run / "truncation.png"
        data = png.read_bytes() if png.is_file() else plot_truncation(t, io.BytesIO()).getvalue()
        s.blocks.append(Figure(data, f"{run.name}: f_c and AUROC against the transplanted fraction",
                               f"truncation-{run.name}"))
    if not s.blocks:
        s.blocks.append(Para("No truncation.json in the inputs' runs; make one with `cot-transplant truncation RUN`.",
                             missing=True))
    return s


def probes_section(paths: list[Path]) -> Section:
    from cot_transplant.analysis.probe_report import NESTED_HEADER, NESTED_NOTE, lead, nested_rows
    from cot_transplant.analysis.probes import KIND_LABELS, plot_probes

    s = Section("Probes")
    for path in paths:
        r = json.loads(path.read_text(encoding="utf-8"))
        cfg = r["config"]
        s.blocks.append(Para(f"{path}: {cfg['model']} on {cfg['data']}, {r['n_questions']} questions, "
                             f"{cfg['folds']}-fold cross-validation grouped by question, template {cfg['template']}."))
        if "nested" in r:  # the honest figure first: layer and penalty chosen without the scoring fold
            s.blocks.append(Para(lead(r)))
            s.blocks.append(Table([h.replace("`", "") for h in NESTED_HEADER],
                                  [[c.replace("`", "") for c in row] for row in nested_rows(r)], caption=NESTED_NOTE))
        elif (cfg.get("folds") or 0) < 3:
            s.blocks.append(Para(f"With {cfg.get('folds')} folds there is no inner cross-validation, so no nested "
                                 "figure: the best layer below is picked on the folds that scored it (optimistic)."))
        else:
            s.blocks.append(Para("This probe.json predates nested cross-validation: its best layer below was picked "
                                 "on the folds that scored it; rerun `cot-transplant probe`.", missing=True))
        rows = []
        for kind, layers in r["probes"].items():
            best = r["best"].get(kind)
            last = layers[-1] if layers else {}
            rows.append([KIND_LABELS.get(kind, kind), "n/a" if not best else str(best["layer"]),
                         "n/a" if not best else f"{best['auroc']:.3f} +- {best['auroc_sd'] or 0:.3f}",
                         "n/a" if not best or best.get("auroc_shuffled") is None else f"{best['auroc_shuffled']:.3f}",
                         "n/a" if last.get("auroc") is None else f"{last['auroc']:.3f}"])
        s.blocks.append(Table(["features", "best layer", "AUROC there (mean +- sd over folds)",
                               "shuffled labels there", "last layer"], rows,
                              caption="per-layer probe AUROC (the best of many layers is optimistic: read it "
                                      "against the nested figure above, the shuffled-label control, the baselines "
                                      "and the curve)"))
        s.blocks.append(_probe_baselines(r))
        png = path.parent / "probe.png"
        data = png.read_bytes() if png.is_file() else plot_probes(r, io.BytesIO()).getvalue()
        s.blocks.append(Figure(data, "AUROC of correct vs incorrect per layer", f"probe-{path.parent.name}"))
    if not s.blocks:
        s.blocks.append(Para("No probe results; make them with `cot-transplant probe --data FILE --out DIR` and "
                             "pass --probe DIR (or put them under an input directory).", missing=True))
    return s


def _probe_baselines(result: dict) -> Table | Para:
    """The length-only and text-only baselines of one probe.json, scored on the probes' rows and folds."""
    from cot_transplant.analysis.probe_baselines import BASELINE_LABELS

    baselines = result.get("baselines")
    if not baselines:
        return Para("This probe.json has no baselines (written before they existed); rerun `cot-transplant probe` "
                    "for the length-only and text-only AUROCs on the same folds.", missing=True)
    rows = [[BASELINE_LABELS.get(name, name), b.get("features", ""),
             "n/a" if b["auroc"] is None else f"{b['auroc']:.3f} +- {b['auroc_sd'] or 0:.3f}",
             " ".join("n/a" if a is None else f"{a:.3f}" for a in b["fold_aurocs"])]
            for name, b in baselines.items()]
    return Table(["baseline", "reads", "AUROC (mean +- sd over folds)", "per fold"], rows,
                 caption="baselines on the same rows and folds as the probes: a layer above chance but not above "
                         "these reads no more than the argument's length or words")


def _breakdowns(src: ReportInput, cache: dict) -> tuple[list[tuple[str, list[dict]]], list[str]]:
    """(column label, breakdowns of its runs) per variant of `src`, and why any run has none."""
    from cot_transplant.analysis.breakdown import RESULT, compute_breakdown

    columns: dict[str, list[dict]] = {}
    problems = []
    for label, run in src.runs:
        try:
            path = run / RESULT
            bd = (json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                  else compute_breakdown(run, records=_records(run, cache)))
        except UserError as exc:
            problems.append(f"{run.name}: {exc}")
            continue
        split = "test" if "test" in bd["splits"] else next(iter(bd["splits"]), None)
        if split:
            columns.setdefault(f"{src.label}: {label}" if src.kind == "sweep" else label, []).append(
                {**bd["splits"][split], "samples": bd["samples"]})
    return list(columns.items()), problems


def _groups(bds: list[dict], grouping: str, value: str) -> list[dict]:
    return [g for b in bds for g in b["groups"].get(grouping, []) if g["value"] == value]


def _group_cell(bds: list[dict], grouping: str, value: str) -> str:
    found = _groups(bds, grouping, value)
    if not found:
        return "n/a"
    if len(bds) == 1:
        return _ci(found[0]["f_c"], found[0]["ci_low"], found[0]["ci_high"])
    return f"{_pct(_mean(g['f_c'] for g in found))} (mean of {len(found)})"


def _mean(values) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def breakdown_section(sources: list[ReportInput], cache: dict) -> Section:
    from cot_transplant.analysis.breakdown import GROUPINGS, OPTIONAL_GROUPINGS
    from cot_transplant.analysis.report_figures import breakdown_figure

    s = Section("Confound breakdown")
    columns, problems = [], []
    for src in sources:
        cols, probs = _breakdowns(src, cache)
        columns += cols
        problems += probs
    if not columns:
        s.blocks.append(Para("No breakdown: " + ("; ".join(problems) or "no complete run among the inputs") + ".",
                             missing=True))
        return s
    first = columns[0][1][0]
    checker = (first.get("last_step_checker") or {}).get("f_c")
    intro = ("Test f_c per group of rows, at each run's validation-chosen checkpoint unless its breakdown.json "
             "says otherwise (averaged over a sweep's seeds), beside the argument's own accuracy")
    s.blocks.append(Para(intro + " and a last-step checker that recomputes only the last arithmetic step of each "
                         "candidate (tie: follow the argument); a chooser near the checker may be doing no more than "
                         "that." if checker is not None else
                         intro + ". The last-step checker needs synthetic rows; these are not."))
    s.blocks.append(Table(["variant", "runs", "at samples", "rows", "f_c", "argument accuracy", "last-step checker"],
                          [[label, str(len(bds)), ", ".join(str(b["samples"]) for b in bds), str(bds[0]["n"]),
                            _pct(_mean(b["f_c"] for b in bds)),
                            _pct(bds[0]["argument_accuracy"]),
                            _pct((bds[0].get("last_step_checker") or {}).get("f_c"))] for label, bds in columns],
                          caption="all rows"))
    figure_data = {}
    present = {g for _, bds in columns for b in bds for g in b["groups"]}
    for grouping in GROUPINGS + tuple(g for g in OPTIONAL_GROUPINGS if g in present):
        ref = next(b["groups"][grouping] for _, bds in columns for b in bds if grouping in b["groups"])
        if len(ref) == 1 and ref[0]["value"] == "(none)":
            s.blocks.append(Para(f"{grouping}: the rows carry no such metadata.", missing=True))
            continue
        rows = [[g["value"], str(g["n"]), _pct(g["argument_accuracy"]), _pct(g["checker_f_c"])]
                + [_group_cell(bds, grouping, g["value"]) for _, bds in columns] for g in ref]
        s.blocks.append(Table([grouping, "rows", "argument accuracy", "last-step checker"] + [c for c, _ in columns],
                              rows, caption=f"test f_c by {grouping.replace('_', ' ')} (one run: 95% Wilson CI; "
                                            "several: mean over seeds)"))
        figure_data[grouping] = {
            "values": [g["value"] for g in ref], "checker": [g["checker_f_c"] for g in ref],
            "columns": [(label, [_mean(x["f_c"] for x in _groups(bds, grouping, g["value"])) for g in ref])
                        for label, bds in columns]}
    s.blocks.append(Figure(breakdown_figure(figure_data, checker, first["argument_accuracy"]),
                           "test f_c per group; black ticks: the last-step checker per group, dashed: over all "
                           "rows; dotted: the argument's accuracy", "breakdown"))
    if problems:
        s.blocks.append(Para("Left out: " + "; ".join(problems), missing=True))
    return s


def reference_section(path: Path | None, explicit: bool) -> tuple[Section, dict | None]:
    from cot_transplant.analysis.plots import read_reference

    s = Section("Original study (reference)")
    if path is None:
        s.blocks.append(Para(f"No reference curves: ../{REFERENCE_CSV} not found; pass --reference CSV.", missing=True))
        return s, None
    curves = read_reference(path)  # UserError when an explicit file is unreadable
    rows = []
    for name, cols in curves.items():
        f_c, x = cols["f_c"], cols["samples_trained"]
        best = int(f_c.argmax()) if len(f_c) else None
        rows.append([name, str(len(f_c)), f"{int(x[-1])}", _pct(float(f_c[-1])),
                     f"{_pct(float(f_c[best]))} at {int(x[best])}", _pct(float(f_c[-10:].mean()))])
    s.blocks.append(Para(f"{path}{' (given)' if explicit else ''}: the original study's published test curves "
                         "(7B LLaMA, 275 test rows, argument base rate 64.0%). Its figures are means over 64-row "
                         "test batches, so the last 19 rows weigh more, and the quoted 78.7% is the best of ~200 "
                         "noisy evaluations: compare with this report's validation-chosen values, not its best. "
                         "The curves are drawn in grey in the Curves figure."))
    s.blocks.append(Table(["run", "evaluations", "last samples", "last f_c", "best f_c (not a fair comparison)",
                           "mean of the last 10"], rows, caption="published test f_c"))
    return s, curves
