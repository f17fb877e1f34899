"""Synthetic choice arguments: a short text that argues for one candidate and names it.

The writer decides the pick first (the correct candidate with probability `accuracy`)
and then writes the argument the same way whichever it picked: it praises a step of the
chosen candidate and faults one of the other, so nothing but the candidates' content
tells a right pick from a wrong one.
"""

from __future__ import annotations

import random
import re
from decimal import Decimal, InvalidOperation

from cot_transplant.data.numbers import decimal_text
from cot_transplant.data.record import Record

# A worked expression in a solution: "7 x 5 = 35", "16 - 3 - 4 = 9", "9 * 2 = $18".
_NUM = r"\$?\d+(?:[.,]\d+)*"
EQUATION = re.compile(rf"{_NUM}(?:\s*[-+x*/×÷]\s*{_NUM})+\s*=\s*{_NUM}")
ORDINAL = {1: "first", 2: "second"}

GOOD = ("it computes {eq_c} correctly", "its step {eq_c} checks out", "it works through {eq_c} without a slip",
        "it follows every step the question asks for", "it uses every quantity in the question",
        "its reasoning is consistent from start to finish")
GOOD_GENERIC = GOOD[3:]
BAD = ("makes a mistake in {eq_o}", "goes wrong at {eq_o}", "writes {eq_o}, which does not hold up",
       "arrives at {ans_o}, which does not fit the question", "uses the wrong operation at one step",
       "leaves out part of the question", "miscalculates along the way")
BAD_GENERIC = BAD[3:]
STYLES = (
    "Candidate {c} provides a more accurate answer because {good}. Candidate {o} {bad} and therefore provides an incorrect answer.",
    "The {ord_c} candidate is right: {good}. The {ord_o} candidate {bad}.",
    "candidate_{c} is the better answer, since {good}, while candidate_{o} {bad}.",
    "The answer is {ans_c}, as candidate {c} says: {good}. Candidate {o} {bad}.",
    "Answer {c} checks out because {good}. Answer {o} {bad}.",
    "Comparing the two, candidate #{o} {bad}. Candidate #{c} is correct because {good}.",
    "Candidate {c} is right because {good}.",
)
SHORT_STYLES = ("Candidate {c} is correct.", "The {ord_c} candidate is right.", "I pick candidate_{c}.",
                "Answer {c} checks out.", "Candidate {c}: {ans_c}.")


def _number_text(answer: str) -> str:
    """ "47.0" -> "47", "2.5" -> "2.5"; other text unchanged."""
    try:
        return decimal_text(Decimal(answer.strip()))
    except (InvalidOperation, ValueError):
        return answer


def _own_equation(text: str, other: str) -> str | None:
    """The first worked expression of `text` that `other` does not contain."""
    theirs = set(EQUATION.findall(other))
    return next((eq for eq in EQUATION.findall(text) if eq not in theirs), None)


def write_choice_argument(record: Record, rng: random.Random, *, accuracy: float = 0.594,
                          short: bool = False) -> tuple[str, str]:
    """(choice_answer, choice_argument) for a record whose `swapped` is set.

    Picks the correct candidate with probability `accuracy`; the argument names the pick
    ("Candidate 2 ...", "the first candidate", "candidate_1", "Answer 2", "#1") in one of
    several styles. `short` gives one-sentence arguments for fast demos.

    Raises:
        ValueError: `record.swapped` is not set (the pick is relative to the shown order).
    """
    if record.swapped is None:
        raise ValueError("write_choice_argument needs record.swapped set to True or False")
    chosen = record.label if rng.random() < accuracy else 3 - record.label
    other = 3 - chosen
    candidates = dict(zip((1, 2), record.candidates()))
    fill = {"c": chosen, "o": other, "ord_c": ORDINAL[chosen], "ord_o": ORDINAL[other],
            "ans_c": _number_text(candidates[chosen][0]), "ans_o": _number_text(candidates[other][0])}
    if short:
        return f"candidate_{chosen}", rng.choice(SHORT_STYLES).format(**fill)
    good, bad = rng.choice(GOOD), rng.choice(BAD)
    # Quote a step only where the template asks for one (finding it is the costly part).
    if "{eq_c}" in good:
        fill["eq_c"] = _own_equation(candidates[chosen][1], candidates[other][1])
        good = good if fill["eq_c"] else rng.choice(GOOD_GENERIC)
    if "{eq_o}" in bad:
        fill["eq_o"] = _own_equation(candidates[other][1], candidates[chosen][1])
        bad = bad if fill["eq_o"] else rng.choice(BAD_GENERIC)
    fill["good"], fill["bad"] = good.format(**fill), bad.format(**fill)
    return f"candidate_{chosen}", rng.choice(STYLES).format(**fill)
