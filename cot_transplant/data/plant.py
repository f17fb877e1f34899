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

The graded control (`data.planted_fraction`, `plant_fraction`) keeps real rows and their real
candidates: in a seeded share of the rows the arguer reads the verdicts, in the others
" Verdict: hidden." on both, and the chooser's own text always ends in " Verdict: hidden.". A
`text-only` chooser's input is then the same at every fraction; only the transplanted states differ.
"""

from __future__ import annotations

import dataclasses
import random

from cot_transplant.data.record import Record
from cot_transplant.errors import UserError

VERDICT_RIGHT = " Verdict: right."
VERDICT_WRONG = " Verdict: wrong."
VERDICT_HIDDEN = " Verdict: hidden."
SHOWN_KEYS = ("shown_correct_argument", "shown_incorrect_argument")
POSITIONS = ("end", "start")  # where `with_verdict` puts the verdict: a suffix or a prefix


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


def with_verdict(text: str, verdict: str, position: str = "end") -> str:
    """`text` with a `VERDICT_*` constant: appended (`end`), or as a prefix "Verdict: right. " (`start`)."""
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, not {position!r}")
    return f"{verdict.strip()} {text}" if position == "start" else text + verdict


def plant_verdicts(record: Record, planted: bool, position: str = "end") -> Record:
    """A real row with verdicts on its real candidates, marked `planted` "true"/"false" in `extra`.

    The arguer reads " Verdict: right." on the correct candidate and " Verdict: wrong." on the other
    where `planted`, " Verdict: hidden." on both where not; the chooser's own text of both (`SHOWN_KEYS`)
    always ends in " Verdict: hidden.". The choice argument and the candidate order are kept.
    """
    right, wrong = (VERDICT_RIGHT, VERDICT_WRONG) if planted else (VERDICT_HIDDEN, VERDICT_HIDDEN)
    extra = {**record.extra,
             SHOWN_KEYS[0]: with_verdict(record.correct_argument, VERDICT_HIDDEN, position),
             SHOWN_KEYS[1]: with_verdict(record.incorrect_argument, VERDICT_HIDDEN, position),
             "planted": "true" if planted else "false"}
    return dataclasses.replace(record, correct_argument=with_verdict(record.correct_argument, right, position),
                               incorrect_argument=with_verdict(record.incorrect_argument, wrong, position),
                               extra=extra)


def plant_fraction(records: list[Record], fraction: float, seed: int = 0, position: str = "end") -> list[Record]:
    """`records` with verdicts (`plant_verdicts`), exactly round(fraction * n) of them planted.

    The planted rows are the first of one seeded order of the rows (`seed`, not the split's), so for
    one seed a smaller fraction plants a subset of a larger one's rows. Fraction 0 returns the rows
    unchanged.

    Raises:
        UserError: the rows already carry planted views (a `data synth --planted` file).
    """
    if fraction <= 0:
        return list(records)
    if any(k in r.extra for r in records for k in SHOWN_KEYS):
        raise UserError("data.planted_fraction: the rows already carry planted views (a planted file); "
                        "use unplanted rows, or data.planted_fraction=0")
    chosen = planted_positions(len(records), fraction, seed)
    return [plant_verdicts(r, i in chosen, position) for i, r in enumerate(records)]


def planted_positions(n: int, fraction: float, seed: int = 0) -> set[int]:
    """The positions among `n` rows that `plant_fraction` plants: the first round(fraction * n) of one seeded order.

    The analysis recomputes them from a run's row count (`analysis.campaign`), so it needs no data file."""
    order = random.Random(f"planted-{seed}").sample(range(n), n)
    return set(order[:round(fraction * n)])


def shown_candidates(record: Record) -> tuple[str, str]:
    """The argument texts the chooser reads for candidate 1 and 2: the planted views where the
    record has them, else the arguments themselves."""
    (_, arg1), (_, arg2) = record.candidates()
    shown_c, shown_i = (record.extra.get(k) for k in SHOWN_KEYS)
    if shown_c is None or shown_i is None:
        return arg1, arg2
    return (shown_i, shown_c) if record.swapped else (shown_c, shown_i)
