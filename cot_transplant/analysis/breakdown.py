"""Confound breakdown: a run's predictions joined with each row's metadata.

The seed's own caveat: many incorrect answers are sound reasoning with a slip in the last
step, so a chooser can score by checking that step. The breakdown shows where a run's
accuracy (`f_c`) comes from: by error kind, by error step, by number of steps, by whether
the error sits in the last step, by whether the choice argument was right, and, on rows with
planted verdicts (`data.planted_fraction`), by whether the arguer read one. On synthetic
data a "last-step checker" gives the score that the cheap strategy reaches, as a reference.

Rows are rebuilt from the run's own config (`runs.records.load_records`, row ids = positions,
as training numbers them) and joined to `predictions/<split>-<samples>.csv` by row id.
"""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

from cot_transplant.errors import UserError
from cot_transplant.runs.metrics import wilson

GROUPINGS = ("error_kind", "error_step", "n_steps", "error_in_last_step", "argument_right")
OPTIONAL_GROUPINGS = ("planted",)  # present only where some row carries the key (planted rows)
MISSING = "(none)"
SPLITS = ("val", "test")
RESULT = "breakdown.json"
CHECKER_HOW = ("recompute only the last 'a op b ... = c' of each candidate's argument (left to right, or with "
               "the usual precedence); pick the one candidate whose last step holds, else follow the argument")

_NUM = r"-?\d+(?:,\d{3})*(?:\.\d+)?"
_OP = r"[-+×x*/÷]"
_EQUATION = re.compile(rf"(?<![\w.])({_NUM}(?:\s*{_OP}\s*{_NUM})+)\s*=\s*({_NUM})(?![\d])")
_TOKEN = re.compile(rf"\s*({_OP})\s*({_NUM})")


# --- the last-step checker --------------------------------------------------------------------------


def _number(text: str) -> Fraction:
    return Fraction(text.replace(",", ""))


def _apply(op: str, a: Fraction, b: Fraction) -> Fraction:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op in "×x*":
        return a * b
    return a / b  # ZeroDivisionError is the caller's "does not hold"


def _values(expr: str) -> tuple[list[Fraction], list[str]]:
    first = re.match(_NUM, expr.strip())
    numbers, ops = [_number(first.group())], []
    for m in _TOKEN.finditer(expr.strip()[first.end():]):
        ops.append(m.group(1))
        numbers.append(_number(m.group(2)))
    return numbers, ops


def _left_to_right(numbers: list[Fraction], ops: list[str]) -> Fraction:
    acc = numbers[0]
    for op, x in zip(ops, numbers[1:]):
        acc = _apply(op, acc, x)
    return acc


def _precedence(numbers: list[Fraction], ops: list[str]) -> Fraction:
    terms, signs, acc = [], ["+"], numbers[0]
    for op, x in zip(ops, numbers[1:]):
        if op in "+-":
            terms.append(acc)
            signs.append(op)
            acc = x
        else:
            acc = _apply(op, acc, x)
    terms.append(acc)
    return sum((t if s == "+" else -t for s, t in zip(signs, terms)), Fraction(0))


def last_step_ok(argument: str) -> bool | None:
    """Whether the last worked equation in `argument` holds; None when it has none.

    The stated result may be rounded to the places it is written with ("10 / 3 = 3.33" holds).
    """
    matches = list(_EQUATION.finditer(argument or ""))
    if not matches:
        return None
    expr, stated = matches[-1].group(1), matches[-1].group(2)
    numbers, ops = _values(expr)
    result = _number(stated)
    places = len(stated.split(".")[1]) if "." in stated else 0
    tolerance = Fraction(1, 2 * 10**places) if places else Fraction(0)
    for evaluate in (_left_to_right, _precedence):
        try:
            if abs(evaluate(numbers, ops) - result) <= tolerance:
                return True
        except ZeroDivisionError:
            continue
    return False


def last_step_choice(record) -> int:
    """The position (1/2) the last-step checker picks for a row (see CHECKER_HOW)."""
    (_, arg1), (_, arg2) = record.candidates()
    holds = [last_step_ok(arg1) is True, last_step_ok(arg2) is True]
    if holds[0] != holds[1]:
        return 1 if holds[0] else 2
    return record.argument_choice


def is_synthetic(records) -> bool:
    """Rows from the synthetic generator (they carry its metadata)."""
    return bool(records) and all(r.extra.get("source") == "synthetic" or "error_kind" in r.extra for r in records)


# --- grouping ---------------------------------------------------------------------------------------


def _key(record, grouping: str) -> str:
    extra = record.extra
    if grouping == "argument_right":
        return "yes" if record.argument_correct else "no"
    if grouping == "error_in_last_step":
        step, steps = extra.get("error_step"), extra.get("n_steps")
        if not step or not steps:
            return MISSING
        return "yes" if step == steps else "no"
    return extra.get(grouping) or MISSING


def _order(value: str) -> tuple:
    try:
        return (0, float(value), "")
    except ValueError:
        return (1 if value != MISSING else 2, 0.0, value)


def group_rows(rows: list[dict], grouping: str) -> list[dict]:
    """Per value of `grouping`: n, f_c (Wilson CI), the argument's accuracy and the checker's, if known.

    `rows` hold "record", "correct" (the chooser's row score: 1, 1/2 on a tie, 0; see
    `metrics.row_scores`) and "checker" (the checker was right, or None).
    Rows without the metadata form the group "(none)", so the groups' n add up to len(rows).
    """
    groups: dict[str, list[dict]] = {}
    for row in rows:
        groups.setdefault(_key(row["record"], grouping), []).append(row)
    out = []
    for value in sorted(groups, key=_order):
        members = groups[value]
        n, k = len(members), sum(r["correct"] for r in members)
        low, high = wilson(k, n)
        checked = [r["checker"] for r in members if r["checker"] is not None]
        out.append({"value": value, "n": n, "f_c": k / n, "ci_low": low, "ci_high": high,
                    "argument_accuracy": sum(r["record"].argument_correct for r in members) / n,
                    "checker_f_c": sum(checked) / len(checked) if checked else None})
    return out


def split_breakdown(records_by_id: dict, predictions: dict[str, list], synthetic: bool) -> dict:
    """The breakdown of one predictions file (see `rundir.read_predictions`) against its rows.

    Raises:
        UserError: a predicted row the data does not hold, or whose label differs (the data changed).
    """
    from cot_transplant.runs.metrics import row_scores

    rows = []
    scores = row_scores(predictions["p_cand1"], predictions["p_cand2"], predictions["label"]).tolist()
    for row_id, label, score in zip(predictions["row_id"], predictions["label"], scores):
        rec = records_by_id.get(row_id)
        if rec is None or rec.label != label:
            raise UserError(f"row {row_id}: the run's data no longer matches its predictions "
                            f"({'missing' if rec is None else 'different label'}); was the data file changed?")
        checker = (last_step_choice(rec) == rec.label) if synthetic else None
        rows.append({"record": rec, "correct": score, "checker": checker})
    n = len(rows)
    k = sum(r["correct"] for r in rows)
    low, high = wilson(k, n)
    checker = None
    if synthetic and n:
        checker = {"f_c": sum(r["checker"] for r in rows) / n, "n": n, "how": CHECKER_HOW,
                   "decided": sum(_checker_decides(r["record"]) for r in rows)}
    return {"n": n, "f_c": k / n if n else None, "ci_low": low, "ci_high": high,
            "argument_accuracy": sum(r["record"].argument_correct for r in rows) / n if n else None,
            "last_step_checker": checker,
            "groups": {g: group_rows(rows, g) for g in groupings(r["record"] for r in rows)}}


def groupings(records) -> tuple[str, ...]:
    """GROUPINGS, then each of OPTIONAL_GROUPINGS that some record carries in `extra`."""
    keys = {k for r in records for k in OPTIONAL_GROUPINGS if k in r.extra}
    return GROUPINGS + tuple(k for k in OPTIONAL_GROUPINGS if k in keys)


def _checker_decides(record) -> bool:
    """True when exactly one candidate's last step holds (the checker does not fall back on the argument)."""
    (_, arg1), (_, arg2) = record.candidates()
    return (last_step_ok(arg1) is True) != (last_step_ok(arg2) is True)


# --- a run ------------------------------------------------------------------------------------------


def prediction_samples(run: Path) -> dict[str, list[int]]:
    """Per split, the sample counts that have a predictions file."""
    out: dict[str, list[int]] = {}
    for path in (Path(run) / "predictions").glob("*-*.csv"):
        split, _, samples = path.stem.rpartition("-")
        if samples.isdigit():
            out.setdefault(split, []).append(int(samples))
    return {k: sorted(v) for k, v in out.items()}


def run_records(run: Path) -> list:
    """The run's rows as training numbered them (`load_records` on its config, row id = position)."""
    import dataclasses

    from cot_transplant.runs import rundir
    from cot_transplant.runs.records import load_records

    cfg, _ = rundir.read_run_config(Path(run))
    return [dataclasses.replace(r, row_id=i) for i, r in enumerate(load_records(cfg))]


def compute_breakdown(run: Path, samples: int | None = None, records: list | None = None) -> dict:
    """The breakdown of `run` at `samples` (default: the checkpoint chosen on validation, else the last eval).

    `records`: the run's rows when the caller has them already (see `run_records`).
    Raises:
        UserError: not a run directory, no predictions at `samples`, or data that no longer matches.
    """
    from cot_transplant.provenance import stamp
    from cot_transplant.runs import rundir
    from cot_transplant.runs.summary import summarize

    run = Path(run)
    cfg, _ = rundir.read_run_config(run)
    available = prediction_samples(run)
    chosen_by = "given"
    if samples is None:
        chosen = (summarize(run).get("test_at_chosen") or {}).get("samples")
        if chosen is not None:
            samples, chosen_by = chosen, "checkpoint chosen on validation"
        elif available:
            samples, chosen_by = max(s for v in available.values() for s in v), "last evaluation"
        else:
            raise UserError(f"{run}: no predictions/ files; the run has not evaluated yet")
    splits = [s for s in SPLITS if samples in available.get(s, [])]
    if not splits:
        have = sorted({s for v in available.values() for s in v})
        raise UserError(f"{run}: no predictions at {samples} samples; available: {have or 'none'}")
    records = run_records(run) if records is None else records
    synthetic = is_synthetic(records)
    by_id = {r.row_id: r for r in records}
    result = {"run": str(run), "variant": cfg.variant, "samples": samples, "chosen_by": chosen_by,
              "synthetic": synthetic, "groupings": list(groupings(records)), "splits": {}}
    for split in splits:
        name = f"predictions/{split}-{samples}.csv"
        result["splits"][split] = {"predictions": name,
                                   **split_breakdown(by_id, rundir.read_predictions(run / name), synthetic)}
    if not synthetic:
        result["last_step_checker"] = "not computed: the rows are not synthetic (no generator metadata)"
    result["_provenance"] = stamp()
    return result


def breakdown(run: Path, samples: int | None = None) -> dict:
    """`compute_breakdown`, written to RUN/breakdown.json; returns it."""
    from cot_transplant.runs.rundir import atomic_write_text

    result = compute_breakdown(run, samples)
    atomic_write_text(Path(run) / RESULT, json.dumps(result, indent=1))
    return result


def format_breakdown(result: dict) -> str:
    """A short text table for the terminal."""
    pct = lambda x: "  n/a" if x is None else f"{100 * x:5.1f}%"  # noqa: E731
    lines = [f"== {result['run']} ({result['variant']}), {result['samples']} samples ({result['chosen_by']})"]
    for split, s in result["splits"].items():
        checker = s["last_step_checker"]
        lines.append(f"   {split}: f_c {pct(s['f_c'])} over {s['n']} rows; argument {pct(s['argument_accuracy'])}"
                     + (f"; last-step checker {pct(checker['f_c'])}" if checker else ""))
        for grouping, groups in s["groups"].items():
            cells = ", ".join(f"{g['value']} {pct(g['f_c']).strip()} (n={g['n']})" for g in groups)
            lines.append(f"      {grouping}: {cells}")
    return "\n".join(lines)
