"""The synthetic generator: exact answers, errors of the requested kind at the requested step,
argument accuracy, determinism, options."""

from __future__ import annotations

import math
import re
from fractions import Fraction

import pytest

from cot_transplant.data.io import read_records
from cot_transplant.data.numbers import numbers_in
from cot_transplant.data.problems import ERROR_KINDS
from cot_transplant.data.synth import QUESTION_FAMILIES, generate, synth_questions, synthesize
from cot_transplant.errors import UserError

_OPS = {"+": Fraction.__add__, "-": Fraction.__sub__, "*": Fraction.__mul__, "/": Fraction.__truediv__}
_SYMBOLS = {"x": "*", "*": "*", "×": "*", "/": "/", "÷": "/", "+": "+", "-": "-"}
_EQUATION = re.compile(r"(\d+(?:\.\d+)?(?: [-+x*/×÷] \d+(?:\.\d+)?)+) = (\d+(?:\.\d+)?)")


def _solve(values, steps, slip_step: int = 0, slip: Fraction = Fraction(0)) -> list[Fraction]:
    """An independent evaluation of a problem's steps with Fractions, left to right; `slip` is added to
    the result of step `slip_step` (1-based) and carried on, as a solver would."""
    results: list[Fraction] = []
    for j, step in enumerate(steps, 1):
        operands = [results[int(a[1:]) - 1] if a.startswith("@") else Fraction(values[a]) for a in step.args]
        acc = operands[0]
        for op, x in zip(step.ops, operands[1:]):
            acc = _OPS[op](acc, x)
        results.append(acc + (slip if j == slip_step else 0))
    return results


def _equation_holds(expr: str, result: str) -> bool:
    tokens = expr.split(" ")
    acc = Fraction(tokens[0])
    for symbol, x in zip(tokens[1::2], tokens[2::2]):
        acc = _OPS[_SYMBOLS[symbol]](acc, Fraction(x))
    return acc == Fraction(result)


@pytest.fixture(scope="module")
def sample():
    return generate(1500, 11)


@pytest.fixture(scope="module")
def ten_thousand():
    return synthesize(10_000, 5, short=True)


def test_correct_answers_recompute_from_the_problem_stated_in_the_question(sample):
    for item in sample:
        p, r = item.problem, item.record
        right = _solve(p.values, p.steps)
        assert Fraction(r.correct_answer) == right[-1]
        assert r.correct_answer.endswith(".0") or "." in r.correct_answer  # "47.0" like the original
        stated = {Fraction(str(x)) for x in numbers_in(p.question)}
        assert all(Fraction(p.values[q]) in stated for q in p.given), (p.question, p.values)
        assert r.correct_argument == " ".join(item.correct_steps) and len(item.correct_steps) == len(p.steps)
        for expr, result in _EQUATION.findall(r.correct_argument):
            assert _equation_holds(expr, result), (expr, result, r.correct_argument)


def test_incorrect_answers_differ_and_first_go_wrong_at_the_recorded_step(sample):
    for item in sample:
        p, e, r = item.problem, item.error, item.record
        right = _solve(p.values, p.steps)
        wrong = _solve(e.values, e.steps, e.step, Fraction(e.slip))
        assert Fraction(r.incorrect_answer) == wrong[-1] != right[-1]
        first_wrong = next(j for j, (a, b) in enumerate(zip(right, wrong), 1) if a != b)
        assert first_wrong == e.step == int(r.extra["error_step"])
        k = e.step
        assert item.incorrect_steps[: k - 1] == item.correct_steps[: k - 1]
        assert item.incorrect_steps[k - 1] != item.correct_steps[k - 1]
        assert r.extra["n_steps"] == str(len(p.steps)) and r.extra["error_kind"] == e.kind


@pytest.mark.parametrize("kind", ERROR_KINDS)
@pytest.mark.parametrize("where", ["first", "middle", "last", "random"])
def test_every_kind_at_every_position_is_what_was_asked(kind, where):
    items = generate(25, 3, error_kind=kind, error_step=where)
    for item in items:
        n = len(item.problem.steps)
        assert item.error.kind == kind == item.record.extra["error_kind"]
        expected = {"first": 1, "last": n, "middle": math.ceil(n / 2)}.get(where)
        assert item.error.step == expected if expected else 1 <= item.error.step <= n
        if where == "middle":
            assert n >= 3


def test_error_kinds_change_what_their_name_says(sample):
    for item in sample:
        p, e = item.problem, item.error
        k = e.step - 1
        if e.kind == "arithmetic":
            assert e.slip != 0 and e.steps == p.steps and e.values == p.values
        elif e.kind == "wrong-operation":
            assert e.steps[k].ops != p.steps[k].ops and e.steps[k].args == p.steps[k].args
        elif e.kind == "dropped-quantity":
            assert len(e.steps[k].args) == len(p.steps[k].args) - 1
        elif e.kind == "misread-number":
            changed = [q for q in p.values if e.values[q] != p.values[q]]
            assert len(changed) == 1 and changed[0] in p.given and changed[0] in p.steps[k].args
        else:
            units_changed = [q for q in p.units if e.values[q] != p.values[q]]
            assert units_changed or e.steps[k].ops != p.steps[k].ops


def test_argument_accuracy_is_within_two_points_of_the_request(ten_thousand):
    rate = sum(r.argument_correct for r in ten_thousand) / len(ten_thousand)
    assert abs(rate - 0.594) < 0.02
    swapped = sum(bool(r.swapped) for r in ten_thousand) / len(ten_thousand)
    assert abs(swapped - 0.5) < 0.02  # candidate order randomized


def test_a_different_accuracy_is_honored():
    records = synthesize(2000, 1, argument_accuracy=0.9, short=True)
    assert abs(sum(r.argument_correct for r in records) / 2000 - 0.9) < 0.03


def test_at_least_twelve_families_all_in_use(ten_thousand):
    assert len(QUESTION_FAMILIES) >= 12
    assert {r.extra["family"] for r in ten_thousand} == set(QUESTION_FAMILIES)
    assert {r.extra["n_steps"] for r in ten_thousand} == {"2", "3", "4", "5"}
    assert {r.extra["error_kind"] for r in ten_thousand} == set(ERROR_KINDS)


def test_every_choice_argument_names_the_chosen_candidate(ten_thousand, sample):
    names = {1: re.compile(r"(?i)candidate[ _#]?1\b|answer 1\b|#1\b|first candidate"),
             2: re.compile(r"(?i)candidate[ _#]?2\b|answer 2\b|#2\b|second candidate")}
    for r in ten_thousand[:2000] + [item.record for item in sample]:
        assert names[r.argument_choice].search(r.choice_argument), r.choice_argument


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path, cli):
    paths = [tmp_path / f"{i}.csv" for i in range(3)]
    for path, seed in zip(paths, (4, 4, 5)):
        code, out, _ = cli("data", "synth", "--n", "300", "--seed", seed, "--out", path)
        assert code == 0 and out.startswith(f"{path}: 300 rows (seed {seed})")
    assert paths[0].read_bytes() == paths[1].read_bytes() != paths[2].read_bytes()
    records = read_records(paths[0])
    assert list(records[0].extra) == ["error_kind", "error_step", "n_steps", "family", "source"]


def test_cli_options_reach_the_generator(tmp_path, cli):
    path = tmp_path / "s.csv"
    code, _, _ = cli("data", "synth", "--n", "200", "--seed", "1", "--out", path, "--steps", "2,3",
                     "--error-kind", "misread-number", "--error-step", "last", "--argument-accuracy", "1", "--short")
    assert code == 0
    records = read_records(path)
    assert {r.extra["n_steps"] for r in records} == {"2", "3"}
    assert all(r.extra["error_kind"] == "misread-number" and r.extra["error_step"] == r.extra["n_steps"] for r in records)
    assert all(r.argument_correct for r in records)


def test_short_rows_are_compact(sample):
    short = generate(300, 11, short=True)
    long_words = sum(len(i.record.correct_argument.split()) for i in sample[:300])
    short_words = sum(len(i.record.correct_argument.split()) for i in short)
    assert short_words < 0.6 * long_words
    for item in short:
        assert all(re.fullmatch(r"[\d. x*×/÷+=-]+\.", s) for s in item.correct_steps), item.correct_steps


@pytest.mark.parametrize("lo,hi", [(2, 9), (50, 80)])
def test_number_range_bounds_the_drawn_numbers(lo, hi):
    drawn = {"tickets", "boxes", "garden", "shopping"}  # families whose stated numbers are all drawn, bar a bill
    items = [i for i in generate(300, 2, number_range=(lo, hi)) if i.problem.family in drawn]
    assert len(items) > 30
    for item in items:
        assert all(lo <= v <= hi for q, v in item.problem.values.items() if q != "bill"), item.problem.values


@pytest.mark.parametrize("options,message", [
    ({"error_kind": "typo"}, "error kind 'typo' is not one of"),
    ({"error_step": "middle", "steps": (2,)}, "error step 'middle' needs problems of at least 3 steps"),
    ({"error_step": "center"}, "error step 'center' is not one of"),
    ({"steps": (1, 6)}, "steps: [1, 6]; choose from [2, 3, 4, 5]"),
    ({"argument_accuracy": 1.5}, "argument accuracy 1.5"),
    ({"number_range": (5, 6)}, "number range 5-6"),
])
def test_bad_options_are_user_errors(options, message):
    with pytest.raises(UserError) as info:
        synthesize(5, 0, **options)
    assert message in str(info.value)


def test_synth_questions_have_gold_answers():
    questions = synth_questions(50, 9)
    assert len({q.id for q in questions}) == 50
    assert all(q.source.startswith("synthetic:") and Fraction(q.answer) > 0 and q.solution for q in questions)
    assert questions[0].answer in questions[0].solution
