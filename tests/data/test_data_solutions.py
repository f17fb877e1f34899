"""`data from-solutions`: pairs with natural errors from the released GSM8K model solutions."""

from __future__ import annotations

import json

import pytest

from cot_transplant.data.io import read_records
from cot_transplant.data.solutions import pairs_from_solutions, source_counts, split_solution
from cot_transplant.errors import UserError


def _sol(text: str, ok: bool) -> dict:
    return {"solution": text, "is_correct": ok}


ROWS = [
    {"question": "Q0?", "ground_truth": "2*3=<<2*3=6>>6\nA: 6",  # a correct and an incorrect model solution
     "6b": _sol("2*3=<<2*3=6>>6\nA: 6", True), "175b": _sol("2+3=<<2+3=5>>5\nA: 5", False)},
    {"question": "Q1?", "ground_truth": "10/2=<<10/2=5>>5\nA: 5",  # no correct model solution
     "6b": _sol("10-2=8\nA: 8", False), "175b": _sol("10*2=20\nA: 20", False)},
    {"question": "Q2?", "ground_truth": "A: 1,000",  # all correct: no pair
     "6b": _sol("A: 1,000", True), "175b": _sol("A: 1000", True)},
    {"question": "Q3?", "ground_truth": "A: 4",  # the only wrong one is cut off
     "6b": _sol("A: 4", True), "175b": _sol("2+2=5 and then", False)},
]


@pytest.fixture
def solutions(tmp_path):
    path = tmp_path / "sol.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    return path


def test_split_solution():
    assert split_solution("a=<<1+1=2>>2\nA: 1,250") == ("a=2", "1250")
    assert split_solution("a=<<1+1=2>>2\nA: 2", keep_annotations=True) == ("a=<<1+1=2>>2", "2")
    assert split_solution("cut off mid") is None and split_solution("x\nA: many") is None


@pytest.mark.parametrize("correct,questions,sources", [
    ("auto", ["Q0?", "Q1?"], ["6b", "ground_truth"]),
    ("model", ["Q0?"], ["6b"]),
    ("ground-truth", ["Q0?", "Q1?"], ["ground_truth", "ground_truth"]),
])
def test_correct_solution_source(solutions, correct, questions, sources):
    records, counts = pairs_from_solutions(solutions, correct=correct, choices="none")
    assert [r.question for r in records] == questions
    assert [r.extra["correct_from"] for r in records] == sources
    assert records[0].correct_answer == "6.0" and records[0].incorrect_answer == "5.0"
    assert records[0].correct_argument == "2*3=6" and records[0].incorrect_argument == "2+3=5"
    assert counts["skipped: no incorrect solution"] == 2 and counts["unparsed solutions"] == 1


def test_model_is_the_default_source(solutions):
    records, counts = pairs_from_solutions(solutions, choices="none")
    assert [r.extra["correct_from"] for r in records] == ["6b"]
    assert source_counts(records) == {"correct_from": {"6b": 1}, "incorrect_from": {"175b": 1}}
    records, _ = pairs_from_solutions(solutions, choices="none", correct="auto")
    sources = source_counts(records)
    assert sources["correct_from"] == {"6b": 1, "ground_truth": 1} and sum(sources["incorrect_from"].values()) == 2


def test_the_command_prints_and_writes_the_sources(solutions, tmp_path, cli):
    out = tmp_path / "pairs.jsonl"
    code, text, _ = cli("data", "from-solutions", solutions, "--out", out, "--choices", "none")
    assert code == 0 and f"{out}: 1 rows (pairs)" in text
    assert f"{out}: correct from: 6b 1" in text and f"{out}: incorrect from: 175b 1" in text
    counts = json.loads((tmp_path / "pairs.jsonl.counts.json").read_text())
    assert counts["pairs"] == 1 and counts["correct"] == "model" and counts["file"] == "pairs.jsonl"
    assert counts["correct_from"] == {"6b": 1} and counts["incorrect_from"] == {"175b": 1}
    assert counts["counts"]["skipped: no correct solution"] == 1 and "_provenance" in counts


def test_synthetic_choices_and_determinism(solutions):
    a, _ = pairs_from_solutions(solutions, seed=3)
    b, _ = pairs_from_solutions(solutions, seed=3)
    assert a == b and all(r.has_choice for r in a)


def test_not_a_solutions_file(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"question": "Q?", "answer": "#### 4"}\n')
    with pytest.raises(UserError, match="no model solutions"):
        pairs_from_solutions(path)


def test_released_solutions_give_731_model_pairs_by_default(model_solutions, tmp_path, cli):
    out = tmp_path / "model.csv"
    code, text, _ = cli("data", "from-solutions", model_solutions, "--out", out, "--choices", "none")
    assert code == 0 and f"{out}: 731 rows (pairs)" in text and "ground-truth solution" not in text
    counts = json.loads((tmp_path / "model.csv.counts.json").read_text())
    assert sum(counts["correct_from"].values()) == sum(counts["incorrect_from"].values()) == 731
    assert "ground_truth" not in counts["correct_from"]


def test_released_solutions_with_auto_add_432_ground_truth_pairs(model_solutions, tmp_path, cli):
    out = tmp_path / "pairs.csv"
    code, text, _ = cli("data", "from-solutions", model_solutions, "--out", out, "--choices", "none",
                        "--correct", "auto")
    assert code == 0 and "pairs with a model-written correct solution: 731" in text
    assert "pairs with the ground-truth solution as correct: 432" in text
    with pytest.raises(UserError, match="is a pairs file"):
        read_records(out)
    pairs = read_records(out, require_choice=False)
    assert len(pairs) == 1163 and not any("<<" in r.correct_argument + r.incorrect_argument for r in pairs)
    assert pairs[0].correct_answer == "18.0" and "\n" in pairs[0].correct_argument


def test_released_solutions_with_synthetic_choices(model_solutions, gsm8k_test, tmp_path, cli):
    out = tmp_path / "full.jsonl"
    code, _, _ = cli("data", "from-solutions", model_solutions, "--out", out, "--correct", "model",
                     "--gold", gsm8k_test, "--seed", "1")
    assert code == 0
    records = read_records(out)
    assert len(records) == 731 and all(r.has_choice for r in records)
    assert 0.5 < sum(r.argument_correct for r in records) / len(records) < 0.7
