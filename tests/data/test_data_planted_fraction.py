"""The graded planted control on real rows (`data.planted_fraction`): verdicts for the arguer only."""

from __future__ import annotations

import pytest

from cot_transplant.config import load_config
from cot_transplant.data.io import write_records
from cot_transplant.data.plant import (SHOWN_KEYS, VERDICT_HIDDEN, VERDICT_RIGHT, VERDICT_WRONG, plant_all,
                                       plant_fraction, shown_candidates, with_verdict)
from cot_transplant.data.record import Record
from cot_transplant.errors import UserError
from cot_transplant.runs.records import load_records


def _rows(n: int = 40) -> list[Record]:
    return [Record(question=f"Ann has {i} pens and buys 3. How many?", correct_answer=f"{i + 3}.0",
                   correct_argument=f"{i} + 3 = {i + 3}.", incorrect_answer=f"{i + 4}.0",
                   incorrect_argument=f"{i} + 3 = {i + 4}.", choice_answer="candidate_1",
                   choice_argument="Candidate 1 adds up.", swapped=i % 3 == 0, row_id=i, extra={"source": "hand"})
            for i in range(n)]


def _planted(rows: list[Record]) -> list[int]:
    return [i for i, r in enumerate(rows) if r.extra["planted"] == "true"]


@pytest.mark.parametrize("fraction,expected", [(0.25, 10), (0.5, 20), (1.0, 40), (0.01, 0), (0.03, 1)])
def test_exactly_round_fraction_times_n_rows_are_planted(fraction, expected):
    rows = plant_fraction(_rows(), fraction, seed=0)
    assert len(_planted(rows)) == expected and len(rows) == 40
    assert all(r.extra["planted"] in ("true", "false") for r in rows)


def test_the_planted_rows_are_seeded_and_nested_across_fractions():
    assert plant_fraction(_rows(), 0.25, seed=3) == plant_fraction(_rows(), 0.25, seed=3)
    assert _planted(plant_fraction(_rows(), 0.25, seed=3)) != _planted(plant_fraction(_rows(), 0.25, seed=4))
    quarter, half = (set(_planted(plant_fraction(_rows(), f, seed=3))) for f in (0.25, 0.5))
    assert quarter < half


def test_views_at_the_end():
    rows = _rows()
    out = plant_fraction(rows, 0.5, seed=0)
    for before, after in zip(rows, out):
        planted = after.extra["planted"] == "true"
        right, wrong = (VERDICT_RIGHT, VERDICT_WRONG) if planted else (VERDICT_HIDDEN, VERDICT_HIDDEN)
        assert after.correct_argument == before.correct_argument + right  # the arguer's texts
        assert after.incorrect_argument == before.incorrect_argument + wrong
        assert after.extra[SHOWN_KEYS[0]] == before.correct_argument + VERDICT_HIDDEN  # the chooser's
        assert after.extra[SHOWN_KEYS[1]] == before.incorrect_argument + VERDICT_HIDDEN
        assert shown_candidates(after) == tuple(a + VERDICT_HIDDEN for _, a in before.candidates())
        # the real candidates, answers, order, choice argument and other columns stay
        assert (after.question, after.correct_answer, after.incorrect_answer, after.swapped, after.choice_answer,
                after.choice_argument, after.row_id) == (before.question, before.correct_answer,
                                                         before.incorrect_answer, before.swapped,
                                                         before.choice_answer, before.choice_argument, before.row_id)
        assert after.extra["source"] == "hand"


def test_views_at_the_start():
    rows = _rows(4)
    out = plant_fraction(rows, 1.0, seed=0, position="start")
    assert with_verdict("x = 1.", VERDICT_RIGHT, "start") == "Verdict: right. x = 1."
    for before, after in zip(rows, out):
        assert after.correct_argument == "Verdict: right. " + before.correct_argument
        assert after.incorrect_argument == "Verdict: wrong. " + before.incorrect_argument
        assert after.extra[SHOWN_KEYS[0]] == "Verdict: hidden. " + before.correct_argument
        assert after.extra[SHOWN_KEYS[1]] == "Verdict: hidden. " + before.incorrect_argument
    unplanted = plant_fraction(rows, 0.25, seed=0, position="start")  # round(0.25 * 4) = 1 planted
    assert [r.correct_argument.split(".")[0] for r in unplanted].count("Verdict: hidden") == 3


def test_fraction_zero_changes_nothing_and_planted_files_are_refused():
    rows = _rows()
    assert plant_fraction(rows, 0.0) == rows
    with pytest.raises(UserError, match="already carry planted views"):
        plant_fraction(plant_all(rows, seed=0), 0.5)


def _load(path, *overrides):
    return load_records(load_config(None, [f"data.path={path}", *overrides]))


def test_load_records_plants_file_rows_after_validation(tmp_path):
    path = tmp_path / "rows.jsonl"
    write_records(_rows(), path)
    plain = _load(path)
    assert _load(path, "data.planted_fraction=0.0") == plain and "planted" not in plain[0].extra
    planted = _load(path, "data.planted_fraction=0.25", "data.planted_seed=2")
    assert planted == plant_fraction(plain, 0.25, seed=2)
    assert len(_planted(planted)) == 10
    assert _load(path, "data.planted_fraction=0.25", "data.planted_seed=2", "data.split_seed=9") == planted
    start = _load(path, "data.planted_fraction=1.0", "data.planted_position=start")
    assert all(r.correct_argument.startswith("Verdict: right. ") for r in start)


def _chooser_and_arguer_ids(rows, template_name: str, variant: str):
    from cot_transplant.models import load_tokenizer
    from cot_transplant.prompts.templates import get_template
    from cot_transplant.train.batches import build_example

    tok = load_tokenizer("smollm2")
    template = get_template(template_name, tok, None)
    examples = [build_example(r, template, tok, variant=variant) for r in rows]
    for ex in examples:  # each candidate's arguer span and chooser span have one length: the transplant fits
        for arguer, slot in zip(ex.arguer, ("candidate_1", "candidate_2")):
            a, c = arguer.spans["argument"], ex.chooser.spans[slot]
            assert a[1] - a[0] == c[1] - c[0] > 0
    return [ex.chooser.ids for ex in examples], [[enc.ids for enc in ex.arguer] for ex in examples]


@pytest.mark.parametrize("template_name", ["chat", "alpaca-json"])
@pytest.mark.parametrize("position", ["end", "start"])
def test_a_text_only_chooser_reads_the_same_tokens_at_every_fraction(template_name, position):
    rows = _rows(8)
    quarter, full = (plant_fraction(rows, f, seed=0, position=position) for f in (0.25, 1.0))
    chooser_q, arguer_q = _chooser_and_arguer_ids(quarter, template_name, "text-only")
    chooser_f, arguer_f = _chooser_and_arguer_ids(full, template_name, "text-only")
    assert chooser_q == chooser_f
    assert arguer_q != arguer_f  # only the arguer's passes carry the verdicts
    joint_q, _ = _chooser_and_arguer_ids(quarter, template_name, "joint")
    assert joint_q == chooser_q


def test_fraction_zero_prompts_are_the_files_own(tmp_path):
    from cot_transplant.data.io import read_records

    path = tmp_path / "rows.csv"
    write_records(_rows(6), path)
    today = read_records(path)
    for template_name in ("chat", "alpaca-json"):
        assert _chooser_and_arguer_ids(_load(path, "data.planted_fraction=0"), template_name, "joint") == \
            _chooser_and_arguer_ids(today, template_name, "joint")
