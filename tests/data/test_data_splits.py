"""Splits: `random` as before, `grouped` by question, `original` with its 275 test rows and no shared question."""

from __future__ import annotations

import numpy as np
import pytest

from cot_transplant.config import load_config
from cot_transplant.data.record import Record
from cot_transplant.data.splits import (DROPPED_REASON, ORIGINAL_ROWS, ORIGINAL_TEST, describe_dropped, make_split,
                                        question_key, random_split)
from cot_transplant.errors import UserError
from cot_transplant.runs.records import split_records


def _where(split: dict) -> dict[int, str]:
    return {i: name for name in ("train", "val", "test") for i in split[name]}


def _questions_apart(split: dict, questions: list[str]) -> bool:
    """No normalized question in two splits."""
    seen: dict[str, str] = {}
    for i, name in _where(split).items():
        if seen.setdefault(question_key(questions[i]), name) != name:
            return False
    return True


def test_question_key_strips_collapses_and_lowercases():
    assert question_key("  How many\tPens \n do I have? ") == "how many pens do i have?"


def test_random_is_unchanged_by_questions():
    questions = [f"Q{i % 7}" for i in range(50)]  # repeats do not matter to `random`
    assert make_split("random", questions, 0.2, 0.2, 3) == make_split("random", 50, 0.2, 0.2, 3) \
        == random_split(50, 0.2, 0.2, 3)
    order = np.random.default_rng(3).permutation(50)  # the permutation, as before: test, val, train
    assert random_split(50, 0.2, 0.2, 3)["test"] == sorted(order[:10].tolist())


def test_grouped_keeps_each_question_in_one_split():
    # 60 rows: 30 questions twice (one copy spelled differently), 20 questions three times... and singles
    questions = [f"How many apples, case {i}?" for i in range(30)]
    questions += [f"  how many APPLES,   case {i}? " for i in range(30)]
    questions += [f"Triple {i}" for i in range(20)] * 3 + [f"Single {i}" for i in range(40)]
    for seed in range(5):
        split = make_split("grouped", questions, 0.1, 0.2, seed)
        assert sorted(_where(split)) == list(range(len(questions)))  # every row in exactly one split
        assert _questions_apart(split, questions)
        assert 32 <= len(split["test"]) <= 34 and 16 <= len(split["val"]) <= 18  # ceil(f*n) + at most a group - 1
    assert make_split("grouped", questions, 0.1, 0.2, 1) == make_split("grouped", questions, 0.1, 0.2, 1)
    assert make_split("grouped", questions, 0.1, 0.2, 1) != make_split("grouped", questions, 0.1, 0.2, 2)


def test_grouped_with_distinct_questions_is_random():
    questions = [f"Q{i}" for i in range(40)]
    for seed in range(4):
        assert make_split("grouped", questions, 0.1, 0.1, seed) == random_split(40, 0.1, 0.1, seed)


def test_grouped_refuses_a_split_with_no_train_rows():
    with pytest.raises(UserError, match="no train rows"):
        make_split("grouped", ["same"] * 5 + ["other"], 0.1, 0.1, 0)  # the big group fills test, `other` val


def _original_questions() -> tuple[list[str], list[int], int, tuple[int, int]]:
    """2,748 distinct questions, then one train row made to share (another spelling of) a test row's question,
    and two train rows made to share one question. Returns (questions, test ids, the row that must be
    dropped, the pair that must stay together)."""
    questions = [f"Question number {i}?" for i in range(ORIGINAL_ROWS)]
    order = np.random.default_rng(1).permutation(ORIGINAL_ROWS).tolist()
    test, rest = order[:ORIGINAL_TEST], order[ORIGINAL_TEST:]
    leak = rest[10]
    questions[leak] = "  QUESTION number " + str(test[0]) + "? "
    a, b = rest[20], rest[30]
    questions[b] = questions[a]
    return questions, sorted(test), leak, (a, b)


def test_original_keeps_the_275_test_rows_and_drops_train_rows_sharing_their_question():
    questions, test, leak, (a, b) = _original_questions()
    for seed in range(6):
        split = make_split("original", questions, 0.1, 0.5, seed)  # test_fraction is ignored
        assert split["test"] == test
        assert split["dropped"] == {"count": 1, "reason": DROPPED_REASON, "rows": [leak]}
        assert leak not in split["train"] + split["val"]
        assert len(split["train"]) + len(split["val"]) == ORIGINAL_ROWS - ORIGINAL_TEST - 1
        assert _questions_apart(split, questions)
        assert _where(split)[a] == _where(split)[b]
        assert len(split["val"]) in (248, 249)  # ceil(0.1 * 2472), and one group may add a row


def test_original_without_questions_is_the_earlier_split():
    split = make_split("original", ORIGINAL_ROWS, 0.1, 0, 1)
    order = np.random.default_rng(1).permutation(ORIGINAL_ROWS)
    rest = np.random.default_rng(1).permutation(order[ORIGINAL_TEST:])
    assert split["test"] == sorted(order[:ORIGINAL_TEST].tolist())
    assert split["val"] == sorted(rest[:248].tolist()) and split["train"] == sorted(rest[248:].tolist())
    assert split["dropped"]["count"] == 0
    with pytest.raises(UserError, match="2,748-row"):
        make_split("original", ["q"] * 10, 0.1, 0, 1)


def test_split_records_prints_one_line_about_the_dropped_rows(capsys):
    questions, _, _, _ = _original_questions()
    records = [Record(q, "1.0", "a", "2.0", "b", "candidate_1", "c", False, row_id=i) for i, q in enumerate(questions)]
    split = split_records(load_config(None, ["data.split=original"]), records)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"cot-transplant: note: {describe_dropped(split)}"]
    assert "1 row left out of train/val (question also in a test row)" in err[0] and "275 test" in err[0]
    split_records(load_config(None, ["data.split=grouped"]), records[:30])
    assert capsys.readouterr().err == ""  # nothing is dropped by design there


def test_the_original_csv_drops_its_three_train_rows_that_repeat_a_test_question(seed_csv):
    from cot_transplant.data.io import read_records

    records = read_records(seed_csv)
    split = make_split("original", [r.question for r in records], 0.1, 0, 1)
    assert split["dropped"]["count"] == 3 and len(split["test"]) == 275
    assert round(100 * sum(records[i].argument_correct for i in split["test"]) / 275, 1) == 64.0
    assert _questions_apart(split, [r.question for r in records])
    grouped = make_split("grouped", [r.question for r in records], 0.1, 0.1, 1)
    assert _questions_apart(grouped, [r.question for r in records])
