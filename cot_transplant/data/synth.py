"""Synthetic dataset rows: arithmetic word problems, a correct step-by-step solution, and a solution
broken by one controlled error of a chosen kind at a chosen step.

The error kinds: `arithmetic` (a slip in one result), `wrong-operation`, `dropped-quantity`,
`misread-number`, `unit-rate` (a wrong conversion factor or an inverted rate). The error
step: `first`, `last`, `middle` (step ceil(n/2), problems of 3+ steps only) or `random`.
The error propagates to the final answer; the correct and incorrect solutions read the
same up to the error step. Output is deterministic for a seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from decimal import Decimal
from typing import Iterable, Iterator

from cot_transplant.data import families_counts, families_rates
from cot_transplant.data.arguments import write_choice_argument
from cot_transplant.data.builder import Builder, Draws, GiveUp
from cot_transplant.data.numbers import decimal_text, format_answer
from cot_transplant.data.problems import ERROR_KINDS, Corruption, Problem, corrupt, problem_ok, render
from cot_transplant.data.record import Record
from cot_transplant.data.sources import Question
from cot_transplant.errors import UserError, suggest

__all__ = ["ERROR_KINDS", "ERROR_STEPS", "QUESTION_FAMILIES", "SynthItem", "generate", "synthesize", "synth_questions",
           "write_choice_argument"]

QUESTION_FAMILIES = {**families_counts.QUESTION_FAMILIES, **families_rates.QUESTION_FAMILIES}
ERROR_STEPS = ("last", "first", "middle", "random")
STEP_COUNTS = (2, 3, 4, 5)
MAX_TRIES = 500  # draws per row before an impossible combination of options is reported


@dataclass(frozen=True)
class SynthItem:
    """One generated row with the structure it came from, so tests and analyses can recompute it."""

    problem: Problem
    error: Corruption
    correct_steps: list[str]
    incorrect_steps: list[str]
    record: Record


def parse_kinds(error_kind: str) -> tuple[str, ...]:
    """'mix' -> every kind; otherwise one kind or a comma-separated list.

    Raises:
        UserError: an unknown kind.
    """
    if error_kind == "mix":
        return ERROR_KINDS
    kinds = tuple(k.strip() for k in error_kind.split(",") if k.strip())
    for k in kinds:
        if k not in ERROR_KINDS:
            raise UserError(f"error kind '{k}' is not one of {', '.join(ERROR_KINDS)} or mix" + suggest(k, ERROR_KINDS))
    if not kinds:
        raise UserError("error kind: give one of " + ", ".join(ERROR_KINDS) + " or mix")
    return kinds


def check_options(n: int, steps: Iterable[int], error_step: str, argument_accuracy: float,
                  number_range: tuple[int, int]) -> tuple[int, ...]:
    """Validate the generator's options; returns the allowed step counts.

    Raises:
        UserError: naming the option and what is wrong with it.
    """
    if not isinstance(n, int) or n < 1:
        raise UserError(f"n: {n!r} rows; give a positive whole number")
    allowed = tuple(sorted(set(steps)))
    if not allowed or any(s not in STEP_COUNTS for s in allowed):
        raise UserError(f"steps: {list(allowed)}; choose from {list(STEP_COUNTS)}")
    if error_step not in ERROR_STEPS:
        raise UserError(f"error step '{error_step}' is not one of {', '.join(ERROR_STEPS)}" + suggest(error_step, ERROR_STEPS))
    if error_step == "middle":
        allowed = tuple(s for s in allowed if s >= 3)
        if not allowed:
            raise UserError("error step 'middle' needs problems of at least 3 steps; allow --steps 3, 4 or 5")
    if not 0.0 <= argument_accuracy <= 1.0:
        raise UserError(f"argument accuracy {argument_accuracy}: give a probability between 0 and 1")
    lo, hi = number_range
    if lo < 1 or hi < lo + 3:
        raise UserError(f"number range {lo}-{hi}: need 1 <= low and at least 4 values (high >= low + 3)")
    return allowed


def error_steps(n_steps: int, error_step: str) -> list[int]:
    """The 1-based steps an error may first show at, for a problem of `n_steps` steps."""
    return {"last": [n_steps], "first": [1], "middle": [math.ceil(n_steps / 2)] if n_steps >= 3 else [],
            "random": list(range(1, n_steps + 1))}[error_step]


def draw_problem(rng: random.Random, n_steps: int, number_range: tuple[int, int],
                 short: bool) -> tuple[Problem, list[Decimal]]:
    """A problem of exactly `n_steps` steps from a random family whose numbers all stay exact,
    with its step results."""
    for _ in range(MAX_TRIES):
        name = rng.choice(list(QUESTION_FAMILIES))
        b = Builder(name, rng, number_range, short)
        try:
            question = QUESTION_FAMILIES[name](b, n_steps)
        except GiveUp:
            continue
        problem = b.build(question)
        if len(problem.steps) == n_steps and problem_ok(problem, b.results):
            return problem, b.results
    raise UserError(f"no problem family could draw a {n_steps}-step problem with numbers in {number_range} "
                    f"in {MAX_TRIES} tries; widen the number range")


def _draw_item(rng: random.Random, allowed: tuple[int, ...], kinds: tuple[str, ...], error_step: str,
               number_range: tuple[int, int], short: bool) -> tuple[Problem, Corruption, list[Decimal], list[Decimal]]:
    """A problem and an error of one drawn kind at an allowed step, with the right and wrong results."""
    kind = rng.choice(kinds)
    for _ in range(MAX_TRIES):
        n_steps = rng.choice(allowed)
        problem, right = draw_problem(rng, n_steps, number_range, short)
        targets = error_steps(n_steps, error_step)
        rng.shuffle(targets)
        for k in targets:
            found = corrupt(problem, kind, k, rng, right)
            if found is not None:
                return problem, found[0], right, found[1]
    raise UserError(f"could not make a '{kind}' error at the {error_step} step of a {list(allowed)}-step problem "
                    f"in {MAX_TRIES} tries; allow more step counts or another error kind")


def _record(problem: Problem, error: Corruption, correct: list[str], incorrect: list[str], answers: tuple,
            index: int, rng: random.Random, accuracy: float, short: bool) -> Record:
    record = Record(
        question=problem.question,
        correct_answer=format_answer(answers[0]),
        correct_argument=" ".join(correct),
        incorrect_answer=format_answer(answers[1]),
        incorrect_argument=" ".join(incorrect),
        swapped=rng.random() < 0.5,
        row_id=index,
        extra={"error_kind": error.kind, "error_step": str(error.step), "n_steps": str(len(problem.steps)),
               "family": problem.family, "source": "synthetic"},
    )
    record.choice_answer, record.choice_argument = write_choice_argument(record, rng, accuracy=accuracy, short=short)
    return record


def _items(n: int, seed: int, *, steps: Iterable[int], error_kind: str, error_step: str,
           argument_accuracy: float, number_range: tuple[int, int], short: bool) -> Iterator[SynthItem]:
    allowed = check_options(n, steps, error_step, argument_accuracy, number_range)
    kinds = parse_kinds(error_kind)
    rng = Draws(seed)
    for i in range(n):
        problem, error, right, wrong = _draw_item(rng, allowed, kinds, error_step, number_range, short)
        correct = render(problem, short=short, results=right)
        incorrect = render(problem, error, short=short, results=wrong)
        record = _record(problem, error, correct, incorrect, (right[-1], wrong[-1]), i, rng, argument_accuracy, short)
        yield SynthItem(problem, error, correct, incorrect, record)


def generate(n: int, seed: int, *, steps: Iterable[int] = STEP_COUNTS, error_kind: str = "mix",
             error_step: str = "random", argument_accuracy: float = 0.594,
             number_range: tuple[int, int] = (2, 60), short: bool = False) -> list[SynthItem]:
    """`n` rows with their problems and errors; see `synthesize` for the options.

    Raises:
        UserError: an invalid option, or options no problem can satisfy.
    """
    return list(_items(n, seed, steps=steps, error_kind=error_kind, error_step=error_step,
                       argument_accuracy=argument_accuracy, number_range=number_range, short=short))


def synthesize(n: int, seed: int, *, steps: Iterable[int] = STEP_COUNTS, error_kind: str = "mix",
               error_step: str = "random", argument_accuracy: float = 0.594,
               number_range: tuple[int, int] = (2, 60), short: bool = False) -> list[Record]:
    """`n` full rows (original columns plus `error_kind`, `error_step`, `n_steps`, `family`, `source`).

    Args:
        steps: allowed solution lengths (2-5).
        error_kind: one of ERROR_KINDS, a comma-separated list, or 'mix' (each row draws one).
        error_step: 'first', 'last', 'middle' (step ceil(n/2), 3+ steps) or 'random'.
        argument_accuracy: probability that the choice argument picks the correct candidate.
        number_range: (low, high) for the numbers a problem draws.
        short: compact questions and bare-equation solutions, for fast CPU demos.

    Raises:
        UserError: an invalid option, or options no problem can satisfy.
    """
    # Records only: the structures behind 100k rows would hold several hundred MB for nothing.
    return [item.record for item in _items(n, seed, steps=steps, error_kind=error_kind, error_step=error_step,
                                           argument_accuracy=argument_accuracy, number_range=number_range,
                                           short=short)]


def synth_questions(n: int, seed: int, *, steps: Iterable[int] = STEP_COUNTS,
                    number_range: tuple[int, int] = (2, 60), short: bool = False) -> list[Question]:
    """`n` synthetic questions with gold answers (and worked solutions), e.g. as input to generation."""
    allowed = check_options(n, steps, "random", 0.5, number_range)
    rng = Draws(seed)
    out = []
    for i in range(n):
        problem, right = draw_problem(rng, rng.choice(allowed), number_range, short)
        answer = decimal_text(right[-1])
        out.append(Question(f"synth-{seed}-{i}", problem.question, answer, f"synthetic:{problem.family}",
                            " ".join(render(problem, short=short))))
    return out
