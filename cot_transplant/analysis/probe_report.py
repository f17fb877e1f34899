"""A probe.json in words: the terminal lines of `cot-transplant probe` and the Markdown block of
docs/results.md (`results.probe_section`). Both read the file alone."""

from __future__ import annotations

from cot_transplant.analysis.probe_baselines import BASELINE_LABELS

BASELINE_ORDER = ("layer0", "length_only", "tfidf")


def pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def num(x, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def pairwise_ci(r: dict) -> str:
    """`61.2% [59.4%, 63.0%]`: pairwise accuracy with its 95% Wilson interval."""
    low, high = r.get("pairwise_ci") or (None, None)
    return f"{pct(r.get('pairwise'))} [{pct(low)}, {pct(high)}]"


def pairwise_cell(r: dict) -> str:
    """Pairwise accuracy [95% Wilson], then its mean +- sd over the outer folds."""
    folds = r.get("pairwise_folds") or []
    if not folds:
        return pairwise_ci(r)
    sd = r.get("pairwise_sd")
    return f"{pairwise_ci(r)}; {100 * sum(folds) / len(folds):.1f} ± {'n/a' if sd is None else f'{100 * sd:.1f}'}"


def auroc_sd(r: dict) -> str:
    return f"{num(r.get('auroc'))} ± {num(r.get('auroc_sd'))}"


def p_value(p) -> str:
    return "n/a" if p is None else f"{p:.3g}"


def best_single(b: dict | None) -> str:
    """The best single layer on the same folds: what picking the curve's maximum gives, and its own null."""
    if not b:
        return "n/a"
    return f"{pct(b['pairwise'])} at layer {b['layer']} (p {p_value(b.get('p_value'))})"


def lead(p: dict) -> str:
    """Rows, questions, folds, permutations, wall and git of one probe.json, in one sentence."""
    cfg = p.get("config", {})
    k = cfg.get("folds")
    feats = p.get("features") or {}
    extract = "features read from disk" if feats.get("cached") else f"features {feats.get('extract_s', 0):.0f} s"
    return (f"{p['n_rows']} rows ({p['n_pairs']} argument pairs, {p['n_questions']} distinct questions) of "
            f"`{cfg.get('data')}`, model `{cfg.get('model')}`, template `{cfg.get('template')}`; {k} outer folds "
            f"grouped by normalized question, the layer and ridge penalty chosen in each by inner CV on the other "
            f"{k - 1 if k else '?'} folds; {cfg.get('permutations')} within-pair label flips, each through the whole "
            f"procedure; wall {p.get('wall_s', 0):.0f} s ({extract}, statistics {p.get('stats_s', 0):.0f} s) on "
            f"{cfg.get('device')}; git `{(p.get('_provenance') or {}).get('git')}`.")


NESTED_HEADER = ["features", "pairwise acc. (nested CV) [95% Wilson]; mean ± sd over outer folds",
                 "AUROC (mean ± sd over outer folds)", "layer chosen per outer fold", "p (permutation)",
                 "null 95th pct", "best single layer, same folds"]
NESTED_NOTE = ("Pairwise accuracy: the share of rows whose correct argument the probe scores above the incorrect "
               "one (ties 1/2), comparable with the chooser's f_c; chance is 50%. p: the nested score against the "
               "same procedure on each label flip, (1 + #null >= observed) / (1 + flips). The last column picks the "
               "best layer on the folds that score it (optimistic), tested against the best layer of each flip.")


def nested_rows(p: dict) -> list[list[str]]:
    """The rows under NESTED_HEADER of one probe.json that has "nested": the feature sets, then the baselines."""
    rows = []
    for kind, r in p["nested"].items():
        rows.append([f"`{kind}`", pairwise_cell(r), auroc_sd(r), ", ".join(str(x) for x in r["layers_chosen"]),
                     p_value(r.get("p_value")), pct(r.get("null_q95")), best_single(r.get("best_single"))])
    for name in BASELINE_ORDER:
        b = (p.get("baselines") or {}).get(name)
        if b:
            rows.append([f"baseline: {BASELINE_LABELS.get(name, name)}", pairwise_cell(b), auroc_sd(b), "",
                         p_value(b.get("p_value")), pct(b.get("null_q95")), ""])
    return rows


def probe_markdown(p: dict) -> str:
    """The results.md block of one probe.json: per feature set the nested-CV figures and nulls, then the
    baselines on the same folds."""
    from cot_transplant.analysis.results import table

    if "nested" not in p:
        return ("_This probe.json predates nested cross-validation (its best layer was picked on the folds that "
                "scored it); rerun `cot-transplant probe`._")
    return "\n\n".join([lead(p), table(NESTED_HEADER, nested_rows(p)), NESTED_NOTE])


def format_probes(result: dict) -> str:
    """The terminal lines of `run_probes`' result: per feature set the nested figures, then the baselines."""
    from cot_transplant.analysis.probes import KIND_LABELS

    cfg = result["config"]
    lines = [f"probe {cfg['model']} on {cfg['data']}: {result['n_pairs']} rows, {result['n_questions']} questions, "
             f"{cfg['folds']} outer folds grouped by question, {cfg['permutations']} within-pair flips"]
    for kind, r in result["nested"].items():
        lines.append(f"   {KIND_LABELS.get(kind, kind)}: nested pairwise {pairwise_ci(r)}, AUROC {auroc_sd(r)}, "
                     f"layers {' '.join(str(x) for x in r['layers_chosen'])}, p {p_value(r['p_value'])} "
                     f"(null 95th pct {pct(r['null_q95'])}); best single layer {best_single(r['best_single'])}")
    for name in BASELINE_ORDER:
        b = result["baselines"].get(name)
        if b:
            lines.append(f"   baseline, {BASELINE_LABELS[name]}: pairwise {pairwise_ci(b)}, AUROC {auroc_sd(b)} "
                         "(same rows and folds)")
    return "\n".join(lines)
