"""The masked variant: candidate identifiers replaced by `_`, and rows that still give the choice away."""

from __future__ import annotations

import pytest

from cot_transplant.data.io import read_records
from cot_transplant.data.mask import mask_choice_argument, mask_record, reveals_choice
from cot_transplant.data.record import Record
from cot_transplant.data.synth import synthesize


@pytest.mark.parametrize("text,masked", [
    ("Candidate 1 provides a more accurate answer. Candidate 2 does not.",
     "Candidate _ provides a more accurate answer. Candidate _ does not."),
    ("I pick candidate_2.", "I pick candidate__."),
    ("candidate 2's steps are wrong", "candidate _'s steps are wrong"),
    ("The first candidate is right; the second one is not.", "The _ candidate is right; the _ one is not."),
    ("Answer 1 checks out, answer #2 does not.", "Answer _ checks out, answer #_ does not."),
    ("#2 is the best.", "#_ is the best."),
    ("Candidates 1 and 2 differ in step two.", "Candidates _ and _ differ in step two."),
    ("Option (2) is right, candidate number 1 is not.", "Option (_) is right, candidate number _ is not."),
    ("Candidate One wins over the latter.", "Candidate _ wins over the _."),
    # Numbers that are not identifiers stay.
    ("The answer 12 is wrong and the answer 1.5 too; first, 2 apples cost $1.", None),
    ("Step 2 of the second step list.", None),
])
def test_identifiers_are_masked_and_nothing_else(text, masked):
    assert mask_choice_argument(text) == (text if masked is None else masked)


def _record(argument: str) -> Record:
    return Record("q", "47.0", "7 x 5 = 35. 35 + 12 = 47.", "58.0", "7 x 5 = 35. 35 + 23 = 58.",
                  "candidate_1", argument, False)


@pytest.mark.parametrize("argument,reveals", [
    ("Candidate _ is right because it adds correctly.", False),
    ("Candidate _ is right: the total is 47 tickets.", True),  # quotes one candidate's final number
    ("Candidate _ says 58 but the right total is 47.", False),  # quotes both
    ("Candidate 1 is right.", True),  # an identifier left
    ("Candidate _ gets 1,047 wrong.", False),
])
def test_reveals_choice_flags_a_masked_argument_that_still_tells(argument, reveals):
    assert reveals_choice(_record(argument)) is reveals


def test_synthetic_arguments_mask_completely():
    for record in synthesize(500, 3):
        masked = mask_record(record).choice_argument
        assert masked != record.choice_argument and "_" in masked
        assert mask_choice_argument(masked) == masked  # nothing left to mask


def test_mask_command_counts_changes_and_reveals(seed_csv, tmp_path, cli):
    out = tmp_path / "masked.csv"
    code, text, _ = cli("data", "mask", seed_csv, "--out", out)
    assert code == 0
    assert text.strip() == (f"{out}: 2748 rows; 2746 choice arguments changed; 1130 (41.1%) still reveal the choice "
                            "another way (a leftover identifier, or quoting one candidate's final number)")
    masked = read_records(out)
    assert masked[0].choice_argument.startswith("Candidate _ provides a more accurate answer")
    assert [r.question for r in masked] == [r.question for r in read_records(seed_csv)]
