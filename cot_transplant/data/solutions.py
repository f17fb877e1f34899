"""Pairs with natural errors from OpenAI's released GSM8K model solutions.

Each line of `example_model_solutions.jsonl` holds a test question, its `ground_truth`
solution and four model solutions (`6b_finetuning`, ..., each `{"solution", "is_correct"}`),
every solution ending in a line `A: N`. A pair takes one incorrect model solution and,
as the correct one, a correct model solution or the ground-truth solution (`correct`):
- `model` (default): only questions with a correct model solution (731 of 1,319 have both kinds),
  so both sides are model-written and correctness is not confounded with authorship;
- `auto`: a correct model solution when there is one, else the ground truth (written by people);
- `ground-truth`: always the ground truth.
Calculator annotations `<<...>>` are stripped and the `A: N` line becomes the answer.
"""

from __future__ import annotations

import json
import os
import random
import re
from collections import Counter
from pathlib import Path

from cot_transplant.data.arguments import write_choice_argument
from cot_transplant.data.numbers import format_answer, parse_number
from cot_transplant.data.record import Record
from cot_transplant.data.sources import read_questions, strip_annotations
from cot_transplant.errors import UserError

FINAL_LINE = re.compile(r"(?:^|\n)A:\s*(\S[^\n]*?)\s*$")
CORRECT_FROM = ("model", "auto", "ground-truth")
CHOICES = ("synthetic", "none")


def split_solution(text: str, *, keep_annotations: bool = False) -> tuple[str, str] | None:
    """(argument, final number) of a solution ending in "A: N"; None when it has no such line
    (a few released solutions were cut off) or N is not a number."""
    m = FINAL_LINE.search(text)
    if not m:
        return None
    number = m.group(1).replace(",", "").replace("$", "").rstrip(".")
    if parse_number(number) is None:
        return None
    argument = text[: m.start()].strip()
    return (argument if keep_annotations else strip_annotations(argument)), number


def _read(path: Path) -> list[tuple[int, dict]]:
    if not path.is_file():
        raise UserError(f"{path}: {'is a directory' if path.is_dir() else 'no such file'}")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as exc:
            raise UserError(f"{path}:{number}: not valid JSON: {getattr(exc, 'msg', exc)}") from None
        if not isinstance(obj, dict) or not isinstance(obj.get("question"), str):
            raise UserError(f"{path}:{number}: expected an object with a 'question' (GSM8K model solutions format)")
        rows.append((number, obj))
    if not rows:
        raise UserError(f"{path}: no solutions")
    return rows


def _model_solutions(obj: dict) -> dict[str, dict]:
    return {k: v for k, v in obj.items() if isinstance(v, dict) and "solution" in v and "is_correct" in v}


def pairs_from_solutions(path: str | os.PathLike, *, seed: int = 0, choices: str = "synthetic",
                         correct: str = "model", argument_accuracy: float = 0.594, gold: str | None = None,
                         keep_annotations: bool = False) -> tuple[list[Record], Counter]:
    """Records pairing a correct and an incorrect solution per question, and counts of what was kept/skipped.

    `choices='synthetic'` adds a choice argument from the synthetic writer (a full file);
    `'none'` leaves pairs. `gold`: a GSM8K question file whose solutions replace the
    `ground_truth` field (matched by question text). Deterministic for `seed`.

    Raises:
        UserError: unreadable file, bad format, or an unknown option value.
    """
    if choices not in CHOICES:
        raise UserError(f"--choices '{choices}': use one of {', '.join(CHOICES)}")
    if correct not in CORRECT_FROM:
        raise UserError(f"--correct '{correct}': use one of {', '.join(CORRECT_FROM)}")
    p = Path(path)
    rows = _read(p)
    truth = {q.question: (q.solution, q.answer) for q in read_questions(gold)} if gold else {}
    rng, counts, records = random.Random(seed), Counter(), []
    for i, (number, obj) in enumerate(rows):
        gt = truth.get(obj["question"]) or (split_solution(obj.get("ground_truth") or "", keep_annotations=keep_annotations))
        models = _model_solutions(obj)
        if not models:
            raise UserError(f"{p}:{number}: no model solutions (objects with 'solution' and 'is_correct')")
        parsed = {name: split_solution(s["solution"], keep_annotations=keep_annotations) for name, s in models.items()}
        counts["unparsed solutions"] += sum(v is None for v in parsed.values())
        gold_value = parse_number(gt[1]) if gt else None

        def agrees(answer: str) -> bool:
            return gold_value is None or parse_number(answer) == gold_value

        right = [(n, *parsed[n]) for n in models if models[n]["is_correct"] and parsed[n] and agrees(parsed[n][1])]
        wrong = [(n, *parsed[n]) for n in models if not models[n]["is_correct"] and parsed[n] and not agrees(parsed[n][1])]
        if correct == "ground-truth" or (correct == "auto" and not right):
            right = [("ground_truth", *gt)] if gt else []
        if not wrong or not right:
            counts["skipped: no incorrect solution" if not wrong else "skipped: no correct solution"] += 1
            continue
        c_name, c_arg, c_ans = rng.choice(right)
        w_name, w_arg, w_ans = rng.choice(wrong)
        if parse_number(c_ans) == parse_number(w_ans):
            counts["skipped: same final number"] += 1
            continue
        record = Record(obj["question"], format_answer(c_ans), c_arg, format_answer(w_ans), w_arg,
                        row_id=len(records), extra={"id": f"{p.stem}-{i}", "source": "gsm8k",
                                                    "correct_from": c_name, "incorrect_from": w_name})
        if choices == "synthetic":
            record.swapped = rng.random() < 0.5
            record.choice_answer, record.choice_argument = write_choice_argument(record, rng, accuracy=argument_accuracy)
        counts["pairs with a model-written correct solution" if c_name != "ground_truth"
               else "pairs with the ground-truth solution as correct"] += 1
        records.append(record)
    if not records:
        raise UserError(f"{p}: no question has both a correct and an incorrect solution")
    return records, counts


def source_counts(records: list[Record]) -> dict[str, dict[str, int]]:
    """How many pairs took their correct and their incorrect solution from each source (a model's name
    or `ground_truth`): {"correct_from": {name: n}, "incorrect_from": {name: n}}, names sorted."""
    return {side: dict(sorted(Counter(r.extra.get(side, "unknown") for r in records).items()))
            for side in ("correct_from", "incorrect_from")}
