"""Grouped, nested cross-validation of linear probes on paired arguments, and its permutation null.

Items are the candidate arguments; `pairs` (n_pairs, 2) holds each row's (correct item, incorrect item).
Every pair has an outer fold (`pair_folds`): GroupKFold on the normalized question, so a row's two
arguments, and every row of a repeated question, are always tested together.

The probe is a ridge classifier (least squares on +-1 targets) on features standardized within each
training part, alpha its penalty per training item. Ridge and not logistic regression: its fit is
linear in the labels, so the solve is done once per training part and penalty and every label
permutation is one more column of a matrix product. On pairs this is exact: each training pair adds
one +1 and one -1 target, so the intercept is 0 and X'y = D's, with D the pairs' feature differences
(correct minus incorrect) and s = +-1 per pair the (possibly flipped) labels; in standardized units the
weights solve (R + alpha I) w = D's / n, with R the training items' correlation matrix, which does not
depend on the labels. A test pair is right when s (x_a - x_b) w > 0; a tie counts 1/2. Logistic
regression per permutation x layer x fold would take hours on 2 cores.

Nested CV (`choose`): for outer fold f the layer and alpha are chosen by the other K-1 folds, each in
turn the inner test part of a probe trained on the remaining K-2 (so K >= 3); outer fold f is never
read for the choice, then it scores the chosen probe. The permutation null flips, per row, which of its
two arguments is labelled correct (`flip_signs`), keeping the group structure, and runs the very same
procedure on every flip.
"""

from __future__ import annotations

import numpy as np

from cot_transplant.errors import UserError

ALPHAS = (10.0, 1.0, 0.1, 0.01, 0.001)  # strongest first: a tie in the inner score picks the simpler probe


# --- groups, folds, labels ------------------------------------------------------------------------


def normalize_question(text: str) -> str:
    """The question as grouped: stripped, runs of whitespace collapsed to one space, lowercased."""
    return " ".join(str(text).split()).lower()


def question_groups(questions) -> np.ndarray:
    """(n,) group ids, one per distinct normalized question, numbered by first appearance."""
    ids: dict[str, int] = {}
    return np.array([ids.setdefault(normalize_question(q), len(ids)) for q in questions], dtype=np.int64)


def pair_folds(groups, k: int) -> np.ndarray:
    """(n,) the GroupKFold fold (0 .. k-1) of each pair, every group in one fold.

    Raises:
        UserError: k < 2, or fewer distinct groups than folds.
    """
    from sklearn.model_selection import GroupKFold

    groups = np.asarray(groups)
    n_groups = len(np.unique(groups))
    if k < 2:
        raise UserError(f"--folds {k}: cross-validation needs at least 2 folds")
    if n_groups < k:
        raise UserError(f"--folds {k}: only {n_groups} questions; use at most {n_groups} folds or more --rows")
    fold = np.empty(len(groups), dtype=np.int64)
    for f, (_, test) in enumerate(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups)):
        fold[test] = f
    return fold


def pairs_from_items(labels, groups) -> np.ndarray:
    """(n_groups, 2) the (label-1 item, label-0 item) of each group, groups in order of first appearance.

    Raises:
        ValueError: a group without exactly one item of each label.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    pairs = []
    for g in dict.fromkeys(groups.tolist()):
        idx = np.flatnonzero(groups == g)
        if len(idx) != 2 or sorted(labels[idx].tolist()) != [0, 1]:
            raise ValueError(f"group {g}: expected one correct and one incorrect item, got labels "
                             f"{labels[idx].tolist()}")
        pairs.append(idx if labels[idx[0]] == 1 else idx[::-1])
    return np.array(pairs, dtype=np.int64).reshape(-1, 2)


def item_folds(pairs, fold, n_items: int) -> np.ndarray:
    """(n_items,) each item's fold (that of its pair); -1 for an item in no pair."""
    out = np.full(n_items, -1, dtype=np.int64)
    out[pairs[:, 0]] = fold
    out[pairs[:, 1]] = fold
    return out


def flip_signs(n_pairs: int, permutations: int, seed: int = 0) -> np.ndarray:
    """(n_pairs, permutations + 1) +-1: column 0 the labels as given, each other column a within-pair
    permutation (per row, at random, whether its two arguments swap labels)."""
    rng = np.random.default_rng(seed)
    flips = rng.integers(0, 2, size=(n_pairs, permutations)) * 2 - 1
    return np.concatenate([np.ones((n_pairs, 1)), flips], axis=1).astype(np.float64)


def flipped(pairs, sign) -> np.ndarray:
    """`pairs` under one column of `flip_signs`: (correct, incorrect) swapped where `sign` < 0, so each
    row keeps one argument of each label."""
    return np.where((np.asarray(sign) > 0)[:, None], pairs, pairs[:, ::-1])


# --- scores ---------------------------------------------------------------------------------------


def pairwise_correct(score_correct, score_incorrect) -> np.ndarray:
    """Per row 1 if the correct argument scores higher, 1/2 on a tie, else 0 (the chooser's f_c rule)."""
    a, b = np.asarray(score_correct, dtype=np.float64), np.asarray(score_incorrect, dtype=np.float64)
    return np.where(a > b, 1.0, np.where(a == b, 0.5, 0.0))


def summarize(scores, pairs, fold) -> dict:
    """Pairwise accuracy (95% Wilson) and per-fold AUROC of out-of-fold item `scores`.

    Returns:
        {"pairwise", "pairwise_ci": [low, high], "pairwise_folds", "pairwise_sd", "auroc" (mean over
         folds), "auroc_sd", "fold_aurocs", "auroc_pooled" (all out-of-fold scores together), "n_pairs"}.
    """
    from sklearn.metrics import roc_auc_score

    from cot_transplant.runs.metrics import wilson

    scores, fold = np.asarray(scores, dtype=np.float64), np.asarray(fold)
    right = pairwise_correct(scores[pairs[:, 0]], scores[pairs[:, 1]])
    low, high = wilson(float(right.sum()), len(right))
    by_fold = [float(right[fold == f].mean()) for f in range(int(fold.max()) + 1)]
    labels = np.concatenate([np.ones(len(pairs)), np.zeros(len(pairs))])
    item_scores = np.concatenate([scores[pairs[:, 0]], scores[pairs[:, 1]]])
    item_fold = np.concatenate([fold, fold])
    aurocs = [float(roc_auc_score(labels[item_fold == f], item_scores[item_fold == f]))
              for f in range(len(by_fold))]
    return {"pairwise": float(right.mean()), "pairwise_ci": [low, high], "pairwise_folds": by_fold,
            "pairwise_sd": sd(by_fold), "auroc": float(np.mean(aurocs)), "auroc_sd": sd(aurocs),
            "fold_aurocs": aurocs, "auroc_pooled": float(roc_auc_score(labels, item_scores)),
            "n_pairs": len(pairs)}


def sd(values) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def permutation_p(stat) -> dict:
    """{"p_value", "null_q95", "null_mean"} of `stat[0]` (observed) against `stat[1:]` (the null),
    p with the +1 correction: (1 + #{null >= observed}) / (1 + permutations)."""
    stat = np.asarray(stat, dtype=np.float64)
    null = stat[1:]
    if not len(null):
        return {"p_value": None, "null_q95": None, "null_mean": None}
    return {"p_value": float((1 + np.sum(null >= stat[0] - 1e-12)) / (1 + len(null))),
            "null_q95": float(np.quantile(null, 0.95)), "null_mean": float(null.mean())}


# --- the ridge probe, every permutation at once ----------------------------------------------------


def ridge_counts(x, pairs, fold, signs, alphas=ALPHAS, keep: int = 2) -> dict:
    """Pairs right (ties 1/2) of the ridge probe on one feature matrix, for every penalty and label column.

    Args:
        x: (n_items, d) features of every item.
        pairs: (n_pairs, 2) (correct, incorrect) item indices.
        fold: (n_pairs,) outer fold ids 0 .. K-1.
        signs: (n_pairs, P + 1) `flip_signs`' label columns.
        alphas: penalties, relative to each feature's training variance.
        keep: item scores are returned for the first `keep` label columns.
    Returns:
        {"outer": (K, A, P + 1) pairs right in fold f, probe trained on every other fold;
         "inner": (K, A, P + 1) pairs right summed over the folds j != f, each probe trained on the
                  folds other than f and j (zeros when K < 3: no inner CV);
         "scores": (n_items, A, keep) out-of-fold item scores of the outer probes}.
    """
    x = np.asarray(x, dtype=np.float64)
    if not np.isfinite(x).all():
        raise UserError("probe: the features hold inf or NaN (overflow in the stored float16?); rerun the "
                        "extraction with a fresh --out")
    x = x - x.mean(0)  # a shift every probe undoes by centring on its own training part; for rounding only
    k, n_alpha, columns = int(fold.max()) + 1, len(alphas), signs.shape[1]
    keep = min(keep, columns)
    of_item = item_folds(pairs, fold, len(x))
    chunk_x = [x[of_item == c] for c in range(k)]
    chunk_diff = [x[pairs[fold == c, 0]] - x[pairs[fold == c, 1]] for c in range(k)]  # (n_pairs_c, d)
    chunk_signs = [signs[fold == c] for c in range(k)]  # (n_pairs_c, P + 1)
    n = [len(xc) for xc in chunk_x]
    means = [xc.mean(0) for xc in chunk_x]
    scatter = [(xc - m).T @ (xc - m) for xc, m in zip(chunk_x, means)]  # (d, d) per fold, about its own mean
    size = [np.abs(xc).max(0) for xc in chunk_x]  # (d,) per fold
    xty = [dc.T @ sc for dc, sc in zip(chunk_diff, chunk_signs)]  # (d, P + 1) per fold: D' s

    def solve(excluded: set[int]):
        train = [c for c in range(k) if c not in excluded]
        n_t = sum(n[c] for c in train)
        mean = sum(n[c] * means[c] for c in train) / n_t
        # the training part's scatter from its folds' (the parallel-variance formula: no cancellation)
        c_t = sum(scatter[c] + n[c] * np.outer(means[c] - mean, means[c] - mean) for c in train)
        sd = np.sqrt(np.clip(np.diag(c_t), 0, None))
        # a feature constant on the training part, up to rounding, gets weight 0
        live = sd > np.sqrt(n_t) * 1e-6 * np.max([size[c] for c in train], axis=0)
        corr = c_t[np.ix_(live, live)] / np.outer(sd[live], sd[live])  # standardized: the correlation matrix
        rhs = sum(xty[c] for c in train)[live] / sd[live, None]
        ws = []
        for a in alphas:
            w = np.zeros((x.shape[1], columns))
            w[live] = ridge_solve(corr, a, rhs) / sd[live, None]
            ws.append(w)
        return mean, ws

    def right(c, w):  # (P + 1,) pairs right in fold c under weights w (d, P + 1)
        agree = (chunk_diff[c] @ w) * chunk_signs[c]
        return (agree > 0).sum(0) + 0.5 * (agree == 0).sum(0)

    outer = np.zeros((k, n_alpha, columns))
    inner = np.zeros((k, n_alpha, columns))
    scores = np.zeros((len(x), n_alpha, keep))
    for f in range(k):
        mean, ws = solve({f})
        for a, w in enumerate(ws):
            outer[f, a] = right(f, w)
            scores[of_item == f, a] = (chunk_x[f] - mean) @ w[:, :keep]
    if k >= 3:
        for f in range(k):
            for j in range(f + 1, k):  # one fit serves (outer f, inner test j) and (outer j, inner test f)
                _, ws = solve({f, j})
                for a, w in enumerate(ws):
                    inner[f, a] += right(j, w)
                    inner[j, a] += right(f, w)
    return {"outer": outer, "inner": inner, "scores": scores}


def ridge_solve(corr, alpha: float, rhs) -> np.ndarray:
    """(corr + alpha I)^-1 rhs for a correlation matrix `corr`; by Cholesky, or by its eigenvalues (floored
    at alpha) where rounding left it indefinite."""
    import scipy.linalg

    a = corr + alpha * np.eye(len(corr))
    try:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(a), rhs)
    except np.linalg.LinAlgError:
        vals, vecs = np.linalg.eigh(a)
        return vecs @ ((vecs.T @ rhs) / np.maximum(vals, alpha)[:, None])


def choose(inner, outer) -> tuple[np.ndarray, np.ndarray]:
    """The nested choice: per outer fold and label column, the configuration with the most inner pairs
    right (the first on ties), and the outer pairs right there.

    Args:
        inner, outer: (K, configs, P + 1) as `ridge_counts` gives (configs may be layers x alphas).
    Returns:
        (chosen (K, P + 1) config indices, right (K, P + 1) outer pairs right at the chosen config).
    """
    chosen = np.asarray(inner).argmax(axis=1)
    return chosen, np.take_along_axis(np.asarray(outer), chosen[:, None, :], axis=1)[:, 0]


def probe_kind(features, pairs, fold, signs, alphas=ALPHAS, progress: str | None = None) -> dict:
    """Every layer of one feature set: per-layer scores (alpha chosen by inner CV), the nested score
    (layer and alpha chosen by inner CV) and the best single layer on the same folds, with their nulls.

    Args:
        features: (layers, n_items, d), e.g. a float16 memmap; one layer is read at a time.
        pairs, fold, signs, alphas: as `ridge_counts`.
        progress: a label for a progress bar, or None for none.
    With K < 3 folds there is no inner CV: give one alpha, and no "nested" is returned.
    Returns:
        {"layers": [per-layer row], "nested": {...} (K >= 3 only), "best_single": {...}}; each holds
        `summarize`'s figures of the observed labels and `permutation_p`'s of its statistic.
    """
    from threadpoolctl import threadpool_limits
    from tqdm.auto import tqdm

    n_layers, k, n_alpha = len(features), int(fold.max()) + 1, len(alphas)
    inner = np.zeros((k, n_layers, n_alpha, signs.shape[1]))
    outer = np.zeros_like(inner)
    scores = np.zeros((features.shape[1], n_layers, n_alpha, min(2, signs.shape[1])))
    # One BLAS thread: these are many small (d x d) factorizations, which OpenBLAS threads slow down
    # several-fold on a shared CPU (docs/report.md); the matrix products lose little.
    with threadpool_limits(limits=1, user_api="blas"):
        for layer in tqdm(range(n_layers), desc=progress, unit="layer", disable=None if progress else True,
                          dynamic_ncols=True):
            r = ridge_counts(features[layer], pairs, fold, signs, alphas)
            inner[:, layer], outer[:, layer], scores[:, layer] = r["inner"], r["outer"], r["scores"]
    of_item = item_folds(pairs, fold, scores.shape[0])

    def picked(layer_of_fold, alpha_of_fold, column):  # (n_items,) each fold's items scored by its own choice
        out = np.zeros(scores.shape[0])
        for f in range(k):
            out[of_item == f] = scores[of_item == f, layer_of_fold[f], alpha_of_fold[f], column]
        return out

    layers, per_layer = [], []
    for layer in range(n_layers):
        chosen, right = choose(inner[:, layer], outer[:, layer])
        per_layer.append(right.sum(0) / len(pairs))
        null = permutation_p(per_layer[-1])
        row = {"layer": layer, **summarize(picked([layer] * k, chosen[:, 0], 0), pairs, fold),
               "alphas": [alphas[a] for a in chosen[:, 0]], "p_layer": null["p_value"], "null_q95": null["null_q95"]}
        if signs.shape[1] > 1:  # the first permutation, as a measured chance level per layer
            shuffled = summarize(picked([layer] * k, chosen[:, 1], 1), flipped(pairs, signs[:, 1]), fold)
            row["auroc_shuffled"] = shuffled["auroc"]
        layers.append(row)
    per_layer = np.array(per_layer)  # (layers, P + 1)
    best = int(per_layer[:, 0].argmax())
    out = {"layers": layers, "best_single": {"layer": best, "pairwise": float(per_layer[best, 0]),
                                             **permutation_p(per_layer.max(0))}}
    if k >= 3:
        chosen, right = choose(inner.reshape(k, n_layers * n_alpha, -1), outer.reshape(k, n_layers * n_alpha, -1))
        layer_of, alpha_of = chosen[:, 0] // n_alpha, chosen[:, 0] % n_alpha
        out["nested"] = {**summarize(picked(layer_of, alpha_of, 0), pairs, fold),
                         "layers_chosen": layer_of.tolist(), "alphas_chosen": [alphas[a] for a in alpha_of],
                         **permutation_p(right.sum(0) / len(pairs)),
                         "null": [round(float(v), 6) for v in right.sum(0)[1:] / len(pairs)]}
    return out
