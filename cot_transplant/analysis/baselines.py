"""Baselines beside every result: what cheap rules score on the same rows as the chooser.

- length-only: score = len(candidate 1's argument) - len(candidate 2's argument), in characters
  (`Record.candidates()`). Its sign is fit on the train rows: "pick the longer" or "pick the
  shorter", whichever is right on more train rows (ties half; a draw keeps "longer"); no
  threshold. Scored on the evaluated rows: f_c with a 95% Wilson interval and the AUROC of the
  signed score for "candidate 1 is correct".
- pick-longer: the same rule with the sign fixed to "longer" (nothing fit).
- last-step checker (`analysis.breakdown`): recomputes each candidate's last equation, follows
  the argument when that does not decide; f_c with its interval and how many rows it decides.
- argument: the choice argument's own accuracy (the base rate).

Equal lengths are ties and count as half right. Every figure over no rows is None.
"""

from __future__ import annotations

from cot_transplant.analysis.breakdown import CHECKER_HOW, _checker_decides, last_step_choice
from cot_transplant.data.record import Record
from cot_transplant.runs.metrics import wilson

LENGTH_HOW = ("score = characters of candidate 1's argument - candidate 2's; the sign (pick the longer or the "
              "shorter) right on more train rows, ties half, a draw keeps longer; no threshold")


def length_score(record: Record) -> int:
    """Characters of candidate 1's argument minus candidate 2's (shown order)."""
    (_, arg1), (_, arg2) = record.candidates()
    return len(arg1) - len(arg2)


def length_credit(record: Record, sign: int) -> float:
    """1 if the rule `sign` (+1 pick the longer, -1 the shorter) picks the correct candidate, 0 if not, 1/2 on a tie."""
    score = sign * length_score(record)
    if score == 0:
        return 0.5
    return 1.0 if (1 if score > 0 else 2) == record.label else 0.0


def fit_length_sign(records: list[Record]) -> int:
    """+1 ("pick the longer") or -1 ("pick the shorter"): the rule right on more of `records` (a draw: +1)."""
    longer = sum(length_credit(r, 1) for r in records)
    return 1 if longer >= len(records) - longer else -1


def auroc(scores: list[float], labels: list[int]) -> float | None:
    """AUROC of `scores` for "candidate 1 is correct" (label 1); ties count half; None with one class only."""
    from sklearn.metrics import roc_auc_score

    positive = [y == 1 for y in labels]
    if all(positive) or not any(positive):
        return None
    return float(roc_auc_score(positive, scores))


def rate(credits: list[float]) -> dict:
    """f_c (the mean credit), its 95% Wilson interval and n."""
    n = len(credits)
    low, high = wilson(sum(credits), n)
    return {"f_c": sum(credits) / n if n else None, "ci_low": low, "ci_high": high, "n": n}


def baselines(train: list[Record], rows: list[Record]) -> dict:
    """The baselines of the module docstring on `rows`, the length sign fit on `train`; JSON-ready."""
    sign = fit_length_sign(train)
    decided = sum(_checker_decides(r) for r in rows)
    argument = rate([float(r.argument_correct) for r in rows])
    return {
        "n": len(rows), "n_train": len(train),
        "length_only": {**rate([length_credit(r, sign) for r in rows]),
                        "auroc": auroc([sign * length_score(r) for r in rows], [r.label for r in rows]),
                        "fit": "longer" if sign == 1 else "shorter",
                        "train_f_c": rate([length_credit(r, sign) for r in train])["f_c"], "how": LENGTH_HOW},
        "pick_longer": rate([length_credit(r, 1) for r in rows]),
        "last_step_checker": {**rate([float(last_step_choice(r) == r.label) for r in rows]), "decided": decided,
                              "how": CHECKER_HOW},
        "argument": {"base_rate": argument["f_c"], "ci_low": argument["ci_low"], "ci_high": argument["ci_high"]},
    }


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f}%"


def _with_ci(r: dict) -> str:
    return f"{_pct(r['f_c'])} [{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]"


def format_baselines(b: dict) -> str:
    """One line: length-only (with its fit and AUROC), pick-longer, the checker, the argument."""
    length, checker = b["length_only"], b["last_step_checker"]
    auc = "n/a" if length["auroc"] is None else f"{length['auroc']:.3f}"
    return (f"baselines on {b['n']} rows: length-only (pick the {length['fit']}, fit on {b['n_train']} train rows) "
            f"{_with_ci(length)} AUROC {auc}; pick-longer {_pct(b['pick_longer']['f_c'])}; last-step checker "
            f"{_with_ci(checker)} (decides {checker['decided']}); argument {_pct(b['argument']['base_rate'])}")
