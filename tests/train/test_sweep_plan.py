"""A sweep's plan (`train.sweep_runner`): grid parsing, and every combination checked before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cot_transplant.config import to_dict
from cot_transplant.errors import UserError
from cot_transplant.train import sweep_runner
from train_helpers import tiny_cfg


@pytest.fixture
def config(tmp_path) -> Path:
    """The tiny test config as a YAML file."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(to_dict(tiny_cfg())))
    return path


def test_parse_grid_values_lists_and_floats():
    grid = sweep_runner.parse_grid(["variant=joint,text-only", "train.optim.lr=1e-4,3e-4",
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
        sweep_runner.parse_grid([item])


def test_make_plan_checks_every_combination_before_training(tmp_path, config):
    with pytest.raises(UserError, match="transplant.site"):
        sweep_runner.make_plan(str(config), 1, sweep_runner.parse_grid(["transplant.site=kv,qk"]), out=tmp_path / "a")
    with pytest.raises(UserError, match="unknown config key 'train.optim.lrr'"):
        sweep_runner.make_plan(str(config), 1, sweep_runner.parse_grid(["train.optim.lrr=1e-3"]), out=tmp_path / "b")
    with pytest.raises(UserError, match="--compare"):
        sweep_runner.make_plan(str(config), 1, sweep_runner.parse_grid(["variant=joint,shared"]), out=tmp_path / "c",
                        compare=["joint", "text-only"])
    assert not any((tmp_path / d).exists() for d in "abc")  # nothing written for a bad plan
    out = sweep_runner.make_plan(str(config), 3, sweep_runner.parse_grid(["variant=joint,text-only", "train.optim.lr=1e-3,1e-2"]),
                          ["train.max_samples=2"], out=tmp_path / "d")
    plan = sweep_runner.read_plan(out)
    assert plan["seeds"] == [0, 1, 2] and plan["compare"] == ["joint", "text-only"]  # default comparison
    assert len(plan["runs"]) == 12 and len({r["name"] for r in plan["runs"]}) == 12
    assert plan["runs"][0]["name"] == "joint_lr-0.001-s0"
    cfg = sweep_runner.run_config(plan, plan["runs"][-1], out)
    assert (cfg.variant, cfg.train.optim.lr, cfg.seed, cfg.train.max_samples) == ("text-only", 1e-2, 2, 2)
    assert (cfg.run.dir, cfg.run.name) == (str(out), "text-only_lr-0.01-s2")
    with pytest.raises(UserError, match="--resume"):
        sweep_runner.make_plan(str(config), 1, {}, out=out)


def test_a_grid_may_vary_what_rows_show_but_not_which_rows():
    grid = sweep_runner.parse_grid(["data.argument=original,none", "data.planted_fraction=0.25,1.0"])
    assert grid == {"data.argument": ["original", "none"], "data.planted_fraction": [0.25, 1.0]}
    with pytest.raises(UserError, match="one data split"):
        sweep_runner.parse_grid(["data.max_rows=10,20"])
