"""Summary figures of a dataset: base rate, candidate-order balance, error histograms, token lengths."""

from __future__ import annotations

import math
from collections import Counter

from cot_transplant.data.numbers import parse_number
from cot_transplant.data.record import Record

QUANTILES = (0.5, 0.9, 0.99)
TEXT_FIELDS = ("question", "correct_argument", "incorrect_argument", "choice_argument")


def histogram_columns(records: list[Record]) -> list[str]:
    """Extra columns describing the error (names containing 'kind' or 'step'), in file order."""
    names = dict.fromkeys(k for r in records for k in r.extra)
    return [k for k in names if "kind" in k.lower() or "step" in k.lower()]


def _value_order(value: str) -> tuple:
    number = parse_number(value)
    return (0, number, "") if number is not None else (1, 0.0, value)


def histogram(records: list[Record], column: str) -> dict[str, int]:
    """Counts of a metadata column's values; numbers in numeric order, then texts alphabetically."""
    counts = Counter(r.extra.get(column, "") for r in records)
    return {k: counts[k] for k in sorted(counts, key=_value_order)}


def quantiles(values: list[int]) -> dict[str, float]:
    """min, nearest-rank p50/p90/p99, max and mean of a list of counts."""
    if not values:
        return {}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float] = {"min": ordered[0]}
    for q in QUANTILES:
        out[f"p{round(q * 100)}"] = ordered[max(0, math.ceil(q * n) - 1)]
    out["max"] = ordered[-1]
    out["mean"] = round(sum(ordered) / n, 1)
    return out


def token_lengths(records: list[Record], tokenizer) -> dict[str, dict[str, float]]:
    """Token-count quantiles of each text field (the choice argument only where rows have one)."""
    out = {}
    for name in TEXT_FIELDS:
        texts = [getattr(r, name) for r in records if getattr(r, name) is not None]
        if texts:
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
            out[name] = quantiles([len(x) for x in ids])
    return out


def dataset_stats(records: list[Record]) -> dict:
    """Rows, kind, argument accuracy (the base rate a chooser must beat), order balance, histograms."""
    with_choice = [r for r in records if r.has_choice]
    stats: dict = {"rows": len(records), "kind": "full" if len(with_choice) == len(records) else "pairs",
                   "rows_with_choice": len(with_choice)}
    if with_choice:
        n = len(with_choice)
        stats["argument_correct"] = sum(r.argument_correct for r in with_choice)
        stats["argument_accuracy"] = stats["argument_correct"] / n
        stats["swapped_fraction"] = sum(bool(r.swapped) for r in with_choice) / n
        stats["picks_candidate_1"] = sum(r.argument_choice == 1 for r in with_choice) / n
    stats["histograms"] = {c: histogram(records, c) for c in histogram_columns(records)}
    return stats


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def format_stats(path: str, stats: dict) -> list[str]:
    """Human-readable lines for `data stats`."""
    lines = [f"{path}: {stats['rows']} rows, kind: {stats['kind']}"
             + (f" ({stats['rows_with_choice']} with a choice)" if 0 < stats["rows_with_choice"] < stats["rows"] else "")]
    if "argument_accuracy" in stats:
        n = stats["rows_with_choice"]
        lines.append(f"argument accuracy (base rate): {_pct(stats['argument_accuracy'])} "
                     f"({stats['argument_correct']} of {n} arguments pick the correct candidate)")
        lines.append(f"candidate order: correct answer shown second (swapped) in {_pct(stats['swapped_fraction'])}; "
                     f"the argument picks candidate_1 in {_pct(stats['picks_candidate_1'])}")
    for column, counts in stats["histograms"].items():
        total = sum(counts.values())
        cells = ", ".join(f"{k or '(empty)'} {v} ({_pct(v / total)})" for k, v in counts.items())
        lines.append(f"{column}: {cells}")
    if "tokens" in stats:
        title = f"tokens ({stats['tokenizer']})"
        lines.append(f"  {title:<20}" + "  ".join(f"{k:>5}" for k in ("min", "p50", "p90", "p99", "max", "mean")))
        for name, q in stats["tokens"].items():
            lines.append(f"  {name:<20}" + "  ".join(f"{q[k]:>5}" for k in ("min", "p50", "p90", "p99", "max", "mean")))
    return lines
