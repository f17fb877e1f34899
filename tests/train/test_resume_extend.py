"""`train --resume RUN train.max_samples=N`: a finished run trained further equals one trained that long."""

import json
from pathlib import Path

import pytest
import yaml

from cot_transplant.cli import main
from cot_transplant.runs import rundir

VARYING = ("time", "wall", "per_s", "rss", "eta")
TINY = {"variant": "joint", "seed": 3,
        "data": {"synthetic": {"n": 24, "seed": 5, "steps": [2], "short": True},
                 "val_fraction": 0.2, "test_fraction": 0.2},
        "model": {"name": "tiny-llama"}, "prompt": {"template": "chat"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "train": {"max_samples": 8, "batch_size": 2, "accumulate_to": 4, "optim": {"lr": 1.0e-2}},
        "eval": {"every": 8, "batch_size": 8}, "checkpoint": {"every": 1, "keep": 1},
        "run": {"progress": False, "tensorboard": False}}


def stable(path: Path) -> list[dict]:
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return [{k: v for k, v in x.items() if not any(w in k for w in VARYING)} for x in lines]


def test_extend_a_finished_run(tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY))
    assert main(["train", str(config), f"run.dir={tmp_path}", "run.name=long", "train.max_samples=16"]) == 0
    assert main(["train", str(config), f"run.dir={tmp_path}", "run.name=short"]) == 0
    assert main(["train", "--resume", str(tmp_path / "short"), "train.max_samples=16"]) == 0
    assert stable(tmp_path / "short" / "metrics.jsonl") == stable(tmp_path / "long" / "metrics.jsonl")
    cfg, _ = rundir.read_run_config(tmp_path / "short")
    assert cfg.train.max_samples == 16  # the run directory describes what it ran


@pytest.mark.parametrize("extra", [["train.optim.lr=1"], ["configs/demo.yaml"], ["train.max_samples"]])
def test_resume_refuses_other_changes(tmp_path, capsys, extra):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY | {"train": TINY["train"] | {"max_samples": 4}}))
    assert main(["train", str(config), f"run.dir={tmp_path}", "run.name=r"]) == 0
    capsys.readouterr()
    assert main(["train", "--resume", str(tmp_path / "r"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.max_samples" in err[0]
