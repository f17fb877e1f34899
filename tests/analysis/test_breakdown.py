"""Confound breakdown: the last-step checker on rows with known errors, Wilson intervals, group counts that
add up to the split, and `cot-transplant breakdown` on a tiny run of synthetic rows."""

from __future__ import annotations

import dataclasses
import json

import pytest

from cot_transplant.analysis.breakdown import (GROUPINGS, MISSING, compute_breakdown, last_step_choice, last_step_ok,
                                               split_breakdown, wilson)
from cot_transplant.cli import main
from cot_transplant.data.synth import synthesize
from cot_transplant.errors import UserError
from cot_transplant.runs import rundir


def test_last_step_ok_recomputes_the_last_equation_only():
    assert last_step_ok("3 x 4 = 12. 12 + 5 = 17.") is True
    assert last_step_ok("3 x 4 = 13. 13 + 5 = 18.") is True  # a slip before the last step goes unseen
    assert last_step_ok("3 x 4 = 12. 12 + 5 = 18.") is False
    assert last_step_ok("1,200 / 7 = 171.43 dollars") is True  # rounded to the places written
    assert last_step_ok("2 + 3 × 4 = 14") is True and last_step_ok("2 + 3 × 4 = 20") is True  # either reading
    assert last_step_ok("5 / 0 = 1") is False
    assert last_step_ok("The answer is 7.") is None


def test_checker_is_right_on_last_step_slips_and_follows_the_argument_otherwise():
    last = synthesize(40, 1, error_kind="arithmetic", error_step="last", short=True)
    assert all(last_step_choice(r) == r.label for r in last)
    first = synthesize(40, 2, error_kind="arithmetic", error_step="first", steps=(3, 4))
    assert all(last_step_choice(r) == r.argument_choice for r in first)  # the last steps both hold: a tie


def test_wilson_interval_by_hand():
    low, high = wilson(0, 10)
    assert low == 0.0 and high == pytest.approx(3.8415 / 13.8415, abs=1e-4)
    low, high = wilson(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    assert wilson(0, 0) == (None, None)


def test_a_tie_counts_half_in_f_c_and_its_wilson_interval():
    records = synthesize(4, 3, short=True)
    pred = _predictions(records, right={records[0].row_id, records[1].row_id})
    pred["p_cand1"][2] = pred["p_cand2"][2] = 0.45  # row 2: P1 == P2
    result = split_breakdown({r.row_id: r for r in records}, pred, synthetic=True)
    assert result["f_c"] == pytest.approx(2.5 / 4)  # rows 0, 1 right, row 2 a tie, row 3 wrong
    # Wilson on k = 2.5 of 4: centre (0.625 + z^2/8) / (1 + z^2/4) = 0.563763, half 0.344338
    assert (result["ci_low"], result["ci_high"]) == pytest.approx((0.219426, 0.908101), abs=1e-5)


def _predictions(records, right: set[int]) -> dict[str, list]:
    """Predictions that are right exactly on the rows in `right`."""
    out = {"row_id": [], "p_cand1": [], "p_cand2": [], "label": [], "argument_choice": []}
    for r in records:
        good = r.row_id in right
        p1 = 0.7 if (r.label == 1) == good else 0.2
        out["row_id"].append(r.row_id)
        out["p_cand1"].append(p1)
        out["p_cand2"].append(0.9 - p1)
        out["label"].append(r.label)
        out["argument_choice"].append(r.argument_choice)
    return out


def test_group_counts_add_up_to_the_split_and_missing_metadata_is_a_group():
    records = synthesize(30, 3, short=True)
    records[4] = dataclasses.replace(records[4], extra={})  # a row without metadata
    by_id = {r.row_id: r for r in records}
    right = {r.row_id for r in records if r.row_id % 3}
    result = split_breakdown(by_id, _predictions(records, right), synthetic=True)
    assert result["n"] == 30 and result["f_c"] == pytest.approx(len(right) / 30)
    assert set(result["groups"]) == set(GROUPINGS)
    for grouping, groups in result["groups"].items():
        assert sum(g["n"] for g in groups) == 30, grouping
        assert sum(g["f_c"] * g["n"] for g in groups) == pytest.approx(len(right)), grouping
        assert all(g["ci_low"] <= g["f_c"] <= g["ci_high"] for g in groups)
    assert any(g["value"] == MISSING and g["n"] == 1 for g in result["groups"]["error_kind"])
    argument = {g["value"]: g for g in result["groups"]["argument_right"]}
    assert argument["yes"]["n"] == sum(r.argument_correct for r in records)
    assert argument["yes"]["argument_accuracy"] == 1.0 and argument["no"]["argument_accuracy"] == 0.0
    checker = result["last_step_checker"]
    assert checker["f_c"] == pytest.approx(sum(last_step_choice(r) == r.label for r in records) / 30)
    # a prediction whose label disagrees with the data: the data changed under the run
    bad = _predictions(records, right)
    bad["label"][0] = 3 - bad["label"][0]
    with pytest.raises(UserError, match="no longer matches"):
        split_breakdown(by_id, bad, synthetic=True)


@pytest.fixture
def synthetic_run(tmp_path, tiny_cfg, tiny_train, monkeypatch):
    """A tiny trained run on 12 synthetic rows (3 val, 3 test)."""
    import cot_transplant.runs.records as run_records
    from cot_transplant.train.loop import train

    monkeypatch.setattr(run_records, "load_records", lambda cfg: synthesize(12, 5, short=True))
    train(tiny_cfg(f"run.dir={tmp_path}", "run.name=run"))
    return tmp_path / "run"


def test_breakdown_of_a_run_matches_its_predictions(synthetic_run, capsys):
    run = synthetic_run
    assert main(["breakdown", str(run)]) == 0
    assert "written" in capsys.readouterr().out
    result = json.loads((run / "breakdown.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    splits = json.loads((run / "splits.json").read_text())
    assert result["samples"] == summary["test_at_chosen"]["samples"] and result["synthetic"] is True
    assert set(result["splits"]) == {"val", "test"} and "_provenance" in result
    for split, s in result["splits"].items():
        assert s["n"] == len(splits[split]) - splits["skipped"][split]
        for grouping in GROUPINGS:
            assert sum(g["n"] for g in s["groups"][grouping]) == s["n"], (split, grouping)
        assert s["last_step_checker"]["n"] == s["n"]
    assert result["splits"]["test"]["f_c"] == pytest.approx(summary["test_at_chosen"]["f_c"])
    assert {g["value"] for g in result["splits"]["test"]["groups"]["error_in_last_step"]} <= {"yes", "no"}

    at_start = compute_breakdown(run, samples=0)
    assert at_start["samples"] == 0 and at_start["chosen_by"] == "given"
    assert main(["breakdown", str(run), "--checkpoint-samples", "3"]) == 2
    assert "no predictions at 3 samples; available: [0, 4]" in capsys.readouterr().err
    rows = rundir.read_predictions(run / "predictions" / "test-0.csv")
    assert len(rows["row_id"]) == at_start["splits"]["test"]["n"]


def test_planted_rows_are_a_grouping_only_where_the_rows_carry_it():
    from cot_transplant.data.plant import plant_fraction

    records = synthesize(20, 4, short=True)
    planted = plant_fraction(records, 0.25, seed=1)
    by_id = {r.row_id: r for r in planted}
    right = {r.row_id for r in planted if r.extra["planted"] == "true"}  # a chooser that reads only the verdicts
    result = split_breakdown(by_id, _predictions(planted, right), synthetic=True)
    groups = {g["value"]: g for g in result["groups"]["planted"]}
    assert set(groups) == {"true", "false"} and groups["true"]["n"] == 5 and groups["false"]["n"] == 15
    assert groups["true"]["f_c"] == 1.0 and groups["false"]["f_c"] == 0.0
    plain = split_breakdown({r.row_id: r for r in records}, _predictions(records, right), synthetic=True)
    assert "planted" not in plain["groups"] and set(plain["groups"]) == set(GROUPINGS)
