"""The positive control: rows whose correctness only the arguer's states carry.

A planted row shows the same solution twice. The arguer reads it with a verdict appended,
" Verdict: right." on the correct candidate and " Verdict: wrong." on the other; the chooser's
own text of both candidates ends in " Verdict: hidden." instead. So a `text-only` chooser reads
two identical candidates and can do no better than chance, while a chooser reading the arguer's
transplanted states over the candidates can read the verdict. A method that cannot separate
`joint` from `text-only` here cannot detect an effect where one exists.

The chooser's view travels in the record's `extra` columns (`shown_correct_argument`,
`shown_incorrect_argument`), so a planted file written with `data synth --planted` trains the same
way. The three verdict words are one token each in the bundled tokenizer (and in LLaMA's); with a
tokenizer where they are not, a row's two views differ in length and the row is skipped and counted.
"""

from __future__ import annotations

import dataclasses
import random

from cot_transplant.data.record import Record

VERDICT_RIGHT = " Verdict: right."
VERDICT_WRONG = " Verdict: wrong."
VERDICT_HIDDEN = " Verdict: hidden."
SHOWN_KEYS = ("shown_correct_argument", "shown_incorrect_argument")


def plant(record: Record, rng: random.Random, argument_accuracy: float = 0.5) -> Record:
    """`record` as a planted row: its correct solution twice, the verdicts readable by the arguer only.

    The choice argument names one candidate without reasons; it picks the correct one with
    probability `argument_accuracy` (0.5: it carries nothing, and the base rate is chance).
    The order of the candidates (`swapped`) is kept.
    """
    base = record.correct_argument
    pick_correct = rng.random() < argument_accuracy
    correct_position = record.label
    pick = correct_position if pick_correct else 3 - correct_position
    extra = {k: v for k, v in record.extra.items() if k != "error_step"}  # the solutions no longer differ there
    extra["error_kind"] = "planted"
    extra.update({SHOWN_KEYS[0]: base + VERDICT_HIDDEN, SHOWN_KEYS[1]: base + VERDICT_HIDDEN, "planted": "true"})
    return dataclasses.replace(
        record,
        correct_argument=base + VERDICT_RIGHT,
        incorrect_argument=base + VERDICT_WRONG,
        choice_answer=f"candidate_{pick}",
        choice_argument=f"Candidate {pick} is correct.",
        extra=extra,
    )


def plant_all(records: list[Record], seed: int, argument_accuracy: float = 0.5) -> list[Record]:
    """Every record planted, with one seeded generator (deterministic for a seed)."""
    rng = random.Random(f"plant-{seed}")
    return [plant(r, rng, argument_accuracy) for r in records]


def shown_candidates(record: Record) -> tuple[str, str]:
    """The argument texts the chooser reads for candidate 1 and 2: the planted views where the
    record has them, else the arguments themselves."""
    (_, arg1), (_, arg2) = record.candidates()
    shown_c, shown_i = (record.extra.get(k) for k in SHOWN_KEYS)
    if shown_c is None or shown_i is None:
        return arg1, arg2
    return (shown_i, shown_c) if record.swapped else (shown_c, shown_i)
