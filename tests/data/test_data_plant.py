"""The planted positive control: the arguer reads the verdict, the chooser's text hides it."""

import random

from cot_transplant.data.io import read_records, write_records
from cot_transplant.data.plant import SHOWN_KEYS, VERDICT_HIDDEN, VERDICT_RIGHT, VERDICT_WRONG, plant, plant_all, \
    shown_candidates
from cot_transplant.data.record import Record


def _record(swapped: bool) -> Record:
    return Record(question="Ann has 2 pens and buys 3. How many?", correct_answer="5.0", correct_argument="2 + 3 = 5.",
                  incorrect_answer="6.0", incorrect_argument="2 + 3 = 6.", choice_answer="candidate_1",
                  choice_argument="Candidate 1 is right.", swapped=swapped, row_id=7, extra={"error_step": "1"})


def test_plant_one_solution_twice_with_verdicts():
    rec = plant(_record(swapped=True), random.Random(0))
    assert rec.correct_argument == "2 + 3 = 5." + VERDICT_RIGHT
    assert rec.incorrect_argument == "2 + 3 = 5." + VERDICT_WRONG
    assert rec.extra[SHOWN_KEYS[0]] == rec.extra[SHOWN_KEYS[1]] == "2 + 3 = 5." + VERDICT_HIDDEN
    assert rec.swapped and rec.label == 2 and rec.row_id == 7
    assert "error_step" not in rec.extra and rec.extra["error_kind"] == "planted"
    assert rec.choice_argument == f"Candidate {rec.argument_choice} is correct."


def test_shown_candidates_follow_the_swap_and_fall_back_to_the_arguments():
    plain = _record(swapped=True)
    assert shown_candidates(plain) == ("2 + 3 = 6.", "2 + 3 = 5.")
    rec = plant(plain, random.Random(0))
    rec.extra[SHOWN_KEYS[0]], rec.extra[SHOWN_KEYS[1]] = "shown correct", "shown incorrect"
    assert shown_candidates(rec) == ("shown incorrect", "shown correct")  # swapped: incorrect first


def test_argument_accuracy_sets_the_pick():
    rows = [_record(swapped=i % 2 == 0) for i in range(400)]
    always = plant_all(rows, seed=0, argument_accuracy=1.0)
    never = plant_all(rows, seed=0, argument_accuracy=0.0)
    assert all(r.argument_correct for r in always) and not any(r.argument_correct for r in never)
    half = plant_all(rows, seed=0, argument_accuracy=0.5)
    assert 0.4 < sum(r.argument_correct for r in half) / len(half) < 0.6
    assert [r.choice_answer for r in plant_all(rows, seed=3)] == [r.choice_answer for r in plant_all(rows, seed=3)]


def test_planted_rows_round_trip_through_a_file(tmp_path):
    rows = plant_all([_record(swapped=s) for s in (True, False)], seed=1)
    write_records(rows, tmp_path / "planted.jsonl")
    back = read_records(tmp_path / "planted.jsonl", require_choice=True)
    assert [shown_candidates(r) for r in back] == [shown_candidates(r) for r in rows]
    assert [r.candidates() for r in back] == [r.candidates() for r in rows]


def test_chooser_reads_the_hidden_view_and_the_arguer_the_verdict():
    from cot_transplant.models import load_tokenizer
    from cot_transplant.prompts.templates import get_template
    from cot_transplant.train.batches import build_example

    tok = load_tokenizer("smollm2")
    template = get_template("chat", tok, None)
    rec = plant(_record(swapped=False), random.Random(0))
    ex = build_example(rec, template, tok, shift=False)
    decode = lambda enc, span: tok.decode(enc.ids[span[0]:span[1]])  # noqa: E731
    assert decode(ex.arguer[0], ex.arguer[0].spans["argument"]).endswith("right.")
    assert decode(ex.arguer[1], ex.arguer[1].spans["argument"]).endswith("wrong.")
    c1, c2 = (decode(ex.chooser, ex.chooser.spans[k]) for k in ("candidate_1", "candidate_2"))
    assert c1 == c2 and c1.endswith("hidden.")
    for arguer, slot in zip(ex.arguer, ("candidate_1", "candidate_2")):  # equal lengths: the transplant fits
        a, c = arguer.spans["argument"], ex.chooser.spans[slot]
        assert a[1] - a[0] == c[1] - c[0]
