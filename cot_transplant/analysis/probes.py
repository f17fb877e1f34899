"""Linear probes: is "this argument is correct" linearly readable from the arguer's own states?

`run_probes` reads (or computes once, `probe_features`) the base model's states over each row's two
candidate arguments, then per feature set (hidden_mean, hidden_last, kv_mean) and layer fits a
standardized ridge probe of correct vs incorrect (`probe_cv`, which says why ridge):
  nested        the headline: outer GroupKFold folds by normalized question; within each outer training
                part the layer and ridge penalty are chosen by inner CV on the other folds; the outer
                test fold scores the choice. Pairwise accuracy (the correct argument scored above its
                row's incorrect one, ties 1/2: comparable with the chooser's f_c) with a 95% Wilson
                interval, AUROC per outer fold, the layers chosen.
  null          the same procedure on >= 200 within-pair label flips: p-value (+1 corrected) and 95th
                percentile; also for the best single layer on the same folds (what an analyst picking
                the maximum of the per-layer curve sees), against the max over layers of each flip.
  per layer     each layer's own CV score (penalty still chosen inside), for the figure.
  baselines     on the same outer folds: the layer-0 probe (embedding output), the argument's length
                and its TF-IDF words (`probe_baselines`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from cot_transplant.analysis.probe_cv import (ALPHAS, flip_signs, pair_folds, pairs_from_items, probe_kind,
                                              question_groups)
from cot_transplant.analysis.probe_features import KINDS, arguer_features, candidate_items, file_sha256
from cot_transplant.errors import UserError

BASELINE_COLORS = {"layer0": "tab:brown", "length_only": "tab:purple", "tfidf": "tab:red"}
KIND_LABELS = {"hidden_mean": "hidden state, mean over the argument",
               "hidden_last": "hidden state at the argument's last token",
               "kv_mean": "K/V (k_proj, v_proj), mean over the argument"}


def run_probes(data: str | Path, out: str | Path, model_name: str | None = None, rows: int | None = None,
               folds: int = 5, template_name: str = "alpaca-json", batch_size: int = 8, permutations: int = 200,
               seed: int = 0) -> dict:
    """Probe the base model's arguer states on the first `rows` rows of `data` (all when None); write
    probe.json and probe.png in `out`, the features under `out`/features.

    Raises:
        UserError: unreadable data, an unknown model, too few rows or folds, fewer than 1 permutation.
    """
    from cot_transplant.analysis.probe_baselines import BASELINE_LABELS, surface_baselines
    from cot_transplant.data.io import read_records
    from cot_transplant.models import DEFAULT_MODEL
    from cot_transplant.provenance import stamp
    from cot_transplant.runs.rundir import atomic_write_text

    if rows is not None and rows < 2:
        raise UserError(f"--rows {rows}: a probe needs at least 2 rows")
    if folds < 3:
        raise UserError(f"--folds {folds}: nested cross-validation needs at least 3 folds (each layer is chosen "
                        "by training on K-2 folds and scoring the other K-1 in turn)")
    if permutations < 1:
        raise UserError(f"--permutations {permutations}: the null needs at least 1 permutation")
    t0 = time.time()
    model_name = model_name or DEFAULT_MODEL
    records = read_records(data, require_choice=False)[:rows]
    pair_folds(question_groups([r.question for r in records]), folds)  # too few questions: say so before the model
    out = Path(out)
    key = {"data_sha256": file_sha256(data), "model": model_name, "template": template_name}
    features, kept, n_tokens, info = arguer_features(out / "features", key, records, model_name, template_name,
                                                     batch_size, progress=True)
    t_stats = time.time()
    items, _, _ = candidate_items(records)
    pairs, pair_rows = paired(kept, len(records))
    groups = question_groups([records[i].question for i in pair_rows])
    fold = pair_folds(groups, folds)
    signs = flip_signs(len(pairs), permutations, seed)
    probed = {kind: probe_kind(features[kind], pairs, fold, signs, ALPHAS, progress=f"{kind} probes")
              for kind in KINDS}
    layer0 = probed["hidden_mean"]["layers"][0]
    baselines = {"layer0": {**layer0, "p_value": layer0["p_layer"], "features": "hidden_states[0] (the "
                            "embedding output), mean over the argument; the probes' ridge, alpha by inner CV"},
                 **surface_baselines([items[i][1] for i in kept], n_tokens, pairs, fold)}
    probes = {kind: r["layers"] for kind, r in probed.items()}
    result = {
        "config": {"data": str(data), "model": model_name, "rows": rows, "folds": folds, "permutations": permutations,
                   "seed": seed, "template": template_name, "alphas": list(ALPHAS), "batch_size": batch_size,
                   "device": info["device"], "spans": "unshifted",
                   "cv": "outer GroupKFold by normalized question; layer and alpha chosen by inner CV on the other "
                         "K-1 outer folds (train K-2, score 1)",
                   "probe": "ridge on +-1 targets, features standardized within each training part; "
                            "alpha relative to each feature's variance",
                   "null": "labels flipped within each row's pair at random; the whole nested procedure rerun",
                   "baseline_labels": BASELINE_LABELS},
        "n_rows": len(records), "n_pairs": len(pairs), "n_questions": int(len(np.unique(groups))),
        "n_items": 2 * len(pairs), "dropped_items": len(items) - 2 * len(pairs),
        "dims": {k: int(v.shape[-1]) for k, v in features.items()},
        "layers": {"hidden": "0 = embeddings, l = output of decoder layer l (the last after the final norm)",
                   "kv": "l = k_proj/v_proj of decoder layer l (computed from hidden state l)"},
        "fold_rows": [[int(pair_rows[i]) for i in np.flatnonzero(fold == f)] for f in range(folds)],
        "nested": {kind: {**r["nested"], "best_single": r["best_single"]} for kind, r in probed.items()},
        "probes": probes, "best": best_layers(probes), "baselines": baselines,
        "features": {"dir": "features", "dtype": "float16", "cached": info["cached"], "extract_s": info["extract_s"]},
        "stats_s": round(time.time() - t_stats, 1), "wall_s": round(time.time() - t0, 1),
        "_provenance": stamp(),
    }
    atomic_write_text(out / "probe.json", json.dumps(result, indent=1))
    try:
        plot_probes(result, out / "probe.png")
    except Exception as exc:  # a figure must never cost the numbers
        result["figure"] = f"not written: {exc}"
    return result


def paired(kept, n_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """(pairs (n, 2): positions in `kept` of each row's (correct, incorrect) item, their rows (n,)); a row
    that lost an argument (too long, or no tokens) is left out with its other argument."""
    position = {int(item): j for j, item in enumerate(kept)}
    rows = [i for i in range(n_rows) if 2 * i in position and 2 * i + 1 in position]
    pairs = np.array([(position[2 * i], position[2 * i + 1]) for i in rows], dtype=np.int64).reshape(-1, 2)
    return pairs, np.array(rows, dtype=np.int64)


def probe_layers(features: dict[str, np.ndarray], labels, groups, folds: int = 5, alpha: float = 1.0,
                 seed: int = 0, control: bool = True) -> dict[str, list[dict]]:
    """Per-layer ridge probes at one `alpha`, no selection: `probe_kind`'s per-layer rows.

    Args:
        features: {kind: (layers, n, d)}; labels (n,) 1/0 and groups (n,) with one item of each label
            per group; folds: GroupKFold folds (>= 2).
        control: also `auroc_shuffled`, the probe on one within-pair flip of the labels.
    """
    pairs = pairs_from_items(labels, groups)
    fold = pair_folds(np.asarray(groups)[pairs[:, 0]], folds)
    signs = flip_signs(len(pairs), 1 if control else 0, seed)
    return {kind: probe_kind(np.asarray(x), pairs, fold, signs, (alpha,))["layers"] for kind, x in features.items()}


def best_layers(probes: dict[str, list[dict]]) -> dict[str, dict]:
    """Per feature set, the layer with the highest mean AUROC (with its shuffled control): descriptive,
    optimistic (chosen on the folds it is scored on); the nested score is the fair one."""
    out = {}
    for kind, rows in probes.items():
        known = [r for r in rows if r["auroc"] is not None]
        if known:
            r = max(known, key=lambda r: r["auroc"])
            out[kind] = {"layer": r["layer"], "auroc": r["auroc"], "auroc_sd": r["auroc_sd"],
                         "auroc_shuffled": r.get("auroc_shuffled")}
    return out


def plot_probes(result: dict, out_png) -> object:
    """AUROC per layer of each feature set (+- fold sd), shuffled-label controls dashed, chance at 0.5,
    the baselines as dash-dotted horizontal lines.

    `out_png` is a path or a binary file object; returns it.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from cot_transplant.analysis.probe_baselines import BASELINE_LABELS

    fig = Figure(figsize=(8, 4.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    colors = {"hidden_mean": "tab:blue", "hidden_last": "tab:green", "kv_mean": "tab:orange"}
    for kind, rows in result["probes"].items():
        color = colors.get(kind, "tab:gray")
        x = np.array([r["layer"] for r in rows])
        y = np.array([np.nan if r["auroc"] is None else r["auroc"] for r in rows])
        sd = np.array([np.nan if r["auroc_sd"] is None else r["auroc_sd"] for r in rows])
        ax.plot(x, y, marker="o", ms=3, color=color, label=KIND_LABELS.get(kind, kind))
        ax.fill_between(x, y - sd, y + sd, color=color, alpha=0.15, lw=0)
        if any("auroc_shuffled" in r for r in rows):
            ax.plot(x, [np.nan if r.get("auroc_shuffled") is None else r["auroc_shuffled"] for r in rows],
                    color=color, ls="--", lw=1, alpha=0.7)
    ax.axhline(0.5, color="0.3", ls=(0, (1, 3)), lw=1.4, label="chance (dashed: flipped labels)")
    lows = [0.3]
    for name, base in result.get("baselines", {}).items():  # probe.json files from before baselines have none
        if base.get("auroc") is not None:
            ax.axhline(base["auroc"], color=BASELINE_COLORS.get(name, "0.5"), ls="-.", lw=1.3,
                       label=f"baseline: {BASELINE_LABELS.get(name, name)}, {base['auroc']:.2f}")
            lows.append(base["auroc"] - 0.05)
    ax.set_xlabel("layer (0 = embeddings)")
    ax.set_ylabel(f"AUROC, {result['config']['folds']}-fold CV by question (mean +- sd)")
    ax.set_ylim(min(lows), 1.02)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, frameon=False, loc="upper left")
    cfg = result["config"]
    ax.set_title(f"correct vs incorrect argument: {cfg['model']}, {result['n_questions']} questions, "
                 f"{cfg['template']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110, format="png")
    return out_png
