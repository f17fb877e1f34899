"""Sweeps: the plan, a 2 seeds x 2 variants sweep of tiny runs end to end, resume, and
checkpoint selection that never reads test metrics."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from cot_transplant.analysis import sweep
from cot_transplant.cli import main
from cot_transplant.config import to_dict
from cot_transplant.errors import UserError
from cot_transplant.train import rundir
from cot_transplant.train.summary import summarize



@pytest.fixture
def config(tmp_path, tiny_cfg) -> Path:
    """The tiny test config as a YAML file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_cfg())))
    return path


# --- the plan -------------------------------------------------------------------------------------


def test_parse_grid_values_lists_and_floats():
    grid = sweep.parse_grid(["variant=joint,text-only", "train.optim.lr=1e-4,3e-4",
                             "transplant.layers=[0,1],[1],null"])
    assert grid == {"variant": ["joint", "text-only"], "train.optim.lr": [1e-4, 3e-4],
                    "transplant.layers": [[0, 1], [1], None]}


@pytest.mark.parametrize("item, message", [
    ("seed=1,2", "--seeds"),
    ("data.split_seed=1,2", "one data split"),
    ("data.path=a.csv,b.csv", "one data split"),
    ("run.name=a,b", "cannot vary"),
    ("variant", "key=v1,v2"),
    ("variant=joint,joint", "repeated"),
])
def test_parse_grid_refuses(item, message):
    with pytest.raises(UserError, match=message):
        sweep.parse_grid([item])


def test_make_plan_checks_every_combination_before_training(tmp_path, config):
    with pytest.raises(UserError, match="transplant.site"):
        sweep.make_plan(str(config), 1, sweep.parse_grid(["transplant.site=kv,qk"]), out=tmp_path / "a")
    with pytest.raises(UserError, match="unknown config key 'train.optim.lrr'"):
        sweep.make_plan(str(config), 1, sweep.parse_grid(["train.optim.lrr=1e-3"]), out=tmp_path / "b")
    with pytest.raises(UserError, match="--compare"):
        sweep.make_plan(str(config), 1, sweep.parse_grid(["variant=joint,shared"]), out=tmp_path / "c",
                        compare=["joint", "text-only"])
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written for a bad plan
    out = sweep.make_plan(str(config), 3, sweep.parse_grid(["variant=joint,text-only", "train.optim.lr=1e-3,1e-2"]),
                          ["train.max_samples=2"], out=tmp_path / "d")
    plan = sweep.read_plan(out)
    assert plan["seeds"] == [0, 1, 2] and plan["compare"] == ["joint", "text-only"]  # default comparison
    assert len(plan["runs"]) == 12 and len({r["name"] for r in plan["runs"]}) == 12
    assert plan["runs"][0]["name"] == "joint_lr-0.001-s0"
    cfg = sweep.run_config(plan, plan["runs"][-1], out)
    assert (cfg.variant, cfg.train.optim.lr, cfg.seed, cfg.train.max_samples) == ("text-only", 1e-2, 2, 2)
    assert (cfg.run.dir, cfg.run.name) == (str(out), "text-only_lr-0.01-s2")
    with pytest.raises(UserError, match="--resume"):
        sweep.make_plan(str(config), 1, {}, out=out)


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
    assert [r["name"] for r in sweep.read_plan(out)["runs"]] == names
    result = json.loads((out / "sweep.json").read_text())

    # One split in every run (split_seed only), and the aggregate says so.
    splits = [json.loads((out / n / "splits.json").read_text()) for n in names]
    assert all({k: s[k] for k in ("train", "val", "test")} == {k: splits[0][k] for k in ("train", "val", "test")}
               for s in splits)
    assert result["split"]["same_split"] is True and result["split"]["n_rows"]["test"] == 3
    assert [rundir.read_run_config(out / n)[0].seed for n in names] == [0, 0, 1, 1]

    assert {"sweep", "config", "seeds", "grid", "compare", "split", "combinations", "comparisons", "incomplete",
            "failed", "interrupted", "figures", "_provenance"} <= set(result)
    assert result["incomplete"] == [] and result["failed"] == {} and result["interrupted"] is False
    for combo, variant in zip(result["combinations"], ("joint", "text-only")):
        assert combo["values"] == {"variant": variant} and combo["n_complete"] == 2
        summaries = [json.loads((out / f"{variant}-s{s}" / "summary.json").read_text()) for s in (0, 1)]
        for when in ("test_at_chosen", "test_at_end"):
            f_c = combo[when]["f_c"]
            assert f_c["values"] == [s[when]["f_c"] for s in summaries]
            assert f_c["mean"] == pytest.approx(sum(f_c["values"]) / 2)
            assert set(f_c) == {"mean", "ci_low", "ci_high", "n", "values"} and f_c["n"] == 2
            if f_c["values"][0] != f_c["values"][1]:
                assert f_c["ci_low"] < f_c["mean"] < f_c["ci_high"]
        share = combo["above_base_rate"]["at_chosen"]
        assert share["of"] == 2 and share["runs"] == sum(s["test_at_chosen"]["f_c"] > s["test_at_chosen"]["base_rate"]
                                                          for s in summaries)
        # One band point per eval: at the start, after 4 samples (eval.every), and nothing else.
        assert [p["samples"] for p in combo["band"]["test/f_c"]] == [0, 4]
        assert all(p["n"] == 2 for p in combo["band"]["val/f_c"])
        assert (out / f"band-{variant}.png").stat().st_size > 10_000
    assert (out / "bands.png").is_file()

    (cmp,) = result["comparisons"]
    assert (cmp["a"], cmp["b"]) == ("joint", "text-only") and [s["seed"] for s in cmp["per_seed"]] == [0, 1]
    for s in cmp["per_seed"]:
        joint = json.loads((out / s["a_run"] / "summary.json").read_text())["test_at_chosen"]
        assert s["a_samples"] == joint["samples"] and s["n"] == 3 and s["f_c_a"] == pytest.approx(joint["f_c"])
        assert 0 < s["p_value"] <= 1
    assert cmp["concatenated"]["n"] == 6 and "concatenated" in cmp["concatenated"]["how"]
    assert cmp["concatenated"]["f_c_a"] == pytest.approx(sum(s["f_c_a"] for s in cmp["per_seed"]) / 2)
    assert cmp["row_means"]["n"] == 3
    assert "same split in every run: True" in capsys.readouterr().out

    # Resume: complete runs are skipped, so a second invocation trains nothing.
    from cot_transplant.train import loop

    calls, real_train = [], loop.train

    def counting_train(cfg, config_path=None, resume=None):
        calls.append((cfg.run.name if resume is None else Path(resume).name, resume is not None))
        return real_train(cfg, config_path=config_path, resume=resume)

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
    assert sweep.run_status(out / "joint-s1") == sweep.run_status(out / "text-only-s0") == "complete"
    assert json.loads((out / "text-only-s0" / "splits.json").read_text())["test"] == splits[0]["test"]

    # Checkpoint choice reads val/ only: poison joint-s0's test figures (best test away from the chosen
    # point) and re-aggregate: the chosen samples stay, the reported value is the poisoned one.
    before = json.loads((out / "sweep.json").read_text())["combinations"][0]["runs"][0]
    metrics = rundir.read_metrics(out / "joint-s0")
    for m in metrics:
        if m.get("split") == "test":
            m["test/f_c"] = 0.0 if m["samples"] == before["chosen_samples"] else 1.0
    (out / "joint-s0" / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
    after = sweep.aggregate(out)["combinations"][0]["runs"][0]
    assert after["chosen_samples"] == before["chosen_samples"] and after["test_f_c_at_chosen"] == 0.0


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
