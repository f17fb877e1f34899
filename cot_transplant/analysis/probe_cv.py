"""Grouped cross-validation of linear probes: the folds, the probe and the AUROC that `probes` and
`probe_baselines` both score with, so every feature set sees the very same folds."""

from __future__ import annotations

import numpy as np

from cot_transplant.errors import UserError


def group_folds(groups, k: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train indices, test indices) of `k` GroupKFold folds: every group's items in one test fold.

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
    return list(GroupKFold(n_splits=k).split(np.zeros(len(groups)), groups=groups))


def cv_auroc(features, labels, groups, folds: int | list = 5, C: float = 1.0, make_probe=None) -> dict:
    """Cross-validated AUROC of a probe (a standardized L2 logistic regression by default), grouped by `groups`.

    Args:
        features: (n, d) one row per item; any sequence `make_probe`'s model takes (e.g. texts) with it.
        labels: (n,) 0/1.
        groups: (n,) group ids (the question); a group never spans two folds.
        folds: the number of GroupKFold folds, or their (train, test) index pairs from `group_folds`
            (so several feature sets are scored on the very same folds).
        C: inverse L2 strength of the logistic regression.
        make_probe: a function returning an unfitted scikit-learn classifier with `decision_function`
            (default: StandardScaler + L2 logistic regression with `C`).
    Returns:
        {"auroc": mean over folds, "auroc_sd": their sd, "fold_aurocs": [...],
         "auroc_pooled": AUROC of all out-of-fold scores together}; a fold holding one class only
        has AUROC None and is left out of the mean.
    """
    from sklearn.metrics import roc_auc_score

    x = np.asarray(features, dtype=np.float64) if make_probe is None else np.asarray(features)
    y = np.asarray(labels, dtype=np.int64)
    splits = group_folds(groups, folds) if isinstance(folds, (int, np.integer)) else folds
    scores = np.zeros(len(y))
    per_fold = []
    for train, test in splits:
        if len(np.unique(y[train])) < 2:  # nothing to learn: a constant score
            scores[test] = 0.0
        else:
            probe = make_probe() if make_probe is not None else linear_probe(C)
            probe.fit(x[train], y[train])
            scores[test] = probe.decision_function(x[test])
        per_fold.append(float(roc_auc_score(y[test], scores[test])) if len(np.unique(y[test])) == 2 else None)
    known = [a for a in per_fold if a is not None]
    return {"auroc": float(np.mean(known)) if known else None,
            "auroc_sd": float(np.std(known, ddof=1)) if len(known) > 1 else None,
            "fold_aurocs": per_fold,
            "auroc_pooled": float(roc_auc_score(y, scores)) if len(np.unique(y)) == 2 else None}


def linear_probe(C: float = 1.0):
    """StandardScaler + L2 logistic regression, unfitted: the probe of every layer and of the length baseline."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # liblinear: ~30x faster than lbfgs on these few-sample, wide, separable problems (measured)
    return make_pipeline(StandardScaler(), LogisticRegression(C=C, solver="liblinear", max_iter=1000))


def shuffle_within(labels, groups, seed: int = 0) -> np.ndarray:
    """`labels` permuted within each group: every question keeps one correct and one incorrect answer,
    but which is which is random. (A global permutation breaks that pairing and, measured, biases the
    cross-validated AUROC below 0.5.)"""
    labels, groups = np.asarray(labels), np.asarray(groups)
    rng = np.random.default_rng(seed)
    out = labels.copy()
    for g in np.unique(groups):
        idx = np.flatnonzero(groups == g)
        out[idx] = labels[rng.permutation(idx)]
    return out
