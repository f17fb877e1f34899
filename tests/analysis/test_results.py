"""`cot-transplant results`: tables rebuilt from run directories, prose kept, figures checked by hand."""

import json

import pytest
import yaml

from cot_transplant.analysis.results import comparisons, fill, scored, split_figures, study_runs
from cot_transplant.cli import main
from cot_transplant.runs.rundir import write_prediction_rows, write_predictions


def fake_run(root, name, p1s, labels, samples=8, control=None, git="abc123def4567890"):
    """A finished run: summary.json choosing `samples`, test predictions, config.yaml with provenance."""
    run = root / name
    run.mkdir(parents=True)
    rows = [(i, p1, 1 - p1, lab, 1) for i, (p1, lab) in enumerate(zip(p1s, labels))]
    write_predictions(run, "test", samples, rows)
    at = {"samples": samples}
    (run / "summary.json").write_text(json.dumps({"chosen_by": "best val/f_c", "test_at_chosen": at,
                                                  "test_at_end": at, "wall_s": 12.0, "samples_trained": samples}))
    (run / "config.yaml").write_text(yaml.safe_dump({"variant": "joint", "_provenance": {"git": git}}))
    if control is not None:
        cname, cp1s = control
        write_prediction_rows(run / f"eval-step-2-control-{cname}-test.csv",
                              [(i, p1, 1 - p1, lab, 1) for i, (p1, lab) in enumerate(zip(cp1s, labels))])
        (run / f"eval-step-2-control-{cname}.json").write_text(json.dumps([
            {"split": "test", "samples": samples, "predictions": f"eval-step-2-control-{cname}-test.csv",
             "eval_wall_s": 3.0, "control": cname}]))
    return run


def test_split_figures_ties_half_and_wilson(tmp_path):
    run = fake_run(tmp_path, "positive-joint-s0", [0.9, 0.5, 0.2, 0.8], [1, 1, 1, 2])
    f = split_figures(scored(run / "predictions" / "test-8.csv"))
    # rows: right, tie (1/2), wrong, wrong -> 1.5 / 4
    assert f["f_c"] == 0.375 and f["n"] == 4
    # Wilson at p = 0.375, n = 4: centre (0.375 + z^2/8) / (1 + z^2/4) = 0.43624, half 0.34434
    assert f["ci_low"] == pytest.approx(0.0919, abs=1e-3) and f["ci_high"] == pytest.approx(0.7806, abs=1e-3)


def test_study_runs_only_finished_named_runs(tmp_path):
    fake_run(tmp_path, "positive-joint-s1", [0.9], [1])
    fake_run(tmp_path, "positive-joint-s0", [0.9], [1])
    (tmp_path / "positive-text-only-s0").mkdir()  # unfinished: no summary.json
    fake_run(tmp_path, "original-joint-s0", [0.9], [1])
    runs = study_runs(tmp_path, "positive")
    assert list(runs) == ["joint"] and [s for s, _ in runs["joint"]] == [0, 1]


def test_comparisons_row_means_and_holm():
    a = [{"row_id": [0, 1, 2, 3, 4], "score": __import__("numpy").array([1.0, 1, 1, 1, 1])}]
    b = [{"row_id": [0, 1, 2, 3, 4], "score": __import__("numpy").array([0.0, 0, 0, 0, 0])}]
    c = [{"row_id": [0, 1, 2, 3, 4], "score": __import__("numpy").array([1.0, 1, 1, 1, 0])}]
    out = comparisons([("a-b", a, b), ("a-c", a, c)])
    # 5 differing rows, all one way: exact two-sided p = 2 / 32; 1 differing row: p = 1
    assert out[0]["p"] == pytest.approx(0.0625) and out[1]["p"] == 1.0
    assert out[0]["p_holm"] == pytest.approx(0.125) and out[1]["p_holm"] == 1.0


def test_fill_rewrites_blocks_and_keeps_prose(tmp_path):
    labels = [1, 2] * 10
    fake_run(tmp_path, "positive-joint-s0", [0.9 if lab == 1 else 0.1 for lab in labels], labels,
             control=("shuffled-kv", [0.6] * 20))
    fake_run(tmp_path, "positive-text-only-s0", [0.6] * 20, labels)
    doc = ("# Results\nprose stays\n<!-- results:positive -->\nold table\n<!-- /results:positive -->\n"
           "<!-- results:probe-gsm8k -->\n<!-- /results:probe-gsm8k -->\nend\n")
    text, filled = fill(doc, tmp_path)
    assert filled == ["positive", "probe-gsm8k"] and "old table" not in text
    assert text.startswith("# Results\nprose stays\n") and text.endswith("end\n")
    assert "| `joint` | 0 | 8 | 100.0% [83.9%, 100.0%]" in text  # 20/20: Wilson [0.839, 1]
    assert "| `text-only` | 0 | 8 | 50.0% [29.9%, 70.1%]" in text  # always picks 1: right on half
    assert "`shuffled-kv` (eval-only)" in text and "range (fewer than 3 seeds)" in text
    assert "Not run: no probe.json" in text


def test_results_command_errors_are_one_line(tmp_path, capsys):
    assert main(["results", str(tmp_path / "missing"), "--doc", str(tmp_path / "d.md")]) == 2
    (tmp_path / "d.md").write_text("no blocks\n")
    assert main(["results", str(tmp_path), "--doc", str(tmp_path / "d.md")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("cot-transplant: error:") for line in err)


def test_report_sets_each_run_beside_its_controls_and_baselines(tmp_path):
    from cot_transplant.analysis.report_controls import controls_table

    labels = [1, 2] * 10
    joint = fake_run(tmp_path, "positive-joint-s0", [0.9 if lab == 1 else 0.1 for lab in labels], labels,
                     control=("shuffled-kv", [0.6] * 20))
    summary = json.loads((joint / "summary.json").read_text())
    summary["baselines"] = {"argument": {"base_rate": 0.55, "ci_low": 0.3, "ci_high": 0.7},
                            "length_only": {"f_c": 0.5, "ci_low": 0.3, "ci_high": 0.7},
                            "last_step_checker": {"f_c": 0.6, "ci_low": 0.4, "ci_high": 0.8}}
    (joint / "summary.json").write_text(json.dumps(summary))
    plain = fake_run(tmp_path, "other", [0.6] * 20, labels)
    (plain / "config.yaml").write_text(yaml.safe_dump({"data": {"synthetic": {"planted": True}}}))
    t = controls_table([("joint", joint), ("other", plain)])
    assert t.rows[0][:5] == ["joint", "synthetic", "100.0% [83.9%, 100.0%]", "50.0% [29.9%, 70.1%]", "not run"]
    assert t.rows[0][5:] == ["55.0%", "50.0% [30.0%, 70.0%]", "60.0% [40.0%, 80.0%]"]
    assert t.rows[1][1] == "planted (positive control)" and t.rows[1][3] == "not run"
