"""Sweeps: a 2 seeds x 2 variants sweep of tiny runs end to end, resume, the aggregate, and
checkpoint selection that never reads test metrics (the plan: tests/train/test_sweep_plan.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cot_transplant.analysis import sweep_aggregate
from cot_transplant.cli import main
from cot_transplant.config import to_dict
from cot_transplant.runs import rundir
from cot_transplant.runs.summary import summarize
from cot_transplant.train import sweep_runner


@pytest.fixture
def config(tmp_path, tiny_cfg) -> Path:
    """The tiny test config as a YAML file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_cfg())))
    return path


def test_resume_needs_a_sweep_dir(tmp_path, capsys):
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "no sweep.yaml" in capsys.readouterr().err


# --- a real sweep ---------------------------------------------------------------------------------


def test_sweep_two_seeds_two_variants_end_to_end_and_resume(tmp_path, config, tiny_train, monkeypatch, capsys):
    out = tmp_path / "sweep"
    # Overrides after options: the sweep command parses intermixed arguments.
    assert main(["sweep", str(config), "--seeds", "2", "--grid", "variant=joint,text-only", "--out", str(out),
                 "--n-perm", "200", "checkpoint.keep=1"]) == 0
    names = ["joint-s0", "text-only-s0", "joint-s1", "text-only-s1"]
    assert [r["name"] for r in sweep_runner.read_plan(out)["runs"]] == names
    result = json.loads((out / "sweep.json").read_text())

    # One split in every run (split_seed only), and the aggregate says so.
    splits = [json.loads((out / n / "splits.json").read_text()) for n in names]
    assert all({k: s[k] for k in ("train", "val", "test")} == {k: splits[0][k] for k in ("train", "val", "test")}
               for s in splits)
    assert result["split"]["same_split"] is True and result["split"]["n_rows"]["test"] == 3
    assert [rundir.read_run_config(out / n)[0].seed for n in names] == [0, 0, 1, 1]

    assert {"sweep", "config", "seeds", "grid", "compare", "split", "combinations", "primary_test", "comparisons",
            "incomplete", "failed", "interrupted", "figures", "_provenance"} <= set(result)
    assert result["primary_test"]["test"] == "row_means" and "Holm" in result["primary_test"]["correction"]
    assert result["incomplete"] == [] and result["failed"] == {} and result["interrupted"] is False
    for combo, variant in zip(result["combinations"], ("joint", "text-only")):
        assert combo["values"] == {"variant": variant} and combo["n_complete"] == 2
        summaries = [json.loads((out / f"{variant}-s{s}" / "summary.json").read_text()) for s in (0, 1)]
        for when in ("test_at_chosen", "test_at_end"):
            f_c = combo[when]["f_c"]
            assert f_c["values"] == [s[when]["f_c"] for s in summaries]
            assert f_c["mean"] == pytest.approx(sum(f_c["values"]) / 2)
            assert set(f_c) == {"mean", "ci_low", "ci_high", "interval", "n", "values"} and f_c["n"] == 2
            # two seeds: the per-seed values and their range, never a t interval
            assert f_c["interval"] == "range"
            assert (f_c["ci_low"], f_c["ci_high"]) == (min(f_c["values"]), max(f_c["values"]))
        b = summaries[0]["baselines"]  # the text-free baselines on the same test rows, beside the result
        assert combo["baselines"] == {"n": b["n"], "argument": b["argument"]["base_rate"],
                                      "length_only": b["length_only"]["f_c"],
                                      "last_step_checker": b["last_step_checker"]["f_c"]}
        share = combo["above_base_rate"]["at_chosen"]
        assert share["of"] == 2 and share["runs"] == sum(s["test_at_chosen"]["f_c"] > s["test_at_chosen"]["base_rate"]
                                                          for s in summaries)
        # One band point per eval: at the start, after 4 samples (eval.every), and nothing else.
        assert [p["samples"] for p in combo["band"]["test/f_c"]] == [0, 4]
        assert all(p["n"] == 2 and p["interval"] == "range" for p in combo["band"]["val/f_c"])
        assert (out / f"band-{variant}.png").stat().st_size > 10_000
    assert (out / "bands.png").is_file()

    (cmp,) = result["comparisons"]
    assert (cmp["a"], cmp["b"]) == ("joint", "text-only") and [s["seed"] for s in cmp["per_seed"]] == [0, 1]
    for s in cmp["per_seed"]:
        joint = json.loads((out / s["a_run"] / "summary.json").read_text())["test_at_chosen"]
        assert s["a_samples"] == joint["samples"] and s["n"] == 3 and s["f_c_a"] == pytest.approx(joint["f_c"])
        assert 0 < s["p_value"] <= 1 and s["role"] == "secondary"
    assert cmp["concatenated"]["n"] == 6 and "concatenated" in cmp["concatenated"]["how"]
    assert cmp["concatenated"]["f_c_a"] == pytest.approx(sum(s["f_c_a"] for s in cmp["per_seed"]) / 2)
    assert cmp["concatenated"]["role"] == "secondary"
    primary = cmp["row_means"]
    assert primary["n"] == 3 and primary["role"] == "primary"
    assert primary["p_holm"] == primary["p_value"] and primary["holm_over"] == 1  # one setting: Holm changes nothing
    printed = capsys.readouterr().out
    assert "same split in every run: True" in printed
    assert "primary (per-row means over seeds)" in printed and "Holm p=" in printed and "secondary:" in printed

    # Resume: complete runs are skipped, so a second invocation trains nothing.
    from cot_transplant.train import loop

    calls, real_train = [], loop.train

    def counting_train(cfg, config_path=None, resume=None, report=None):
        calls.append((cfg.run.name if resume is None else Path(resume).name, resume is not None))
        return real_train(cfg, config_path=config_path, resume=resume, report=report)

    monkeypatch.setattr(loop, "train", counting_train)
    assert main(["sweep", "--resume", str(out)]) == 0
    assert calls == []

    # An interrupted run (summary says so, checkpoint present) is resumed; a run that died before its
    # first checkpoint is started again from scratch.
    summary = out / "joint-s1" / "summary.json"
    summary.write_text(json.dumps({**json.loads(summary.read_text()), "interrupted": True}))
    shutil.rmtree(out / "text-only-s0" / "checkpoints")
    (out / "text-only-s0" / "summary.json").unlink()
    assert main(["sweep", "--resume", str(out)]) == 0
    assert calls == [("text-only-s0", False), ("joint-s1", True)]
    assert sweep_runner.run_status(out / "joint-s1") == sweep_runner.run_status(out / "text-only-s0") == "complete"
    assert json.loads((out / "text-only-s0" / "splits.json").read_text())["test"] == splits[0]["test"]

    # Checkpoint choice reads val/ only: poison joint-s0's test figures (best test away from the chosen
    # point) and re-aggregate: the chosen samples stay, the reported value is the poisoned one.
    before = json.loads((out / "sweep.json").read_text())["combinations"][0]["runs"][0]
    metrics = rundir.read_metrics(out / "joint-s0")
    for m in metrics:
        if m.get("split") == "test":
            m["test/f_c"] = 0.0 if m["samples"] == before["chosen_samples"] else 1.0
    (out / "joint-s0" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    after = sweep_aggregate.aggregate(out)["combinations"][0]["runs"][0]
    assert after["chosen_samples"] == before["chosen_samples"] and after["test_f_c_at_chosen"] == 0.0


# --- statistics of the aggregate ------------------------------------------------------------------

SCORE_PROBS = {1.0: (0.7, 0.2), 0.5: (0.4, 0.4), 0.0: (0.2, 0.7)}  # (p1, p2) with label 1


def _fake_sweep(tmp_path: Path, scores: dict[tuple[str, int, int], list[float]]) -> tuple[dict, dict]:
    """A plan and run records of variant x lr x seed whose test predictions score `scores[(variant, lr, seed)]`."""
    combos = [{"label": f"variant={v}, lr={lr}", "values": {"variant": v, "lr": lr}}
              for lr in (1, 2) for v in ("joint", "text-only")]
    runs, records = [], {}
    for i, c in enumerate(combos):
        for seed in (0, 1):
            name = f"{c['values']['variant']}-lr{c['values']['lr']}-s{seed}"
            runs.append({"name": name, "combination": i, "seed": seed})
            records[name] = {"name": name, "status": "complete", "chosen_samples": 8}
            (tmp_path / name).mkdir()
            rows = [(row, *SCORE_PROBS[x], 1, 1)
                    for row, x in enumerate(scores[(c["values"]["variant"], c["values"]["lr"], seed)])]
            rundir.write_predictions(tmp_path / name, "test", 8, rows)
    return {"combinations": combos, "runs": runs, "n_perm": 1000}, records


def test_primary_test_is_row_means_with_ties_half_and_holm_across_settings(tmp_path):
    scores = {("joint", 1, 0): [1, 1, 0.5], ("joint", 1, 1): [1, 0, 1],
              ("text-only", 1, 0): [0, 0, 0], ("text-only", 1, 1): [0, 0.5, 0],
              ("joint", 2, 0): [1, 0, 0], ("joint", 2, 1): [1, 0, 0],
              ("text-only", 2, 0): [0, 0, 0], ("text-only", 2, 1): [0, 0, 0]}
    plan, records = _fake_sweep(tmp_path, scores)
    lr1, lr2 = sweep_aggregate._compare(tmp_path, plan, records, "joint", "text-only")
    assert (lr1["fixed"], lr2["fixed"]) == ({"lr": 1}, {"lr": 2})
    # lr=1: row means a = 1, 0.5, 0.75 and b = 0, 0.25, 0; differences 1, 0.25, 0.75: of the 8 sign
    # patterns only +++ and --- reach |sum| = 2, so p = 2/8
    p = lr1["row_means"]
    assert (p["role"], p["n"]) == ("primary", 3)
    assert (p["f_c_a"], p["f_c_b"], p["diff"]) == pytest.approx((0.75, 0.25 / 3, 2 / 3))
    assert p["p_value"] == 0.25
    # lr=2: one row differs (by 1): both sign patterns are as extreme, p = 1
    assert lr2["row_means"]["p_value"] == 1.0
    # Holm over the two settings: 2 * 0.25 = 0.5, then max(0.5, 1 * 1.0) = 1.0
    assert (lr1["row_means"]["p_holm"], lr2["row_means"]["p_holm"]) == (0.5, 1.0)
    assert lr1["row_means"]["holm_over"] == 2
    # secondary: seed 0 of lr=1 differs by 1, 1, 0.5: only +++ and --- reach 2.5
    assert [s["role"] for s in lr1["per_seed"]] == ["secondary", "secondary"]
    assert lr1["per_seed"][0]["p_value"] == 0.25 and lr1["per_seed"][0]["f_c_a"] == pytest.approx(2.5 / 3)
    assert lr1["concatenated"]["role"] == "secondary" and lr1["concatenated"]["n"] == 6


def test_with_holm_leaves_a_comparison_without_rows_out_of_the_family():
    out = sweep_aggregate.with_holm([{"row_means": {"p_value": None}}, {"row_means": {"p_value": 0.04}},
                           {"row_means": {"p_value": 0.03}}])
    assert [c["row_means"]["p_holm"] for c in out] == pytest.approx([None, 0.06, 0.06])
    assert out[1]["row_means"]["holm_over"] == 2


def test_interval_and_its_text_range_below_three_seeds_t_clipped_from_three():
    pct = lambda x: f"{100 * x:.1f}%"  # noqa: E731
    two = sweep_aggregate._interval([0.6, 0.7])
    assert (two["interval"], two["ci_low"], two["ci_high"]) == ("range", 0.6, 0.7)
    assert sweep_aggregate.interval_text(two, pct) == "65.0% (seeds 60.0%, 70.0%; range 60.0% to 70.0%)"
    three = sweep_aggregate._interval([0.9, 1.0, 1.0])  # t: 0.9667 +- 0.1434, clipped to [0, 1]
    assert three["interval"] == "t" and three["ci_high"] == 1.0
    assert sweep_aggregate.interval_text(three, pct) == "96.7% [95% t 82.3%, 100.0%]"
    assert sweep_aggregate.interval_text(sweep_aggregate._interval([]), pct) == "n/a"
    old = {"mean": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n": 3, "values": [0.4, 0.5, 0.6]}  # before `interval`
    assert sweep_aggregate.interval_text(old, pct) == "50.0% [95% t 40.0%, 60.0%]"


# --- checkpoint selection --------------------------------------------------------------------------


def _eval(split: str, samples: int, f_c: float) -> dict:
    return {"kind": "eval", "split": split, "samples": samples, f"{split}/f_c": f_c, f"{split}/base_rate": 0.6,
            f"{split}/f_c_ci_low": f_c - 0.1, f"{split}/f_c_ci_high": f_c + 0.1}


def test_summary_chosen_checkpoint_ignores_poisoned_test_metrics(tmp_path):
    val = {0: 0.5, 128: 0.7, 256: 0.7, 384: 0.6}  # best at 128 (tie with 256: earliest)
    test = {0: 0.50, 128: 0.60, 256: 0.65, 384: 0.70}
    records = [{"kind": "train", "samples": s, "train/loss": 1.0} for s in (128, 256, 384)]
    records += [r for s in val for r in (_eval("val", s, val[s]), _eval("test", s, test[s]))]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    clean = summarize(tmp_path)
    assert clean["test_at_chosen"]["samples"] == 128 and clean["test_at_chosen"]["f_c"] == 0.60
    assert clean["test_at_end"]["samples"] == 384

    for r in records:  # make every other test point look far better, and add stray test keys
        if r.get("split") == "test" and r["samples"] != 128:
            r.update({"test/f_c": 1.0, "val/f_c": 1.0})  # a val key inside a test record
        if r.get("split") == "test":
            r["test/loss"] = -1.0
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    poisoned = summarize(tmp_path)
    assert poisoned["test_at_chosen"]["samples"] == 128 and poisoned["chosen_by"] == "best val/f_c"
    assert poisoned["test_at_chosen"]["f_c"] == 0.60
