"""The campaign's tables and its pre-registered decision, on hand-made run outputs with known answers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from cot_transplant.analysis import campaign
from cot_transplant.analysis.results import fill

ROWS = 200


def correct_rows(rate: float, seed: int, shift: int = 0) -> np.ndarray:
    """A fixed 0/1 pattern with `rate` of the rows correct (rows drawn by `seed`)."""
    rng = np.random.default_rng(1000 + seed + shift)
    out = np.zeros(ROWS, dtype=int)
    out[rng.permutation(ROWS)[:round(rate * ROWS)]] = 1
    return out


def write_preds(path: Path, correct: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row_id", "p_cand1", "p_cand2", "label", "argument_choice"])
        for i, c in enumerate(correct):
            w.writerow([i, 0.9 if c else 0.1, 0.1 if c else 0.9, 1, 1])


def fake_run(root: Path, name: str, curve: dict[int, np.ndarray], chosen: int,
             controls: dict[str, np.ndarray] | None = None, wall: int = 60) -> Path:
    run = root / name
    for samples, correct in curve.items():
        write_preds(run / "predictions" / f"test-{samples}.csv", correct)
    end = max(curve)
    (run / "summary.json").write_text(json.dumps({
        "test_at_chosen": {"samples": chosen}, "test_at_end": {"samples": end}, "wall_s": wall,
        "baselines": None}))
    (run / "config.yaml").write_text("variant: x\n_provenance:\n  git: 0123456789abcdef\n")
    (run / "log.txt").write_text(f"training\nwall_s {wall}\n")
    for label, correct in (controls or {}).items():
        write_preds(run / f"eval-step-4-control-{label}-test.csv", correct)
        (run / f"eval-step-4-control-{label}.json").write_text(json.dumps(
            [{"split": "test", "samples": chosen, "predictions": f"eval-step-4-control-{label}-test.csv"}]))
    return run


def campaign_dir(root: Path, joint_rate: float, text_rate: float, shuffled_rate: float,
                 plant_rates: dict[str, float], seeds=(0, 1, 2)) -> Path:
    for s in seeds:
        joint = correct_rows(joint_rate, s)
        ctrl = {"base-arguer": correct_rows(text_rate, s, 7),
                "shuffled-kv-length-matched": correct_rows(shuffled_rate, s, 9)}
        fake_run(root, f"noarg-joint-s{s}", {64: correct_rows(0.5, s, 3), 640: joint}, 640, ctrl)
        fake_run(root, f"noarg-text-only-s{s}", {64: correct_rows(0.5, s, 4), 640: correct_rows(text_rate, s, 1)}, 640)
        fake_run(root, f"noarg-frozen-arguer-s{s}", {640: correct_rows(text_rate, s, 2)}, 640)
    fake_run(root, "plant100-text-only-s0", {640: correct_rows(0.5, 0, 5)}, 640)
    for name, rate in plant_rates.items():
        fake_run(root, f"{name}-joint-s0", {640: correct_rows(rate, 0, 6)}, 640)
    return root


def test_a_planted_gain_in_real_states_is_decided_as_read(tmp_path):
    root = campaign_dir(tmp_path, 0.8, 0.5, 0.5, {"plant100": 0.95, "plant50": 0.75, "plant25": 0.62, "plant10": 0.55})
    verdict, reasons = campaign.decide(root)
    assert verdict == "the chooser reads correctness from the transplanted states", reasons
    c = {r["label"]: r for r in campaign.study_comparisons(campaign.load_study(root, "noarg"))}
    c1 = c["`joint` − `text-only`"]
    assert c1["effect"] == pytest.approx(0.3) and c1["seeds"] == 3 and c1["rows"] == ROWS
    assert c1["ci_low"] < 0.3 < c1["ci_high"] and c1["p_holm"] < 0.001
    assert len(c) == 4


def test_no_gain_with_a_detected_positive_control_is_decided_as_not_read(tmp_path):
    root = campaign_dir(tmp_path, 0.5, 0.5, 0.5, {"plant100": 0.95, "plant50": 0.75, "plant25": 0.52, "plant10": 0.5})
    verdict, reasons = campaign.decide(root)
    assert verdict == "it does not, at this budget and model", reasons
    limit = campaign.detection_limit(campaign.positive_levels(root))
    assert limit["fraction"] == 0.5 and limit["effect"] == pytest.approx(0.25)


def test_no_gain_without_a_detected_positive_control_is_undecided(tmp_path):
    root = campaign_dir(tmp_path, 0.5, 0.5, 0.5, {"plant100": 0.52, "plant50": 0.5, "plant25": 0.5, "plant10": 0.5})
    verdict, _ = campaign.decide(root)
    assert verdict == "undecided on this hardware"


def test_an_unfinished_campaign_is_undecided_and_says_what_is_missing(tmp_path):
    root = campaign_dir(tmp_path, 0.8, 0.5, 0.5, {"plant100": 0.95}, seeds=(0,))
    verdict, reasons = campaign.decide(root)
    assert verdict.startswith("undecided")
    assert "noarg-joint-s1" in reasons[0] and "plant50-joint-s0" in reasons[0]


def test_the_detection_limit_stops_at_the_first_level_missed():
    levels = [{"fraction": f, "detected": d, "effect": e} for f, d, e in
              ((1.0, True, 0.4), (0.5, True, 0.2), (0.25, False, 0.05), (0.1, True, 0.3))]
    assert campaign.detection_limit(levels)["fraction"] == 0.5
    assert campaign.detection_limit([{"fraction": 1.0, "detected": False, "effect": 0.0}]) is None
    assert campaign.beyond_limit(levels, campaign.detection_limit(levels)) == ["10%"]
    # a stronger level not run yet ends the chain: 25% detected does not make the limit 25% before 50% has run
    gap = [levels[0], {"fraction": 0.25, "detected": True, "effect": 0.16}]
    assert campaign.detection_limit(gap)["fraction"] == 1.0 and campaign.beyond_limit(gap, levels[0]) == ["25%"]


def test_results_fills_every_campaign_block(tmp_path):
    root = campaign_dir(tmp_path / "c", 0.8, 0.5, 0.5, {"plant100": 0.95})
    doc = "".join(f"<!-- results:{n} -->\nold\n<!-- /results:{n} -->\n" for n in campaign.SECTIONS)
    text, filled = fill(doc, root)
    assert set(filled) == set(campaign.SECTIONS) and "old" not in text
    assert "| `joint` | 0, 1, 2 | " in text  # the learning-curve table
    assert "test f_c at 64" in text and "test f_c at 640" in text
    assert "Not run yet" in text  # gsm8k and arg have no runs
    assert "undecided" in text and "0.12 h" not in text
    assert "`noarg-joint-s0` | 1.0 min" in text


def test_the_results_command_draws_the_campaign_figures(tmp_path):
    from cot_transplant.cli import main
    root = campaign_dir(tmp_path / "c", 0.8, 0.5, 0.5, {"plant100": 0.95, "plant25": 0.6})
    doc = tmp_path / "docs" / "results.md"
    doc.parent.mkdir()
    doc.write_text("<!-- results:primary -->\n<!-- /results:primary -->\n"
                   "<!-- results:positive-series -->\n<!-- /results:positive-series -->\n")
    assert main(["results", str(root), "--doc", str(doc), "--reference", str(tmp_path / "absent.csv")]) == 0
    for name in ("results-curves.png", "results-positive.png"):
        assert (doc.parent / name).stat().st_size > 10_000


SEED_CSV = Path(__file__).resolve().parents[2].parent / "shared" / "seed-data" / "dataset.csv"


@pytest.mark.skipif(not SEED_CSV.is_file(), reason="../shared/seed-data/dataset.csv not beside the repo")
def test_the_planted_rows_are_recomputed_from_a_run_s_config_and_splits(tmp_path):
    from cot_transplant.config import load_config, save_config
    from cot_transplant.runs.records import load_records, split_records

    cfg = load_config(None, [f"data.path={SEED_CSV}", "data.split=original", "data.val_fraction=0.02",
                             "data.planted_fraction=0.25", "data.planted_seed=3"])
    records = load_records(cfg)
    splits = split_records(cfg, records)
    assert splits["dropped"]["count"] > 0  # the reconstruction must count the rows the split left out
    run = tmp_path / "plant25-joint-s0"
    run.mkdir()
    save_config(cfg, run / "config.yaml")
    (run / "splits.json").write_text(json.dumps(splits))
    got = campaign.planted_row_ids(campaign.Run("plant25", "joint", 0, run, {}))
    assert got == {r.row_id for r in records if r.extra.get("planted") == "true"}
    assert len(got) == round(0.25 * 2748)


def test_a_level_near_one_keeps_at_least_the_wilson_width():
    from cot_transplant.runs.metrics import wilson
    scores = np.ones((1, 275))
    scores[0, 0] = 0  # 274 of 275 right: a percentile bootstrap gives [98.9%, 100%]
    got = campaign.level_interval(scores)
    low, high = wilson(274, 275)
    assert got["ci_low"] <= low and got["ci_high"] >= high


def test_runs_on_different_rows_are_refused_in_one_line():
    from cot_transplant.errors import UserError
    a = {"row_id": np.arange(3), "score": np.ones(3)}
    b = {"row_id": np.arange(1, 4), "score": np.ones(3)}
    with pytest.raises(UserError, match="different test rows"):
        campaign.matrix([a, b])


def test_a_gain_that_survives_other_rows_states_is_not_read_from_the_states(tmp_path):
    # joint beats text-only, but scores as well with another row's states: not "reads" (comparison 3 fails)
    root = campaign_dir(tmp_path, 0.8, 0.5, 0.8, {"plant100": 0.95, "plant50": 0.75, "plant25": 0.62, "plant10": 0.55})
    verdict, _ = campaign.decide(root)
    assert verdict == "undecided on this hardware"


def test_the_observed_mde_uses_the_rows_disagreement():
    from cot_transplant.analysis.stats import min_detectable_effect

    # one seed: 3 of 10 rows differ, so the mean square of d is the discordance, 0.3
    d = np.array([1, -1, 1, 0, 0, 0, 0, 0, 0, 0], dtype=float)
    assert campaign.observed_mde(d, 4) == pytest.approx(min_detectable_effect(10, 0.3, comparisons=4))
    # seed means: d in thirds; (1/9 + 4/9) / 5 rows = 1/9
    d = np.array([1 / 3, -2 / 3, 0, 0, 0])
    assert campaign.observed_mde(d) == pytest.approx(min_detectable_effect(5, 1 / 9))
    assert campaign.observed_mde(np.zeros(7)) is None  # identical picks: nothing to test against
    # two choosers that each always pick one position disagree on every row: the widest MDE
    a = [{"row_id": np.arange(4), "score": np.array([1.0, 0, 1, 0])}]
    b = [{"row_id": np.arange(4), "score": np.array([0.0, 1, 0, 1])}]
    r = campaign.compare("x", a, b, comparisons=4)
    assert r["disagreement"] == 1.0 and r["mde"] == pytest.approx(min_detectable_effect(4, 1.0, comparisons=4))
    assert "| 100.0%; " in campaign.comparisons_table(campaign.with_holm([r]))


def test_the_status_estimates_the_decision_s_remaining_runs(tmp_path):
    fake_run(tmp_path, "noarg-joint-s0", {640: correct_rows(0.5, 0)}, 640, wall=3600)
    fake_run(tmp_path, "plant100-joint-s0", {640: correct_rows(0.9, 0)}, 640, wall=1800)
    fake_run(tmp_path, "noarg-text-only-s0", {640: correct_rows(0.5, 0, 1)}, 640, wall=600)
    assert campaign.run_variant("plant25-joint-s0") == "joint" and campaign.run_variant("probe-csv") is None
    # missing: joint s1, s2, plant50/25/10 (5 joint at 0.75 h), text-only s1, s2 (2 at 600 s), controls of s0
    missing = ["noarg-joint-s1", "noarg-joint-s2", "plant50-joint-s0", "plant25-joint-s0", "plant10-joint-s0",
               "noarg-text-only-s1", "noarg-text-only-s2", "noarg-joint-s0 control base-arguer"]
    walls = {"joint": [3600.0, 1800.0], "text-only": [600.0]}
    estimate = campaign.remaining_estimate(missing, walls)
    assert estimate == ", about 4.1 h at the finished runs' mean wall time per variant"
    # a variant with no finished run to go by: no estimate
    assert campaign.remaining_estimate(missing + ["noarg-frozen-arguer-s0"], walls) == ""
    assert "about" not in campaign.status_section(tmp_path)  # frozen-arguer has no finished run here


def test_a_run_s_wall_time_counts_every_attempt(tmp_path):
    (tmp_path / "log.txt").write_text("training...\nwall_s 1056 interrupted\nresumed from step-20\nwall_s 409\n")
    assert campaign.wall_s(tmp_path) == 1465.0  # 1056 + 409: the cut-off attempt's time was spent too
    (tmp_path / "log.txt").write_text("killed before any line\n")
    assert campaign.wall_s(tmp_path) is None
    assert campaign.wall_s(tmp_path / "absent") is None
