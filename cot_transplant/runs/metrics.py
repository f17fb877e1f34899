"""The chooser's metrics, as pure numpy functions of P1, P2, the label and the argument's pick.

Terms (DESIGN.md, "Metrics the seed logged"): `p1`, `p2` are the chooser's
probabilities of the tokens "1" and "2" at the last position (softmax over the full
vocabulary); `label` is the position (1 or 2) of the correct candidate;
`argument_choice` is the position the choice argument picked. Pc is the probability
of the correct candidate, Pi the other one.

Every figure is a plain fraction or mean over all rows given (the seed averaged
per-batch figures, which over-weights a short last batch, and divided its train
conditionals by `max(mean, 1)`). A row scores 1 when the chooser prefers the correct
candidate, 0 when it prefers the other and 1/2 on a tie (P1 == P2: a coin flip), see
`row_scores`. A figure over an empty group is None, never 0 or NaN, so a logged 0.0
always means "measured and zero". Values are Python floats, ready for JSON.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any, Mapping

import numpy as np
from numpy.typing import ArrayLike

CHOICE_KEYS = ("f_c", "f_c_oc", "f_c_oi", "o_c", "o_i", "n")
EVAL_KEYS = CHOICE_KEYS + ("auroc", "base_rate", "agree", "f_c_ci_low", "f_c_ci_high")


def _inputs(p1: ArrayLike, p2: ArrayLike, label: ArrayLike, argument_choice: ArrayLike):
    """Validate and convert to 1-D arrays: (p1, p2, label, argument_choice)."""
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
    p2 = np.asarray(p2, dtype=np.float64).reshape(-1)
    label = np.asarray(label).reshape(-1)
    argument_choice = np.asarray(argument_choice).reshape(-1)
    n = len(p1)
    if not (len(p2) == len(label) == len(argument_choice) == n):
        raise ValueError(f"length mismatch: p1 {n}, p2 {len(p2)}, label {len(label)}, "
                         f"argument_choice {len(argument_choice)}")
    for name, a in (("label", label), ("argument_choice", argument_choice)):
        if not np.isin(a, (1, 2)).all():
            raise ValueError(f"{name} must hold positions 1 or 2, got {sorted(set(a.tolist()) - {1, 2})}")
    label, argument_choice = label.astype(np.int64), argument_choice.astype(np.int64)
    if np.isnan(p1).any() or np.isnan(p2).any():
        raise ValueError("p1/p2 contain NaN")
    return p1, p2, label, argument_choice


def _correct_other(p1: np.ndarray, p2: np.ndarray, label: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Pc, Pi): the probabilities of the correct and the incorrect candidate."""
    return np.where(label == 1, p1, p2), np.where(label == 1, p2, p1)


def row_scores(p1: ArrayLike, p2: ArrayLike, label: ArrayLike) -> np.ndarray:
    """Per row 1.0 if the chooser prefers candidate `label` (its probability is the larger), 0.5 on a tie, else 0.0.

    `label` is the position (1 or 2) scored as right: the correct one for f_c, the
    argument's pick for agree. P1 and P2 come from float32 log-softmax (never bf16, see
    `step.loss_and_probs`) and are compared as float64, so a tie is a real tie. Raises
    ValueError on mismatched lengths.
    """
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
    p2 = np.asarray(p2, dtype=np.float64).reshape(-1)
    label = np.asarray(label).reshape(-1)
    if not len(p1) == len(p2) == len(label):
        raise ValueError(f"length mismatch: p1 {len(p1)}, p2 {len(p2)}, label {len(label)}")
    pc, pi = _correct_other(p1, p2, label)
    return np.where(pc > pi, 1.0, np.where(pc == pi, 0.5, 0.0))


def _mean(x: np.ndarray) -> float | None:
    return float(x.mean()) if x.size else None


def choice_metrics(p1: ArrayLike, p2: ArrayLike, label: ArrayLike, argument_choice: ArrayLike) -> dict[str, Any]:
    """f_c, f_c_oc, f_c_oi, o_c, o_i and n over the rows given (e.g. one train sub-batch).

    - `f_c`: mean of `row_scores`: the fraction of rows with Pc > Pi, a tie (Pc == Pi)
      counting 1/2.
    - `f_c_oc` / `f_c_oi`: f_c among rows where the argument picked the correct /
      the incorrect candidate.
    - `o_c`: mean of Pc - Pi over rows the chooser got right (Pc > Pi); `o_i`: mean of
      Pi - Pc over rows it got wrong (Pc < Pi). A tie belongs to neither group.
    An empty group gives None. Raises ValueError on mismatched lengths, labels
    outside {1, 2}, or NaN probabilities.
    """
    p1, p2, label, argument_choice = _inputs(p1, p2, label, argument_choice)
    pc, pi = _correct_other(p1, p2, label)
    score = row_scores(p1, p2, label)
    argument_right = argument_choice == label
    return {
        "f_c": _mean(score),
        "f_c_oc": _mean(score[argument_right]),
        "f_c_oi": _mean(score[~argument_right]),
        "o_c": _mean((pc - pi)[score == 1.0]),
        "o_i": _mean((pi - pc)[score == 0.0]),
        "n": int(len(pc)),
    }


def auroc(p1: ArrayLike, p2: ArrayLike, label: ArrayLike) -> float | None:
    """AUROC of the score P1 / (P1 + P2) for "candidate 1 is correct"; None with one class only.

    Computed as the Mann-Whitney statistic with average ranks for tied scores (the
    same value as sklearn's roc_auc_score). Rows where P1 + P2 == 0 (both
    probabilities underflowed) score 0.5: the chooser expressed no preference.
    """
    p1 = np.asarray(p1, dtype=np.float64).reshape(-1)
    p2 = np.asarray(p2, dtype=np.float64).reshape(-1)
    positive = np.asarray(label).reshape(-1) == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    total = p1 + p2
    score = np.divide(p1, total, out=np.full_like(p1, 0.5), where=total > 0)
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based mean rank of each distinct score
    ranks = average_rank[inverse.reshape(-1)]
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def eval_metrics(p1: ArrayLike, p2: ArrayLike, label: ArrayLike, argument_choice: ArrayLike) -> dict[str, Any]:
    """`choice_metrics` plus auroc, base_rate, agree and a 95% Wilson interval of f_c.

    - `base_rate`: the argument's own accuracy (argument_choice == label).
    - `agree`: fraction of rows where the chooser's pick (the candidate with the
      larger probability) equals argument_choice; a tie picks neither and counts 1/2,
      as in f_c.
    - `f_c_ci_low` / `f_c_ci_high`: the Wilson score interval (`wilson`) of k out
      of n with k = the sum of the row scores, ties adding 1/2: Wilson on a fractional
      count, the plain Wilson interval when there are no ties.
    """
    p1, p2, label, argument_choice = _inputs(p1, p2, label, argument_choice)
    out = choice_metrics(p1, p2, label, argument_choice)
    low, high = wilson(float(row_scores(p1, p2, label).sum()), len(p1))
    out.update(
        auroc=auroc(p1, p2, label),
        base_rate=_mean(argument_choice == label),
        agree=_mean(row_scores(p1, p2, argument_choice)),
        f_c_ci_low=low,
        f_c_ci_high=high,
    )
    return out


def wilson(k: float, n: int, alpha: float = 0.05) -> tuple[float | None, float | None]:
    """(1 - alpha) Wilson score interval of the proportion k / n; (None, None) when n == 0.

    Sound at small n and at 0 or n (24/24 gives [0.862, 1], where a bootstrap collapses to
    [1, 1]). `k` may be fractional (ties scored 1/2 add 0.5 each): the same formula on p = k / n,
    which is the textbook interval for whole k. Raises ValueError when k is outside [0, n].
    """
    if n == 0:
        return None, None
    if not -1e-9 <= k <= n + 1e-9:
        raise ValueError(f"wilson: k = {k} is outside [0, n = {n}]")
    z = NormalDist().inv_cdf(1 - alpha / 2)
    p = min(1.0, max(0.0, k / n))
    shrink = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / shrink
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / shrink
    return min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half))  # rounding never excludes p


def prefix(d: Mapping[str, Any], split: str) -> dict[str, Any]:
    """`{f"{split}/{k}": v}`: metric keys as logged, e.g. `val/f_c`."""
    return {f"{split}/{k}": v for k, v in d.items()}
