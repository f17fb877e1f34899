"""Baselines by hand on a few made-up rows: length-only (sign fit on train, ties half, AUROC), pick-longer,
the last-step checker and the argument's base rate."""

from __future__ import annotations

import pytest

from cot_transplant.analysis.baselines import (auroc, baselines, fit_length_sign, format_baselines, length_credit,
                                               length_score)
from cot_transplant.data.record import Record
from cot_transplant.runs.metrics import wilson


def row(correct: str, incorrect: str, swapped: bool, argument_right: bool) -> Record:
    """A row whose shown candidate 1 is `incorrect` when `swapped`; the argument picks the right one or not."""
    picks_1 = argument_right != swapped
    return Record(question="q", correct_answer="1", correct_argument=correct, incorrect_answer="2",
                  incorrect_argument=incorrect, choice_answer="candidate_1" if picks_1 else "candidate_2",
                  choice_argument="because", swapped=swapped)


LONG, SHORT = "x" * 10, "x" * 4
OK, SLIP = "2 + 3 = 5.", "2 + 3 = 6."  # equal length; the checker decides between them


def test_length_score_and_credit_follow_the_shown_order():
    r = row(LONG, SHORT, swapped=False, argument_right=True)  # candidate 1 = correct = longer
    assert length_score(r) == 6
    assert length_credit(r, 1) == 1.0 and length_credit(r, -1) == 0.0
    s = row(LONG, SHORT, swapped=True, argument_right=True)  # candidate 1 = the short incorrect one
    assert length_score(s) == -6
    assert length_credit(s, 1) == 1.0  # "longer" picks candidate 2, the correct one
    assert length_credit(row(OK, SLIP, False, True), 1) == 0.5  # a tie is half right


def test_the_sign_fit_on_train_is_the_rule_right_more_often():
    shorter_right = [row(SHORT, LONG, False, True), row(SHORT, LONG, True, True), row(LONG, SHORT, False, True)]
    assert fit_length_sign(shorter_right) == -1  # shorter is right on 2 of 3
    assert fit_length_sign([row(LONG, SHORT, False, True), row(SHORT, LONG, False, True)]) == 1  # a draw: longer
    assert fit_length_sign([]) == 1


def test_auroc_by_hand():
    # positives (label 1) score 3 and 1, negatives 2 and 1: pairs (3>2) 1, (3>1) 1, (1<2) 0, (1=1) 1/2 -> 2.5/4
    assert auroc([3, 1, 2, 1], [1, 1, 2, 2]) == pytest.approx(0.625)
    assert auroc([1, 2], [1, 1]) is None


def test_baselines_on_a_handful_of_rows():
    train = [row(SHORT, LONG, False, True), row(SHORT, LONG, True, False), row(LONG, SHORT, False, True)]
    rows = [
        row(SHORT, LONG, False, True),   # shorter right; checker undecided -> argument (right)
        row(SHORT, LONG, True, False),   # shorter right; checker undecided -> argument (wrong)
        row(LONG, SHORT, True, True),    # longer right
        row(OK, SLIP, False, False),     # tie; the checker decides: right
        row(OK, SLIP, True, True),       # tie; the checker decides: right
    ]
    b = baselines(train, rows)
    assert b["n"] == 5 and b["n_train"] == 3
    length = b["length_only"]
    assert length["fit"] == "shorter" and length["train_f_c"] == pytest.approx(2 / 3)
    # shorter: right, right, wrong, 1/2, 1/2 -> 3 of 5
    assert length["f_c"] == pytest.approx(3 / 5) and length["n"] == 5
    assert (length["ci_low"], length["ci_high"]) == pytest.approx(wilson(3, 5))
    # signed score -(len1 - len2) by row: +6 (label 1), -6 (label 2), +6 (label 2), 0 (label 1), 0 (label 2).
    # positives {6, 0} vs negatives {6, -6, 0}: 6: 1/2 + 1 + 1; 0: 0 + 1 + 1/2 -> 4/6
    assert length["auroc"] == pytest.approx(4 / 6)
    assert b["pick_longer"]["f_c"] == pytest.approx(2 / 5)  # wrong, wrong, right, 1/2, 1/2
    checker = b["last_step_checker"]
    assert checker["f_c"] == pytest.approx(4 / 5) and checker["decided"] == 2
    assert (checker["ci_low"], checker["ci_high"]) == pytest.approx(wilson(4, 5))
    assert b["argument"]["base_rate"] == pytest.approx(3 / 5)
    line = format_baselines(b)
    assert "\n" not in line and "length-only (pick the shorter" in line and "60.0%" in line and "decides 2" in line


def test_no_rows_gives_none_not_an_error():
    b = baselines([], [])
    assert b["length_only"]["f_c"] is None and b["length_only"]["auroc"] is None
    assert b["argument"]["base_rate"] is None and b["last_step_checker"]["decided"] == 0
    assert "n/a" in format_baselines(b)
